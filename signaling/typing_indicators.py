"""Typing indicators with server-side expiry and repeat throttling.

Clients often send ``isTyping: true`` on every keystroke. The server broadcasts the start,
re-broadcasts a still-typing user at most once per ``typing_throttle`` seconds, and clears
the state itself (broadcasting ``isTyping: false``) after ``typing_timeout`` seconds without
a refresh, when the device leaves the room, or when it disconnects. Receivers therefore
never need timers of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.events import MessageTyping
    from signaling.hub import Hub

log = logging.getLogger("switchboard.typing")


@dataclass(slots=True)
class _Typing:
    conn_id: str
    username: str
    expires_at: float
    last_sent: float


class TypingService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._states: dict[tuple[str, str], _Typing] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="typing-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def on_typing(self, conn: Connection, payload: MessageTyping) -> dict[str, Any]:
        room_id = payload.conversationId
        if room_id not in conn.rooms:
            raise HubError(
                ErrorCode.NOT_IN_ROOM, f"join conversation '{room_id}' before sending typing"
            )
        key = (room_id, conn.user_id)
        now = time.monotonic()
        settings = self.hub.settings
        current = self._states.get(key)
        if payload.isTyping:
            if current is None:
                self._states[key] = _Typing(
                    conn.id, conn.principal.name, now + settings.typing_timeout, now
                )
                await self._broadcast(room_id, conn.user_id, conn.principal.name, True)
            else:
                current.expires_at = now + settings.typing_timeout
                current.conn_id = conn.id
                if now - current.last_sent >= settings.typing_throttle:
                    current.last_sent = now
                    await self._broadcast(room_id, conn.user_id, conn.principal.name, True)
        elif current is not None:
            del self._states[key]
            await self._broadcast(room_id, conn.user_id, conn.principal.name, False)
        return {}

    async def clear(self, conn: Connection, room_id: str) -> None:
        """Stop the typing state of ``conn``'s user in ``room_id`` if ``conn`` owns it."""
        key = (room_id, conn.user_id)
        current = self._states.get(key)
        if current is not None and current.conn_id == conn.id:
            del self._states[key]
            await self._broadcast(room_id, conn.user_id, current.username, False)

    async def _broadcast(self, room_id: str, user_id: str, username: str, typing: bool) -> None:
        await self.hub.to_rooms(
            [room_id],
            "user:typing",
            {
                "userId": user_id,
                "username": username,
                "conversationId": room_id,
                "isTyping": typing,
            },
            exclude_user=user_id,
        )

    async def _sweep_forever(self) -> None:
        interval = min(0.5, self.hub.settings.typing_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("typing sweep failed")

    async def sweep(self) -> None:
        now = time.monotonic()
        expired = [(k, s) for k, s in self._states.items() if s.expires_at <= now]
        for (room_id, user_id), state in expired:
            if self._states.get((room_id, user_id)) is state:
                del self._states[(room_id, user_id)]
                await self._broadcast(room_id, user_id, state.username, False)
