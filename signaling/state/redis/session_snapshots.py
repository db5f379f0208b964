"""Session snapshots in Redis: one expiring key per (user, session id) under the user's
hash tag; saving is one ``SET PX``, taking one ``GETDEL``."""

from __future__ import annotations

from signaling.state.redis.link import RedisLink
from signaling.state.session_snapshots import SessionSnapshots


class RedisSessionSnapshots(SessionSnapshots):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def save(self, user_id: str, session_id: str, snapshot: bytes, ttl: float) -> None:
        key = self.link.keys.session_snapshot(user_id, session_id)
        async with self.link.shared():
            await self.link.client.set(key, snapshot, px=max(1, int(ttl * 1000)))

    async def take(self, user_id: str, session_id: str) -> bytes | None:
        key = self.link.keys.session_snapshot(user_id, session_id)
        async with self.link.shared():
            found: bytes | None = await self.link.client.getdel(key)
        return found
