"""One client WebSocket: identity, joined rooms, limits, and bounded non-blocking sends."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from signaling.protocol import CloseCode, close_frame, encode, text_frame
from signaling.ratelimit import TokenBucket

if TYPE_CHECKING:
    from aiohttp import web

    from signaling.tokens import Principal

log = logging.getLogger("switchboard.connection")


class Connection:
    """A connected device of a user.

    Sends never await: frames are written straight to the transport, and a peer that stops
    reading (write buffer above ``send_buffer_limit``) is dropped instead of letting the
    server's memory grow. That keeps one slow reader from delaying a room's fan-out.
    """

    __slots__ = (
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
        principal: Principal,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        *,
        rate: TokenBucket,
        errors: TokenBucket,
        send_buffer_limit: int,
    ) -> None:
        self.id = "c_" + secrets.token_hex(8)
        self.principal = principal
        self.ws = ws
        self._transport = transport
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
        """Write a pre-built WebSocket frame; return ``False`` if the peer was dropped."""
        if self.closed:
            return False
        transport = self._transport
        if transport.is_closing():
            self.closed = True
            return False
        transport.write(frame)
        if transport.get_write_buffer_size() > self.send_buffer_limit:
            self.abort(CloseCode.SLOW_CONSUMER, "slow consumer: send buffer limit exceeded")
            return False
        return True

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
        """Orderly close through aiohttp (waits briefly for the peer's close frame)."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), 5.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            self._transport.abort()
