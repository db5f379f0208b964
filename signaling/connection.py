"""One client WebSocket: identity, joined rooms, limits, and bounded non-blocking sends."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from signaling.protocol import CloseCode, close_frame, encode, text_frame
from signaling.ratelimit import TokenBucket

if TYPE_CHECKING:
    from aiohttp import web

    from signaling.tokens import Principal

log = logging.getLogger("switchboard.connection")


class WriteBatcher:
    """Coalesces the frames queued for each connection during one loop iteration.

    Under fan-out load a receiver gets several frames per iteration; joining them into one
    ``transport.write`` turns many syscalls into one. With light load it costs one extra
    ``call_soon`` per iteration, not per frame.
    """

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class Connection:
    """A connected device of a user.

    Sends never await: frames are queued and written to the transport at the end of the
    loop iteration, and a peer that stops reading (write buffer above
    ``send_buffer_limit``) is dropped instead of letting the server's memory grow. That
    keeps one slow reader from delaying a room's fan-out.
    """

    __slots__ = (
        "_batcher",
        "_pending",
        "_transport",
        "close_code",
        "closed",
        "errors",
        "id",
        "principal",
        "rate",
        "rooms",
        "send_buffer_limit",
        "status",
        "ws",
    )

    def __init__(
        self,
        conn_id: str,
        principal: Principal,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        *,
        rate: TokenBucket,
        errors: TokenBucket,
        send_buffer_limit: int,
        batcher: WriteBatcher,
    ) -> None:
        self.id = conn_id
        self.principal = principal
        self.ws = ws
        self._transport = transport
        self._batcher = batcher
        self._pending: list[bytes] = []
        self.rate = rate
        self.errors = errors
        self.send_buffer_limit = send_buffer_limit
        self.status = "online"
        self.rooms: set[str] = set()
        self.closed = False
        self.close_code: int | None = None  # set when the server closes the connection

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    def send_frame(self, frame: bytes) -> bool:
        """Queue a pre-built WebSocket frame; ``False`` if the connection is gone."""
        if self.closed:
            return False
        if self._transport.is_closing():
            self.closed = True
            return False
        self._pending.append(frame)
        if len(self._pending) == 1:
            self._batcher.mark(self)
        return True

    def flush(self) -> None:
        """Write everything queued in one call; drop the peer if it stopped reading."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self.closed:
            return
        transport = self._transport
        if transport.is_closing():
            self.closed = True
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if transport.get_write_buffer_size() > self.send_buffer_limit:
            self.abort(CloseCode.SLOW_CONSUMER, "slow consumer: send buffer limit exceeded")

    def send(self, type_: str, data: Any, id_: str | int | None = None) -> bool:
        return self.send_frame(text_frame(encode(type_, data, id_)))

    def abort(self, code: int, reason: str) -> None:
        """Close without waiting for the peer: queue a close frame, flush, then cut.

        ``transport.close()`` flushes what is buffered; if the peer never reads, the
        transport is aborted a moment later so the handler's cleanup runs regardless.
        """
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        log.info(
            "closing connection",
            extra={"conn": self.id, "user": self.user_id, "code": code, "reason": reason},
        )
        transport = self._transport
        if transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        transport.close()
        asyncio.get_running_loop().call_later(2.0, transport.abort)

    async def close(self, code: int, reason: str) -> None:
        """Orderly close through aiohttp (waits briefly for the peer's close frame).

        Queued frames are written first, so an ``error`` explaining the close arrives
        before the close frame."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        self.close_code = code
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 5.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            self._transport.abort()
