"""Typing state in Redis: a hash per room (user -> ``expires_ms|conn|name``); the expiry is
an entry in the shared timer set, armed in the same round trip as the state.

Keystrokes are the hottest path a chat room has, so a device's start and stop are plain
commands in one round trip, no script, and on one Redis without redis-py's pipeline
(``RedisLink.batch``; the pipeline was a third of the change's CPU on the node). A Lua call
costs Redis 13 to 15 µs before its first command (an idle ``return 1``, measured on Redis
7.0 with the core busy elsewhere between calls), more than the commands themselves. A
script could decide in Redis whether a change is announced (a start, or a repeat past the
throttle; a stop that ended something); here the node decides from what it announced
itself (:class:`_Said`), and Redis's replies correct it where that view was short:

- a start this node thinks throttled that Redis reports new (the state ended elsewhere
  meanwhile) is announced after all, in a second round trip;
- a stop of a state this node never announced (another node's device started it) runs the
  owner-free stop script, which announces only what it really ended.

What that costs in exactness: a user typing on two devices at once on two nodes may be
announced once per node per throttle window instead of once per window, and a stop that
another node's device (or the expiry) got to first may announce the end a second time.
Both are repeats of the truth, never a missed start or end. The view also covers part of
what Redis forgets: a state lost with a Redis that restarted empty still has its end
announced by its device's stop, and by its expiry where the node that announced it is the
one that claims the timer (the nodes put their timers back). The rare paths (a device
leaving, the expiry) keep their scripts: they must check the owner or the deadline and
change the state in one step.

On one Redis the commands of a start or a stop go over already in RESP (:mod:`.resp`):
encoded once per room and user (and per announcement), with only the deadline appended
per keystroke. They go over the bus's connection, which hears the announcement too (the
node is subscribed to the room's channel while the typist's device is in it): Redis
writes the replies and the node's copy of the announcement at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from signaling.state.models import now_ms
from signaling.state.redis.delivery import RedisDelivery
from signaling.state.redis.link import RedisLink
from signaling.state.redis.resp import bulk, command, head
from signaling.state.redis.timers import RedisTimers
from signaling.state.timers import timer_key
from signaling.state.typing_indicators import (
    TYPING_TIMER,
    Announce,
    Announcement,
    TypingStore,
)

#: Past this many (room, user) pairs or announcements the encoded commands are dropped
#: and built again as they come (a bound on memory, not an eviction policy).
WIRE_CACHE = 1 << 14


@dataclass(slots=True)
class _Said:
    """This node announced ``(room, user)`` typing as ``name`` at ``at``; the state it
    armed runs out at ``until`` unless refreshed (both ``time.monotonic``)."""

    name: str
    at: float
    until: float


@dataclass(slots=True)
class _Wire:
    """A (room, user)'s typing commands in RESP, but for what changes per keystroke."""

    #: ``HSET <typing hash> <user>``: the state's value follows.
    hset: bytes
    #: ``ZADD <timers>``: the due time and :attr:`member` follow.
    zadd: bytes
    #: The timer's key (as the timer store notes it) and as the ``ZADD``'s last argument.
    timer: str
    member: bytes
    #: The stop's two commands, whole.
    hdel: bytes
    zrem: bytes


class RedisTyping(TypingStore):
    def __init__(self, link: RedisLink, timers: RedisTimers, delivery: RedisDelivery) -> None:
        self.link = link
        self.timers = timers
        self.delivery = delivery
        self._said: dict[tuple[str, str], _Said] = {}
        self._next_sweep = 0.0
        self._wires: dict[tuple[str, str], _Wire] = {}
        self._publishes: dict[tuple[str, Announcement], bytes] = {}

    def _wire(self, room_id: str, user_id: str) -> _Wire:
        wire = self._wires.get((room_id, user_id))
        if wire is None:
            if len(self._wires) >= WIRE_CACHE:
                self._wires.clear()
            keys = self.link.keys
            typing, timers = keys.typing(room_id), keys.timers
            timer = timer_key(TYPING_TIMER, [room_id, user_id])
            wire = self._wires[(room_id, user_id)] = _Wire(
                hset=head(4, "HSET", typing, user_id),
                zadd=head(4, "ZADD", timers),
                timer=timer,
                member=bulk(timer),
                hdel=command("HDEL", typing, user_id),
                zrem=command("ZREM", timers, timer),
            )
        return wire

    def _publish_wire(self, room_id: str, announcement: Announcement) -> bytes:
        """The ``PUBLISH`` of ``announcement`` to the room, in RESP (the service hands
        the same announcement for the same change: encoded once)."""
        wire = self._publishes.get((room_id, announcement))
        if wire is None:
            if len(self._publishes) >= WIRE_CACHE:
                self._publishes.clear()
            channel, message, publish = self._publication(room_id, announcement)
            wire = self._publishes[(room_id, announcement)] = command(publish, channel, message)
        return wire

    def _publication(self, room_id: str, announcement: Announcement | None) -> list[str | bytes]:
        if announcement is None:
            return ["", b"", ""]
        return [
            self.link.keys.room_channel(room_id),
            self.delivery.room_message(room_id, announcement.frame, announcement.exclude_user),
            self.link.publish_command,
        ]

    def _sweep(self, now: float, timeout: float) -> None:
        """Forget what ran out a ``timeout`` ago (its expiry has been handled by whichever
        node claimed its timer), at most once per ``timeout``: the view holds only states
        that may still be live or whose timer may still be on its way."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + timeout
        self._said = {k: s for k, s in self._said.items() if s.until + timeout > now}

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
        started, now = time.perf_counter(), time.monotonic()
        self._sweep(now, timeout)
        said = self._said.get((room_id, user_id))
        announce = said is None or said.until <= now or now - said.at >= throttle
        due = now_ms() + int(timeout * 1000)
        value = f"{due}|{conn_id}|{name}"
        publish = announce and announcement is not None
        link = self.link
        if link.packs:
            wire = self._wire(room_id, user_id)
            payload = wire.hset + bulk(value) + wire.zadd + bulk(due) + wire.member
            if publish:
                payload += self._publish_wire(room_id, announcement)  # type: ignore[arg-type]
            self.timers.armed_with(wire.timer, due)
            replies = await link.shared_packed(
                payload, 3 if publish else 2, deferrable=True, via=self.delivery.bus.packed
            )
        else:
            async with link.shared():
                commands: list[tuple[Any, ...]] = [
                    ("HSET", link.keys.typing(room_id), user_id, value),
                    self.timers.arm_command(TYPING_TIMER, [room_id, user_id], timeout),
                ]
                if publish:
                    channel, message, command_ = self._publication(room_id, announcement)
                    commands.append((command_, channel, message))
                replies = await link.batch(commands, deferrable=True)
        if said is not None and not announce and replies[0] != 1:
            said.until = now + timeout  # a repeat inside the throttle
            return Announce.NONE
        # A start, a repeat past the throttle, or new to Redis while this node thought it
        # live (then announced now, not with the change).
        self._said[(room_id, user_id)] = _Said(name, now, now + timeout)
        if announcement is None:
            return Announce.NEEDED
        if announce:
            receivers = replies[2]
        else:
            channel, message, command_ = self._publication(room_id, announcement)
            async with link.shared():
                receivers = await link.client.execute_command(command_, channel, message)
        self.delivery.metrics.observe(announcement.type_, started, int(receivers))
        return Announce.SENT

    async def stop_announced(
        self, room_id: str, user_id: str, announcement: Announcement
    ) -> Announce:
        started, now = time.perf_counter(), time.monotonic()
        said = self._said.pop((room_id, user_id), None)
        live = said is not None and said.until > now  # announced here, not run out
        link = self.link
        if live and link.packs:
            # Whoever owned the state, it is gone now: so is its expiry.
            wire = self._wire(room_id, user_id)
            self.timers.disarmed_with(wire.timer)
            payload = wire.hdel + self._publish_wire(room_id, announcement) + wire.zrem
            await link.shared_packed(payload, 3, deferrable=True, via=self.delivery.bus.packed)
            self.delivery.metrics.observe(announcement.type_, started, 1)
            return Announce.SENT
        key = link.keys.typing(room_id)
        channel, message, publish = self._publication(room_id, announcement)
        async with link.shared():
            disarm = self.timers.disarm_command(TYPING_TIMER, [room_id, user_id])  # as above
            if live:
                commands = [("HDEL", key, user_id), (publish, channel, message), disarm]
                replies = await link.batch(commands, deferrable=True)
            else:  # announce only what Redis really ends
                async with self.link.pipeline(deferrable=True) as pipe:
                    args = [user_id, "", channel, message, publish]
                    await self.link.run("TYPING_STOP", [key], args, pipe)
                    pipe.execute_command(*disarm)
                    replies = await pipe.execute()
        if not live and not replies[0]:
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
        self._said.pop((room_id, user_id), None)
        await self.timers.disarm(TYPING_TIMER, [room_id, user_id])
        return name.decode()

    async def expire(self, room_id: str, user_id: str) -> str | None:
        async with self.link.shared():
            found = await self.link.run(
                "TYPING_EXPIRE", [self.link.keys.typing(room_id)], [user_id, now_ms()]
            )
        if found[0] == 2:
            await self.timers.arm(TYPING_TIMER, [room_id, user_id], int(found[1]) / 1000)
            return None
        said = self._said.pop((room_id, user_id), None)
        if found[0] == 1:
            return found[1].decode()
        # Gone before its time: ended elsewhere (its end was announced there: this is a
        # repeat), or lost with a Redis that restarted empty (the nodes put their timers
        # back, not the states). Announced if this node announced the start, so that
        # nobody is left shown typing.
        return said.name if said is not None else None
