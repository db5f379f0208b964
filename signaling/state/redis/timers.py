"""Timers in Redis: a sorted set of timer keys by due time (epoch ms). Every node polls it
and claims due entries with one script (run only when a plain read finds some due), so
each timer is reported by exactly one node, the one that armed it or any other. The node
remembers the timers it armed, to put them back if Redis restarts empty."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from signaling.background import cancel_and_wait
from signaling.state.handler import Reports
from signaling.state.models import now_ms
from signaling.state.redis.link import RedisLink
from signaling.state.timers import TimerStore, parse_timer_key, timer_key

log = logging.getLogger("switchboard.redis")

POLL_INTERVAL = 0.05
CLAIM_LIMIT = 100
#: Timers overdue by more than this when Redis comes back are not put back.
REPUBLISH_HORIZON_MS = 60_000


class RedisTimers(TimerStore):
    def __init__(self, link: RedisLink, reports: Reports) -> None:
        self.link = link
        self._reports = reports
        self._armed: dict[str, int] = {}  # this node's timers: key -> due (epoch ms)
        self._poller: asyncio.Task[None] | None = None

    async def arm(self, kind: str, parts: Sequence[str], delay: float) -> None:
        command = self.arm_command(kind, parts, delay)
        if self.link.online:
            with self.link.or_local():
                await self.link.client.execute_command(*command)

    def arm_command(self, kind: str, parts: Sequence[str], delay: float) -> tuple[Any, ...]:
        """The command arming a timer, for another store's round trip (typing's start
        sends it with the state it expires)."""
        key, due = timer_key(kind, parts), now_ms() + int(delay * 1000)
        self._armed[key] = due
        return ("ZADD", self.link.keys.timers, due, key)

    def disarm_command(self, kind: str, parts: Sequence[str]) -> tuple[Any, ...]:
        key = timer_key(kind, parts)
        self._armed.pop(key, None)
        return ("ZREM", self.link.keys.timers, key)

    def armed_with(self, key: str, due: int) -> None:
        """Another store armed timer ``key`` in a round trip of its own, with the command
        built by itself (typing's start in RESP built ahead: :mod:`.resp`); noted, to be put
        back if Redis restarts empty."""
        self._armed[key] = due

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

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                due = await self._claim()
            except Exception as exc:  # Redis away: timers wait, they are not lost
                log.debug("timer claim failed: %s", exc)
                continue
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
        for key, due in list(self._armed.items()):
            if due < horizon:
                del self._armed[key]
            else:
                pipe.zadd(self.link.keys.timers, {key: due}, nx=True)
