"""Timers on this node's event loop (one node: the node that armed a timer fires it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from signaling.state.handler import Reports
from signaling.state.timers import TimerStore, timer_key


class MemoryTimers(TimerStore):
    def __init__(self, reports: Reports) -> None:
        self._reports = reports
        self._pending: dict[str, asyncio.TimerHandle] = {}

    async def arm(self, kind: str, parts: Sequence[str], delay: float) -> None:
        key = timer_key(kind, parts)
        previous = self._pending.pop(key, None)
        if previous is not None:
            previous.cancel()
        self._pending[key] = asyncio.get_running_loop().call_later(
            delay, self._due, key, kind, list(parts)
        )

    async def disarm(self, kind: str, parts: Sequence[str]) -> None:
        handle = self._pending.pop(timer_key(kind, parts), None)
        if handle is not None:
            handle.cancel()

    def _due(self, key: str, kind: str, parts: list[str]) -> None:
        del self._pending[key]
        self._reports.timer_fired(kind, parts)

    def close(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
