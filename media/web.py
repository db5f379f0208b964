"""The browser SDK (``/sdk/switchboard.js`` and the modules it imports, plain ES modules)
and the ``/demo`` page.

With ``demo_tokens`` on (``switchboard serve --dev`` turns it on), ``/demo/token`` mints a
short-lived guest token limited to rooms named ``demo-*``, so a person can try a call in
two tabs without a chat backend; the user id comes from the name, so two tabs signed in
with the same name are two devices of one user. ``/demo/messages`` is then a tiny chat
backend for the message proxy: it checks the signature and echoes each message back with
an id, persisting nothing. Both are off by default: production tokens and messages
belong to the chat backend.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import orjson
from aiohttp import web

from config import Settings
from signaling.tokens import mint_token
from signaling.webhooks.signing import WebhookVerificationError, verify

STATIC = Path(__file__).parent / "static"
DEMO_TOKEN_TTL = 3600


def demo_user_id(name: str) -> str:
    """A stable user id for a demo name (``"Bob Smith"`` → ``"u-bob-smith"``), or a random
    guest id for a name with nothing usable in it."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32]
    return f"u-{slug}" if slug else f"guest-{secrets.token_hex(4)}"


def web_routes(settings: Settings) -> list[web.RouteDef]:
    # The SDK's modules, read once: /sdk/switchboard.js imports its siblings relatively.
    modules = {path.name: path.read_bytes() for path in STATIC.glob("*.js")}
    package = {name: (STATIC / name).read_bytes() for name in ("switchboard.d.ts", "package.json")}
    demo = (STATIC / "demo.html").read_bytes()
    headers = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}

    async def get_sdk(request: web.Request) -> web.Response:
        body = modules.get(request.match_info["name"] + ".js")
        if body is None:
            raise web.HTTPNotFound(text="no such SDK module")
        return web.Response(body=body, content_type="text/javascript", headers=headers)

    async def get_package_file(request: web.Request) -> web.Response:
        """The SDK's types and its package.json, for a front-end team's tooling."""
        name = request.path.rsplit("/", 1)[1]
        kind = "application/json" if name.endswith(".json") else "application/typescript"
        return web.Response(body=package[name], content_type=kind, headers=headers)

    async def get_demo(_: web.Request) -> web.Response:
        return web.Response(body=demo, content_type="text/html")

    async def get_demo_token(request: web.Request) -> web.Response:
        if not settings.demo_tokens or settings.jwt_secret is None:
            raise web.HTTPNotFound(text="demo tokens are disabled")
        name = request.query.get("name", "").strip()[:40] or "guest"
        user = demo_user_id(request.query.get("name", ""))
        token = mint_token(
            settings.jwt_secret.get_secret_value(),
            user,
            name=name,
            rooms=["demo-*"],
            ttl=DEMO_TOKEN_TTL,
        )
        return web.json_response({"token": token, "userId": user, "name": name})

    async def post_demo_message(request: web.Request) -> web.Response:
        """The demo's chat backend: a signed ``message.send`` is answered with the message
        to broadcast (nothing is stored)."""
        if not settings.demo_tokens or settings.api_secret is None:
            raise web.HTTPNotFound(text="the demo message backend is off")
        body = await request.read()
        try:
            verify(settings.api_secret.get_secret_value(), request.headers, body)
            sent = orjson.loads(body)
            message = {
                "id": "demo_" + secrets.token_hex(8),
                "senderId": sent["userId"],
                "senderName": sent.get("name") or sent["userId"],
                "content": sent["content"],
                "messageType": sent.get("messageType", "text"),
                "createdAt": int(time.time() * 1000),
            }
        except (WebhookVerificationError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            error = {"code": "bad_request", "message": str(exc)[:200]}
            return web.json_response({"error": error}, status=400)
        return web.json_response({"message": message})

    return [
        web.get("/sdk/{name:[a-z_]+}.js", get_sdk),
        web.get("/sdk/switchboard.d.ts", get_package_file),
        web.get("/sdk/package.json", get_package_file),
        web.get("/demo", get_demo),
        web.get("/demo/token", get_demo_token),
        web.post("/demo/messages", post_demo_message),
    ]
