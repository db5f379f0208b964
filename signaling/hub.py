"""The hub: routes validated events to services and fans results out through the state.

Each connection's frames are handled one at a time, in order, by its own reader task, so a
client sees its requests answered in the order it sent them. Frames for many recipients are
encoded once (:func:`signaling.protocol.event_frame`) and the same bytes are written to
every recipient.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMessage, WSMsgType
from pydantic import BaseModel, ValidationError

from signaling import events
from signaling.calls import CallService
from signaling.connection import WriteBatcher
from signaling.presence import PresenceService
from signaling.protocol import CloseCode, ErrorCode, HubError, event_frame
from signaling.room_lifecycle import RoomLifecycle
from signaling.rooms import RoomService
from signaling.timers import TimerService
from signaling.typing_indicators import TypingService
from signaling.webhooks.dispatcher import WebhookDispatcher
from signaling.webhooks.outbox import WebhookOutbox
from turn.health import TurnHealth

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.metrics import HubMetrics
    from signaling.settings import Settings
    from signaling.state import HubState
    from signaling.state.models import RemoteConnection

log = logging.getLogger("switchboard.hub")

Handler = Callable[["Connection", Any], Awaitable[Any]]
GroupToggle = Callable[["Connection", str, str, bool], Awaitable[Any]]
ConnectionHook = Callable[["Connection"], Awaitable[None]]
MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Route:
    model: type[BaseModel]
    handler: Handler


class Hub:
    def __init__(self, settings: Settings, state: HubState, metrics: HubMetrics) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.started_at = time.time()
        self.draining = False
        self.batcher = WriteBatcher()
        self.turn_health = TurnHealth([*settings.turn_urls, *settings.stun_urls])
        self.timers = TimerService(state)
        self.webhooks = WebhookOutbox(
            state,
            metrics,
            settings.webhook_urls,
            set(settings.webhook_events),
            state.node_id,
            settings.webhook_buffer,
        )
        self.webhook_dispatcher: WebhookDispatcher | None = None
        if settings.webhook_urls and settings.api_secret is not None:
            self.webhook_dispatcher = WebhookDispatcher(
                state, metrics, settings, settings.api_secret.get_secret_value()
            )
        self.room_lifecycle = RoomLifecycle(self)
        self.presence = PresenceService(self)
        self.rooms = RoomService(self)
        self.typing = TypingService(self)
        self.calls = CallService(self)
        self.routes: dict[str, Route] = {}
        # Set by the SFU when it is mounted: media toggles that name a roomId go there.
        self.group_toggle: GroupToggle | None = None
        self.disconnect_hooks: list[ConnectionHook] = []
        self._register_routes()

    def _register_routes(self) -> None:
        e = events
        table: dict[str, tuple[type[BaseModel], Handler]] = {
            "ping": (e.Empty, self._on_ping),
            "presence:update": (e.PresenceUpdate, self.presence.on_update),
            "presence:query": (e.PresenceQuery, self.presence.on_query),
            "room:join": (e.RoomRef, self.rooms.on_join),
            "room:leave": (e.RoomRef, self.rooms.on_leave),
            "message:typing": (e.MessageTyping, self.typing.on_typing),
            "call:initiate": (e.CallInitiate, self.calls.on_initiate),
            "call:accept": (e.CallRef, self.calls.on_accept),
            "call:reject": (e.CallReject, self.calls.on_reject),
            "call:end": (e.CallRef, self.calls.on_end),
            "call:reconnected": (e.CallRef, self.calls.on_reconnected),
            "call:offer": (e.CallSdp, self.calls.relay("call:offer", "sdp")),
            "call:answer": (e.CallSdp, self.calls.relay("call:answer", "sdp")),
            "call:ice-candidate": (e.CallIce, self.calls.relay("call:ice-candidate", "candidate")),
            "media:toggle-audio": (e.MediaToggle, self._toggle("audio")),
            "media:toggle-video": (e.MediaToggle, self._toggle("video")),
            "screen:share-start": (e.CallOrRoomRef, self._toggle("screen", True)),
            "screen:share-stop": (e.CallOrRoomRef, self._toggle("screen", False)),
        }
        self.routes = {name: Route(model, handler) for name, (model, handler) in table.items()}

    def add_route(self, name: str, model: type[BaseModel], handler: Handler) -> None:
        """Mount another service's event (the SFU's ``sfu:*``) on this hub."""
        self.routes[name] = Route(model, handler)

    def _toggle(self, kind: str, fixed: bool | None = None) -> Handler:
        """Media toggles serve 1:1 calls (``callId``) and group call rooms (``roomId``)."""
        for_call = self.calls.toggle(kind, fixed)

        async def handler(conn: Connection, payload: Any) -> Any:
            if payload.roomId is None:
                return await for_call(conn, payload)
            if self.group_toggle is None:
                raise HubError(ErrorCode.NOT_IN_ROOM, "group calls are not enabled on this server")
            enabled = fixed if fixed is not None else payload.enabled
            return await self.group_toggle(conn, payload.roomId, kind, enabled)

        return handler

    async def start(self) -> None:
        await self.state.start(self.forget_remote)
        self.timers.start()
        self.calls.start()
        self.webhooks.start()
        if self.webhook_dispatcher is not None:
            self.webhook_dispatcher.start()

    async def stop(self) -> None:
        await self.timers.stop()
        await self.calls.stop()
        await self.webhooks.stop()
        if self.webhook_dispatcher is not None:
            await self.webhook_dispatcher.stop()

    async def forget_remote(self, lost: list[RemoteConnection]) -> None:
        """Take connections of a dead node out of presence, rooms and calls, telling
        everyone as if each had disconnected (calls get their grace period)."""
        for conn in lost:
            try:
                await self._release(conn)
            except Exception:
                log.exception("cleaning up a lost connection failed", extra={"conn": conn.id})

    async def _release(self, conn: Connection | RemoteConnection) -> None:
        """A device is gone: presence first (its audience is the rooms the device is still
        in), then its rooms, then its calls (which get the grace period)."""
        await self.presence.device_gone(conn)
        await self.rooms.connection_gone(conn)
        try:
            await self.calls.connection_gone(conn)
        except HubError as exc:  # shared state away: redone when it is back
            log.warning("call clean-up deferred", extra={"conn": conn.id, "code": exc.code})

    # -- connection lifecycle --------------------------------------------------------------

    async def on_connect(self, conn: Connection) -> None:
        self.state.attach(conn)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        conn.send(
            "session:ready",
            {
                "connectionId": conn.id,
                "userId": conn.user_id,
                "name": conn.principal.name,
                "heartbeatInterval": self.settings.heartbeat_interval,
                "maxFrameBytes": self.settings.max_frame_bytes,
                "rateLimit": {
                    "perSecond": self.settings.rate_limit_per_second,
                    "burst": self.settings.rate_limit_burst,
                },
                "serverTime": int(time.time() * 1000),
                "iceServers": self.settings.ice_servers(conn.user_id),
            },
        )
        await self.presence.device_connected(conn)
        try:
            await self.calls.device_connected(conn)
        except HubError as exc:  # shared state away: ringing calls are not re-delivered
            log.warning("ringing calls not re-delivered", extra={"conn": conn.id, "code": exc.code})
        log.info("connected", extra={"conn": conn.id, "user": conn.user_id})

    async def on_disconnect(self, conn: Connection) -> None:
        conn.closed = True
        try:
            await self._release(conn)
            for hook in self.disconnect_hooks:
                await hook(conn)
        finally:
            self.state.detach(conn)
            self.metrics.connections.dec()
            if conn.close_code is not None:
                self.metrics.closes.labels(str(conn.close_code)).inc()
            log.info("disconnected", extra={"conn": conn.id, "user": conn.user_id})

    # -- inbound ---------------------------------------------------------------------------

    async def handle_message(self, conn: Connection, msg: WSMessage) -> None:
        if msg.type is not WSMsgType.TEXT:
            await self.reject(
                conn, ErrorCode.UNSUPPORTED_FRAME, "only JSON text frames are accepted", None
            )
            return
        raw: bytes | str = msg.data
        size = len(raw)
        if size > self.settings.max_frame_bytes:
            await self.reject(
                conn,
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {size} bytes exceeds the limit of {self.settings.max_frame_bytes}",
                None,
            )
            return
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            await self.reject(conn, ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}", None)
            return
        if not isinstance(envelope, dict):
            await self.reject(conn, ErrorCode.INVALID_ENVELOPE, "frame must be a JSON object", None)
            return
        id_ = envelope.get("id")
        if id_ is not None and not (
            (isinstance(id_, str) and len(id_) <= MAX_ID_LENGTH)
            or (isinstance(id_, int) and not isinstance(id_, bool))
        ):
            await self.reject(
                conn,
                ErrorCode.INVALID_ENVELOPE,
                f"'id' must be a string of at most {MAX_ID_LENGTH} characters or an integer",
                None,
            )
            return
        if not conn.rate.take():
            retry_ms = int(conn.rate.retry_after() * 1000) + 1
            await self.reject(
                conn,
                ErrorCode.RATE_LIMITED,
                f"more than {self.settings.rate_limit_per_second:g} messages per second",
                id_,
                retryAfterMs=retry_ms,
            )
            return
        type_ = envelope.get("type")
        if not isinstance(type_, str):
            await self.reject(conn, ErrorCode.INVALID_ENVELOPE, "'type' must be a string", id_)
            return
        data = envelope.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            await self.reject(conn, ErrorCode.INVALID_ENVELOPE, "'data' must be an object", id_)
            return
        route = self.routes.get(type_)
        if route is None:
            self.metrics.event_in("unknown")
            await self.reject(
                conn, ErrorCode.UNKNOWN_EVENT, f"unknown event type '{type_[:64]}'", id_
            )
            return
        self.metrics.event_in(type_)
        try:
            payload = route.model.model_validate(data)
        except ValidationError as exc:
            await self.reject(conn, ErrorCode.INVALID_PAYLOAD, events.describe(exc), id_)
            return
        try:
            result = await route.handler(conn, payload)
        except HubError as exc:
            await self.reject(conn, exc.code, exc.message, id_)
            return
        except Exception:
            log.exception("handler failed", extra={"conn": conn.id, "event": type_})
            await self.reject(conn, ErrorCode.INTERNAL_ERROR, "internal error", id_)
            return
        if id_ is not None:
            conn.send("ack", result if result is not None else {}, id_)

    async def reject(
        self, conn: Connection, code: ErrorCode, message: str, id_: str | int | None, **extra: Any
    ) -> None:
        """Answer with an ``error`` and charge the connection's error budget.

        A client that keeps failing (floods, garbage) exhausts the budget and is closed
        with 1008 and the last error code as reason; everyone else is untouched.
        """
        self.metrics.error(code)
        conn.send("error", {"code": code.value, "message": message, **extra}, id_)
        if code in (ErrorCode.INTERNAL_ERROR, ErrorCode.UNAVAILABLE) or conn.errors.take():
            return
        log.warning("closing misbehaving client", extra={"conn": conn.id, "code": code.value})
        await conn.close(CloseCode.POLICY_VIOLATION, f"too many errors (last: {code.value})")

    async def _on_ping(self, conn: Connection, payload: events.Empty) -> dict[str, int]:
        return {"serverTime": int(time.time() * 1000)}

    # -- outbound (encode once, write many) --------------------------------------------------

    def _observe(self, type_: str, started: float, count: int) -> None:
        self.metrics.fanout_seconds.observe(time.perf_counter() - started)
        self.metrics.event_out(type_, count)

    async def to_users(
        self, user_ids: Iterable[str], type_: str, data: Any, *, exclude_conn: str | None = None
    ) -> int:
        started = time.perf_counter()
        count = await self.state.deliver_to_users(
            user_ids, event_frame(type_, data), exclude_conn=exclude_conn
        )
        self._observe(type_, started, count)
        return count

    async def to_rooms(
        self, room_ids: Iterable[str], type_: str, data: Any, *, exclude_user: str | None = None
    ) -> int:
        started = time.perf_counter()
        count = await self.state.deliver_to_rooms(
            room_ids, event_frame(type_, data), exclude_user=exclude_user
        )
        self._observe(type_, started, count)
        return count

    async def to_conns(self, conn_ids: Iterable[str], type_: str, data: Any) -> int:
        started = time.perf_counter()
        count = await self.state.deliver_to_connections(conn_ids, event_frame(type_, data))
        self._observe(type_, started, count)
        return count
