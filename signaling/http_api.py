"""Plain HTTP routes of a node: health, Prometheus metrics, call status, ICE servers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signaling import __version__
from signaling.auth import authenticate, json_error

if TYPE_CHECKING:
    from config.server import ServerSettings
    from signaling.hub import Hub
    from signaling.metrics import HubMetrics
    from signaling.state.calls import CallStore
    from turn.credentials import IceServers
    from turn.health import TurnHealth


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class NodeHttp:
    def __init__(
        self,
        *,
        hub: Hub,
        settings: ServerSettings,
        metrics: HubMetrics,
        state_status: Callable[[], dict[str, Any]],
        turn_health: TurnHealth,
        calls: CallStore,
        ice_servers: IceServers,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.metrics = metrics
        self.state_status = state_status
        self.turn_health = turn_health
        self.calls = calls
        self.ice_servers = ice_servers

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/health", self.health),
            web.get("/metrics", self.prometheus),
            web.get("/api/calls/{call_id}/status", self.call_status),
            web.get("/api/ice-servers", self.ice_servers_for),
        ]

    async def health(self, request: web.Request) -> web.Response:
        """Liveness plus TURN and Redis reachability. A TURN server that does not answer,
        or Redis being away, makes the status ``degraded`` but keeps 200: the node still
        serves signaling (its own users, in Redis's case)."""
        hub = self.hub
        turn = await self.turn_health.report()
        state = self.state_status()
        status = "ok"
        if hub.draining:
            status = "draining"
        elif not all(entry["ok"] for entry in turn) or state.get("connected") is False:
            status = "degraded"
        return _json(
            {
                "status": status,
                "version": __version__,
                "connections": hub.delivery.local_connection_count(),
                "uptimeSeconds": round(time.time() - hub.started_at, 3),
                "turn": turn,
                "state": state,
            },
            status=503 if hub.draining else 200,
        )

    async def prometheus(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def call_status(self, request: web.Request) -> web.Response:
        """Whether a call is still active; only its participants may ask."""
        principal = authenticate(request, self.settings, allow_query=False)
        if isinstance(principal, web.Response):
            return principal
        call_id = request.match_info["call_id"]
        call = await self.calls.get(call_id)
        if call is None:
            return json_error(404, "call_not_found", f"no call '{call_id[:64]}'")
        if principal.user_id not in call.participants:
            return json_error(403, "not_in_call", "only participants may see this call")
        return _json({"active": call.state != "ended", **call.to_wire()})

    async def ice_servers_for(self, request: web.Request) -> web.Response:
        """Fresh ICE servers (TURN credentials) for the bearer of a join token."""
        principal = authenticate(request, self.settings, allow_query=False)
        if isinstance(principal, web.Response):
            return principal
        return _json(
            {
                "iceServers": self.ice_servers.for_user(principal.user_id),
                "ttl": self.ice_servers.ttl,
            }
        )
