"""The room API for the chat backend (``/api/v1``): rooms, participants, pushing events,
presence, join tokens and calls, plus its OpenAPI document."""

from signaling.api.endpoints import add_api_routes

__all__ = ["add_api_routes"]
