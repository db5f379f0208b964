"""The composition root: the one place that imports every part and wires a node.

:mod:`switchboard.node` builds a node (state backend, services, hub, SFU) and is the
state backend's handler; :mod:`switchboard.routes` holds the route tables;
:mod:`switchboard.app` the aiohttp application and draining; :mod:`switchboard.cli` the
``switchboard`` command; :mod:`switchboard.dev` what ``serve --dev`` changes. Nothing else
imports this package.
"""
