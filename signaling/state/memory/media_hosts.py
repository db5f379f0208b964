"""Group call media hosts in process memory (one node: it hosts every room it places)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from signaling.state.media_hosts import MediaHosts


class MemoryMediaHosts(MediaHosts):
    def __init__(self) -> None:
        self._hosts: dict[str, str] = {}
        self._placing: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def placement_lock(self, room_id: str, ttl: float = 5.0) -> AsyncIterator[None]:
        lock, users = self._placing.get(room_id, (asyncio.Lock(), 0))
        self._placing[room_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._placing[room_id]
            if users == 1:
                del self._placing[room_id]
            else:
                self._placing[room_id] = (lock, users - 1)

    async def get(self, room_id: str) -> str | None:
        return self._hosts.get(room_id)

    async def set(self, room_id: str, node_id: str) -> None:
        self._hosts[room_id] = node_id

    async def release(self, room_id: str, node_id: str) -> bool:
        if self._hosts.get(room_id) != node_id:
            return False
        del self._hosts[room_id]
        return True
