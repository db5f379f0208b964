"""The room API's request pipeline, which every endpoint goes through: authenticate,
rate-limit, validate path, query and body, run, answer JSON.

Each :class:`Endpoint` declares its models, statuses and parameters once, in the one route
table (:mod:`signaling.api.routes`); the router and the OpenAPI document
(:mod:`signaling.api.openapi`) are both built from that table, so the document cannot
drift from what the server does. Handlers get a :class:`Context` carrying the parts of the
node the API uses (:class:`ApiServices`), not the node itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from signaling import events
from signaling.api.auth import authenticate_api
from signaling.api.errors import ApiError
from signaling.api.models import CallId, NodeId, NodeList, RecordingId, TrackId
from signaling.protocol import HubError
from signaling.ratelimit import TokenBucket

if TYPE_CHECKING:
    from config import Settings
    from signaling.calls import CallService
    from signaling.metrics import HubMetrics
    from signaling.room_lifecycle import RoomLifecycle
    from signaling.state.calls import CallStore
    from signaling.state.delivery import Fanout
    from signaling.state.media_hosts import MediaHosts
    from signaling.state.membership import MembershipStore
    from signaling.state.presence import PresenceStore
    from signaling.state.room_records import RoomRecords

log = logging.getLogger("switchboard.api")

PREFIX = "/api/v1"
#: Statuses any authenticated operation may answer; bodies add 413 and 415.
AUTH_ERRORS = (400, 401, 429, 503)
BODY_ERRORS = (*AUTH_ERRORS, 413, 415)

#: Every path parameter's type, shared by validation and the document.
PATH_PARAMS: dict[str, TypeAdapter[Any]] = {
    "roomId": TypeAdapter(events.RoomId),
    "userId": TypeAdapter(events.UserId),
    "trackId": TypeAdapter(TrackId),
    "callId": TypeAdapter(CallId),
    "nodeId": TypeAdapter(NodeId),
    "recordingId": TypeAdapter(RecordingId),
}


class MediaAdmin(Protocol):
    """What the SFU offers the API about the cluster's media nodes."""

    async def list_nodes(self) -> NodeList: ...

    async def drain_node(self, node: str, deadline: float) -> bool:
        """Tell ``node`` (this one or another) to drain; ``False`` if it is not alive."""

    async def room_media(self, room_id: str) -> dict[str, Any] | None:
        """A room's live media statistics from its media node (``None``: no group call)."""

    async def recordings(self, room_id: str, op: str, **body: Any) -> dict[str, Any]:
        """Start, stop or list a room's recordings, on the node hosting its group call."""


@dataclass(frozen=True, slots=True)
class ApiServices:
    """The parts of a node the room API uses."""

    settings: Settings
    records: RoomRecords
    membership: MembershipStore
    presence: PresenceStore
    calls: CallStore
    hosts: MediaHosts
    lifecycle: RoomLifecycle
    call_service: CallService
    fanout: Fanout
    media: MediaAdmin
    metrics: HubMetrics


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    adapter: TypeAdapter[Any]
    description: str


@dataclass(slots=True)
class Context:
    api: ApiServices
    params: dict[str, Any]
    query: dict[str, Any]
    body: Any


Handler = Callable[[Context], Awaitable[BaseModel | None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    response: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_optional: bool = False
    status: int = 200
    errors: tuple[int, ...] = ()
    query: tuple[Query, ...] = ()

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def route(method: str, path: str, handler: Handler, **options: Any) -> Endpoint:
    """One row of the route table; the handler's docstring is the operation's summary."""
    summary = (handler.__doc__ or handler.__name__).strip()
    return Endpoint(method, PREFIX + path, handler, summary, **options)


# -- the pipeline ---------------------------------------------------------------------------


def _invalid(where: str, exc: ValidationError) -> ApiError:
    return ApiError(400, "invalid_request", events.describe(exc, root=where))


async def _read_body(request: web.Request, ep: Endpoint, limit: int) -> Any:
    assert ep.body is not None
    if not request.can_read_body:
        if ep.body_optional:
            return ep.body()
        raise ApiError(400, "invalid_request", "a JSON body is required")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"bodies are limited to {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "body_too_large", f"bodies are limited to {limit} bytes")
    if not raw.strip() and ep.body_optional:
        return ep.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    try:
        return ep.body.model_validate(data)
    except ValidationError as exc:
        raise _invalid("body", exc) from None


class RoomApi:
    """The room API's HTTP routes, built from a route table over the node's services."""

    def __init__(self, services: ApiServices, endpoints: Sequence[Endpoint]) -> None:
        self.services = services
        self.endpoints = tuple(endpoints)
        self._limiters: dict[str, TokenBucket] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.route(ep.method, ep.path, self._aiohttp_handler(ep)) for ep in self.endpoints]

    def _limit(self, key: str) -> None:
        bucket = self._limiters.get(key)
        if bucket is None:
            s = self.services.settings
            bucket = TokenBucket(s.api_rate_limit_per_second, s.api_rate_limit_burst)
            self._limiters[key] = bucket
        if not bucket.take():
            raise ApiError.rate_limited(bucket.retry_after(), bucket.rate)

    async def _run(self, request: web.Request, ep: Endpoint) -> web.Response:
        services = self.services
        key = authenticate_api(request, services.settings)
        self._limit(key)
        return await _answer(request, ep, services)

    def _aiohttp_handler(self, ep: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                response = await self._run(request, ep)
            except ApiError as exc:
                response = exc.response()
            except HubError as exc:
                response = ApiError.from_hub(exc).response()
            except Exception:
                log.exception("room API handler failed", extra={"operation": ep.operation_id})
                response = ApiError(500, "internal_error", "internal error").response()
            self.services.metrics.api_request(response.status)
            return response

        return handle


async def _answer(request: web.Request, ep: Endpoint, services: ApiServices) -> web.Response:
    params = {}
    for name, raw in request.match_info.items():
        try:
            params[name] = PATH_PARAMS[name].validate_python(raw)
        except ValidationError as exc:
            raise _invalid(name, exc) from None
    query = {}
    for q in ep.query:
        if q.name in request.query:
            try:
                query[q.name] = q.adapter.validate_python(request.query[q.name])
            except ValidationError as exc:
                raise _invalid(q.name, exc) from None
    limit = services.settings.api_max_body_bytes
    body = await _read_body(request, ep, limit) if ep.body else None
    result = await ep.handler(Context(services, params, query, body))
    if result is None:
        return web.Response(status=204)
    return web.Response(
        body=orjson.dumps(result.model_dump(mode="json")),
        status=ep.status,
        content_type="application/json",
    )
