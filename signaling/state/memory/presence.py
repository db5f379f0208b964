"""Presence in process memory."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from signaling.state.models import PresenceChange, PresenceInfo, aggregate_status, now_ms
from signaling.state.presence import PresenceStore


@dataclass(slots=True)
class _UserPresence:
    devices: dict[str, str] = field(default_factory=dict)
    last_seen: int | None = None

    def visible(self, user_id: str) -> PresenceInfo:
        return PresenceInfo(user_id, aggregate_status(self.devices.values()), self.last_seen)


class MemoryPresence(PresenceStore):
    def __init__(self) -> None:
        self._users: dict[str, _UserPresence] = {}

    async def set_device(self, user_id: str, conn_id: str, status: str | None) -> PresenceChange:
        entry = self._users.setdefault(user_id, _UserPresence())
        before = entry.visible(user_id)
        if status is None:
            entry.devices.pop(conn_id, None)
        else:
            entry.devices[conn_id] = status
        # last_seen moves only while others can see the user, so going invisible does not
        # leak activity through a ticking timestamp.
        if before.status != "offline" or aggregate_status(entry.devices.values()) != "offline":
            entry.last_seen = now_ms()
        return PresenceChange(before, entry.visible(user_id))

    async def get(self, user_ids: Iterable[str]) -> dict[str, PresenceInfo]:
        out = {}
        for user_id in user_ids:
            entry = self._users.get(user_id)
            out[user_id] = (
                entry.visible(user_id) if entry else PresenceInfo(user_id, "offline", None)
            )
        return out
