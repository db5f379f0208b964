"""``/socket.io/``: Engine.IO v4 (long-polling and WebSocket, with the upgrade between
them) and Socket.IO v5 in front of the same hub as ``/ws``.

A Socket.IO client's CONNECT carries the join token in its auth payload; once accepted,
its EVENT packets are dispatched to the hub exactly like ``/ws`` envelopes (same routes,
models, rate limit and error budget), acks answer with what ``/ws`` would put in its
``ack`` or ``error``, and the hub's broadcasts reach it as ``42`` packets translated once
per broadcast. What a Socket.IO client does wrong is reported the Socket.IO way: a
CONNECT_ERROR before it is connected, an ``error`` event (or an error in the ack) after.

Polling sessions live on the node that opened them; behind a load balancer, requests
carrying ``sid`` must go to the same node (sticky sessions). WebSocket-only clients need
nothing sticky.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from signaling.auth import request_token
from signaling.outbox import WriteBatcher
from signaling.protocol import CloseCode, ErrorCode
from signaling.ratelimit import TokenBucket
from signaling.socketio import packets as p
from signaling.socketio.http import (
    BAD_REQUEST,
    FORBIDDEN,
    UNKNOWN_SID,
    UNKNOWN_TRANSPORT,
    UNSUPPORTED_VERSION,
    cors,
    read_body,
    refuse,
    text,
)
from signaling.socketio.packets import EngineType, PacketError, SioPacket, SioType
from signaling.socketio.session import (
    COMPAT_ID,
    COMPAT_REPLIES,
    EngineSession,
    SioConnection,
)
from signaling.tokens import TokenError, verify_token
from signaling.websocket import Dispatcher, hard_frame_cap

if TYPE_CHECKING:
    from config.server import ServerSettings
    from signaling.metrics import HubMetrics
    from signaling.socketio.recovery import SessionRecovery

log = logging.getLogger("switchboard.socketio")

PATH = "/socket.io/"
NAMESPACE = "/"
#: How long a closed polling session still answers polls with what it had queued.
CLOSED_LINGER = 5.0


class SocketIoEndpoint:
    def __init__(
        self,
        hub: Dispatcher,
        settings: ServerSettings,
        metrics: HubMetrics,
        new_connection_id: Callable[[], str],
        recovery: SessionRecovery | None = None,
    ) -> None:
        self.hub = hub
        self.recovery = recovery
        self.settings = settings
        self.metrics = metrics
        self.new_connection_id = new_connection_id
        self.batcher = WriteBatcher(settings.compiled_fanout, settings.fanout_io_uring)
        self.translator = p.BroadcastTranslator(recovery=recovery is not None)
        self.sessions: dict[str, EngineSession] = {}
        self.max_payload = hard_frame_cap(settings.max_frame_bytes)
        self._releasing: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PATH, self.handle_get),
            web.post(PATH, self.handle_post),
            web.options(PATH, self.handle_preflight),
        ]

    # -- HTTP: checks shared by every request ------------------------------------------------

    def _check(self, request: web.Request) -> web.Response | None:
        """The Engine.IO query and the browser's origin; ``None`` if the request may go on."""
        query = request.query
        if query.get("EIO") != "4":
            return refuse(request, 400, UNSUPPORTED_VERSION, "Unsupported protocol version")
        if query.get("transport") not in ("polling", "websocket"):
            return refuse(request, 400, UNKNOWN_TRANSPORT, "Transport unknown")
        origin = request.headers.get("Origin")
        allowed = self.settings.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            self.metrics.upgrades_refused.labels("origin").inc()
            return refuse(request, 403, FORBIDDEN, f"origin '{origin[:200]}' is not allowed")
        return None

    def _session(self, request: web.Request, transport: str) -> EngineSession | web.Response:
        sid = request.query["sid"]
        session = self.sessions.get(sid)
        if session is None:
            return refuse(request, 400, UNKNOWN_SID, "Session ID unknown")
        if session.transport != transport and transport == "polling":
            return refuse(request, 400, BAD_REQUEST, "Bad request: session upgraded")
        return session

    async def handle_preflight(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        headers = {
            **cors(request),
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get(
                "Access-Control-Request-Headers", "content-type"
            ),
        }
        return web.Response(status=204, headers=headers)

    def _new_session(self, request: web.Request, transport: str) -> EngineSession:
        s = self.settings
        session = EngineSession(
            secrets.token_urlsafe(15),
            transport=transport,
            ping_interval=s.heartbeat_interval,
            ping_timeout=s.socketio_ping_timeout,
            send_buffer_limit=s.send_buffer_limit,
            batcher=self.batcher,
            handshake_token=request_token(request, allow_query=True),
            on_closed=self._closed,
        )
        self.sessions[session.sid] = session
        loop = asyncio.get_running_loop()
        loop.call_later(s.socketio_connect_timeout, self._connect_timeout, session)
        return session

    def _open_packet(self, session: EngineSession, upgrades: list[str]) -> bytes:
        s = self.settings
        return p.open_packet(
            session.sid,
            upgrades,
            int(s.heartbeat_interval * 1000),
            int(s.socketio_ping_timeout * 1000),
            self.max_payload,
        )

    # -- HTTP long-polling ------------------------------------------------------------------

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        refused = self._check(request)
        if refused is not None:
            return refused
        if request.query["transport"] == "websocket":
            return await self._websocket(request)
        if "sid" not in request.query:
            if self.hub.draining:
                self.metrics.upgrades_refused.labels("draining").inc()
                return refuse(request, 503, BAD_REQUEST, "server is restarting")
            session = self._new_session(request, "polling")
            return text(request, self._open_packet(session, ["websocket"]))
        session = self._session(request, "polling")
        if isinstance(session, web.Response):
            return session
        if session.polling:
            session.close("overlapping polls")
            return refuse(request, 400, BAD_REQUEST, "Bad request: overlapping polls")
        return text(request, await session.poll())

    async def handle_post(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        if "sid" not in request.query:
            return refuse(request, 400, BAD_REQUEST, "Bad request: no session id")
        session = self._session(request, "polling")
        if isinstance(session, web.Response):
            return session
        if session.closed:
            return refuse(request, 400, UNKNOWN_SID, "Session ID unknown")
        body = await read_body(request, self.max_payload)
        if body is None:
            session.close("payload too large")
            return refuse(request, 413, BAD_REQUEST, "Payload too large")
        try:
            received = p.parse_polling_body(body)
        except PacketError as exc:
            session.close("parse error")
            return refuse(request, 400, BAD_REQUEST, f"Bad request: {exc.message}")
        async with session.lock:
            for packet in received:
                if session.closed:
                    break
                await self.on_packet(session, packet)
        return text(request, b"ok")

    # -- WebSocket: a new session, or the upgrade of a polling one -------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        upgrading: EngineSession | None = None
        if "sid" in request.query:
            found = self._session(request, "websocket")
            if isinstance(found, web.Response):
                return found
            if found.closed:
                return refuse(request, 400, UNKNOWN_SID, "Session ID unknown")
            if found.transport == "websocket":
                return refuse(request, 400, BAD_REQUEST, "Bad request: already upgraded")
            upgrading = found
        elif self.hub.draining:
            self.metrics.upgrades_refused.labels("draining").inc()
            return refuse(request, 503, BAD_REQUEST, "server is restarting")
        ws = web.WebSocketResponse(compress=False, max_msg_size=self.max_payload)
        if not ws.can_prepare(request).ok:
            return refuse(request, 400, BAD_REQUEST, "Bad request: not a WebSocket upgrade")
        await ws.prepare(request)
        raw = request.transport
        if raw is None:
            return ws
        if upgrading is None:
            session = self._new_session(request, "websocket")
            session.attach_websocket(ws, raw)  # type: ignore[arg-type]
            session.write(self._open_packet(session, []))
        else:
            session = upgrading
            if not await self._probe(session, ws, raw):  # type: ignore[arg-type]
                return ws
        try:
            while not session.closed:
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    packet: str | bytes = msg.data
                elif msg.type is WSMsgType.BINARY:
                    packet = msg.data
                else:
                    break
                if upgrading is None:  # born on this WebSocket: no poll carries its packets
                    await self.on_packet(session, packet)
                    continue
                async with session.lock:
                    await self.on_packet(session, packet)
        finally:
            session.close("transport close")
        return ws

    async def _probe(
        self, session: EngineSession, ws: web.WebSocketResponse, raw: asyncio.Transport
    ) -> bool:
        """The upgrade: ``2probe`` → ``3probe`` (and a noop ending the pending poll), then
        ``5`` switches the session to this WebSocket."""
        while True:
            msg = await ws.receive(timeout=self.settings.socketio_ping_timeout)
            if msg.type is not WSMsgType.TEXT:
                return False
            if msg.data == "2probe":
                await ws.send_str("3probe")
                session.wake_poll_with_noop()
            elif msg.data == "5":
                async with session.lock:
                    session.upgraded(ws, raw)
                return True
            else:
                return False

    # -- Engine.IO packets -------------------------------------------------------------------

    async def on_packet(self, session: EngineSession, packet: str | bytes) -> None:
        if isinstance(packet, bytes):
            await self.on_binary(session, packet)
            return
        conn = session.conn
        if conn is not None and len(packet) <= self.settings.max_frame_bytes:
            # the usual case, a client event, in one step (the same checks and outcome
            # as the general path below: the Engine.IO payload is within the limit)
            event = p.plain_event(packet)
            if event is not None:
                await self.on_event(conn, event)
                return
        try:
            type_, payload = p.parse_engine(packet)
        except PacketError as exc:
            await self._malformed(session, exc, None)
            return
        if type_ is EngineType.MESSAGE:
            await self.on_message(session, payload)
        elif type_ is EngineType.PONG:
            session.pong()
        elif type_ is EngineType.PING:
            session.write(b"3" + payload.encode())
        elif type_ is EngineType.CLOSE:
            session.goodbye = True
            session.close("client close")
        elif type_ is EngineType.OPEN:
            await self._malformed(
                session, PacketError("invalid_envelope", "clients do not send OPEN"), None
            )
        # UPGRADE outside a probe and NOOP carry nothing.

    async def on_binary(self, session: EngineSession, data: bytes) -> None:
        """A binary attachment: swallowed if a binary packet announced it (that packet was
        already refused), otherwise refused itself."""
        if session.skip_binary > 0:
            session.skip_binary -= 1
            return
        error = PacketError(
            ErrorCode.UNSUPPORTED_FRAME.value,
            "binary data without a binary packet announcing it as an attachment",
        )
        await self._malformed(session, error, None)

    async def _malformed(
        self, session: EngineSession, exc: PacketError, ack_id: int | None
    ) -> None:
        """A connected client gets an error (charged to its error budget, as on ``/ws``);
        one not connected yet gets a CONNECT_ERROR and its session is closed."""
        conn = session.conn
        if conn is None:
            data = {"code": exc.code, "message": exc.message}
            session.write(p.connect_error_packet(NAMESPACE, exc.code, data))
            session.flush()
            session.close("parse error", final=True)
            return
        await self.hub.reject(conn, ErrorCode(exc.code), exc.message, ack_id)

    async def on_message(self, session: EngineSession, payload: str) -> None:
        limit = self.settings.max_frame_bytes
        if len(payload) > limit:
            message = f"packet of {len(payload)} bytes exceeds the limit of {limit}"
            await self._malformed(session, PacketError("frame_too_large", message), None)
            return
        try:
            packet = p.parse_socketio(payload)
        except PacketError as exc:
            await self._malformed(session, exc, None)
            return
        conn = session.conn
        if packet.namespace != NAMESPACE:
            if packet.type is SioType.CONNECT:
                session.write(p.connect_error_packet(packet.namespace, "Invalid namespace"))
            else:
                error = PacketError(
                    "invalid_envelope", f"unknown namespace '{packet.namespace[:64]}'"
                )
                await self._malformed(session, error, packet.ack_id)
            return
        if conn is None:
            if packet.type is SioType.CONNECT:
                await self.connect(session, packet.data)
            else:
                error = PacketError("invalid_state", "the first Socket.IO packet must be CONNECT")
                await self._malformed(session, error, None)
            return
        await self.on_sio(session, conn, packet)

    # -- Socket.IO packets of a connected client ----------------------------------------------

    async def on_sio(self, session: EngineSession, conn: SioConnection, packet: SioPacket) -> None:
        type_ = packet.type
        if type_ is SioType.EVENT:
            await self.on_event(conn, packet)
        elif type_ is SioType.DISCONNECT:
            session.goodbye = session.left = True
            session.close("client namespace disconnect")
        elif type_ in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
            session.skip_binary = packet.attachments
            name = _event_name(packet.data)
            message = (
                f"event '{name[:64]}' takes no binary data; send JSON"
                if name
                else "binary acks are not accepted"
            )
            await self._malformed(session, PacketError("unsupported_frame", message), packet.ack_id)
        elif type_ is SioType.CONNECT:
            error = PacketError("invalid_state", "already connected to this namespace")
            await self._malformed(session, error, None)
        elif type_ is SioType.CONNECT_ERROR:
            error = PacketError("invalid_envelope", "clients do not send CONNECT_ERROR")
            await self._malformed(session, error, None)
        # ACK: the server asks for none, so a client's ack answers nothing.

    async def on_event(self, conn: SioConnection, packet: SioPacket) -> None:
        """``42[id]["type", data]``: dispatched to the hub like a ``/ws`` envelope."""
        args = packet.data
        name = _event_name(args)
        if not name:
            message = 'an EVENT carries ["event name", data]'
            await self.hub.reject(conn, ErrorCode.INVALID_ENVELOPE, message, packet.ack_id)
            return
        id_: str | int | None = packet.ack_id
        if id_ is None and name in COMPAT_REPLIES:
            id_ = COMPAT_ID
        conn.current_event = name
        try:
            await self.hub.dispatch(conn, id_, name, args[1] if len(args) > 1 else None)
        finally:
            conn.current_event = ""

    async def connect(self, session: EngineSession, auth: Any) -> None:
        """CONNECT with ``{"token": "<join token>"}`` (or the handshake's ``access_token``
        / bearer header): ``40{"sid"}`` then ``session:ready``, or CONNECT_ERROR with the
        code ``/ws`` would refuse the upgrade with."""
        if self.hub.draining:
            self.metrics.upgrades_refused.labels("draining").inc()
            session.abort(CloseCode.SERVICE_RESTART, "server restarting, please reconnect")
            return
        token = None
        if isinstance(auth, dict):
            token = auth.get("token") or auth.get("access_token")
        token = token if isinstance(token, str) and token else session.handshake_token
        settings = self.settings
        if token is None:
            self._refuse_connect(session, "token_missing", "a join token is required (auth.token)")
            return
        assert settings.jwt_secret is not None
        try:
            principal = verify_token(
                token, settings.jwt_secret.get_secret_value(), leeway=settings.jwt_leeway
            )
        except TokenError as exc:
            self._refuse_connect(session, exc.code, exc.message)
            return
        conn = SioConnection(
            self.new_connection_id(),
            principal,
            session,
            rate=TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst),
            errors=TokenBucket(settings.error_refill_per_second, settings.error_budget),
            send_buffer_limit=settings.send_buffer_limit,
            batcher=self.batcher,
            translator=self.translator,
            recovery=self.recovery.new_log(auth) if self.recovery is not None else None,
        )
        session.conn = conn
        if self.recovery is None:
            session.write(p.connect_packet(conn.id))
            await self.hub.on_connect(conn)
            return
        conn.hold()  # the CONNECT is answered once it is known whether the session resumed
        await self.hub.on_connect(conn)
        await self.recovery.connect(conn, auth)

    def _refuse_connect(self, session: EngineSession, code: str, message: str) -> None:
        self.metrics.upgrades_refused.labels("auth").inc()
        data = {"code": code, "message": message}
        session.write(p.connect_error_packet(NAMESPACE, code, data))

    # -- ending -------------------------------------------------------------------------------

    def _connect_timeout(self, session: EngineSession) -> None:
        if session.conn is None and not session.closed:
            session.close("connect timeout")

    def _closed(self, session: EngineSession) -> None:
        """A session ended: forget it, and release its hub connection (shielded: the
        release awaits the shared state and must finish)."""
        if session.transport == "polling":
            # Its last packets (a CLOSE at least) wait for the client's next poll.
            loop = asyncio.get_running_loop()
            loop.call_later(CLOSED_LINGER, self.sessions.pop, session.sid, None)
        else:
            self.sessions.pop(session.sid, None)
        conn = session.conn
        if conn is None:
            return
        recovery = self.recovery
        snapshot = recovery.snapshot(conn) if recovery is not None else None
        task = asyncio.ensure_future(self._release(conn, snapshot))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, conn: SioConnection, snapshot: bytes | None) -> None:
        if snapshot is not None:
            assert self.recovery is not None
            await self.recovery.save(conn, snapshot)
        await self.hub.on_disconnect(conn)

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for closed sessions to be released and saved: a draining node
        lets them finish before its state closes."""
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=timeout)


def _event_name(args: Any) -> str:
    if isinstance(args, list) and args and isinstance(args[0], str):
        return args[0]
    return ""
