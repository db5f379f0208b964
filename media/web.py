"""The browser SDK (``/sdk/switchboard.js`` and the modules it imports, plain ES modules)
and the ``/demo`` page.

With ``demo_tokens`` on (``switchboard serve --dev`` turns it on), ``/demo/token`` mints a
short-lived guest token limited to rooms named ``demo-*``, so a person can try a call in
two tabs without a chat backend. It is off by default: production tokens come from the
chat backend.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from aiohttp import web

from config.server import ServerSettings
from signaling.tokens import mint_token

STATIC = Path(__file__).parent / "static"
DEMO_TOKEN_TTL = 3600


def web_routes(settings: ServerSettings) -> list[web.RouteDef]:
    # The SDK's modules, read once: /sdk/switchboard.js imports its siblings relatively.
    modules = {path.name: path.read_bytes() for path in STATIC.glob("*.js")}
    demo = (STATIC / "demo.html").read_bytes()

    async def get_sdk(request: web.Request) -> web.Response:
        body = modules.get(request.match_info["name"] + ".js")
        if body is None:
            raise web.HTTPNotFound(text="no such SDK module")
        return web.Response(
            body=body,
            content_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
        )

    async def get_demo(_: web.Request) -> web.Response:
        return web.Response(body=demo, content_type="text/html")

    async def get_demo_token(request: web.Request) -> web.Response:
        if not settings.demo_tokens or settings.jwt_secret is None:
            raise web.HTTPNotFound(text="demo tokens are disabled")
        name = request.query.get("name", "")[:40] or "guest"
        user = f"guest-{secrets.token_hex(4)}"
        token = mint_token(
            settings.jwt_secret.get_secret_value(),
            user,
            name=name,
            rooms=["demo-*"],
            ttl=DEMO_TOKEN_TTL,
        )
        return web.json_response({"token": token, "userId": user})

    return [
        web.get("/sdk/{name:[a-z_]+}.js", get_sdk),
        web.get("/demo", get_demo),
        web.get("/demo/token", get_demo_token),
    ]
