"""Counting event-loop iterations: on a busy node each one carries other work (on a media
node, milliseconds of packets), so how many a step takes is what its latency is made of."""

from __future__ import annotations

import asyncio


class Turns:
    """Counts event-loop iterations while it runs."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.Handle | None = None

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def __enter__(self) -> Turns:
        self._handle = asyncio.get_running_loop().call_soon(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.cancel()
