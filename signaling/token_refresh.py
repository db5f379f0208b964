"""Token refresh: a connection never outlives its join token.

A connection is warned ``token_expiry_warning`` seconds before its token expires
(``session:expiring``); the client answers with a fresh token (``session:refresh``),
which replaces the connection's principal (rooms it may join from then on, presence it may
query) and moves both deadlines. A connection still holding an expired token after the
``jwt_leeway`` is closed with 4001 and the client reconnects with a fresh token.

The deadlines are timers on this node's loop: a connection lives on one node, and so do
its deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from signaling.protocol import CloseCode, ErrorCode, HubError
from signaling.tokens import TokenError, verify_token

if TYPE_CHECKING:
    from signaling.events import SessionRefresh
    from signaling.websocket import Connection

log = logging.getLogger("switchboard.tokens")


class TokenRefresh:
    def __init__(self, *, secret: str, leeway: float, warning: float) -> None:
        self.secret = secret
        self.leeway = leeway
        self.warning = warning
        self._deadlines: dict[str, tuple[asyncio.TimerHandle, asyncio.TimerHandle]] = {}

    async def device_connected(self, conn: Connection) -> None:
        self._schedule(conn)

    async def connection_closed(self, conn: Connection) -> None:
        self._cancel(conn.id)

    async def on_refresh(self, conn: Connection, payload: SessionRefresh) -> dict[str, Any]:
        try:
            principal = verify_token(payload.token, self.secret, leeway=self.leeway)
        except TokenError as exc:
            raise HubError(ErrorCode.TOKEN_INVALID, f"{exc.code}: {exc.message}") from None
        if principal.user_id != conn.user_id:
            raise HubError(ErrorCode.FORBIDDEN, "the token is for another user")
        conn.principal = principal
        self._schedule(conn)
        return {"tokenExpiresAt": int(principal.expires_at * 1000)}

    def _schedule(self, conn: Connection) -> None:
        self._cancel(conn.id)
        expires = conn.principal.expires_at
        if not expires:
            return
        loop, now = asyncio.get_running_loop(), time.time()
        warn = loop.call_later(max(0.0, expires - self.warning - now), self._warn, conn)
        close = loop.call_later(max(0.0, expires + self.leeway - now), self._expired, conn)
        self._deadlines[conn.id] = (warn, close)

    def _cancel(self, conn_id: str) -> None:
        for handle in self._deadlines.pop(conn_id, ()):
            handle.cancel()

    def _warn(self, conn: Connection) -> None:
        expires = conn.principal.expires_at
        conn.send(
            "session:expiring",
            {
                "tokenExpiresAt": int(expires * 1000),
                "expiresIn": max(0.0, round(expires - time.time(), 3)),
            },
        )

    def _expired(self, conn: Connection) -> None:
        self._deadlines.pop(conn.id, None)
        if conn.closed:
            return
        log.info("token expired", extra={"conn": conn.id, "user": conn.user_id})
        task = asyncio.ensure_future(conn.close(CloseCode.TOKEN_EXPIRED, "token expired"))
        task.add_done_callback(lambda t: t.exception())
