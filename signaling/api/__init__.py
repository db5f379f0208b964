"""The room API for the chat backend (``/api/v1``): rooms, participants, pushing events,
presence, join tokens, calls and nodes, plus its OpenAPI document.

:mod:`.routes` is the route table; :mod:`.endpoints` the request pipeline;
:mod:`.rooms`, :mod:`.messaging`, :mod:`.nodes` the handlers; :mod:`.models` the bodies.
"""
