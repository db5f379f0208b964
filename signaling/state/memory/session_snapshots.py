"""Session snapshots in process memory (one node), expiring, bounded."""

from __future__ import annotations

import time
from collections import OrderedDict

from signaling.state.session_snapshots import SessionSnapshots

#: Snapshots kept at most (the oldest are forgotten first).
LIMIT = 50_000


class MemorySessionSnapshots(SessionSnapshots):
    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()

    async def save(self, user_id: str, session_id: str, snapshot: bytes, ttl: float) -> None:
        key = (user_id, session_id)
        self._kept.pop(key, None)
        self._kept[key] = (time.monotonic() + ttl, snapshot)
        while len(self._kept) > LIMIT:
            self._kept.popitem(last=False)

    async def take(self, user_id: str, session_id: str) -> bytes | None:
        found = self._kept.pop((user_id, session_id), None)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]
