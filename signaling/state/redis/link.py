"""The node's link to Redis: one client, whether Redis is reachable now, and the two ways
an operation behaves while it is not.

- :meth:`RedisLink.or_local`: Redis first, this node's own view as the fallback (presence,
  rooms and delivery keep serving this node's users through an outage).
- :meth:`RedisLink.shared`: operations only Redis can answer (calls, typing, records)
  refuse at once with ``unavailable`` while it is away.

A failed command marks the link offline and sets :attr:`RedisLink.lost`; the node's
lifecycle (:mod:`signaling.state.redis.lifecycle`) reconnects and re-publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.protocol import ErrorCode, HubError
from signaling.state.redis import scripts as lua
from signaling.state.redis.keys import Keys
from signaling.state.redis.multiplex import MultiplexedPipeline, MultiplexedRedis, Multiplexer
from signaling.state.redis.multiplex_cluster import (
    REDIRECTS,
    ClusterMultiplexing,
    MultiplexedClusterPipeline,
)

log = logging.getLogger("switchboard.redis")
T = TypeVar("T")
R = TypeVar("R")

#: Failures that mean "Redis is not reachable right now", as opposed to bugs. A Redis
#: that no longer has the scripts loaded at connect was restarted (or flushed) behind the
#: node's back: reconnecting reloads them and re-publishes the node's state.
UNREACHABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
    NoScriptError,
)

#: Commands wait for one of these connections instead of opening more: a burst of joins
#: must not exhaust Redis's maxclients (which would look like an outage).
POOL_SIZE = 64
#: Redis Cluster: commands (or pipelines) in flight from one node, and so at most this
#: many connections to any one primary (:class:`WaitingCluster`).
CLUSTER_NODE_CONNECTIONS = 256
CLUSTER_SCHEME = "redis+cluster://"


class RedisBusy(HubError):
    """Every pooled connection stayed busy past the bound: the node is overloaded, Redis
    is not gone. The one operation fails; the node stays online (no fallback, no
    reconnect, nothing else lost)."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE, "shared state is overloaded right now; retry shortly"
        )


class WaitingPool(BlockingConnectionPool):
    """A pool whose busy spell is back-pressure: a command waits (up to ``timeout``) for
    a connection; running out of that wait raises :class:`RedisBusy`, which is not one
    of the :data:`UNREACHABLE` failures that switch the node to local-only (redis-py
    reports it as a ``ConnectionError``, the same as a refused connection)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise RedisBusy() from exc
            raise


SCRIPTS = (
    "HISTORY_PUBLISH",
    "SET_DEVICE",
    "JOIN_ROOM",
    "LEAVE_ROOM",
    "TYPING_STOP",
    "TYPING_EXPIRE",
    "CLAIM_TIMERS",
    "WEBHOOK_CLAIM",
    "WEBHOOK_ACK",
    "WEBHOOK_RENEW",
    "WEBHOOK_RELEASE",
    "PUT_NEWER_CALL",
    "DELETE_IF",
    "SET_IF_UNCHANGED",
)


class WaitingCluster(ClusterMultiplexing, RedisCluster):
    """redis-py's cluster client, with commands of known keys sent over one multiplexed
    connection per primary (:mod:`signaling.state.redis.multiplex_cluster`).

    Its own path has no waiting pool: a primary whose connections are all in use fails
    the command at once (``MaxConnectionsError``), which a join burst of a few hundred
    sockets reaches. Here a command (or pipeline) taking that path first waits, up to
    ``busy_timeout``, for one of :data:`CLUSTER_NODE_CONNECTIONS` places, so no primary
    ever sees more connections from this node than it allows."""

    def __init__(self, *, busy_timeout: float, flush_delay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(max_connections=CLUSTER_NODE_CONNECTIONS, **kwargs)
        self._places = asyncio.Semaphore(CLUSTER_NODE_CONNECTIONS)
        self._busy_timeout = busy_timeout
        self.init_multiplexing(
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            flush_delay=flush_delay,
        )

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._busy_timeout):
                await self._places.acquire()
        except TimeoutError:
            raise RedisBusy() from None
        try:
            yield
        finally:
            self._places.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        mux = self.mux_for(args, kwargs)
        if mux is not None:
            reply = await mux.call(args)
            if not isinstance(reply, REDIRECTS):
                return self.parsed(args[0], reply, kwargs)
        async with self.place():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # (refused by redis-py)
        return MultiplexedClusterPipeline(self, bool(transaction))

    def redis_py_pipeline(self, transaction: bool) -> ClusterPipeline:
        return WaitingClusterPipeline(self, transaction)

    async def aclose(self) -> None:
        await self.drop_multiplexed()
        await super().aclose()


class WaitingClusterPipeline(ClusterPipeline):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self.cluster_client.place():  # type: ignore[attr-defined]
            return await super().execute(*args, **kwargs)


class WaitingSentinelPool(SentinelConnectionPool, WaitingPool):
    """The Sentinel-managed pool (connections follow the current primary) with the same
    bounded wait for a busy pool."""


def host_ports(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``[:password@]host:port[,host:port...]`` -> the hosts and ports."""
    out = []
    for host in netloc.rsplit("@", 1)[-1].split(","):
        name, _, port = host.rpartition(":")
        out.append((name, int(port or default_port)))
    return out


def connect_client(url: str, busy_timeout: float = 30.0, flush_delay: float = 0.0) -> Any:
    """A client that fails fast on a lost connection (the node decides when to retry)
    and waits up to ``busy_timeout`` for a pooled connection when all are busy. Its
    multiplexed connections let deferrable requests wait up to ``flush_delay``
    (:mod:`signaling.state.redis.multiplex`).

    ``redis://``, ``rediss://`` and ``unix://`` URLs are Redis's own. Sentinel:
    ``redis+sentinel://[:password@]host:port[,host:port...]/<service>[/<db>]``. Redis
    Cluster: ``redis+cluster://[:password@]host:port[,host:port...]`` (any of the nodes;
    the client learns the rest and follows slot moves and failovers).
    """
    options: dict[str, Any] = {
        "socket_timeout": 3.0,
        "socket_connect_timeout": 2.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if url.startswith(CLUSTER_SCHEME):
        parts = urlsplit(url)
        return WaitingCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in host_ports(parts.netloc, 6379)],
            password=parts.password,
            busy_timeout=busy_timeout,
            flush_delay=flush_delay,
            **options,
        )
    if url.startswith("redis+sentinel://"):
        parts = urlsplit(url)
        service, _, db = parts.path.strip("/").partition("/")
        sentinel = Sentinel(host_ports(parts.netloc, 26379), **options)
        return sentinel.master_for(
            service,
            password=parts.password,
            db=int(db or 0),
            max_connections=POOL_SIZE,
            connection_pool_class=WaitingSentinelPool,
            timeout=busy_timeout,
            **options,
        )
    pool = WaitingPool.from_url(url, max_connections=POOL_SIZE, timeout=busy_timeout, **options)
    if not url.startswith(("redis://", "unix://")):  # (TLS: redis-py's connections)
        return Redis(connection_pool=pool)
    # Commands share one multiplexed connection, pub/sub has a Subscriber of its own (the
    # pool is left unused).
    address = parse_url(url)
    mux = Multiplexer(
        host=address.get("host", "localhost"),
        port=address.get("port", 6379),
        path=address.get("path"),
        username=address.get("username"),
        password=address.get("password"),
        db=address.get("db", 0),
        connect_timeout=options["socket_connect_timeout"],
        reply_timeout=options["socket_timeout"],
        flush_delay=flush_delay,
    )
    return MultiplexedRedis(mux, connection_pool=pool)


def redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


class StateUnavailable(HubError):
    def __init__(self) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE, "shared state is unreachable right now; retry shortly"
        )


class RedisLink:
    def __init__(
        self,
        url: str,
        prefix: str,
        node_id: str,
        busy_timeout: float = 30.0,
        flush_delay: float = 0.0,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.keys = Keys(prefix)
        #: A Redis Cluster: channels are sharded (SSUBSCRIBE/SPUBLISH).
        self.sharded = url.startswith(CLUSTER_SCHEME)
        self.client: Any = connect_client(url, busy_timeout, flush_delay)
        self.online = False
        #: Whether this node's first-hand state is back in Redis after (re)connecting.
        self.synced = False
        #: Set when a command failed for lack of Redis: the lifecycle reconnects.
        self.lost = asyncio.Event()
        self._outbox: list[tuple[list[tuple[str, bytes]], asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Commands go over multiplexed connections (one Redis, or a cluster's primaries).
        self.multiplexed = isinstance(self.client, (MultiplexedRedis, WaitingCluster))
        self.scripts: dict[str, AsyncScript] = {
            name: self.client.register_script(getattr(lua, name)) for name in SCRIPTS
        }

    @property
    def publish_command(self) -> str:
        """How messages are published: sharded on a cluster (a script publishing shares
        the channel's slot)."""
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def pipeline(self, *, deferrable: bool = False) -> Any:
        """A pipeline (no transaction). ``deferrable``: on a multiplexed connection its
        write may wait up to the link's ``flush_delay`` to share one with others (for
        changes nobody can tell arrived a few milliseconds late: typing)."""
        pipe = self.client.pipeline(transaction=False)
        if isinstance(pipe, MultiplexedPipeline):
            pipe.deferrable = deferrable
        return pipe

    async def batch(
        self, commands: list[tuple[Any, ...]], *, deferrable: bool = False
    ) -> list[Any]:
        """``commands`` in one round trip, their raw replies in order (the first error
        reply raised). On one multiplexed connection they go as they are, without
        redis-py's pipeline around them: its object, its per-command bookkeeping and its
        reply callbacks were a third of a keystroke's typing change's CPU on the node.
        Elsewhere (a cluster, Sentinel) they go on a pipeline."""
        client = self.client
        if type(client) is MultiplexedRedis:
            replies = await client.mux.batch(commands, deferrable=deferrable)
        else:
            pipe = self.pipeline(deferrable=deferrable)
            for args in commands:
                pipe.execute_command(*args)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies  # type: ignore[no-any-return]

    @property
    def packs(self) -> bool:
        """Commands may be handed over in RESP already (:meth:`shared_packed`): one Redis,
        one multiplexed connection. A cluster or Sentinel client routes or wraps each
        command itself."""
        return type(self.client) is MultiplexedRedis

    async def shared_packed(
        self,
        payload: bytes,
        count: int,
        *,
        deferrable: bool = False,
        via: Callable[[bytes, int, bool], Awaitable[list[Any]] | None] | None = None,
    ) -> list[Any]:
        """:meth:`batch` under :meth:`shared`, for ``count`` commands already in RESP;
        only where :attr:`packs`. A plain check and ``try`` instead of the context
        manager: this is a keystroke's path. ``via``: another connection that may take
        them (the bus's, :meth:`~signaling.state.redis.bus.Bus.packed`)."""
        if not self.online:
            raise StateUnavailable()
        try:
            sent = via(payload, count, deferrable) if via is not None else None
            if sent is None:
                sent = self.client.mux.packed(payload, count, deferrable=deferrable)
            replies = await sent
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except UNREACHABLE as exc:
            self.failed(exc)
            raise StateUnavailable() from exc
        return replies  # type: ignore[no-any-return]

    async def reset(self) -> None:
        """Drop every pooled connection (to a Redis that restarted they fail on first use)
        and make sure Redis has the scripts (pipelines on a cluster cannot load them
        lazily)."""
        if self.sharded:
            await self.client.aclose()  # the cluster client re-learns the slots on next use
        else:
            await self.client.connection_pool.disconnect()
            if isinstance(self.client, MultiplexedRedis):
                await self.client.mux.reset()
        for script in self.scripts.values():
            await self.client.script_load(script.script)

    async def run(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        if client is None:
            return await self.scripts[name](keys=keys, args=args)
        # On a pipeline: EVALSHA as a plain command. redis-py's script objects would make
        # each pipeline check first that Redis has its scripts (SCRIPT EXISTS, a round
        # trip more per execution), and on a cluster it refuses them; reset() loaded every
        # script (on every primary), and a Redis that lost them counts as restarted.
        sha = self.scripts[name].sha
        return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    def failed(self, exc: BaseException) -> None:
        """A command failed for lack of Redis: serve locally until it is back.

        The Redis client reports a command cancelled mid-read (the task awaiting it was
        cancelled: a client hung up, the node is stopping) as a closed connection. That
        is no outage: the cancellation goes on as such."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError() from exc
        if isinstance(exc, MaxConnectionsError):
            raise RedisBusy() from exc
        if self.online:
            log.warning("Redis connection lost (%s); serving local users only", exc)
        self.online = self.synced = False
        self.lost.set()

    @contextlib.contextmanager
    def or_local(self) -> Iterator[None]:
        """Redis first, this node's own view as the fallback: a lost connection is noted
        and the caller goes on to answer from the local index."""
        try:
            yield
        except UNREACHABLE as exc:
            self.failed(exc)

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """For operations only Redis can answer: refuse at once while it is away, and
        turn a lost connection into ``unavailable``."""
        if not self.online:
            raise StateUnavailable()
        try:
            yield
        except UNREACHABLE as exc:
            self.failed(exc)
            raise StateUnavailable() from exc

    async def publish(self, messages: list[tuple[str, bytes]]) -> int:
        """PUBLISH each ``(channel, data)``; receivers counted.

        Publishes are coalesced: those made while a batch is on its way to Redis go out
        together in the next pipeline, one round trip for all of them (under load a relay
        or an event no longer pays a pipeline of its own), and in the order they were
        made. Multiplexed connections do that themselves (the requests of a loop iteration
        are written together, in call order), so there a publish is its own pipeline."""
        if not messages:
            return 0
        if self.multiplexed:
            with self.or_local():
                async with self.client.pipeline(transaction=False) as pipe:
                    for channel, data in messages:
                        pipe.execute_command(self.publish_command, channel, data)
                    return sum(await pipe.execute())
            return 0  # (Redis was lost, noted by or_local: nobody heard it)
        done = asyncio.get_running_loop().create_future()
        self._outbox.append((messages, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="redis-publish")
        return await done

    async def _flush(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            counts: list[int] = []
            failure: BaseException | None = None
            try:
                with self.or_local():
                    async with self.client.pipeline(transaction=False) as pipe:
                        for messages, _ in batch:
                            for channel, data in messages:
                                pipe.execute_command(self.publish_command, channel, data)
                        counts = await pipe.execute()
            except Exception as exc:  # RedisBusy, or a bug: each publisher hears it
                failure = exc
            at = 0
            for messages, done in batch:
                heard = sum(counts[at : at + len(messages)])
                at += len(messages)
                if done.done():  # its publisher was cancelled (what it sent went anyway)
                    continue
                if failure is not None:
                    done.set_exception(failure)
                else:  # (no counts: Redis was lost, noted by or_local; nobody heard it)
                    done.set_result(heard)

    async def update_json(
        self,
        key: str,
        record_id: str,
        load: Callable[[dict[str, Any]], R],
        mutate: Callable[[R], T],
        known: bytes | None = None,
    ) -> tuple[R, T, bytes]:
        """Optimistic update of one JSON record: read it, change it here, and write it
        back only if it is still what was read (one script, comparing the bytes), else
        retry on top of the winner's result (two devices accepting a call). Two round
        trips, where WATCH/MULTI took three and held a pooled connection throughout.

        With ``known`` (a copy the node believes current) the first try skips the read:
        one round trip. The copy is trusted only if the write finds it unchanged; a
        refusal (``HubError``) computed from it is checked again on a fresh read."""
        raw, guessed = known, known is not None
        while True:
            if raw is None:
                raw, guessed = await self.client.get(key), False
                if raw is None:
                    raise KeyError(record_id)
            record = load(orjson.loads(raw))
            try:
                result = mutate(record)
            except HubError:
                if not guessed:
                    raise
                raw = None
                continue
            new_raw = orjson.dumps(record.to_dict())  # type: ignore[attr-defined]
            if await self.run("SET_IF_UNCHANGED", [key], [raw, new_raw]):
                return record, result, new_raw
            raw = None
