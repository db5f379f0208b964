"""A real local chat backend for the message proxy tests: it checks each request's
signature, persists messages with ids of its own, and can be told to be slow, refuse,
fail or answer garbage."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from signaling.webhooks import verify
from tests.conftest import API_SECRET


class MessageBackend:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.persisted: list[dict[str, Any]] = []
        self.mode = "ok"  # ok | refuse | fail | garbage
        self.delay = 0.0
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/messages"

    async def start(self) -> MessageBackend:
        app = web.Application()
        app.router.add_post("/messages", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verify(API_SECRET, request.headers, body)  # raises (500) if not authentic
        data = orjson.loads(body)
        self.requests.append((dict(request.headers), data))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "refuse":
            error = {"code": "content_rejected", "message": "no links allowed"}
            return web.json_response({"error": error}, status=422)
        if self.mode == "fail":
            return web.Response(status=503, text="down")
        if self.mode == "garbage":
            return web.Response(text="ok")
        message = {
            "id": f"msg_{len(self.persisted) + 1}",
            "senderId": data["userId"],
            "content": data["content"],
            "messageType": data["messageType"],
        }
        self.persisted.append(message)
        return web.json_response({"message": message})
