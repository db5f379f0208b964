"""A real local HTTP server standing in for the chat backend's webhook endpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)


def independent_signature(secret: str, headers: dict[str, str], body: bytes) -> str:
    """Recomputed here from the Standard Webhooks spec, not with the server's helper."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return (
        "v1,"
        + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    )


@dataclass
class Receiver:
    """Records every attempt. ``behaviour(event, attempt)`` picks the answer: an HTTP status,
    or a float to hang that many seconds (longer than the sender's timeout: recorded as
    status 0, not delivered)."""

    behaviour: Callable[[dict[str, Any], int], int | float] = lambda event, attempt: 200
    attempts: list[Delivery] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hooks"))

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event = orjson.loads(body)
        attempt = 1 + sum(1 for d in self.attempts if d.event["id"] == event["id"])
        answer = self.behaviour(event, attempt)
        if isinstance(answer, float):
            self.attempts.append(Delivery(dict(request.headers), body, 0))
            await asyncio.sleep(answer)
            return web.Response(status=200)
        self.attempts.append(Delivery(dict(request.headers), body, answer))
        return web.Response(status=answer)

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Events answered 2xx, in the order they were answered."""
        return [d.event for d in self.attempts if 200 <= d.status < 300]

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [e for e in self.delivered if e["type"] in types]

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.delivered):
            if asyncio.get_running_loop().time() > deadline:
                got = [(e["type"], e.get("userId")) for e in self.delivered]
                raise AssertionError(f"webhooks not as expected; delivered: {got}")
            await asyncio.sleep(0.05)
        return self.delivered
