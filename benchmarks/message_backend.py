"""A stand-in chat backend for the ``messages`` benchmark: answers each ``message:send``
POST with a persisted message (an id of its own), as a real backend would after writing it.
Run beside the servers on the generators' CPUs: its cost is the chat product's, not the
server's. ``python -m benchmarks.message_backend PORT``."""

from __future__ import annotations

import itertools
import sys

import orjson
import uvloop
from aiohttp import web


def make_app() -> web.Application:
    ids = itertools.count(1)

    async def persist(request: web.Request) -> web.Response:
        sent = orjson.loads(await request.read())
        message = {
            "id": f"m{next(ids)}",
            "senderId": sent["userId"],
            "content": sent.get("content", ""),
            "messageType": sent.get("messageType", "text"),
        }
        return web.Response(
            body=orjson.dumps({"message": message}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/messages", persist)
    return app


if __name__ == "__main__":
    uvloop.install()
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
