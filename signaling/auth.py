"""Extracting and checking the join token of an HTTP request (WebSocket upgrade or API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from signaling.tokens import Principal, TokenError, verify_token

if TYPE_CHECKING:
    from config.server import ServerSettings


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The JSON error body every HTTP refusal uses: ``{"error": {"code", "message"}}``."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or None
    )


def request_token(request: web.Request, *, allow_query: bool) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    if allow_query:
        return request.query.get("access_token") or None
    return None


def authenticate(
    request: web.Request, settings: ServerSettings, *, allow_query: bool
) -> Principal | web.Response:
    """The verified principal, or a 401 response saying precisely why not."""
    token = request_token(request, allow_query=allow_query)
    if token is None:
        where = "'access_token' query parameter or " if allow_query else ""
        return json_error(
            401,
            "token_missing",
            f"a join token is required ({where}'Authorization: Bearer' header)",
            **{"WWW-Authenticate": 'Bearer realm="switchboard"'},
        )
    assert settings.jwt_secret is not None
    try:
        return verify_token(
            token, settings.jwt_secret.get_secret_value(), leeway=settings.jwt_leeway
        )
    except TokenError as exc:
        return json_error(
            401,
            exc.code,
            exc.message,
            **{"WWW-Authenticate": f'Bearer realm="switchboard", error="{exc.code}"'},
        )
