"""Redis Cluster over one multiplexed connection per primary.

redis-py's cluster client keeps what it is good at: learning the slots, following MOVED
and ASK, failing over. A command whose key is known (redis-py's command methods pass it
along, an EVALSHA names it, an SPUBLISH's channel is its key) goes instead to the
:class:`~signaling.state.redis.multiplex.Multiplexer` of the primary owning the key's slot:
no connection checked out, no retry machinery per command, and the requests of a loop
iteration in one write per primary. A pipeline is split by primary and sent to all of
them at once (one with a command of unknown key goes to redis-py whole); a transaction
needs all its keys in one slot, as on any cluster.

Anything else — a command without a known key, a cluster still learning its slots, a
reply that is a redirect (MOVED, ASK, TRYAGAIN: a slot moving or a failover) — goes
through redis-py's own path, which handles it; only the redirected commands of a
pipeline are run again that way, so nothing is applied twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from signaling.state.redis.multiplex import (
    RESP2_CALLBACKS,
    MultiplexedPipeline,
    Multiplexer,
    Parsed,
    in_transaction,
    parse_reply,
)

#: Replies that mean "not here, not now": redis-py's cluster path knows what to do.
REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)
#: Commands whose first argument is their only key (the state's commands; an SPUBLISH's
#: channel is placed like a key).
_FIRST_KEY = frozenset(
    "SPUBLISH GET SET GETDEL GETSET SETNX SETEX PSETEX INCR INCRBY DECR DECRBY TTL PTTL "
    "EXPIRE PEXPIRE PERSIST HGET HSET HDEL HGETALL HKEYS HMGET HLEN "
    "HINCRBY SADD SREM SMEMBERS SCARD SISMEMBER ZADD ZREM ZRANGE ZRANGEBYSCORE ZSCORE ZCARD "
    "RPUSH LPUSH LRANGE LINDEX LTRIM LLEN".split()
)
#: Commands whose arguments are all keys: placed only if they share a slot (redis-py's
#: path splits the others by slot).
_ALL_KEYS = frozenset({"DEL", "UNLINK", "EXISTS", "MGET", "TOUCH"})


def key_of(args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    """The key that places a command, if it is known without asking Redis."""
    name = args[0]
    if name in _FIRST_KEY:
        return args[1] if len(args) > 1 else None
    if name in ("EVALSHA", "EVAL"):
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in _ALL_KEYS:
        return args[1] if len(args) == 2 else None
    keys = options.get("keys")
    return keys[0] if keys and len(keys) == 1 else None


class ClusterMultiplexing:
    """The multiplexed side of a cluster client (mixed into ``WaitingCluster``, which is a
    redis-py ``RedisCluster``)."""

    _muxes: dict[str, Multiplexer]

    def init_multiplexing(
        self, *, username: str | None, password: str | None, flush_delay: float = 0.0
    ) -> None:
        self._muxes = {}
        self._auth = (username, password)
        self._flush_delay = flush_delay
        self.resp2_callbacks = RESP2_CALLBACKS

    def mux_for(self, args: tuple[Any, ...], options: dict[str, Any]) -> Multiplexer | None:
        """The multiplexer of the primary owning the command's slot, if known."""
        if self._initialize or options.get("target_nodes"):  # type: ignore[attr-defined]
            return None
        key = key_of(args, options)
        if key is None:
            return None
        node = self.nodes_manager.get_node_from_slot(self.keyslot(key))  # type: ignore[attr-defined]
        return self.mux_of_node(node)

    def mux_of_node(self, node: Any) -> Multiplexer:
        """The multiplexer of a primary (made on first use)."""
        mux = self._muxes.get(node.name)
        if mux is None:
            username, password = self._auth
            mux = self._muxes[node.name] = Multiplexer(
                host=node.host,
                port=node.port,
                username=username,
                password=password,
                connect_timeout=node.connection_kwargs.get("socket_connect_timeout") or 2.0,
                reply_timeout=node.connection_kwargs.get("socket_timeout") or 3.0,
                flush_delay=self._flush_delay,
            )
        return mux

    def parsed(self, command_name: Any, reply: Any, options: dict[str, Any]) -> Any:
        return parse_reply(self.resp2_callbacks, command_name, reply, options)

    async def drop_multiplexed(self) -> None:
        """Close every primary's connection (the slots are learned again on next use)."""
        muxes, self._muxes = self._muxes, {}
        for mux in muxes.values():
            await mux.aclose()


class MultiplexedClusterPipeline(MultiplexedPipeline):
    """A cluster pipeline: split by primary, sent to all at once, reassembled in order."""

    async def replies(self, stack: list[Any], transaction: bool) -> list[Any]:
        client = self._client
        muxes = [client.mux_for(args, options) for args, options in stack]
        if transaction:
            commands = [args for args, _ in stack]
            for attempt in range(2):
                if muxes[0] is None or any(m is not muxes[0] for m in muxes):
                    return await self._through_redis_py(stack, transaction=True)
                try:
                    return await in_transaction(muxes[0], commands)
                except REDIRECTS:  # nothing applied (EXECABORT): learn where the slot is
                    if attempt:
                        raise
                    await client.nodes_manager.initialize()
                    muxes = [client.mux_for(args, options) for args, options in stack]
        groups: dict[Multiplexer, list[int]] = {}
        for i, mux in enumerate(muxes):
            if mux is None:  # (kept in one piece, so commands on one key keep their order)
                return await self._through_redis_py(stack)
            groups.setdefault(mux, []).append(i)
        out: list[Any] = [None] * len(stack)
        sends = [
            mux.batch([stack[i][0] for i in at], deferrable=self.deferrable)
            for mux, at in groups.items()
        ]
        batches = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        for at, replies in zip(groups.values(), batches, strict=True):
            for i, reply in zip(at, replies, strict=True):
                out[i] = reply
        redirected = [i for i, r in enumerate(out) if isinstance(r, REDIRECTS)]
        for i in redirected:  # not applied where it went: run it where it belongs
            args, options = stack[i]
            try:
                out[i] = Parsed(await client.execute_command(*args, **options))
            except Exception as exc:
                out[i] = Parsed(exc)
        return out

    async def _through_redis_py(self, stack: list[Any], *, transaction: bool = False) -> list[Any]:
        """Run ``stack`` on redis-py's own cluster pipeline: results already parsed."""
        pipe = self._client.redis_py_pipeline(transaction)
        for args, options in stack:
            pipe.execute_command(*args, **options)
        return [Parsed(r) for r in await pipe.execute(raise_on_error=False)]
