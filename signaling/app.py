"""Application factory: wires settings, state, metrics, the hub and the routes together."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from media.signaling import SFU_KEY, SfuSignaling
from media.web import add_web_routes
from signaling.api import add_api_routes
from signaling.http_api import add_routes
from signaling.hub import Hub
from signaling.metrics import HubMetrics
from signaling.protocol import CloseCode
from signaling.settings import Settings
from signaling.state import HubState, MemoryState
from signaling.ws import HUB_KEY, websocket_handler

log = logging.getLogger("switchboard.app")


def make_state(settings: Settings) -> HubState:
    """In-memory state by default; Redis when ``redis_url`` is set (several nodes)."""
    if settings.redis_url is None:
        return MemoryState()
    from signaling.state.redis_state import RedisState

    return RedisState(
        settings.redis_url,
        prefix=settings.redis_prefix,
        node_id=settings.node_id,
        heartbeat_interval=settings.node_heartbeat_interval,
        dead_after=settings.node_dead_after,
        node_info={"host": settings.host, "port": settings.port},
    )


def create_app(settings: Settings, state: HubState | None = None) -> web.Application:
    if settings.jwt_secret is None:
        raise ValueError("a JWT secret is required (SWITCHBOARD_JWT_SECRET or --dev)")
    if settings.webhook_urls and settings.api_secret is None:
        raise ValueError("webhooks are signed with the API secret: set SWITCHBOARD_API_SECRET")
    app = web.Application()
    hub = Hub(settings, state or make_state(settings), HubMetrics())
    sfu = SfuSignaling(hub)
    app[HUB_KEY] = hub
    app[SFU_KEY] = sfu
    app.router.add_get("/ws", websocket_handler)
    add_routes(app)
    add_api_routes(app)
    add_web_routes(app, settings)

    async def on_startup(_: web.Application) -> None:
        await hub.start()
        sfu.start()

    async def on_shutdown(_: web.Application) -> None:
        await drain(app)

    async def on_cleanup(_: web.Application) -> None:
        await sfu.stop()
        await hub.stop()
        await hub.state.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def drain(app: web.Application, media_deadline: float | None = None) -> None:
    """Refuse new connections and tell every client to reconnect elsewhere (1012).

    With ``media_deadline`` (stopping the process), group calls hosted here first get up to
    that long to finish, then move to other nodes; the clients' sockets close after that,
    and their group call sessions resume on whichever node they reconnect to."""
    hub = app[HUB_KEY]
    if hub.draining and not hub.state.local_connection_count():
        return
    hub.draining = True
    if media_deadline is not None:
        await app[SFU_KEY].media.drain(media_deadline)
    conns = hub.state.local_connections()
    log.info("draining", extra={"count": len(conns)})
    if not conns:
        return
    reason = "server restarting, please reconnect"
    closing = [c.close(CloseCode.SERVICE_RESTART, reason) for c in conns]
    try:
        await asyncio.wait_for(
            asyncio.gather(*closing, return_exceptions=True), hub.settings.drain_timeout or None
        )
    except TimeoutError:
        log.warning("drain timed out; remaining connections are cut")
