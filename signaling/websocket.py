"""The ``/ws`` transport: refuse bad upgrades over HTTP, decode each frame's envelope and
hand it to the hub, and write to each client without ever waiting on it.

A client's frames are read and handled one at a time, in order, by its own reader task,
so a client sees its requests answered in the order it sent them. Writes never await:
frames are queued and written at the end of the loop iteration (coalesced per
connection), and a peer that stops reading is dropped instead of letting the server's
memory grow, so one slow reader cannot delay a room's fan-out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import WSMessage, WSMsgType, web

from signaling.auth import authenticate, json_error
from signaling.outbox import WriteBatcher, direct_fd, write_out
from signaling.protocol import CloseCode, ErrorCode, close_frame, encode, text_frame
from signaling.ratelimit import TokenBucket

if TYPE_CHECKING:
    from config.server import ServerSettings
    from signaling.metrics import HubMetrics
    from signaling.tokens import Principal

log = logging.getLogger("switchboard.ws")

MAX_ID_LENGTH = 128
#: Client close codes that mean "leaving": 1000, and no status code (aiohttp reports 0).
GOODBYE_CODES = (CloseCode.NORMAL, 0)
_DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)


class Connection:
    """A connected device of a user: identity, joined rooms, limits, bounded writes."""

    __slots__ = (
        "_batcher",
        "close_code",
        "closed",
        "direct_kind",
        "errors",
        "frames",
        "id",
        "principal",
        "rate",
        "rooms",
        "send_buffer_limit",
        "status",
        "typed_in",
        "user_id",
        "wire",
        "wire_fd",
        "ws",
    )

    def __init__(
        self,
        conn_id: str,
        principal: Principal,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        *,
        rate: TokenBucket,
        errors: TokenBucket,
        send_buffer_limit: int,
        batcher: WriteBatcher,
    ) -> None:
        self.id = conn_id
        self.principal = principal
        #: The token's subject: a refreshed token must name the same user, so this is
        #: fixed (an attribute, not a property: the fan-out reads it for every recipient).
        self.user_id = principal.user_id
        self.ws = ws
        self.wire = transport
        self.wire_fd = direct_fd(transport)
        self._batcher = batcher
        self.frames: list[bytes] = []
        self.rate = rate
        self.errors = errors
        self.send_buffer_limit = send_buffer_limit
        self.status = "online"
        self.rooms: set[str] = set()
        #: rooms where this device's typing state may be standing (it said it types and
        #: has not said it stopped): only these need clearing when it leaves
        self.typed_in: set[str] = set()
        self.closed = False
        self.close_code: int | None = None  # set when the server closes the connection
        #: A room's broadcast may write to this connection at once, with the compiled
        #: batcher (``compiled_fanout``; the pure-Python setting writes nothing from C):
        #: see :mod:`signaling.direct_writes`.
        self.direct_kind: int | None = 0 if batcher.compiled else None

    @property
    def batcher(self) -> WriteBatcher:
        """Writes this connection's outbox (``frames``) at the end of an iteration."""
        return self._batcher

    @property
    def name(self) -> str:
        return self.principal.name

    @property
    def said_goodbye(self) -> bool:
        """The client closed the socket itself with 1000 or without a status code, as
        ``WebSocket.close()`` does (it is leaving, not lost); a page that is left or
        refreshed closes with 1001."""
        return self.close_code is None and self.ws.close_code in GOODBYE_CODES

    def direct_frame(self, frame: bytes) -> bytes:
        """What a room's broadcast writes to this connection directly for ``frame``."""
        return frame

    def send_frame(self, frame: bytes) -> bool:
        """Queue a pre-built WebSocket frame; ``False`` if the connection is gone."""
        if self.closed:
            return False
        if self.wire.is_closing():
            self.closed = True
            return False
        frames = self.frames
        frames.append(frame)
        if len(frames) == 1:
            self._batcher.mark(self)
        return True

    def flush(self) -> None:
        """Write everything queued now (before a close)."""
        write_out((self,))

    def transport_lost(self) -> None:
        self.closed = True

    def too_slow(self) -> None:
        self.abort(CloseCode.SLOW_CONSUMER, "slow consumer: send buffer limit exceeded")

    def send(self, type_: str, data: Any, id_: str | int | None = None) -> bool:
        return self.send_frame(text_frame(encode(type_, data, id_)))

    def room_position(self, room_id: str, epoch: str, offset: int) -> None:
        """The room was (re)joined with its history at this position: from here on its
        recorded events reach this connection live. ``/ws`` clients keep positions
        themselves; a Socket.IO session with recovery notes them."""

    def abort(self, code: int, reason: str) -> None:
        """Close without waiting for the peer: queue a close frame, flush, then cut.

        ``transport.close()`` flushes what is buffered; if the peer never reads, the
        transport is aborted a moment later so the handler's cleanup runs regardless.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        log.info(
            "closing connection",
            extra={"conn": self.id, "user": self.user_id, "code": code, "reason": reason},
        )
        transport = self.wire
        if transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        transport.close()
        asyncio.get_running_loop().call_later(2.0, transport.abort)

    async def close(self, code: int, reason: str) -> None:
        """Orderly close through aiohttp (waits briefly for the peer's close frame).

        Queued frames are written first, so an ``error`` explaining the close arrives
        before the close frame."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self.close_code = code
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 5.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.wire.abort()


class Dispatcher(Protocol):
    """The hub, as the transport sees it."""

    draining: bool

    async def on_connect(self, conn: Connection) -> None: ...

    async def on_disconnect(self, conn: Connection) -> None: ...

    async def dispatch(
        self, conn: Connection, id_: str | int | None, type_: Any, data: Any
    ) -> None:
        """Handle one decoded envelope (the hub checks ``type_`` and ``data``)."""

    async def reject(
        self, conn: Connection, code: ErrorCode, message: str, id_: str | int | None
    ) -> None:
        """Answer with an ``error`` and charge the connection's error budget."""


def hard_frame_cap(max_frame_bytes: int) -> int:
    """Frames up to this size are read and answered with ``frame_too_large``; larger ones
    make aiohttp close the connection with 1009 before buffering them."""
    return max(4 * max_frame_bytes, 256 * 1024)


class WebSocketEndpoint:
    """``GET /ws``: the upgrade, then one reader loop per connection."""

    def __init__(
        self,
        hub: Dispatcher,
        settings: ServerSettings,
        metrics: HubMetrics,
        new_connection_id: Callable[[], str],
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.metrics = metrics
        self.new_connection_id = new_connection_id
        self.batcher = WriteBatcher(settings.compiled_fanout, settings.fanout_io_uring)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        settings, metrics = self.settings, self.metrics
        if self.hub.draining:
            metrics.upgrades_refused.labels("draining").inc()
            return json_error(503, "server_draining", "server is restarting; reconnect shortly")
        origin = request.headers.get("Origin")
        allowed = settings.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            metrics.upgrades_refused.labels("origin").inc()
            return json_error(403, "origin_not_allowed", f"origin '{origin[:200]}' is not allowed")
        principal = authenticate(request, settings, allow_query=True)
        if isinstance(principal, web.Response):
            metrics.upgrades_refused.labels("auth").inc()
            return principal
        ws = web.WebSocketResponse(
            heartbeat=settings.heartbeat_interval,
            compress=False,
            max_msg_size=hard_frame_cap(settings.max_frame_bytes),
            decode_text=False,
        )
        if not ws.can_prepare(request).ok:
            return json_error(426, "upgrade_required", "this endpoint only speaks WebSocket")
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        conn = Connection(
            self.new_connection_id(),
            principal,
            ws,
            transport,  # type: ignore[arg-type]
            rate=TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst),
            errors=TokenBucket(settings.error_refill_per_second, settings.error_budget),
            send_buffer_limit=settings.send_buffer_limit,
            batcher=self.batcher,
        )
        try:
            await self.hub.on_connect(conn)
            while not conn.closed:
                msg = await ws.receive()
                if msg.type not in _DATA_TYPES:
                    break
                await self.on_frame(conn, msg)
        finally:
            # Shielded: a cancelled handler (peer gone) must still finish its clean-up,
            # which awaits the shared state; a half-done clean-up would leave ghosts.
            await asyncio.shield(self.hub.on_disconnect(conn))
        return ws

    async def on_frame(self, conn: Connection, msg: WSMessage) -> None:
        """Decode one frame's envelope ``{"type", "id"?, "data"?}`` and dispatch it."""
        hub = self.hub
        if msg.type is not WSMsgType.TEXT:
            await hub.reject(
                conn, ErrorCode.UNSUPPORTED_FRAME, "only JSON text frames are accepted", None
            )
            return
        raw: bytes | str = msg.data
        size, limit = len(raw), self.settings.max_frame_bytes
        if size > limit:
            message = f"frame of {size} bytes exceeds the limit of {limit}"
            await hub.reject(conn, ErrorCode.FRAME_TOO_LARGE, message, None)
            return
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            await hub.reject(conn, ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}", None)
            return
        if not isinstance(envelope, dict):
            await hub.reject(conn, ErrorCode.INVALID_ENVELOPE, "frame must be a JSON object", None)
            return
        id_ = envelope.get("id")
        if id_ is not None and not (
            (isinstance(id_, str) and len(id_) <= MAX_ID_LENGTH)
            or (isinstance(id_, int) and not isinstance(id_, bool))
        ):
            await hub.reject(
                conn,
                ErrorCode.INVALID_ENVELOPE,
                f"'id' must be a string of at most {MAX_ID_LENGTH} characters or an integer",
                None,
            )
            return
        await hub.dispatch(conn, id_, envelope.get("type"), envelope.get("data"))
