"""Timers kept in the hub state, so the node that armed one need not be the one firing it.

A ring timeout armed on a node that then dies must still fire; with Redis the deadlines
live in a sorted set and whichever node claims a due entry runs it (exactly one does).
Handlers must therefore re-check the state they act on: a timer says "look now", not
"this is still true".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from signaling.state import HubState

log = logging.getLogger("switchboard.timers")

TimerHandler = Callable[..., Awaitable[None]]


class TimerService:
    def __init__(self, state: HubState, tick: float = 0.05) -> None:
        self.state = state
        self.tick = tick
        self._handlers: dict[str, TimerHandler] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def on(self, kind: str, handler: TimerHandler) -> None:
        """``handler(*parts)`` runs when a timer armed as ``(kind, *parts)`` fires."""
        self._handlers[kind] = handler

    @staticmethod
    def key(kind: str, *parts: str) -> str:
        # JSON keeps arbitrary ids (user ids may hold any character) unambiguous.
        return orjson.dumps([kind, *parts]).decode()

    async def arm(self, delay: float, kind: str, *parts: str) -> None:
        await self.state.arm_timer(self.key(kind, *parts), delay)

    async def disarm(self, kind: str, *parts: str) -> None:
        await self.state.disarm_timer(self.key(kind, *parts))

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="timers")

    async def stop(self) -> None:
        tasks = [*self._running, *([self._loop_task] if self._loop_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                keys = await self.state.claim_due_timers()
            except Exception as exc:  # the store is away: timers wait, they are not lost
                log.debug("timer claim failed: %s", exc)
                continue
            for key in keys:
                task = asyncio.create_task(self._fire(key))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _fire(self, key: str) -> None:
        try:
            kind, *parts = orjson.loads(key)
            handler = self._handlers[kind]
        except (orjson.JSONDecodeError, ValueError, KeyError):
            log.warning("dropping unknown timer %r", key[:200])
            return
        try:
            await handler(*parts)
        except Exception:
            log.exception("timer %s failed", kind)
