"""Sent chat messages in process memory (one node), expiring, bounded."""

from __future__ import annotations

import time
from collections import OrderedDict

from signaling.state.sent_messages import PENDING, SentMessages

#: Claims remembered at most (the oldest are forgotten first).
LIMIT = 100_000


class MemorySentMessages(SentMessages):
    def __init__(self) -> None:
        self._claims: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def _live(self, key: tuple[str, str]) -> str | None:
        found = self._claims.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            del self._claims[key]
            return None
        return value

    async def claim(self, user_id: str, temp_id: str, ttl: float) -> str | None:
        key = (user_id, temp_id)
        known = self._live(key)
        if known is not None:
            return known
        self._claims[key] = (time.monotonic() + ttl, PENDING)
        while len(self._claims) > LIMIT:
            self._claims.popitem(last=False)
        return None

    async def settle(self, user_id: str, temp_id: str, message_id: str, ttl: float) -> None:
        self._claims[(user_id, temp_id)] = (time.monotonic() + ttl, message_id)

    async def release(self, user_id: str, temp_id: str) -> None:
        self._claims.pop((user_id, temp_id), None)
