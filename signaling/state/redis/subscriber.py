"""The node's pub/sub connection to one Redis (or one primary of a cluster).

Pub/sub cannot share the multiplexed command connection (what Redis writes on it
unasked would come between the replies of other callers), so it gets a connection of its
own, opened with the same address and credentials, whose messages are handed over as they
are read: no reader task polls for them. It speaks RESP3, so it also takes the commands
of a request whose publication the node hears itself (:meth:`Subscriber.packed`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from signaling.state.redis.multiplex import Multiplexer, Replies, pack_command


class Subscriber:
    """A pub/sub connection whose messages are handed to ``on_push`` as they are read (no
    reader task polling for them). ``closed`` ends with the exception that cut the
    connection, or with ``None`` after :meth:`aclose`."""

    def __init__(self, mux: Multiplexer, on_push: Callable[[list[Any]], None]) -> None:
        self._mux = mux
        self._on_push = on_push
        self._conn: Replies | None = None
        self._opening: asyncio.Future[Replies] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _connected(self) -> Replies:
        if self._conn is not None:
            return self._conn
        if self._opening is None:
            self._opening = asyncio.ensure_future(
                self._mux.open_connection(self._lost, self._on_push)
            )
        self._conn = await asyncio.shield(self._opening)
        return self._conn

    def _lost(self, conn: Replies, exc: Exception) -> None:
        if not self.closed.done():
            self.closed.set_exception(exc)

    def packed(
        self, payload: bytes, count: int, deferrable: bool
    ) -> asyncio.Future[list[Any]] | None:
        """Send ``count`` commands in RESP over this connection; their replies, or
        ``None`` while it is not open (then the caller uses the command connection).

        For a request that publishes to a channel this node listens to: Redis writes the
        replies and the message in one write, and the node reads them at once, where on
        two connections each took a write of Redis's and a read of the node's."""
        conn = self._conn
        if conn is None or conn.lost:
            return None
        return self._mux._send(conn, payload, count, deferrable)  # type: ignore[no-any-return]

    async def subscribe(self, *channels: str) -> None:
        """Subscribe (the confirmations arrive through ``on_push``)."""
        await self._write("SUBSCRIBE", channels)

    async def unsubscribe(self, *channels: str) -> None:
        await self._write("UNSUBSCRIBE", channels, connect=False)

    async def ssubscribe(self, *channels: str) -> None:
        """Sharded: the connection must be to the primary owning the channels' slot."""
        await self._write("SSUBSCRIBE", channels)

    async def sunsubscribe(self, *channels: str) -> None:
        await self._write("SUNSUBSCRIBE", channels, connect=False)

    async def _write(self, command: str, channels: tuple[str, ...], connect: bool = True) -> None:
        conn = await self._connected() if connect else self._conn
        if conn is not None and not conn.lost:
            conn.transport.write(pack_command((command, *channels)))  # type: ignore[union-attr]

    async def aclose(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        opening = self._opening
        if self._conn is None and opening is not None and not opening.done():
            opening.cancel()
        if self._conn is not None:
            self._conn.fail(RedisConnectionError("subscriber closed"))
