"""Typing state in Redis: a hash per room (user -> JSON state), changed by scripts; the
expiry is an entry in the shared timer set, armed in the same round trip as the state."""

from __future__ import annotations

from signaling.state.models import now_ms
from signaling.state.redis.link import RedisLink
from signaling.state.redis.timers import RedisTimers
from signaling.state.typing_indicators import TYPING_TIMER, TypingStore


class RedisTyping(TypingStore):
    def __init__(self, link: RedisLink, timers: RedisTimers) -> None:
        self.link = link
        self.timers = timers

    async def start(
        self, room_id: str, user_id: str, conn_id: str, name: str, timeout: float, throttle: float
    ) -> bool:
        args = [user_id, conn_id, name, now_ms(), int(timeout * 1000), int(throttle * 1000)]
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=False) as pipe:
                await self.link.run("TYPING_START", [self.link.keys.typing(room_id)], args, pipe)
                self.timers.queue_arm(pipe, TYPING_TIMER, [room_id, user_id], timeout)
                announce, _ = await pipe.execute()
        return bool(announce)

    async def stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        async with self.link.shared():
            name = await self.link.run(
                "TYPING_STOP", [self.link.keys.typing(room_id)], [user_id, conn_id or ""]
            )
        if not name:
            return None
        await self.timers.disarm(TYPING_TIMER, [room_id, user_id])
        return name.decode()

    async def expire(self, room_id: str, user_id: str) -> str | None:
        async with self.link.shared():
            found = await self.link.run(
                "TYPING_EXPIRE", [self.link.keys.typing(room_id)], [user_id, now_ms()]
            )
        if found[0] == 1:
            return found[1].decode()
        if found[0] == 2:
            await self.timers.arm(TYPING_TIMER, [room_id, user_id], int(found[1]) / 1000)
        return None
