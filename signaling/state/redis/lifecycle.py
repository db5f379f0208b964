"""A node's life in the cluster: connecting (and reconnecting) to Redis, the heartbeat,
and cleaning up after nodes that died.

- Registry: each node beats every ``heartbeat_interval`` seconds
  (:meth:`RedisNodes.beat`). A node silent for ``dead_after`` seconds is dead: the first
  live node to take its reaper lock reports its recorded connections as lost
  (``BackendHandler.connections_lost``: they leave presence and rooms with the usual
  events, their calls get the grace period), then the rooms whose media it hosted
  (``media_hosts_lost``); then its records are deleted. Worst case a death is noticed
  ``dead_after + heartbeat_interval`` seconds after the last beat.
- A node only reaps once it has itself been connected for ``dead_after`` seconds, so after
  a Redis restart nobody mistakes the others' missed beats for deaths.
- Reconnecting: back-off from 0.2 s doubling to 5 s, logged at each attempt. Once back,
  the node resubscribes, re-publishes its devices, memberships, calls, timers and the
  records of the rooms it has members in (the room API's settings), and
  reports its connections that closed during the outage as lost. A node that finds it was
  reaped meanwhile (it was cut off for longer than ``dead_after``) closes its sockets with
  1012 instead: its clients reconnect and resume their calls within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from signaling.background import cancel_and_wait
from signaling.protocol import CloseCode
from signaling.state.handler import Reports
from signaling.state.models import RemoteConnection, now_ms
from signaling.state.redis.calls import RedisCalls
from signaling.state.redis.delivery import RedisDelivery
from signaling.state.redis.link import UNREACHABLE, RedisLink, redacted
from signaling.state.redis.membership import RedisMembership
from signaling.state.redis.nodes import RedisNodes
from signaling.state.redis.presence import RedisPresence
from signaling.state.redis.room_records import RedisRoomRecords
from signaling.state.redis.timers import RedisTimers

log = logging.getLogger("switchboard.redis")

BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
REAPED_MARK_SECONDS = 600


class NodeLifecycle:
    def __init__(
        self,
        link: RedisLink,
        reports: Reports,
        *,
        delivery: RedisDelivery,
        nodes: RedisNodes,
        presence: RedisPresence,
        membership: RedisMembership,
        calls: RedisCalls,
        timers: RedisTimers,
        records: RedisRoomRecords,
        heartbeat_interval: float,
        dead_after: float,
    ) -> None:
        self.link = link
        self.reports = reports
        self.delivery = delivery
        self.nodes = nodes
        self.presence = presence
        self.membership = membership
        self.calls = calls
        self.timers = timers
        self.records = records
        self.interval = heartbeat_interval
        self.dead_after = dead_after
        self.online_since = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # -- start, reconnect, stop ----------------------------------------------------------------

    async def start(self) -> None:
        await self._connect_until_up()
        self._tasks = [
            asyncio.create_task(self._beat_forever(), name="node-heartbeat"),
            asyncio.create_task(self._reconnect_when_lost(), name="redis-reconnect"),
        ]
        self.timers.start()

    async def _reconnect_when_lost(self) -> None:
        while True:
            await self.link.lost.wait()
            self.link.lost.clear()
            await self._connect_until_up()

    async def _connect_until_up(self) -> None:
        delay = BACKOFF_FIRST
        url = redacted(self.link.url)
        while True:
            self.link.lost.clear()
            try:
                await self._come_online()
            except UNREACHABLE as exc:
                await self.delivery.bus.close()
                self.link.online = self.link.synced = False
                log.warning("Redis at %s unavailable (%s); retrying in %.1f s", url, exc, delay)
            else:
                if self.link.online:
                    return
                # Lost again while re-publishing (another task's command failed): go round.
                self.link.synced = False
                log.warning("Redis lost again while reconnecting; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _come_online(self) -> None:
        link, keys, me = self.link, self.link.keys, self.link.node_id
        await link.reset()
        await link.client.ping()
        await self.delivery.bus.open(link.client, self.delivery.channels(), sharded=link.sharded)
        reaped = await link.client.get(keys.node_reaper(me))
        await self.nodes.beat()
        link.online = True
        self.online_since = time.monotonic()
        sockets = self.delivery.local_connections()
        if reaped is not None and sockets:
            await link.client.delete(keys.node_reaper(me))
            log.warning("this node was declared dead while cut off; asking clients to reconnect")
            for socket in sockets:
                await socket.close(
                    CloseCode.SERVICE_RESTART, "node rejoining the cluster; reconnect"
                )
            link.synced = True
            return
        stale = await self.republish()
        link.synced = True
        log.info(
            "Redis connected",
            extra={"node": me, "count": len(sockets), "url": redacted(link.url)},
        )
        handler = self.reports.handler
        if stale and handler is not None:
            await handler.connections_lost(stale)

    async def republish(self) -> list[RemoteConnection]:
        """Write this node's first-hand state back to Redis; return the connections Redis
        still lists for this node that closed meanwhile (reported as lost)."""
        recorded = await self.recorded_connections(self.link.node_id)
        stale = [c for c in recorded if c.id not in self.delivery.conns]
        await self.presence.republish()
        await self.membership.republish()
        async with self.link.client.pipeline(transaction=False) as pipe:
            await self.calls.republish(pipe)
            self.timers.republish(pipe)
            self.records.republish(pipe, list(self.delivery.room_conns))
            await pipe.execute()
        return stale

    async def stop(self) -> None:
        """Deregister: a node stopped on purpose leaves nothing for others to reap."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await cancel_and_wait(task)
        await self.timers.stop()
        if not self.link.online:
            return
        keys, me = self.link.keys, self.link.node_id
        with contextlib.suppress(Exception):
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.nodes, me)
                # (its hosted rooms were released by the media service's stop)
                pipe.delete(*keys.node_keys(me))
                await pipe.execute()
        log.info("left the cluster", extra={"node": me})

    # -- heartbeat and reaping -------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.link.online:
                continue
            if not self.delivery.bus.connected:
                self.link.failed(ConnectionError("pub/sub connection lost"))
                continue
            try:
                await self.nodes.beat()
                await self.reap()
            except UNREACHABLE as exc:
                self.link.failed(exc)
            except Exception:
                log.exception("heartbeat failed")

    async def reap(self) -> None:
        if time.monotonic() - self.online_since < self.dead_after:
            return
        link, keys, me = self.link, self.link.keys, self.link.node_id
        client = link.client
        cutoff = now_ms() - int(self.dead_after * 1000)
        for raw in await client.zrangebyscore(keys.nodes, "-inf", cutoff):
            node = raw.decode()
            if node == me:
                continue
            won = await client.set(keys.node_reaper(node), me, nx=True, ex=REAPED_MARK_SECONDS)
            if not won:
                continue
            lost = await self.recorded_connections(node)
            log.warning(
                "node declared dead; cleaning up its connections",
                extra={"node": node, "count": len(lost)},
            )
            handler = self.reports.handler
            if lost and handler is not None:
                await handler.connections_lost(lost)
            # After its connections left: rooms it hosted may now be empty.
            hosted = sorted(r.decode() for r in await client.smembers(keys.node_hosted(node)))
            if hosted and handler is not None:
                await handler.media_hosts_lost(node, hosted)
            async with client.pipeline(transaction=False) as pipe:
                pipe.delete(*keys.node_keys(node))
                pipe.zrem(keys.nodes, node)
                await pipe.execute()

    async def recorded_connections(self, node: str) -> list[RemoteConnection]:
        """The sockets Redis says ``node`` holds, with their rooms."""
        keys = self.link.keys
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.node_conns(node))
            pipe.smembers(keys.node_rooms(node))
            conns, rooms = await pipe.execute()
        found = {c.decode(): RemoteConnection(c.decode(), u.decode()) for c, u in conns.items()}
        for entry in rooms:
            conn_id, room_id, user_id = entry.decode().split(" ", 2)
            found.setdefault(conn_id, RemoteConnection(conn_id, user_id)).rooms.add(room_id)
        return list(found.values())
