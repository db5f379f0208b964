"""Typed settings: one object from ``SWITCHBOARD_*`` variables and an optional TOML file.

The bottom layer: it imports nothing else of the project, so every part (TURN, the hub,
the SFU, the process wiring) can read its own section without importing another part.
"""

from config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
