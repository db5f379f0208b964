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

The queueing side of a broadcast, :func:`queue_frame`, is compiled the same way: a room's
fan-out queues one frame on fifty outboxes, and in Python the loop with a method call per
recipient cost about as much as everything else the node does per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

try:
    from signaling._fanout import queue_frame as compiled_queue_frame
    from signaling._fanout import write_out as compiled_write_out
except ImportError:  # built without a compiler: the loops below do the same
    compiled_queue_frame = None
    compiled_write_out = None

#: The compiled loop is there (built at install).
COMPILED_FANOUT = compiled_write_out is not None


class Outbox(Protocol):
    """What the batcher needs of a connection (a ``/ws`` client or an Engine.IO session)."""

    #: Frames queued this iteration, in order; the batcher takes the list and leaves an
    #: empty one.
    frames: list[bytes]
    closed: bool
    send_buffer_limit: int
    #: The descriptor of ``wire``'s socket when the compiled loop may write to it
    #: directly (:func:`direct_fd`), else -1.
    wire_fd: int
    #: Where the outbox is marked when it gets its first frame of an iteration.
    batcher: WriteBatcher

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


class Encoder(Protocol):
    """A recipient's own form of a broadcast (a Socket.IO packet for a hub frame)."""

    def frame_for(self, frame: bytes) -> bytes:
        """The frame to queue instead of ``frame``; the same object for the same
        ``frame`` in a row, so a broadcast is translated once, not per recipient."""


class Recipient(Protocol):
    """What :func:`queue_frame` needs of a connection of a room's fan-out."""

    closed: bool
    #: The outbox its frames are queued on directly, or ``None`` when they must go
    #: through :meth:`send_frame` (an Engine.IO session that is polling, a session
    #: keeping what it was sent for recovery).
    outbox: Outbox | None
    #: ``None``: the frame is queued as it is.
    encoder: Encoder | None

    @property
    def user_id(self) -> str: ...

    def send_frame(self, frame: bytes) -> bool:
        """Queue ``frame`` the slow way; ``False`` if the connection is gone."""


def queue_frame(targets: Iterable[Recipient], frame: bytes, exclude_user: str | None) -> int:
    """Queue ``frame`` for every target but ``exclude_user``'s; the number queued.

    What a connection's ``send_frame`` does, without the call per recipient: an outbox
    that is closed is skipped; one whose transport is closing is found by the flush
    later in the same iteration (``transport_lost``), so it is counted here."""
    sent = 0
    last_encoder: Encoder | None = None
    encoded = frame
    for socket in targets:
        if socket.user_id == exclude_user:
            continue
        box = socket.outbox
        if box is None or box.wire is None:
            if socket.send_frame(frame):
                sent += 1
            continue
        if box.closed or socket.closed:
            continue
        encoder = socket.encoder
        if encoder is None:
            data = frame
        else:
            if encoder is not last_encoder:
                last_encoder, encoded = encoder, encoder.frame_for(frame)
            data = encoded
        frames = box.frames
        frames.append(data)
        if len(frames) == 1:
            box.batcher.mark(box)
        sent += 1
    return sent


class WriteBatcher:
    """Coalesces the frames queued for each outbox during one loop iteration."""

    __slots__ = ("_write", "dirty", "scheduled")

    def __init__(self, compiled: bool = True) -> None:
        #: Outboxes with frames queued this iteration (the compiled queueing appends here
        #: and calls :meth:`schedule` itself).
        self.dirty: list[Outbox] = []
        self.scheduled = False
        self._write: Callable[[Iterable[Outbox]], None] = (
            compiled_write_out if compiled and compiled_write_out is not None else write_out
        )

    @property
    def compiled(self) -> bool:
        return self._write is not write_out

    def mark(self, box: Outbox) -> None:
        """``box`` got its first frame of this iteration."""
        self.dirty.append(box)
        if not self.scheduled:
            self.schedule()

    def schedule(self) -> None:
        """Flush at the end of this loop iteration."""
        self.scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        self._write(dirty)


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
