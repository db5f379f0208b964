"""The ``/ws`` endpoint: refuse bad upgrades over HTTP, then pump frames into the hub."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from signaling.auth import authenticate, json_error
from signaling.connection import Connection
from signaling.ratelimit import TokenBucket

if TYPE_CHECKING:
    from signaling.hub import Hub

log = logging.getLogger("switchboard.ws")

HUB_KEY: web.AppKey[Hub] = web.AppKey("hub")
_DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)


def hard_frame_cap(max_frame_bytes: int) -> int:
    """Frames up to this size are read and answered with ``frame_too_large``; larger ones
    make aiohttp close the connection with 1009 before buffering them."""
    return max(4 * max_frame_bytes, 256 * 1024)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    settings = hub.settings
    metrics = hub.metrics
    if hub.draining:
        metrics.upgrades_refused.labels("draining").inc()
        return json_error(503, "server_draining", "server is restarting; reconnect shortly")
    origin = request.headers.get("Origin")
    if settings.allowed_origins and origin is not None and origin not in settings.allowed_origins:
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
        hub.state.new_connection_id(),
        principal,
        ws,
        transport,  # type: ignore[arg-type]
        rate=TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst),
        errors=TokenBucket(settings.error_refill_per_second, settings.error_budget),
        send_buffer_limit=settings.send_buffer_limit,
        batcher=hub.batcher,
    )
    try:
        await hub.on_connect(conn)
        while not conn.closed:
            msg = await ws.receive()
            if msg.type not in _DATA_TYPES:
                break
            await hub.handle_message(conn, msg)
    finally:
        # Shielded: a cancelled handler (peer gone) must still finish its clean-up, which
        # awaits the shared state; a half-done clean-up would leave ghosts in Redis.
        await asyncio.shield(hub.on_disconnect(conn))
    return ws
