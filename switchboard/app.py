"""The aiohttp application of one node, and draining it."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from config import Settings
from signaling.protocol import CloseCode
from signaling.state import State
from switchboard.node import Node
from switchboard.routes import http_routes

log = logging.getLogger("switchboard.app")

NODE_KEY: web.AppKey[Node] = web.AppKey("node")


def create_app(settings: Settings, state: State | None = None) -> web.Application:
    if settings.jwt_secret is None:
        raise ValueError("a JWT secret is required (SWITCHBOARD_JWT_SECRET or --dev)")
    if settings.webhook_urls and settings.api_secret is None:
        raise ValueError("webhooks are signed with the API secret: set SWITCHBOARD_API_SECRET")
    if settings.message_backend_url and settings.api_secret is None:
        raise ValueError(
            "requests to the message backend are signed with the API secret: "
            "set SWITCHBOARD_API_SECRET"
        )
    app = web.Application()
    node = app[NODE_KEY] = Node(settings, state)
    app.add_routes(
        http_routes(
            websocket=node.websocket,
            socketio=node.socketio,
            node_http=node.http,
            room_api=node.room_api,
            settings=settings,
        )
    )

    async def on_startup(_: web.Application) -> None:
        await node.start()

    async def on_shutdown(_: web.Application) -> None:
        await drain(app)

    async def on_cleanup(_: web.Application) -> None:
        await node.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def drain(app: web.Application, media_deadline: float | None = None) -> None:
    """Refuse new connections and tell every client to reconnect elsewhere (1012).

    With ``media_deadline`` (stopping the process), group calls hosted here first get up to
    that long to finish, then move to other nodes; the clients' sockets close after that,
    and their group call sessions resume on whichever node they reconnect to."""
    node = app[NODE_KEY]
    hub, delivery = node.hub, node.state.delivery
    if hub.draining and not delivery.local_connection_count():
        return
    hub.draining = True
    if media_deadline is not None:
        await node.sfu.media.drain(media_deadline)
    sockets = delivery.local_connections()
    log.info("draining", extra={"count": len(sockets)})
    if not sockets:
        return
    reason = "server restarting, please reconnect"
    closing = [s.close(CloseCode.SERVICE_RESTART, reason) for s in sockets]
    try:
        await asyncio.wait_for(
            asyncio.gather(*closing, return_exceptions=True), node.settings.drain_timeout or None
        )
    except TimeoutError:
        log.warning("drain timed out; remaining connections are cut")
    if node.socketio is not None:
        await node.socketio.settle(node.settings.drain_timeout or 5.0)
