"""The HTTP side of Engine.IO's polling transport: its refusals (a JSON ``{"code",
"message"}`` body with Engine.IO's own codes), CORS for browsers, text answers, and a
POST body read no further than ``maxPayload``."""

from __future__ import annotations

from aiohttp import web

from signaling.socketio import packets as p

# Engine.IO's refusal codes (its JSON body {"code", "message"} with status 400 or 403).
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_VERSION = 5

TEXT_CONTENT = "text/plain; charset=UTF-8"


def cors(request: web.Request) -> dict[str, str]:
    """Headers letting the requesting page read the answer (its origin was checked)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}


def refuse(request: web.Request, status: int, code: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=p.engine_error(code, message),
        content_type="application/json",
        headers=cors(request),
    )


def text(request: web.Request, body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": TEXT_CONTENT, **cors(request)})


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The POST body, or ``None`` past ``limit`` (without reading all of it)."""
    if (request.content_length or 0) > limit:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
