"""Switchboard signaling hub: presence, typing, rooms and call signaling over one WebSocket."""

__version__ = "0.1.0"
