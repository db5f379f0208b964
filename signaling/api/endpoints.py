"""The room API's route table and the one request pipeline every endpoint goes through:
authenticate, rate-limit, validate path, query and body, run, answer JSON.

Each :class:`Endpoint` declares its models, statuses and parameters once; the router and the
OpenAPI document (:mod:`signaling.api.openapi`) are both built from this table, so the
document cannot drift from what the server does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from signaling import events
from signaling.api.auth import authenticate_api
from signaling.api.errors import ApiError
from signaling.api.models import CallId, NodeId, TrackId
from signaling.protocol import HubError
from signaling.ratelimit import TokenBucket
from signaling.ws import HUB_KEY

if TYPE_CHECKING:
    from signaling.hub import Hub

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
}


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    adapter: TypeAdapter[Any]
    description: str


@dataclass(slots=True)
class Context:
    hub: Hub
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


ENDPOINTS: list[Endpoint] = []


def endpoint(method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
    """Register a handler; its docstring's first line is the operation's summary."""

    def register(handler: Handler) -> Handler:
        summary = (handler.__doc__ or handler.__name__).strip()
        ENDPOINTS.append(Endpoint(method, PREFIX + path, handler, summary, **options))
        return handler

    return register


# -- the pipeline ---------------------------------------------------------------------------

_LIMITERS = web.AppKey("api_limiters", dict)


def _limit(request: web.Request, hub: Hub, key: str) -> None:
    limiters: dict[str, TokenBucket] = request.app[_LIMITERS]
    bucket = limiters.get(key)
    if bucket is None:
        s = hub.settings
        bucket = limiters[key] = TokenBucket(s.api_rate_limit_per_second, s.api_rate_limit_burst)
    if not bucket.take():
        raise ApiError.rate_limited(bucket.retry_after(), bucket.rate)


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


async def _run(request: web.Request, ep: Endpoint) -> web.Response:
    hub: Hub = request.app[HUB_KEY]
    key = authenticate_api(request, hub.settings)
    _limit(request, hub, key)
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
    body = await _read_body(request, ep, hub.settings.api_max_body_bytes) if ep.body else None
    result = await ep.handler(Context(hub, params, query, body))
    if result is None:
        return web.Response(status=204)
    return web.Response(
        body=orjson.dumps(result.model_dump(mode="json")),
        status=ep.status,
        content_type="application/json",
    )


def _aiohttp_handler(ep: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            response = await _run(request, ep)
        except ApiError as exc:
            response = exc.response()
        except HubError as exc:
            response = ApiError.from_hub(exc).response()
        except Exception:
            log.exception("room API handler failed", extra={"operation": ep.operation_id})
            response = ApiError(500, "internal_error", "internal error").response()
        request.app[HUB_KEY].metrics.api_request(response.status)
        return response

    return handle


def add_api_routes(app: web.Application) -> None:
    # Importing the handler modules registers their endpoints.
    from signaling.api import messaging, nodes, openapi, rooms  # noqa: F401

    app[_LIMITERS] = {}
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, ep.path, _aiohttp_handler(ep))
    openapi.add_document_routes(app)
