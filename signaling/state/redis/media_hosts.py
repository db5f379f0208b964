"""Group call media hosts in Redis: ``{r:<room>}:host`` names the room's media node; each
node's hosted rooms are indexed in ``{n:<node>}:hosted`` so whoever reaps a dead node can
release them; placement runs under ``{r:<room>}:placing`` (SET NX PX, compare-and-delete)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from signaling.protocol import ErrorCode, HubError
from signaling.state.media_hosts import MediaHosts
from signaling.state.redis.link import UNREACHABLE, RedisLink


class RedisMediaHosts(MediaHosts):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    @contextlib.asynccontextmanager
    async def placement_lock(self, room_id: str, ttl: float = 5.0) -> AsyncIterator[None]:
        key, token = self.link.keys.room_placing(room_id), secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ttl
        async with self.link.shared():
            while not await self.link.client.set(key, token, nx=True, px=int(ttl * 1000)):
                if loop.time() > deadline:
                    raise HubError(
                        ErrorCode.UNAVAILABLE, f"room '{room_id}' is being placed; retry shortly"
                    )
                await asyncio.sleep(0.02)
        try:
            yield
        finally:
            with contextlib.suppress(*UNREACHABLE):
                await self.link.run("DELETE_IF", [key], [token])

    async def get(self, room_id: str) -> str | None:
        async with self.link.shared():
            raw = await self.link.client.get(self.link.keys.room_host(room_id))
        return raw.decode() if raw else None

    async def set(self, room_id: str, node_id: str) -> None:
        keys, client = self.link.keys, self.link.client
        async with self.link.shared():
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(keys.room_host(room_id), node_id, get=True)
                pipe.sadd(keys.node_hosted(node_id), room_id)
                previous, _ = await pipe.execute()
            if previous is not None and previous.decode() != node_id:
                await client.srem(keys.node_hosted(previous.decode()), room_id)

    async def release(self, room_id: str, node_id: str) -> bool:
        async with self.link.shared():
            if not await self.link.run("DELETE_IF", [self.link.keys.room_host(room_id)], [node_id]):
                return False
            await self.link.client.srem(self.link.keys.node_hosted(node_id), room_id)
            return True
