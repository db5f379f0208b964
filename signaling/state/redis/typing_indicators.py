"""Typing state in Redis: a hash per room (user -> JSON state), changed by scripts; the
expiry is an entry in the shared timer set, armed in the same round trip as the state.

A start or stop sent by a device is one round trip: the script changes the state and
publishes its announcement to the room's channel, and the timer is (dis)armed on the same
pipeline (the timer set has a slot of its own)."""

from __future__ import annotations

import time

from signaling.state.models import now_ms
from signaling.state.redis.delivery import RedisDelivery
from signaling.state.redis.link import RedisLink
from signaling.state.redis.timers import RedisTimers
from signaling.state.typing_indicators import (
    TYPING_TIMER,
    Announce,
    Announcement,
    TypingStore,
)


class RedisTyping(TypingStore):
    def __init__(self, link: RedisLink, timers: RedisTimers, delivery: RedisDelivery) -> None:
        self.link = link
        self.timers = timers
        self.delivery = delivery

    def _publication(self, room_id: str, announcement: Announcement | None) -> list[str | bytes]:
        if announcement is None:
            return ["", b"", ""]
        return [
            self.link.keys.room_channel(room_id),
            self.delivery.room_message(room_id, announcement.frame, announcement.exclude_user),
            self.link.publish_command,
        ]

    async def start(
        self,
        room_id: str,
        user_id: str,
        conn_id: str,
        name: str,
        timeout: float,
        throttle: float,
        announcement: Announcement | None = None,
    ) -> Announce:
        started = time.perf_counter()
        args = [
            user_id,
            conn_id,
            name,
            now_ms(),
            int(timeout * 1000),
            int(throttle * 1000),
            *self._publication(room_id, announcement),
        ]
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=False) as pipe:
                await self.link.run("TYPING_START", [self.link.keys.typing(room_id)], args, pipe)
                self.timers.queue_arm(pipe, TYPING_TIMER, [room_id, user_id], timeout)
                (announce, receivers), _ = await pipe.execute()
        if not announce:
            return Announce.NONE
        if announcement is None:
            return Announce.NEEDED
        self.delivery.metrics.observe(announcement.type_, started, int(receivers))
        return Announce.SENT

    async def stop_announced(
        self, room_id: str, user_id: str, announcement: Announcement
    ) -> Announce:
        started = time.perf_counter()
        args = [user_id, "", *self._publication(room_id, announcement)]
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=False) as pipe:
                await self.link.run("TYPING_STOP", [self.link.keys.typing(room_id)], args, pipe)
                # Whoever owned the state, it is gone now: so is its expiry.
                self.timers.queue_disarm(pipe, TYPING_TIMER, [room_id, user_id])
                name, _ = await pipe.execute()
        if not name:
            return Announce.NONE
        self.delivery.metrics.observe(announcement.type_, started, 1)
        return Announce.SENT

    async def stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        async with self.link.shared():
            name = await self.link.run(
                "TYPING_STOP",
                [self.link.keys.typing(room_id)],
                [user_id, conn_id or "", *self._publication(room_id, None)],
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
