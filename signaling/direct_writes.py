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
an iteration with at most one: a quiet loop writes directly, a busy one coalesces.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Iterable
from typing import Any, Protocol

try:
    from signaling._fanout import broadcast as _broadcast
    from signaling._fanout import direct_written as _direct_written
except ImportError:  # built without a compiler: every broadcast goes through the outboxes
    _broadcast = _direct_written = None

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


class RoomPlan:
    """One room's recipients on this node, as the compiled broadcast reads them.

    Built when the room is first broadcast to after its membership changed; the
    delivery drops it on every join and leave. A recipient that is not direct now but may
    become so (a Socket.IO client still polling, which upgrades to a WebSocket) makes the
    plan stale once it has a descriptor, so the next broadcast rebuilds it.
    """

    __slots__ = ("fds", "kinds", "others", "reps", "socks", "waiting", "wires")

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
        for socket in members:
            kind = getattr(socket, "direct_kind", None)
            if kind is None:
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

    def write(self, frame: bytes, skip: tuple[Any, ...]) -> int:
        """Write ``frame`` to every recipient but those in ``skip``; returns how many."""
        frames = tuple(None if rep is None else rep.direct_frame(frame) for rep in self.reps)
        assert _broadcast is not None
        sent, fallback, error = _broadcast(
            self.fds, self.kinds, self.socks, self.wires, frames, skip
        )
        socks = self.socks
        for index in fallback:
            if socks[index].send_frame(frame):
                sent += 1
        for socket in self.others:
            if socket not in skip and socket.send_frame(frame):
                sent += 1
        if error is not None:  # every recipient was written first: report it now
            raise error
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
