"""A node's life in the cluster: connecting (and reconnecting) to Redis, the heartbeat,
and cleaning up after nodes that died.

- Registry: ``<prefix>:nodes`` maps node id -> last heartbeat (epoch ms). Each node beats
  every ``heartbeat_interval`` seconds. A node silent for ``dead_after`` seconds is dead:
  the first live node to take its reaper lock hands its recorded connections to the hub,
  which takes them out of presence and rooms (with the usual events) and gives their
  calls the grace period; then its records are deleted. Worst case a death is noticed
  ``dead_after + heartbeat_interval`` seconds after the last beat.
- A node only reaps once it has itself been connected for ``dead_after`` seconds, so after
  a Redis restart nobody mistakes the others' missed beats for deaths.
- Reconnecting: back-off from 0.2 s doubling to 5 s, logged at each attempt. Once back,
  the node resubscribes, re-publishes its devices, memberships, calls and timers, and
  cleans up its connections that closed during the outage. A node that finds it was
  reaped meanwhile (it was cut off for longer than ``dead_after``) closes its sockets with
  1012 instead: its clients reconnect and resume their calls within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.protocol import CloseCode
from signaling.state.models import RemoteConnection, now_ms

if TYPE_CHECKING:
    from signaling.state.base import LostConnections
    from signaling.state.redis_state import RedisState

log = logging.getLogger("switchboard.redis")

#: Failures that mean "Redis is not reachable right now", as opposed to bugs.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
REAPED_MARK_SECONDS = 600


#: Commands wait for one of these connections instead of opening more: a burst of joins
#: must not exhaust Redis's maxclients (which would look like an outage).
POOL_SIZE = 64


def connect_client(url: str) -> Redis:
    """A client that fails fast (the node decides when to retry).

    ``redis://``, ``rediss://`` and ``unix://`` URLs are Redis's own. Sentinel:
    ``redis+sentinel://[:password@]host:port[,host:port...]/<service>[/<db>]``.
    """
    options: dict[str, Any] = {
        "socket_timeout": 3.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        hosts = parts.netloc.rsplit("@", 1)[-1]
        service, _, db = parts.path.strip("/").partition("/")
        sentinels = []
        for host in hosts.split(","):
            name, _, port = host.rpartition(":")
            sentinels.append((name, int(port or 26379)))
        sentinel = Sentinel(sentinels, **options)
        return sentinel.master_for(
            service,
            password=parts.password,
            db=int(db or 0),
            max_connections=POOL_SIZE,
            **options,
        )
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=5.0, **options)
    return Redis(connection_pool=pool)


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


class NodeLifecycle:
    def __init__(
        self,
        state: RedisState,
        *,
        heartbeat_interval: float,
        dead_after: float,
        info: dict[str, Any] | None,
    ) -> None:
        self.state = state
        self.interval = heartbeat_interval
        self.dead_after = dead_after
        self.info = {"startedAt": now_ms(), **(info or {})}
        self.online_since = 0.0
        self._on_lost: LostConnections | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None

    # -- start, reconnect, stop ----------------------------------------------------------------

    async def start(self, on_lost: LostConnections) -> None:
        self._on_lost = on_lost
        self.state.bus.on_lost = self.state.failed
        await self._connect_until_up()
        self._heartbeat = asyncio.create_task(self._beat_forever(), name="node-heartbeat")

    def reconnect_soon(self) -> None:
        if self._reconnect is None or self._reconnect.done():
            if self._heartbeat is None:  # not started (or stopping): nothing to restore
                return
            self._reconnect = asyncio.create_task(self._connect_until_up(), name="redis-reconnect")

    async def _connect_until_up(self) -> None:
        delay = BACKOFF_FIRST
        url = redacted(self.state.url)
        while True:
            try:
                await self._come_online()
            except UNREACHABLE as exc:
                await self.state.bus.close()
                self.state.online = self.state.synced = False
                log.warning("Redis at %s unavailable (%s); retrying in %.1f s", url, exc, delay)
            else:
                if self.state.online:
                    return
                # Lost again while re-publishing (another task's command failed): the
                # failure could not start a reconnect while this one ran, so go round.
                self.state.synced = False
                log.warning("Redis lost again while reconnecting; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _come_online(self) -> None:
        state, keys, me = self.state, self.state.keys, self.state.node_id
        # Pooled connections to a Redis that restarted fail on first use: start afresh.
        await state.client.connection_pool.disconnect()
        await state.client.ping()
        channels = [keys.node_channel(me), *(keys.room_channel(r) for r in state.local.room_conns)]
        await state.bus.open(state.client, channels)
        reaped = await state.client.get(keys.node_reaper(me))
        await self.beat()
        state.online = True
        self.online_since = time.monotonic()
        if reaped is not None and state.local.conns:
            await state.client.delete(keys.node_reaper(me))
            log.warning("this node was declared dead while cut off; asking clients to reconnect")
            for conn in list(state.local.conns.values()):
                await conn.close(CloseCode.SERVICE_RESTART, "node rejoining the cluster; reconnect")
            state.synced = True
            return
        stale = await state.republish()
        state.synced = True
        log.info(
            "Redis connected",
            extra={"node": me, "count": len(state.local.conns), "url": redacted(state.url)},
        )
        if stale and self._on_lost is not None:
            await self._on_lost(stale)

    async def stop(self) -> None:
        """Deregister: a node stopped on purpose leaves nothing for others to reap."""
        tasks = [t for t in (self._heartbeat, self._reconnect) if t is not None]
        self._heartbeat = self._reconnect = None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not self.state.online:
            return
        keys, me = self.state.keys, self.state.node_id
        with contextlib.suppress(Exception):
            async with self.state.client.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.nodes, me)
                # (its hosted rooms were released by the media service's stop)
                pipe.delete(*keys.node_keys(me))
                await pipe.execute()
        log.info("left the cluster", extra={"node": me})

    # -- heartbeat and reaping -------------------------------------------------------------------

    async def beat(self) -> None:
        """Announce this node alive, with its load (what media placement reads)."""
        keys, me = self.state.keys, self.state.node_id
        info = {**self.info, "connections": len(self.state.local.conns), "beatAt": now_ms()}
        if self.state.load_provider is not None:
            info["load"] = orjson.dumps(self.state.load_provider()).decode()
        async with self.state.client.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.nodes, {me: now_ms()})
            pipe.hset(keys.node_info(me), mapping={k: str(v) for k, v in info.items()})
            await pipe.execute()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            state = self.state
            if not state.online:
                continue
            if not state.bus.connected:
                state.failed(ConnectionError("pub/sub connection lost"))
                continue
            try:
                await self.beat()
                await self.reap()
            except UNREACHABLE as exc:
                state.failed(exc)
            except Exception:
                log.exception("heartbeat failed")

    async def reap(self) -> None:
        if time.monotonic() - self.online_since < self.dead_after:
            return
        state, keys, me = self.state, self.state.keys, self.state.node_id
        cutoff = now_ms() - int(self.dead_after * 1000)
        for raw in await state.client.zrangebyscore(keys.nodes, "-inf", cutoff):
            node = raw.decode()
            if node == me:
                continue
            won = await state.client.set(
                keys.node_reaper(node), me, nx=True, ex=REAPED_MARK_SECONDS
            )
            if not won:
                continue
            lost = await self.recorded_connections(node)
            log.warning(
                "node declared dead; cleaning up its connections",
                extra={"node": node, "count": len(lost)},
            )
            if lost and self._on_lost is not None:
                await self._on_lost(lost)
            # After its connections left: rooms it hosted may now be empty.
            hosted = sorted(r.decode() for r in await state.client.smembers(keys.node_hosted(node)))
            if hosted and state.media_host_lost_handler is not None:
                await state.media_host_lost_handler(node, hosted)
            async with state.client.pipeline(transaction=False) as pipe:
                pipe.delete(*keys.node_keys(node))
                pipe.zrem(keys.nodes, node)
                await pipe.execute()

    async def recorded_connections(self, node: str) -> list[RemoteConnection]:
        """The sockets Redis says ``node`` holds, with their rooms."""
        keys = self.state.keys
        async with self.state.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.node_conns(node))
            pipe.smembers(keys.node_rooms(node))
            conns, rooms = await pipe.execute()
        found = {c.decode(): RemoteConnection(c.decode(), u.decode()) for c, u in conns.items()}
        for entry in rooms:
            conn_id, room_id, user_id = entry.decode().split(" ", 2)
            found.setdefault(conn_id, RemoteConnection(conn_id, user_id)).rooms.add(room_id)
        return list(found.values())
