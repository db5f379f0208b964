"""Pub/sub between nodes: one channel per node, one per room that has members here.

A node subscribes to a room's channel while it holds a socket in that room, so a room
event goes only to nodes that have someone to give it to (not to every node, as one
global channel would). Everything a node must hear about a user or a single connection
goes to that node's own channel.

Messages are ``<header JSON>\\n<frame>``: the frame is the WebSocket frame already built
by the sender, so a receiving node writes the same bytes to each local recipient without
decoding or re-encoding the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from signaling.background import cancel_and_wait

log = logging.getLogger("switchboard.redis")

SUBSCRIBE_WAIT = 2.0


def pack(header: dict[str, Any], frame: bytes) -> bytes:
    return orjson.dumps(header) + b"\n" + frame


def unpack(data: bytes) -> tuple[dict[str, Any], bytes]:
    cut = data.index(b"\n")
    return orjson.loads(data[:cut]), data[cut + 1 :]


class Bus:
    def __init__(
        self,
        on_message: Callable[[dict[str, Any], bytes], None],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self._on_message = on_message
        self.on_lost = on_lost
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmed: dict[str, asyncio.Future[None]] = {}

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def open(self, client: Redis, channels: list[str]) -> None:
        """Subscribe to ``channels`` on a fresh connection and start reading."""
        await self.close()
        self._pubsub = client.pubsub()
        self._reader = asyncio.create_task(self._read(self._pubsub), name="redis-bus")
        await self.subscribe(*channels)

    async def subscribe(self, *channels: str) -> None:
        """Subscribe and wait until Redis confirms, so events published after this
        returns are heard."""
        pubsub = self._pubsub
        if pubsub is None or not channels:
            return
        loop = asyncio.get_running_loop()
        waits = []
        for channel in channels:
            fut = self._confirmed.get(channel)
            if fut is None or fut.done():
                fut = self._confirmed[channel] = loop.create_future()
            waits.append(fut)
        await pubsub.subscribe(*channels)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), SUBSCRIBE_WAIT)

    async def unsubscribe(self, *channels: str) -> None:
        if self._pubsub is not None and channels:
            await self._pubsub.unsubscribe(*channels)

    async def close(self) -> None:
        reader, pubsub = self._reader, self._pubsub
        self._reader = self._pubsub = None
        await cancel_and_wait(reader)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        for fut in self._confirmed.values():
            if not fut.done():
                fut.cancel()
        self._confirmed.clear()

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                if not pubsub.subscribed:
                    await asyncio.sleep(0.01)
                    continue
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                channel = message["channel"].decode()
                if kind == "message":
                    try:
                        header, frame = unpack(message["data"])
                        self._on_message(header, frame)
                    except Exception:
                        log.exception("bad bus message on %s", channel)
                elif kind == "subscribe":
                    fut = self._confirmed.get(channel)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_lost(exc)
