"""The hub: checks each decoded event, routes it to the service handling it, answers.

Transport-neutral: a transport (``/ws``, :mod:`signaling.websocket`) decodes its frames
into ``(id, type, data)`` and calls :meth:`Hub.dispatch`; the hub applies the
per-connection rate limit, looks the type up in the route table it was built with (one
explicit table, assembled by the composition root), validates ``data`` against the
route's model and awaits the handler. A client that keeps failing exhausts its error
budget and is closed with 1008; everyone else is untouched.

It also runs a connection's life: ``session:ready`` on connect, then the hooks the
composition root gave it (presence, ringing calls); on disconnect the disconnect hooks
(presence and rooms, after their grace; calls); for connections of a dead node the
release hooks (presence, rooms, calls).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from signaling import events
from signaling.overlap import overlapped
from signaling.protocol import CloseCode, ErrorCode, HubError

if TYPE_CHECKING:
    from config.server import ServerSettings
    from signaling.metrics import HubMetrics
    from signaling.state.delivery import Delivery
    from signaling.state.models import RemoteConnection
    from signaling.websocket import Connection
    from turn.credentials import IceServers

log = logging.getLogger("switchboard.hub")

Handler = Callable[["Connection", Any], Awaitable[Any]]
GroupToggle = Callable[["Connection", str, str, bool], Awaitable[Any]]
ConnectionHook = Callable[["Connection"], Awaitable[None]]
ReleaseHook = Callable[["Connection | RemoteConnection"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    model: type[BaseModel]
    handler: Handler


async def ping(conn: Connection, payload: events.Empty) -> dict[str, int]:
    return {"serverTime": int(time.time() * 1000)}


def call_or_room(
    for_call: Handler, for_room: GroupToggle, kind: str, fixed: bool | None
) -> Handler:
    """Media toggles serve 1:1 calls (``callId``) and group call rooms (``roomId``)."""

    async def handler(conn: Connection, payload: Any) -> Any:
        if payload.roomId is None:
            return await for_call(conn, payload)
        enabled = fixed if fixed is not None else payload.enabled
        return await for_room(conn, payload.roomId, kind, enabled)

    return handler


class Hub:
    def __init__(
        self,
        *,
        settings: ServerSettings,
        delivery: Delivery,
        metrics: HubMetrics,
        ice_servers: IceServers,
        routes: Mapping[str, Route],
        on_connected: Sequence[ConnectionHook],
        on_disconnected: Sequence[ConnectionHook],
        on_released: Sequence[ReleaseHook],
        on_closed: Sequence[ConnectionHook],
        overlap: bool,
    ) -> None:
        self.settings = settings
        #: whether independent hooks run side by side (the state is remote)
        self.overlap = overlap
        self.delivery = delivery
        self.metrics = metrics
        self.ice_servers = ice_servers
        self.routes = dict(routes)
        self.on_connected = tuple(on_connected)
        self.on_disconnected = tuple(on_disconnected)
        self.on_released = tuple(on_released)
        self.on_closed = tuple(on_closed)
        self.started_at = time.time()
        self.draining = False

    # -- connection lifecycle --------------------------------------------------------------

    async def on_connect(self, conn: Connection) -> None:
        self.delivery.attach(conn)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        s = self.settings
        conn.send(
            "session:ready",
            {
                "connectionId": conn.id,
                "userId": conn.user_id,
                "name": conn.name,
                "heartbeatInterval": s.heartbeat_interval,
                "maxFrameBytes": s.max_frame_bytes,
                "rateLimit": {"perSecond": s.rate_limit_per_second, "burst": s.rate_limit_burst},
                "serverTime": int(time.time() * 1000),
                "tokenExpiresAt": int(conn.principal.expires_at * 1000),
                "iceServers": self.ice_servers.for_user(conn.user_id),
            },
        )
        await overlapped(self.overlap, *(_deferrable(h, conn) for h in self.on_connected))
        log.info("connected", extra={"conn": conn.id, "user": conn.user_id})

    async def on_disconnect(self, conn: Connection) -> None:
        conn.closed = True
        try:
            await overlapped(self.overlap, *(_deferrable(h, conn) for h in self.on_disconnected))
            for hook in self.on_closed:
                await hook(conn)
        finally:
            self.delivery.detach(conn)
            self.metrics.connections.dec()
            if conn.close_code is not None:
                self.metrics.closes.labels(str(conn.close_code)).inc()
            log.info("disconnected", extra={"conn": conn.id, "user": conn.user_id})

    async def release(self, conn: Connection | RemoteConnection) -> None:
        """A device of a dead node is gone: presence first (its audience is the rooms the
        device is still in), then its rooms, then its calls (which get the grace period).
        Own connections that close go through ``on_disconnected`` instead, which may hold
        presence and rooms for a grace (:mod:`signaling.presence_grace`)."""
        for hook in self.on_released:
            await _deferrable(hook, conn)

    async def release_lost(self, lost: list[RemoteConnection]) -> None:
        """Take connections of a dead node out of presence, rooms and calls, telling
        everyone as if each had disconnected (calls get their grace period)."""
        for conn in lost:
            try:
                await self.release(conn)
            except Exception:
                log.exception("cleaning up a lost connection failed", extra={"conn": conn.id})

    # -- inbound ---------------------------------------------------------------------------

    async def dispatch(
        self, conn: Connection, id_: str | int | None, type_: Any, data: Any
    ) -> None:
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
        if not isinstance(type_, str):
            await self.reject(conn, ErrorCode.INVALID_ENVELOPE, "'type' must be a string", id_)
            return
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


async def _deferrable(hook: Callable[[Any], Awaitable[None]], conn: Any) -> None:
    """Run a connection hook; with the shared state away its work is deferred (the state
    redoes it when it is back), which must not stop the hooks after it."""
    try:
        await hook(conn)
    except HubError as exc:
        name = getattr(hook, "__qualname__", repr(hook))
        log.warning("%s deferred", name, extra={"conn": conn.id, "code": exc.code})
