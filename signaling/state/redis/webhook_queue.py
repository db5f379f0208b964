"""The webhook queue in Redis: a list per ordering key, a ready set of keys with pending
deliveries, and an expiring lease per key (scripts claim, acknowledge and release)."""

from __future__ import annotations

from signaling.state.models import now_ms
from signaling.state.redis.link import RedisLink
from signaling.state.webhook_queue import WebhookQueue


class RedisWebhookQueue(WebhookQueue):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def push(self, items: list[tuple[str, bytes]]) -> None:
        k, now = self.link.keys, now_ms()
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=True) as pipe:
                for key, delivery in items:
                    pipe.rpush(k.webhook_queue(key), delivery)
                    pipe.zadd(k.webhook_ready, {key: now}, nx=True)
                await pipe.execute()

    async def claim(self, owner: str, limit: int, lease: float) -> list[str]:
        k = self.link.keys
        args = [k.webhook_lease(""), owner, int(lease * 1000), limit, limit * 8]
        async with self.link.shared():
            keys = await self.link.run("WEBHOOK_CLAIM", [k.webhook_ready], args)
        return [key.decode() for key in keys]

    async def head(self, key: str) -> bytes | None:
        async with self.link.shared():
            head: bytes | None = await self.link.client.lindex(self.link.keys.webhook_queue(key), 0)
        return head

    def _keys(self, key: str) -> list[str]:
        k = self.link.keys
        return [k.webhook_queue(key), k.webhook_ready, k.webhook_lease(key)]

    async def ack(self, key: str, owner: str) -> bool:
        async with self.link.shared():
            return bool(await self.link.run("WEBHOOK_ACK", self._keys(key), [key, owner]))

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        args = [owner, int(lease * 1000)]
        async with self.link.shared():
            return bool(
                await self.link.run("WEBHOOK_RENEW", [self.link.keys.webhook_lease(key)], args)
            )

    async def release(self, key: str, owner: str) -> None:
        async with self.link.shared():
            await self.link.run("WEBHOOK_RELEASE", self._keys(key), [key, owner])
