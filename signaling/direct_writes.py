"""A room's broadcast written at once to the recipients that allow it, without an outbox.

Why: at the loads chat rooms see, a node's event loop is mostly idle and each recipient
gets about one frame per loop iteration. The outboxes (:mod:`signaling.outbox`) then
coalesce nothing, and queueing a frame on each of fifty connections (``send_frame``, the
batcher's ``mark``) and writing each outbox at the end of the iteration cost a Python
method call and several attribute reads per recipient: a tenth of a ``/socket.io/`` node's
CPU at 24.5k deliveries a second. A :class:`RoomPlan` keeps the room's descriptors, socket
objects and transports in flat lists, so one compiled call (``signaling._fanout``'s
``broadcast``) sends the frame to every recipient that may be written to now, in one
io_uring submission like a flush's.

A recipient may be written to at once only while nothing of its own waits: no frame in
its outbox, nothing buffered in its transport (where a send that fell short left the
rest), the transport not closing and the connection not closed; all four are asked of the
objects themselves, every time. Any other recipient gets the frame through ``send_frame``
as before, so the order of a connection's frames is the order they were sent in.

When the loop is busy, several broadcasts reach the same recipients in one iteration and
the outboxes join them into one send each; sending each broadcast at once would multiply
the sends (at 98k deliveries a second, a third fewer deliveries per CPU-second). The
:class:`BroadcastGate` sends at once only the first broadcast of an iteration that follows
an iteration with at most one: a quiet loop writes directly, a busy one coalesces. A
broadcast it holds back is still not a Python call per recipient: the plan hands it to the
compiled ``queue``, which appends the frame to each open recipient's outbox as
``send_frame`` would and gives the batcher, in one call, those that got their first frame
of the iteration; a closed or closing recipient is left to its ``send_frame``, which knows
what to do with it.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Iterable
from typing import Any, Protocol

try:
    from signaling._fanout import broadcast as _broadcast
    from signaling._fanout import direct_written as _direct_written
    from signaling._fanout import queue as _queue
except ImportError:  # built without a compiler: every broadcast goes through the outboxes
    _broadcast = _direct_written = _queue = None

#: The compiled call is there.
AVAILABLE = _broadcast is not None


def written() -> int:
    """Deliveries written at once in this process (the rest went through outboxes)."""
    return _direct_written() if _direct_written is not None else 0


class DirectSocket(Protocol):
    """What a plan needs of a recipient beyond ``send_frame`` (a ``/ws`` connection or a
    Socket.IO connection; a socket without ``direct_kind`` is always written through
    ``send_frame``)."""

    #: Which frame it takes (0 a hub frame, 1 a Socket.IO packet's), or ``None`` while
    #: it may not be written to directly (polling, recovery, no compiled flush).
    direct_kind: int | None
    #: Its socket's descriptor, or -1.
    wire_fd: int
    wire: asyncio.Transport | None
    closed: bool
    #: Its outbox: a broadcast is written at once only while it is empty.
    frames: list[bytes]

    def direct_frame(self, frame: bytes) -> bytes:
        """The bytes this kind of recipient is sent for a hub frame."""

    def send_frame(self, frame: bytes) -> bool: ...

    @property
    def batcher(self) -> Batcher:
        """Writes its outbox at the end of the loop iteration it was first queued in."""


class Batcher(Protocol):
    """What a plan needs of the batcher that writes its recipients' outboxes."""

    def mark_all(self, boxes: list[Any]) -> None:
        """Each of ``boxes`` got its first frame of this iteration."""


class RoomPlan:
    """One room's recipients on this node, as the compiled broadcast reads them.

    Built when the room is first broadcast to after its membership changed; the
    delivery drops it on every join and leave. A recipient that is not direct now but may
    become so (a Socket.IO client still polling, which upgrades to a WebSocket) makes the
    plan stale once it has a descriptor, so the next broadcast rebuilds it.
    """

    __slots__ = ("batcher", "fds", "kinds", "others", "reps", "socks", "waiting", "wires")

    def __init__(self, members: Iterable[Any]) -> None:
        self.fds = array("i")
        kinds = bytearray()
        self.socks: list[DirectSocket] = []
        self.wires: list[asyncio.Transport | None] = []
        #: Written through ``send_frame`` always (no ``direct_kind``) or for now.
        self.others: list[Any] = []
        #: The part of ``others`` that waits for a descriptor (Engine.IO sessions that
        #: are polling).
        self.waiting: list[Any] = []
        #: One recipient of each kind, to ask for that kind's bytes.
        self.reps: list[DirectSocket | None] = []
        #: The batcher of the plan's recipients (one per node: a recipient with another
        #: is written through ``send_frame``).
        self.batcher: Batcher | None = None
        for socket in members:
            kind = getattr(socket, "direct_kind", None)
            if kind is not None and self.batcher is None:
                self.batcher = socket.batcher
            if kind is None or socket.batcher is not self.batcher:
                self.others.append(socket)
                continue
            if socket.wire_fd < 0:  # not a plain TCP socket (TLS), or still polling
                self.others.append(socket)
                if socket.wire is None:
                    self.waiting.append(socket)
                continue
            while len(self.reps) <= kind:
                self.reps.append(None)
            if self.reps[kind] is None:
                self.reps[kind] = socket
            self.fds.append(socket.wire_fd)
            kinds.append(kind)
            self.socks.append(socket)
            self.wires.append(socket.wire)
        self.kinds = bytes(kinds)

    @property
    def stale(self) -> bool:
        """A recipient that was waiting has a descriptor now."""
        return bool(self.waiting) and any(socket.wire_fd >= 0 for socket in self.waiting)

    def _frames(self, frame: bytes) -> tuple[bytes | None, ...]:
        """The bytes each kind of recipient is sent for ``frame``."""
        reps = self.reps
        if len(reps) == 1:  # one kind (then never None): most rooms
            return (reps[0].direct_frame(frame),)  # type: ignore[union-attr]
        return tuple([None if rep is None else rep.direct_frame(frame) for rep in reps])

    def write(self, frame: bytes, skip: tuple[Any, ...]) -> int:
        """Write ``frame`` to every recipient but those in ``skip``; returns how many."""
        assert _broadcast is not None
        sent, fallback, error = _broadcast(
            self.fds, self.kinds, self.socks, self.wires, self._frames(frame), skip
        )
        if fallback or self.others:
            sent += self._rest(frame, skip, fallback)
        if error is not None:  # every recipient was written first: report it now
            raise error
        return sent

    def queue(self, frame: bytes, skip: tuple[Any, ...]) -> int:
        """Queue ``frame`` on the outbox of every recipient but those in ``skip``, as
        their ``send_frame`` would (the gate is closed: the batcher writes them at the end
        of the iteration), in one compiled call; returns how many."""
        assert _queue is not None
        marked: list[Any] = []
        queued, fallback = _queue(
            self.kinds, self.socks, self.wires, self._frames(frame), skip, marked
        )
        if marked:
            assert self.batcher is not None
            self.batcher.mark_all(marked)
        if fallback or self.others:
            queued += self._rest(frame, skip, fallback)
        return queued

    def _rest(self, frame: bytes, skip: tuple[Any, ...], fallback: list[int]) -> int:
        """``send_frame`` for the recipients the compiled call left (``fallback``, by
        index) and those it never takes."""
        sent = 0
        socks = self.socks
        for index in fallback:
            if socks[index].send_frame(frame):
                sent += 1
        for socket in self.others:
            if socket not in skip and socket.send_frame(frame):
                sent += 1
        return sent


class BroadcastGate:
    """Decides, per broadcast, between writing at once and the outboxes (the module's
    docstring says why): at once only for the first broadcast of a loop iteration, after
    an iteration that had at most one."""

    __slots__ = ("_last", "_scheduled", "_this")

    def __init__(self) -> None:
        self._this = 0
        self._last = 0
        self._scheduled = False

    def admit(self) -> bool:
        seen = self._this
        self._this = seen + 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._end)
        return seen == 0 and self._last <= 1

    def _end(self) -> None:
        """At the next iteration: note how many this one had. After a busy one, look
        again at the end of the next, so a quiet iteration (with none) opens the gate."""
        self._last, self._this = self._this, 0
        if self._last > 1:
            asyncio.get_running_loop().call_soon(self._end)
        else:
            self._scheduled = False
