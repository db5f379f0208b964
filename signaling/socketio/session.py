"""An Engine.IO session and the hub connection riding on it.

An :class:`EngineSession` is one Engine.IO client: its transport (HTTP long-polling, then
maybe WebSocket after an upgrade), the packets waiting for the next poll, and the
server's pings. Once the client's Socket.IO CONNECT is accepted, a :class:`SioConnection`
is the hub's connection for it: the same object the hub, the delivery and the services
use for a ``/ws`` client, writing Socket.IO packets instead of hub envelopes.

Writes never await, as on ``/ws``: on WebSocket they are queued and written once per
loop iteration; on polling they wait in a bounded queue for the client's next GET. A
client that stops reading either way is dropped, never buffered without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from signaling.outbox import direct_fd, write_out
from signaling.protocol import CloseCode, close_frame, text_frame
from signaling.socketio import packets as p
from signaling.websocket import Connection

if TYPE_CHECKING:
    from aiohttp import web

    from signaling.outbox import WriteBatcher
    from signaling.ratelimit import TokenBucket
    from signaling.socketio.packets import BroadcastTranslator, Mark
    from signaling.socketio.recovery_log import RecoveryLog
    from signaling.tokens import Principal

log = logging.getLogger("switchboard.socketio")

#: Close codes after which the client should not come back by itself: they end with a
#: Socket.IO DISCONNECT (socket.io-client's "io server disconnect" does not reconnect);
#: any other close ends the transport, and the client reconnects.
FINAL_CLOSES = frozenset({CloseCode.NORMAL, CloseCode.POLICY_VIOLATION})

#: Events answered, for clients of the replaced service that listen instead of using
#: acks, with an event carrying what the ack would (see docs/protocol.md, "Socket.IO").
COMPAT_REPLIES = {"call:initiate": "call:initiated"}
#: An internal request id marking a request whose reply is a compatibility event.
COMPAT_ID = "\x00compat"
#: Errors of these events (without an ack) are reported as ``call:error``.
CALL_EVENTS = ("call:", "media:", "screen:")


class EngineSession:
    """One Engine.IO client, whatever its transport."""

    __slots__ = (
        "_batcher",
        "_ping_timer",
        "_pong_timer",
        "_queue",
        "_queued_bytes",
        "_waiter",
        "closed",
        "conn",
        "frames",
        "goodbye",
        "handshake_token",
        "left",
        "lock",
        "on_closed",
        "ping_interval",
        "ping_timeout",
        "send_buffer_limit",
        "sid",
        "skip_binary",
        "transport",
        "wire",
        "wire_fd",
        "ws",
    )

    def __init__(
        self,
        sid: str,
        *,
        transport: str,
        ping_interval: float,
        ping_timeout: float,
        send_buffer_limit: int,
        batcher: WriteBatcher,
        handshake_token: str | None,
        on_closed: Callable[[EngineSession], None],
    ) -> None:
        self.sid = sid
        self.transport = transport
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.send_buffer_limit = send_buffer_limit
        self._batcher = batcher
        self.handshake_token = handshake_token
        self.on_closed = on_closed
        self.ws: web.WebSocketResponse | None = None
        #: The WebSocket's transport, once there is one (see :class:`Outbox`).
        self.wire: asyncio.Transport | None = None
        self.wire_fd = -1
        self.frames: list[bytes] = []
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.goodbye = False  # the client ended the session itself (close or DISCONNECT)
        self.left = False  # ... with a Socket.IO DISCONNECT: it will not resume it
        self.conn: SioConnection | None = None
        self.skip_binary = 0  # attachments of a refused binary packet still to come
        #: Packets of one client are handled one at a time, in order, across its POSTs and
        #: its WebSocket during an upgrade.
        self.lock = asyncio.Lock()
        self._schedule_ping()

    # -- writing -----------------------------------------------------------------------------

    def write(self, packet: bytes, ws_frame: bytes | None = None) -> bool:
        """Queue one Engine.IO packet; ``ws_frame`` is its pre-built WebSocket frame."""
        if self.closed:
            return False
        wire = self.wire
        if wire is not None:
            if wire.is_closing():
                self.close("transport close")
                return False
            frames = self.frames
            frames.append(ws_frame if ws_frame is not None else text_frame(packet))
            if len(frames) == 1:
                self._batcher.mark(self)
            return True
        self._queue.append(packet)
        self._queued_bytes += len(packet) + 1
        if self._queued_bytes > self.send_buffer_limit:
            self.abort(CloseCode.SLOW_CONSUMER, "slow consumer: poll queue limit exceeded")
            return False
        self._wake()
        return True

    def flush(self) -> None:
        """Write what was queued for the WebSocket now (before a close)."""
        write_out((self,))

    def transport_lost(self) -> None:
        """Found at a flush: the WebSocket is closing."""
        self.close("transport close")

    def too_slow(self) -> None:
        self.abort(CloseCode.SLOW_CONSUMER, "slow consumer: send buffer limit exceeded")

    async def poll(self) -> bytes:
        """A polling GET: everything queued, waiting for something if nothing is."""
        if not self._queue and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        body = p.SEPARATOR.join(self._queue)
        self._queue, self._queued_bytes = [], 0
        return body

    def _wake(self) -> None:
        """Answer the pending poll, if any (with what is queued)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def polling(self) -> bool:
        return self._waiter is not None

    def upgraded(self, ws: web.WebSocketResponse, raw: asyncio.Transport) -> None:
        """The WebSocket probe completed: packets go over it from now on, starting with
        those the client had not polled yet."""
        self.transport = "websocket"
        self.attach_websocket(ws, raw)
        queued, self._queue, self._queued_bytes = self._queue, [], 0
        for packet in queued:
            if packet != p.NOOP:
                self.write(packet)
        self._wake()

    def attach_websocket(self, ws: web.WebSocketResponse, raw: asyncio.Transport) -> None:
        self.ws, self.wire, self.wire_fd = ws, raw, direct_fd(raw)
        if self.conn is not None:
            self.conn.wire, self.conn.wire_fd = raw, self.wire_fd

    def wake_poll_with_noop(self) -> None:
        """During an upgrade: end the pending GET so the client pauses polling."""
        self._queue.append(p.NOOP)
        self._wake()

    # -- liveness ----------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        loop = asyncio.get_running_loop()
        self._ping_timer = loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.closed:
            return
        self.write(p.PING)
        loop = asyncio.get_running_loop()
        self._pong_timer = loop.call_later(self.ping_timeout, self.close, "ping timeout")

    def pong(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            if self._ping_timer is not None:
                self._ping_timer.cancel()
            self._schedule_ping()

    # -- ending ------------------------------------------------------------------------------

    def abort(self, code: int, reason: str) -> None:
        """The server ends the session: a final close tells the client with a Socket.IO
        DISCONNECT first (it will not reconnect); any other ends the transport."""
        if self.closed:
            return
        conn = self.conn
        if conn is not None and conn.close_code is None:
            conn.close_code = code
        log.info(
            "closing Socket.IO session", extra={"sid": self.sid, "code": code, "reason": reason}
        )
        if code in FINAL_CLOSES and self.conn is not None:
            self.write(p.DISCONNECT)
            self.flush()
        if self.wire is not None and not self.wire.is_closing():
            self.wire.write(close_frame(code, reason))
            self.wire.close()
            asyncio.get_running_loop().call_later(2.0, self.wire.abort)
        self.close(reason, final=code in FINAL_CLOSES)

    def close(self, reason: str, *, final: bool = False) -> None:
        """End the session (idempotent): stop pings, answer a waiting poll, and let the
        endpoint release the hub connection."""
        if self.closed:
            return
        self.closed = True
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        if self.wire is None:
            self._queue.append(p.CLOSE)  # a poll still to come learns the session is over
        elif not self.wire.is_closing() and not final:
            self.wire.close()
        self._wake()
        log.debug("Socket.IO session ended", extra={"sid": self.sid, "reason": reason})
        self.on_closed(self)


class SioConnection(Connection):
    """The hub's connection for a Socket.IO client: events become ``42`` packets, acks
    ``43``, and a broadcast frame is translated once for every Socket.IO recipient."""

    __slots__ = ("current_event", "pid", "recovery", "session", "translator")

    def __init__(
        self,
        conn_id: str,
        principal: Principal,
        session: EngineSession,
        *,
        rate: TokenBucket,
        errors: TokenBucket,
        send_buffer_limit: int,
        batcher: WriteBatcher,
        translator: BroadcastTranslator,
        recovery: RecoveryLog | None = None,
    ) -> None:
        super().__init__(
            conn_id,
            principal,
            None,  # type: ignore[arg-type]  # no aiohttp WebSocket of its own
            None,  # type: ignore[arg-type]
            rate=rate,
            errors=errors,
            send_buffer_limit=send_buffer_limit,
            batcher=batcher,
        )
        self.session = session
        #: The session's own list of frames and, once it has one, its WebSocket's
        #: transport and descriptor (kept here by the session): a broadcast's write to
        #: this client reads this object only, as a ``/ws`` connection's does, and this
        #: object is the batcher's outbox for it (:meth:`send_frame`).
        self.frames = session.frames
        self.wire, self.wire_fd = session.wire, session.wire_fd
        self.translator = translator
        #: The event being handled (for errors reported as ``call:error``).
        self.current_event = ""
        #: With connection-state recovery: what this session was sent, and its ``pid``.
        self.recovery = recovery
        if recovery is not None:  # each broadcast is noted in the log: never direct
            self.direct_kind = None
        elif self.direct_kind is not None:
            self.direct_kind = 1
        self.pid: str | None = None

    @property
    def said_goodbye(self) -> bool:
        return self.close_code is None and self.session.goodbye

    def _write(
        self, packet: bytes, ws_frame: bytes | None = None, mark: Mark | None = None
    ) -> bool:
        log = self.recovery
        if log is not None:
            if log.held is not None:
                return self._hold(log, packet, ws_frame, mark)
            if mark is not None and not log.record(mark):
                return True  # the client has it already (from history)
        if not self.session.write(packet, ws_frame):
            self.closed = True
            return False
        return True

    def _hold(
        self, log: RecoveryLog, packet: bytes, ws_frame: bytes | None, mark: Mark | None
    ) -> bool:
        assert log.held is not None
        log.held.append((packet, ws_frame, mark))
        log.held_bytes += len(packet)
        if log.held_bytes > self.send_buffer_limit:
            self.abort(CloseCode.SLOW_CONSUMER, "slow consumer: too much to hold while resuming")
            return False
        return True

    def direct_frame(self, frame: bytes) -> bytes:
        return self.translator.ws_frame(frame)

    def send_frame(self, frame: bytes) -> bool:
        if self.closed:
            return False
        wire = self.wire
        if wire is not None and self.recovery is None and not wire.is_closing():
            # The fan-out's path on a WebSocket, once per recipient: the session's write
            # without touching the session (a closed session's transport is closing), and
            # this connection the outbox the batcher writes, over the session's own list
            # of frames, so packets keep their order whichever of the two queued them. A
            # broadcast reaches each recipient cold in memory, and each object not read
            # is a cache miss saved: Socket.IO clients' queueing cost about 1.5 µs a
            # recipient through the session, 0.9 µs on ``/ws``.
            frames = self.frames
            frames.append(self.translator.ws_frame(frame))
            if len(frames) == 1:
                self._batcher.mark(self)
            return True
        packet, ws_frame, mark = self.translator.translate(frame)
        if self.recovery is not None:
            return self._write(packet, ws_frame, mark)
        if self.session.write(packet, ws_frame):
            return True
        self.closed = True
        return False

    def flush(self) -> None:
        self.session.flush()

    def transport_lost(self) -> None:
        """Found at a flush of this connection's outbox: the session's WebSocket is
        closing, so the session ends (as when found at its own flush)."""
        self.closed = True
        self.session.transport_lost()

    def send(self, type_: str, data: Any, id_: str | int | None = None) -> bool:
        if self.closed:
            return False
        if id_ == COMPAT_ID:
            if type_ == "ack":
                return self._write(p.event_packet(COMPAT_REPLIES[self.current_event], data))
            type_ = "call:error"
            data = {**data, "event": self.current_event}
        elif isinstance(id_, int) and type_ in ("ack", "error"):
            return self._write(p.ack_packet(id_, data if type_ == "ack" else {"error": data}))
        elif type_ == "error" and self.current_event:
            data = {**data, "event": self.current_event}
            if self.current_event.startswith(CALL_EVENTS):
                type_ = "call:error"
        return self._write(p.event_packet(type_, data))

    # -- resuming (connection-state recovery) --------------------------------------------------

    def room_position(self, room_id: str, epoch: str, offset: int) -> None:
        if self.recovery is not None:
            self.recovery.joined(room_id, epoch, offset)

    def hold(self) -> None:
        """Keep what is written from now on until :meth:`resumed`."""
        assert self.recovery is not None
        self.recovery.held = []

    def resumed(self, pid: str, missed: list[bytes]) -> None:
        """Answer the CONNECT with ``pid``, write the missed events (envelopes, oldest
        first), then what was held meanwhile, without writing any recorded event twice."""
        log = self.recovery
        assert log is not None and log.held is not None
        held, log.held, log.held_bytes = log.held, None, 0
        self.pid = pid
        if not self._write(p.connect_packet(self.id, pid)):
            return
        for envelope in missed:
            packet, mark = self.translator.translate_envelope(envelope)
            self._write(packet, None, mark)
        for packet, ws_frame, mark in held:
            self._write(packet, ws_frame, mark)

    def abort(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.session.abort(code, reason)

    async def close(self, code: int, reason: str) -> None:
        self.session.flush()
        self.abort(code, reason)
