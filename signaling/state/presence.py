"""Presence: each device's status, aggregated per user (see :mod:`signaling.presence`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from signaling.state.models import PresenceChange, PresenceInfo


class PresenceStore(ABC):
    @abstractmethod
    async def set_device(self, user_id: str, conn_id: str, status: str | None) -> PresenceChange:
        """Set one device's status (``None``: the device went away) and return the user's
        visible presence before and after, computed atomically."""

    @abstractmethod
    async def get(self, user_ids: Iterable[str]) -> dict[str, PresenceInfo]:
        """Each user's visible presence (``offline`` for users never seen)."""
