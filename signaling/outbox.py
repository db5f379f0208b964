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

The same loop is compiled (``signaling/_fanout.c``, setting ``compiled_fanout``): there,
an outbox whose transport is a plain TCP socket with nothing buffered is written with one
``send`` on its descriptor (:func:`direct_fd`), and what the socket does not take goes to
the transport as here. Without the module (no compiler at install) this loop runs.

With ``fanout_io_uring`` (the default) the compiled loop submits those sends together:
one ``io_uring_enter`` for all of an iteration's direct sends instead of one system call
each (``signaling/_uring.c`` says why and what it saves). Each send is non-blocking and has
run when the call returns, so what a socket did not take goes to its transport just the
same. Where io_uring is refused (an old kernel, a container's seccomp filter) the sends
are made one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from signaling import direct_writes

try:
    from signaling._fanout import io_uring_parked as _io_uring_parked
    from signaling._fanout import io_uring_ready as _io_uring_ready
    from signaling._fanout import write_out as compiled_write_out
    from signaling._fanout import write_out_batched as batched_write_out
except ImportError:  # built without a compiler: the loop below does the same
    compiled_write_out = batched_write_out = _io_uring_ready = _io_uring_parked = None

#: The compiled loop is there (built at install).
COMPILED_FANOUT = compiled_write_out is not None


def io_uring_ready() -> bool:
    """Whether this process can submit the compiled loop's sends through io_uring (the
    ring is set up by the first call)."""
    return _io_uring_ready is not None and _io_uring_ready()


def io_uring_parked() -> int:
    """Sends io_uring took without finishing them at once, in this process (each was
    cancelled and sent directly; none is expected: see ``signaling/_uring.c``)."""
    return _io_uring_parked() if _io_uring_parked is not None else 0


class Outbox(Protocol):
    """What the batcher needs of a connection (a ``/ws`` client or an Engine.IO session)."""

    #: Frames queued this iteration, in order; the batcher empties the list (in place,
    #: the same list object stays) when it writes them.
    frames: list[bytes]
    closed: bool
    send_buffer_limit: int
    #: The descriptor of ``wire``'s socket when the compiled loop may write to it
    #: directly (:func:`direct_fd`), else -1.
    wire_fd: int

    @property
    def wire(self) -> asyncio.Transport | None:
        """The transport to write to (``None`` while an Engine.IO session is polling)."""

    def transport_lost(self) -> None:
        """The transport is closing: stop writing (the reader's cleanup follows)."""

    def too_slow(self) -> None:
        """More than ``send_buffer_limit`` bytes wait unread: drop the peer."""


def direct_fd(transport: asyncio.BaseTransport | None) -> int:
    """The socket descriptor under ``transport`` if it is uvloop's plain TCP transport
    (nothing between its buffer and the socket: no TLS), else -1. Written to directly
    only while the transport buffers nothing, so every byte it was given went first."""
    if transport is None or type(transport).__module__ != "uvloop.loop":
        return -1
    if type(transport).__name__ != "TCPTransport":
        return -1
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None else -1


class WriteBatcher:
    """Coalesces the frames queued for each outbox during one loop iteration."""

    __slots__ = ("_dirty", "_scheduled", "_write")

    def __init__(self, compiled: bool = True, io_uring: bool = True) -> None:
        self._dirty: list[Outbox] = []
        self._scheduled = False
        self._write: Callable[[Iterable[Outbox]], None] = write_out
        if compiled and compiled_write_out is not None:
            self._write = compiled_write_out
            if io_uring and batched_write_out is not None and io_uring_ready():
                self._write = batched_write_out

    @property
    def compiled(self) -> bool:
        return self._write is not write_out

    @property
    def io_uring(self) -> bool:
        """The direct sends of a flush go out in one io_uring submission."""
        return self._write is batched_write_out

    def mark(self, box: Outbox) -> None:
        """``box`` got its first frame of this iteration."""
        self._dirty.append(box)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def mark_all(self, boxes: list[Outbox]) -> None:
        """Each of ``boxes`` got its first frame of this iteration (a room's broadcast
        queued in one compiled call: :meth:`signaling.direct_writes.RoomPlan.queue`)."""
        self._dirty.extend(boxes)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        self._write(dirty)


class WriteMetrics(Collector):
    """How a node writes to clients, for its ``/metrics``: whether a flush's sends go out
    in one io_uring submission (an operator whose container refuses io_uring sees 0
    here, as well as the warning at start), and how many sends the kernel parked."""

    def __init__(self, batcher: WriteBatcher) -> None:
        self.batcher = batcher

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "switchboard_fanout_io_uring",
            "1 when a flush's sends to clients go out in one io_uring submission, "
            "0 when each is a system call of its own",
            value=int(self.batcher.io_uring),
        )
        yield CounterMetricFamily(
            "switchboard_fanout_io_uring_parked",
            "Sends io_uring took without finishing them at once "
            "(each cancelled and sent directly; none expected)",
            value=io_uring_parked(),
        )
        yield CounterMetricFamily(
            "switchboard_fanout_direct_writes",
            "Room broadcast deliveries written at once, without the outboxes "
            "(signaling/direct_writes.py: a quiet loop, a recipient with nothing queued)",
            value=direct_writes.written(),
        )


def write_out(boxes: Iterable[Outbox]) -> None:
    """Write each outbox's queued frames in one call (also used to flush one box before a
    close, so an error explaining the close arrives first)."""
    for box in boxes:
        frames = box.frames
        if not frames:
            continue
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        frames.clear()
        wire = box.wire
        if box.closed or wire is None:
            continue
        if wire.is_closing():
            box.transport_lost()
            continue
        wire.write(data)
        if wire.get_write_buffer_size() > box.send_buffer_limit:
            box.too_slow()
