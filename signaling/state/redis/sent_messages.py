"""Sent chat messages in Redis: one expiring key per (user, tempId) under the user's hash
tag; a claim is one ``SET NX GET``."""

from __future__ import annotations

from signaling.state.redis.link import RedisLink
from signaling.state.sent_messages import PENDING, SentMessages


class RedisSentMessages(SentMessages):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def claim(self, user_id: str, temp_id: str, ttl: float) -> str | None:
        key = self.link.keys.sent_message(user_id, temp_id)
        async with self.link.shared():
            previous = await self.link.client.set(
                key, PENDING, nx=True, get=True, px=max(1, int(ttl * 1000))
            )
        return previous.decode() if previous is not None else None

    async def settle(self, user_id: str, temp_id: str, message_id: str, ttl: float) -> None:
        key = self.link.keys.sent_message(user_id, temp_id)
        async with self.link.shared():
            await self.link.client.set(key, message_id, px=max(1, int(ttl * 1000)))

    async def release(self, user_id: str, temp_id: str) -> None:
        async with self.link.shared():
            await self.link.client.delete(self.link.keys.sent_message(user_id, temp_id))
