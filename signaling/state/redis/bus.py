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
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub

from signaling.background import cancel_and_wait
from signaling.state.redis.multiplex import MultiplexedRedis
from signaling.state.redis.multiplex_cluster import ClusterMultiplexing
from signaling.state.redis.subscriber import Subscriber

log = logging.getLogger("switchboard.redis")

SUBSCRIBE_WAIT = 2.0


def pack(header: dict[str, Any], frame: bytes) -> bytes:
    return orjson.dumps(header) + b"\n" + frame


class Listener:
    """One pub/sub connection (redis-py's ``PubSub`` or a multiplexed client's
    :class:`Subscriber`) and the task reading it (or watching it: a subscriber hands its
    messages over as they are read)."""

    def __init__(self, pubsub: Any, reader: asyncio.Task[None]) -> None:
        self.pubsub = pubsub
        self.reader = reader


class Bus:
    """The node's subscriptions. On one Redis (or Sentinel) it is one connection with
    SUBSCRIBE. On Redis Cluster channels are sharded (SSUBSCRIBE, answered by the shard
    owning the channel's slot, so room traffic spreads over the primaries instead of
    reaching all of them): one connection per primary that owns a subscribed channel.
    A broken connection is a lost Redis: the node reconnects and resubscribes."""

    def __init__(
        self,
        on_message: Callable[[dict[str, Any], bytes], None],
        on_lost: Callable[[BaseException], None],
    ) -> None:
        self._on_message = on_message
        self.on_lost = on_lost
        self._client: Any = None
        self._sharded = False
        self._listeners: dict[str, Listener] = {}
        self._owner: dict[str, str] = {}  # channel -> listener (sharded: the node name)
        self._confirmed: dict[str, asyncio.Future[None]] = {}

    @property
    def connected(self) -> bool:
        return self._client is not None and all(
            not lis.reader.done() for lis in self._listeners.values()
        )

    async def open(self, client: Any, channels: list[str], *, sharded: bool = False) -> None:
        """Subscribe to ``channels`` on fresh connections and start reading."""
        await self.close()
        self._client, self._sharded = client, sharded
        await self.subscribe(*channels)

    def _listener(self, channel: str) -> tuple[str, Any]:
        if not self._sharded:
            name, make = "", self._client.pubsub
        else:
            node = self._client.get_node_from_key(channel)
            name = node.name
            make = lambda: Redis(connection_pool=node_pool(node)).pubsub()  # noqa: E731
        listener = self._listeners.get(name)
        if listener is None or listener.reader.done():
            mux = None
            if isinstance(self._client, MultiplexedRedis):
                mux = self._client.mux
            elif self._sharded and isinstance(self._client, ClusterMultiplexing):
                mux = self._client.mux_of_node(node)  # (SSUBSCRIBE at the slot's primary)
            if mux is not None:
                subscriber = Subscriber(mux, self._pushed)
                reader = asyncio.create_task(self._watch(subscriber), name=f"redis-bus {name}")
                listener = self._listeners[name] = Listener(subscriber, reader)
            else:
                pubsub = make()
                reader = asyncio.create_task(self._read(pubsub), name=f"redis-bus {name}")
                listener = self._listeners[name] = Listener(pubsub, reader)
        return name, listener.pubsub

    def packed(
        self, payload: bytes, count: int, deferrable: bool
    ) -> asyncio.Future[list[Any]] | None:
        """``count`` commands in RESP sent over the subscription's connection, or ``None``
        where there is none to take them (sharded, redis-py's pub/sub, not open yet):
        see :meth:`Subscriber.packed`."""
        listener = self._listeners.get("")
        if listener is None or self._sharded or not isinstance(listener.pubsub, Subscriber):
            return None
        return listener.pubsub.packed(payload, count, deferrable)

    async def subscribe(self, *channels: str) -> None:
        """Subscribe and wait until Redis confirms, so events published after this
        returns are heard."""
        if self._client is None or not channels:
            return
        loop = asyncio.get_running_loop()
        waits = []
        for channel in channels:
            fut = self._confirmed.get(channel)
            if fut is None or fut.done():
                fut = self._confirmed[channel] = loop.create_future()
            waits.append(fut)
            name, pubsub = self._listener(channel)
            self._owner[channel] = name
            if self._sharded:
                await pubsub.ssubscribe(channel)
            else:
                await pubsub.subscribe(channel)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), SUBSCRIBE_WAIT)

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            name = self._owner.pop(channel, "")
            listener = self._listeners.get(name)
            if listener is None:
                continue
            if not self._sharded:
                await listener.pubsub.unsubscribe(channel)
            elif name in self._owner.values():
                await listener.pubsub.sunsubscribe(channel)
            else:  # the primary's last channel: its connection goes
                del self._listeners[name]
                await self._stop(listener)

    async def close(self) -> None:
        listeners = list(self._listeners.values())
        self._listeners.clear()
        self._owner.clear()
        self._client = None
        for listener in listeners:
            await self._stop(listener)
        for fut in self._confirmed.values():
            if not fut.done():
                fut.cancel()
        self._confirmed.clear()

    @staticmethod
    async def _stop(listener: Listener) -> None:
        await cancel_and_wait(listener.reader)
        with contextlib.suppress(Exception):
            await listener.pubsub.aclose()

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
                if kind in ("message", "smessage"):
                    self._deliver(message["channel"], message["data"])
                elif kind in ("subscribe", "ssubscribe"):
                    self._confirm(message["channel"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_lost(exc)

    def _pushed(self, reply: list[Any]) -> None:
        """What a :class:`Subscriber` read: ``[kind, channel, data or count]``."""
        kind = reply[0]
        if kind in (b"message", b"smessage"):
            self._deliver(reply[1], reply[2])
        elif kind in (b"subscribe", b"ssubscribe"):
            self._confirm(reply[1])

    async def _watch(self, subscriber: Subscriber) -> None:
        try:
            await subscriber.closed
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_lost(exc)

    def _deliver(self, channel: bytes, data: bytes) -> None:
        try:
            cut = data.index(b"\n")  # (the header ends at the first newline: see pack)
            self._on_message(orjson.loads(data[:cut]), data[cut + 1 :])
        except Exception:
            log.exception("bad bus message on %s", channel.decode(errors="replace"))

    def _confirm(self, channel: bytes) -> None:
        fut = self._confirmed.get(channel.decode())
        if fut is not None and not fut.done():
            fut.set_result(None)


def node_pool(node: Any) -> ConnectionPool:
    """A pool of one for a dedicated pub/sub connection to a cluster primary, with the
    connection settings (timeouts, password) of the cluster client's own."""
    kwargs = dict(node.connection_kwargs)
    kwargs.pop("retry", None)
    return ConnectionPool(connection_class=node.connection_class, max_connections=1, **kwargs)
