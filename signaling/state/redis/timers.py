"""Timers in Redis: a sorted set of timer keys by due time (epoch ms). Nodes poll it and
claim due entries with one script (run only when a plain read finds some due), so each
timer is reported by exactly one node, the one that armed it or any other. The node
remembers the timers it armed, to put them back if Redis restarts empty.

A node asks Redis when a timer it armed itself is due (checked every
:data:`POLL_INTERVAL`, against its own record: no round trip) and otherwise once every
:data:`IDLE_POLL`, for the timers no live node looks after (armed by a node that died).
Asking every 50 ms whatever the state cost each node 20 round trips a second, and Redis
as many wake-ups per node, idle or not; under a keystroke load they were a tenth of
Redis's reads. What that costs: a timer whose node died fires up to a second late.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Sequence
from typing import Any

from signaling.background import cancel_and_wait
from signaling.state.handler import Reports
from signaling.state.models import now_ms
from signaling.state.redis.link import RedisLink
from signaling.state.timers import TimerStore, parse_timer_key, timer_key

log = logging.getLogger("switchboard.redis")

#: How late a timer armed by this node may fire.
POLL_INTERVAL = 0.05
#: How late a timer armed by a node gone since may fire.
IDLE_POLL = 1.0
CLAIM_LIMIT = 100
#: Timers overdue by more than this when Redis comes back are not put back.
REPUBLISH_HORIZON_MS = 60_000


class RedisTimers(TimerStore):
    def __init__(self, link: RedisLink, reports: Reports) -> None:
        self.link = link
        self._reports = reports
        self._armed: dict[str, int] = {}  # this node's timers: key -> due (epoch ms)
        #: ``(due, key)`` as armed here, earliest first; an entry whose key was re-armed
        #: or disarmed since no longer matches ``_armed`` and is dropped when due.
        self._dues: list[tuple[int, str]] = []
        #: Redis is to be asked at the next tick (a claim failed or hit its limit).
        self._again = False
        self._poller: asyncio.Task[None] | None = None

    def _note(self, key: str, due: int) -> None:
        self._armed[key] = due
        heapq.heappush(self._dues, (due, key))
        if len(self._dues) > 4 * len(self._armed) + 1024:  # mostly re-armed or disarmed
            self._dues = [(at, k) for k, at in self._armed.items()]
            heapq.heapify(self._dues)

    async def arm(self, kind: str, parts: Sequence[str], delay: float) -> None:
        command = self.arm_command(kind, parts, delay)
        if self.link.online:
            with self.link.or_local():
                await self.link.client.execute_command(*command)

    def arm_command(self, kind: str, parts: Sequence[str], delay: float) -> tuple[Any, ...]:
        """The command arming a timer, for another store's round trip (typing's start
        sends it with the state it expires)."""
        key, due = timer_key(kind, parts), now_ms() + int(delay * 1000)
        self._note(key, due)
        return ("ZADD", self.link.keys.timers, due, key)

    def disarm_command(self, kind: str, parts: Sequence[str]) -> tuple[Any, ...]:
        key = timer_key(kind, parts)
        self._armed.pop(key, None)
        return ("ZREM", self.link.keys.timers, key)

    def armed_with(self, key: str, due: int) -> None:
        """Another store armed timer ``key`` in a round trip of its own, with the command
        built by itself (typing's start in RESP built ahead: :mod:`.resp`); noted, to be put
        back if Redis restarts empty."""
        self._note(key, due)

    def disarmed_with(self, key: str) -> None:
        """Another store disarmed timer ``key`` in a round trip of its own."""
        self._armed.pop(key, None)

    async def disarm_all(self, timers: Sequence[tuple[str, Sequence[str]]]) -> None:
        keys = [timer_key(kind, parts) for kind, parts in timers]
        for key in keys:
            self._armed.pop(key, None)
        if keys and self.link.online:
            with self.link.or_local():
                await self.link.client.zrem(self.link.keys.timers, *keys)

    async def disarm(self, kind: str, parts: Sequence[str]) -> None:
        await self.disarm_all([(kind, parts)])

    # -- firing ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name="redis-timers")

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        await cancel_and_wait(poller)

    def _due_here(self, now: int) -> bool:
        """Whether a timer this node armed (and did not re-arm or disarm since) is due."""
        dues, armed, due = self._dues, self._armed, False
        while dues and dues[0][0] <= now:
            at, key = heapq.heappop(dues)
            due = due or armed.get(key) == at
        return due

    async def _poll(self) -> None:
        idle_until = 0.0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            here = self._due_here(now_ms())
            if not (here or self._again) and time.monotonic() < idle_until:
                continue
            idle_until, self._again = time.monotonic() + IDLE_POLL, True
            try:
                due = await self._claim()
            except Exception as exc:  # Redis away: timers wait, they are not lost
                log.debug("timer claim failed: %s", exc)
                continue
            self._again = len(due) >= CLAIM_LIMIT  # more may be due: ask again
            for key in due:
                try:
                    kind, parts = parse_timer_key(key)
                except ValueError:
                    log.warning("dropping unknown timer %r", key[:200])
                    continue
                self._reports.timer_fired(kind, parts)

    async def _claim(self) -> list[str]:
        """Claim the due timers. A poll first only looks (a plain read): most polls find
        nothing due, and a script, woken for one request on a busy CPU, costs Redis ten
        times a plain command (47 against 4-8 us, ``benchmarks/README.md``)."""
        timers, now = self.link.keys.timers, now_ms()
        async with self.link.shared():
            if not await self.link.client.zrangebyscore(timers, "-inf", now, start=0, num=1):
                return []
            due = await self.link.run("CLAIM_TIMERS", [timers], [now, CLAIM_LIMIT])
        keys = [k.decode() for k in due]
        for key in keys:
            self._armed.pop(key, None)
        return keys

    def republish(self, pipe: Any) -> None:
        """Queue this node's timers on ``pipe``. Timers another node already fired may
        come back; their handlers re-check the state, so a second firing does nothing."""
        horizon = now_ms() - REPUBLISH_HORIZON_MS
        self._again = True  # some may be due already
        for key, due in list(self._armed.items()):
            if due < horizon:
                del self._armed[key]
            else:
                pipe.zadd(self.link.keys.timers, {key: due}, nx=True)
