"""Writes to a subscriber whose transport is asynchronous (a TURN relay).

On a host socket a write is synchronous; on a TURN relay aioice's send is a coroutine. Each
such subscriber gets a bounded queue of its own, drained by its own task, so one subscriber
behind a slow relay delays nobody else and loses only its own packets (counted) when it
cannot keep up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine

log = logging.getLogger("switchboard.sfu")

#: Packets waiting for one subscriber's relayed transport before new ones are dropped:
#: about half a second of 720p video.
RELAY_QUEUE_LIMIT = 150


class RelayedWrites:
    """Sends one subscriber's packets through an asynchronous transport, in order, from
    its own task; at most ``limit`` wait, further ones are dropped and counted."""

    def __init__(self, limit: int = RELAY_QUEUE_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self._queue: deque[Awaitable[None]] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, pending: Awaitable[None]) -> None:
        if len(self._queue) >= self.limit:
            self.dropped += 1
            _discard(pending)
            return
        self._queue.append(pending)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            pending = self._queue.popleft()
            try:
                await pending
            except Exception as exc:  # the relay failed: ICE notices; later packets try again
                log.debug("relayed RTP write failed: %s", exc)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        while self._queue:
            _discard(self._queue.popleft())


def _discard(pending: Awaitable[None]) -> None:
    """Drop a write that will never run (a coroutine must be closed, not forgotten)."""
    if isinstance(pending, Coroutine):
        pending.close()
