"""One multiplexed connection for the node's Redis commands.

Redis answers the requests of a connection in the order it received them, so every command
and pipeline of the node can share one connection: a command is written at once and its
caller waits for the reply in that order, with no connection to check out of a pool, no
per-command retry or health-check machinery, and the replies of concurrent callers
arriving in one read. redis-py's asyncio client spends 60 to 80 µs of CPU per command on
that machinery; here a command costs 7 µs (100 concurrent GETs, same machine) — a hub
event on Redis is a handful of commands, so this is most of a node's Redis cost.

:class:`MultiplexedRedis` keeps redis-py's command methods and reply conversions (it is a
``redis.asyncio.Redis`` whose ``execute_command`` and pipelines go through the
:class:`Multiplexer`). What cannot share a connection, pub/sub, gets a
:class:`~signaling.state.redis.subscriber.Subscriber`: a connection of its own whose
messages are handed over as they are read. It speaks RESP3, where a subscribed
connection also takes commands and its messages are pushes of their own type: a command
whose replies and publication belong together (a keystroke's state and announcement) can
go over it, and Redis then writes the replies and the node's own copy of what it published
in one write, read by the node at once. WATCH is not supported (it pins a connection); the
state uses compare-and-set scripts instead.

Failures keep redis-py's types, so the link's rules apply unchanged: a refused or lost
connection fails every waiting caller with ``ConnectionError``, a reply later than
``reply_timeout`` with ``TimeoutError`` (the connection is cut, as redis-py's socket
timeout would), and an error reply raises the ``ResponseError`` subclass redis-py would.
The next command after a loss connects again.

Requests marked *deferrable* (typing changes: see :meth:`Multiplexer.batch`) may wait up to
``flush_delay`` after the connection's previous write, so that under load several share
one write. What that saves is downstream of the write: Redis reads them in one wake-up and
writes what they publish to each subscriber together, so every node gets them in one read
and one loop iteration. The first request after a quiet spell still goes at once, and any
other request takes what waits along with it (in order: Redis answers in the order it
reads). It is rueidis's ``MaxFlushDelay`` (the Go client Centrifugo uses), kept to the
requests a person cannot tell were late by a few milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from hiredis import PushNotification
from redis._parsers.base import BaseParser
from redis._parsers.response_callbacks import get_response_callbacks
from redis.asyncio import Redis
from redis.asyncio.client import EMPTY_RESPONSE, Pipeline
from redis.client import CaseInsensitiveDict
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    ExecAbortError,
    InvalidResponse,
    RedisError,
    ResponseError,
    WatchError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

#: What the reader returns while no reply is complete.
_NOT_YET = object()

#: Options redis-py passes along with a command that are not reply-callback arguments.
_NOT_CALLBACK_OPTIONS = ("keys", "NEVER_DECODE")


class _Waiter:
    """Callers waiting for replies, in the order their commands were written."""

    __slots__ = ("count", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[Any], count: int, sent_at: float) -> None:
        self.future = future
        self.count = count  # 0: a single command (the reply itself, not a list)
        self.replies: list[Any] = []
        self.sent_at = sent_at


class Replies(asyncio.Protocol):
    """The connection: writes requests (those of one loop iteration together), hands
    replies to the waiters in order. With ``on_push`` it is a subscriber's: every array
    reply (a message, a subscription's confirmation) goes to ``on_push`` as soon as it is
    read."""

    def __init__(
        self,
        on_lost: Callable[[Replies, Exception], None],
        on_push: Callable[[list[Any]], None] | None = None,
        flush_delay: float = 0.0,
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[_Waiter] = collections.deque()
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_NOT_YET,
        )
        self._on_lost = on_lost
        self._on_push = on_push
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lost = False
        #: Requests of this loop iteration, written together at its end: one system call
        #: (and one wake-up of Redis) for every caller of the iteration.
        self.outgoing: list[bytes] = []
        #: How long a deferrable request may wait after the previous write.
        self.flush_delay = flush_delay
        #: The write is due later: only deferrable requests wait (else, with ``outgoing``
        #: not empty, it is due at the end of this loop iteration).
        self._timer: asyncio.TimerHandle | None = None
        #: When the connection was last written to (the loop's clock; kept only with a
        #: delay).
        self._written_at = float("-inf")

    def schedule(self, loop: asyncio.AbstractEventLoop, deferrable: bool) -> None:
        """A request was queued in ``outgoing``: write at the end of this iteration, or,
        for a deferrable one, once ``flush_delay`` has passed since the last write."""
        timer = self._timer
        if timer is None and len(self.outgoing) > 1:
            return  # due at the end of this iteration already: it goes along
        if deferrable and self.flush_delay:
            if timer is not None:
                return
            due = self._written_at + self.flush_delay
            if loop.time() < due:
                self._timer = loop.call_at(due, self.flush)
                return
        elif timer is not None:  # what waits goes along now, in order
            timer.cancel()
            self._timer = None
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._timer = None  # (the one that called it, if a timer did)
        outgoing, self.outgoing = self.outgoing, []
        if outgoing and not self.lost:
            self.transport.write(b"".join(outgoing))  # type: ignore[union-attr]
            if self.flush_delay:
                self._written_at = self._loop.time()  # type: ignore[union-attr]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self.fail(exc)
                return
            if reply is _NOT_YET:  # (not False: RESP3 has booleans)
                return
            if type(reply) is PushNotification and self._on_push is not None:
                self._on_push(reply)
                continue
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(InvalidResponse("unexpected reply from Redis"))
                return
            waiter = waiting[0]
            if waiter.count:
                replies = waiter.replies
                replies.append(reply)
                if len(replies) < waiter.count:
                    continue
                reply = replies
            waiting.popleft()
            future = waiter.future
            if not future.done():  # (its caller may have been cancelled)
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed by server'}"))

    def fail(self, exc: Exception) -> None:
        """Cut the connection and fail everyone waiting on it (idempotent)."""
        if not self.lost:
            self.lost = True
            self._on_lost(self, exc)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        waiting, self.waiting = self.waiting, collections.deque()
        for waiter in waiting:
            if not waiter.future.done():
                waiter.future.set_exception(exc)


class Multiplexer:
    """Sends commands over one connection, connecting (again) when needed."""

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connect_timeout: float = 2.0,
        reply_timeout: float = 3.0,
        flush_delay: float = 0.0,
    ) -> None:
        self._address = (host, port, path)
        #: How long a deferrable request may wait after the previous write.
        self.flush_delay = flush_delay
        self._username, self._password, self._db = username, password, int(db)
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._conn: Replies | None = None
        #: Subscribers' connections (they take commands too): watched for late replies.
        self._pushing: set[Replies] = set()
        self._connecting: asyncio.Future[Replies] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # -- sending ----------------------------------------------------------------------------

    async def call(self, args: Sequence[Any]) -> Any:
        """One command's raw reply (an error reply is returned as its exception)."""
        conn = self._conn
        if conn is None:
            conn = await self._connect()
        return await self._send(conn, pack_command(args), 0)

    async def batch(
        self, commands: Sequence[Sequence[Any]], *, deferrable: bool = False
    ) -> list[Any]:
        """Several commands in one write; their raw replies, in order. ``deferrable``:
        they may wait up to ``flush_delay`` after the previous write, to share one."""
        return await self.packed(_packed(commands), len(commands), deferrable=deferrable)

    async def packed(self, payload: bytes, count: int, *, deferrable: bool = False) -> list[Any]:
        """:meth:`batch` for ``count`` commands already in RESP (``payload``: see
        :mod:`signaling.state.redis.resp`)."""
        conn = self._conn
        if conn is None:
            conn = await self._connect()
        return await self._send(conn, payload, count, deferrable)  # type: ignore[no-any-return]

    def _send(
        self, conn: Replies, payload: bytes, count: int, deferrable: bool = False
    ) -> asyncio.Future[Any]:
        if conn.lost:  # (lost while its opener was being resumed)
            raise RedisConnectionError("Connection to Redis lost")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        conn.waiting.append(_Waiter(future, count, loop.time()))
        conn.outgoing.append(payload)
        conn.schedule(loop, deferrable)
        return future

    # -- connecting -------------------------------------------------------------------------

    async def _connect(self) -> Replies:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> Replies:
        conn = await self.open_connection(self._lost)
        self._conn = conn
        self._arm_watchdog()
        return conn

    async def open_connection(
        self,
        on_lost: Callable[[Replies, Exception], None],
        on_push: Callable[[list[Any]], None] | None = None,
    ) -> Replies:
        """A new connection to this Redis, authenticated and on the database."""
        loop = asyncio.get_running_loop()
        host, port, path = self._address

        def lost(conn: Replies, exc: Exception) -> None:
            self._pushing.discard(conn)
            on_lost(conn, exc)

        def protocol() -> Replies:
            return Replies(lost, on_push, self.flush_delay)

        setup: list[tuple[Any, ...]] = []
        if self._password is not None:
            auth = ("AUTH", self._username, self._password) if self._username else None
            setup.append(auth or ("AUTH", self._password))
        if on_push is not None:  # messages as pushes, and commands taken while subscribed
            setup.append(("HELLO", 3))
        if self._db:
            setup.append(("SELECT", self._db))
        conn: Replies | None = None
        try:
            # The bound covers the setup's replies too: a Redis that accepts and then
            # never answers is as unreachable as one that never accepts.
            async with asyncio.timeout(self._connect_timeout):
                if path is not None:
                    _, conn = await loop.create_unix_connection(protocol, path)
                else:
                    _, conn = await loop.create_connection(protocol, host, port)
                replies = await self._send(conn, _packed(setup), len(setup)) if setup else []
        except TimeoutError:
            if conn is not None:
                conn.fail(RedisTimeoutError("Timeout connecting to Redis"))
            raise RedisTimeoutError("Timeout connecting to Redis") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
        for reply in replies:
            if isinstance(reply, Exception):
                conn.fail(RedisConnectionError(f"Redis refused the connection: {reply}"))
                raise reply
        if on_push is not None and not conn.lost:
            self._pushing.add(conn)
            self._arm_watchdog()
        return conn

    def _lost(self, conn: Replies, exc: Exception) -> None:
        if self._conn is conn:
            self._conn = None

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(self._reply_timeout / 3, self._check_replies)

    def _check_replies(self) -> None:
        """Redis that stopped answering (for ``reply_timeout``) counts as lost."""
        self._watchdog = None
        now = asyncio.get_running_loop().time()
        watched = [*self._pushing, self._conn] if self._conn is not None else [*self._pushing]
        for conn in watched:
            waiting = conn.waiting
            if waiting and now - waiting[0].sent_at > self._reply_timeout:
                conn.fail(RedisTimeoutError("Timeout reading from Redis"))
        if self._conn is not None or self._pushing:
            self._arm_watchdog()

    async def reset(self) -> None:
        """Drop the connection (the next command opens a new one)."""
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.fail(RedisConnectionError("Connection to Redis reset"))

    async def aclose(self) -> None:
        await self.reset()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def pack_command(args: Sequence[Any]) -> bytes:
    """RESP for one command; a two-word name (``SCRIPT LOAD``) is two arguments, as
    redis-py sends it."""
    name = args[0]
    if isinstance(name, str) and " " in name:
        args = (*name.split(), *args[1:])
    return hiredis.pack_command(args if type(args) is tuple else tuple(args))


def _packed(commands: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(pack_command(args) for args in commands)


#: redis-py's reply conversions for RESP2, the protocol multiplexed connections speak (the
#: pool's connections speak RESP3 with callbacks back to the same shapes).
RESP2_CALLBACKS = CaseInsensitiveDict(
    get_response_callbacks(user_protocol=2, legacy_responses=True)
)


def parse_reply(callbacks: Any, command_name: Any, reply: Any, options: dict[str, Any]) -> Any:
    """What redis-py would return for ``reply`` (its reply callbacks)."""
    if isinstance(reply, ResponseError):
        if EMPTY_RESPONSE in options:
            return options[EMPTY_RESPONSE]
        raise reply
    if options:
        options.pop(EMPTY_RESPONSE, None)
        for name in _NOT_CALLBACK_OPTIONS:
            options.pop(name, None)
    callback = callbacks.get(command_name)
    return reply if callback is None else callback(reply, **options)


class MultiplexedRedis(Redis):
    """redis-py's client API over a :class:`Multiplexer` (its connection pool is left
    unused: the bus subscribes through a :class:`Subscriber`)."""

    def __init__(self, mux: Multiplexer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mux = mux
        self.response_callbacks = RESP2_CALLBACKS

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return self.parsed(args[0], await self.mux.call(args), options)

    def parsed(self, command_name: Any, reply: Any, options: dict[str, Any]) -> Any:
        return parse_reply(self.response_callbacks, command_name, reply, options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> MultiplexedPipeline:
        return MultiplexedPipeline(self, transaction)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.mux.aclose()
        await super().aclose(close_connection_pool)


class Parsed:
    """A pipeline result that is already what redis-py returns (a command a cluster
    pipeline had redis-py's own client run), as opposed to a raw reply."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class MultiplexedPipeline(Pipeline):
    """A pipeline (or MULTI/EXEC transaction) written in one go on the shared connection."""

    def __init__(self, client: Any, transaction: bool) -> None:
        pool = getattr(client, "connection_pool", None)  # (a cluster client has none)
        super().__init__(pool, client.response_callbacks, transaction, None)
        self._client = client
        #: Its write may wait to share one (:meth:`Multiplexer.batch`).
        self.deferrable = False

    async def watch(self, *names: Any) -> Any:
        raise RedisError("WATCH needs a connection of its own; use a compare-and-set script")

    async def reset(self) -> None:
        self.command_stack = []
        self.scripts = set()
        self.explicit_transaction = False

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        transaction = self.is_transaction or self.explicit_transaction
        replies = await self.replies(stack, transaction)
        if raise_on_error:
            self.raise_first_error(stack, [r.value if type(r) is Parsed else r for r in replies])
        client = self._client
        out = []
        for reply, (args, options) in zip(replies, stack, strict=True):
            if type(reply) is Parsed:
                out.append(reply.value)
            elif isinstance(reply, ResponseError):
                out.append(reply)
            else:
                out.append(client.parsed(args[0], reply, options))
        return out

    async def replies(self, stack: list[Any], transaction: bool) -> list[Any]:
        """The raw replies (or :class:`Parsed` results) of ``stack``, in order."""
        mux = self._client.mux
        if transaction:
            return await in_transaction(mux, [args for args, _ in stack])
        return await mux.batch([args for args, _ in stack], deferrable=self.deferrable)


async def in_transaction(mux: Multiplexer, commands: list[Any]) -> list[Any]:
    """``commands`` between MULTI and EXEC: EXEC's replies, or the error that aborted it."""
    replies = await mux.batch([("MULTI",), *commands, ("EXEC",)])
    queued, result = replies[1:-1], replies[-1]
    refused = [r for r in queued if isinstance(r, ResponseError)]
    if isinstance(result, ExecAbortError) and refused:
        raise refused[0] from result
    if isinstance(result, ResponseError):
        raise result
    if result is None:
        raise WatchError("Watched variable changed.")
    if len(result) != len(commands):
        raise ResponseError("Wrong number of response items from pipeline execution")
    return result  # type: ignore[no-any-return]
