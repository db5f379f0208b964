"""Plain HTTP routes of the hub: health, Prometheus metrics, call status."""

from __future__ import annotations

import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signaling import __version__
from signaling.auth import authenticate, json_error
from signaling.ws import HUB_KEY


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    """Liveness plus TURN and Redis reachability. A TURN server that does not answer, or
    Redis being away, makes the status ``degraded`` but keeps 200: the node still serves
    signaling (its own users, in Redis's case)."""
    hub = request.app[HUB_KEY]
    turn = await hub.turn_health.report()
    state = hub.state.status()
    status = "ok"
    if hub.draining:
        status = "draining"
    elif not all(entry["ok"] for entry in turn) or state.get("connected") is False:
        status = "degraded"
    return _json(
        {
            "status": status,
            "version": __version__,
            "connections": hub.state.local_connection_count(),
            "uptimeSeconds": round(time.time() - hub.started_at, 3),
            "turn": turn,
            "state": state,
        },
        status=503 if hub.draining else 200,
    )


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = generate_latest(hub.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def call_status(request: web.Request) -> web.Response:
    """Whether a call is still active; only its participants may ask."""
    hub = request.app[HUB_KEY]
    principal = authenticate(request, hub.settings, allow_query=False)
    if isinstance(principal, web.Response):
        return principal
    call_id = request.match_info["call_id"]
    call = await hub.state.get_call(call_id)
    if call is None:
        return json_error(404, "call_not_found", f"no call '{call_id[:64]}'")
    if principal.user_id not in call.participants:
        return json_error(403, "not_in_call", "only participants may see this call")
    return _json({"active": call.state != "ended", **call.to_wire()})


async def ice_servers(request: web.Request) -> web.Response:
    """Fresh ICE servers (TURN credentials) for the bearer of a join token."""
    hub = request.app[HUB_KEY]
    principal = authenticate(request, hub.settings, allow_query=False)
    if isinstance(principal, web.Response):
        return principal
    return _json(
        {"iceServers": hub.settings.ice_servers(principal.user_id), "ttl": hub.settings.turn_ttl}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/calls/{call_id}/status", call_status)
    app.router.add_get("/api/ice-servers", ice_servers)
