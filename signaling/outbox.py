"""Writing to clients without waiting on them.

A broadcast only queues its frame on each recipient's :class:`Outbox`; the
:class:`WriteBatcher` writes every outbox filled during a loop iteration at the end of it,
in one ``transport.write`` each. Under fan-out load a receiver gets several frames per
iteration and they cost one system call; with light load the batch costs one extra
``call_soon`` per iteration, not per frame.

The batcher is the one place that writes queued frames (the *sending*, kept apart from the
deciding in the hub and the encoding in the protocols), so it is written for the hot path:
one Python loop over the outboxes, no method call per recipient unless something is wrong
(a transport that closed, a peer that stopped reading).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol


class Outbox(Protocol):
    """What the batcher needs of a connection (a ``/ws`` client or an Engine.IO session)."""

    #: Frames queued this iteration, in order; the batcher takes the list and leaves an
    #: empty one.
    frames: list[bytes]
    closed: bool
    send_buffer_limit: int

    @property
    def wire(self) -> asyncio.Transport | None:
        """The transport to write to (``None`` while an Engine.IO session is polling)."""

    def transport_lost(self) -> None:
        """The transport is closing: stop writing (the reader's cleanup follows)."""

    def too_slow(self) -> None:
        """More than ``send_buffer_limit`` bytes wait unread: drop the peer."""


class WriteBatcher:
    """Coalesces the frames queued for each outbox during one loop iteration."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Outbox] = []
        self._scheduled = False

    def mark(self, box: Outbox) -> None:
        """``box`` got its first frame of this iteration."""
        self._dirty.append(box)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        write_out(dirty)


def write_out(boxes: Iterable[Outbox]) -> None:
    """Write each outbox's queued frames in one call (also used to flush one box before a
    close, so an error explaining the close arrives first)."""
    for box in boxes:
        frames = box.frames
        if not frames:
            continue
        box.frames = []
        wire = box.wire
        if box.closed or wire is None:
            continue
        if wire.is_closing():
            box.transport_lost()
            continue
        wire.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if wire.get_write_buffer_size() > box.send_buffer_limit:
            box.too_slow()
