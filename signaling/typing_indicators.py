"""Typing indicators with server-side expiry and repeat throttling.

Clients often send ``isTyping: true`` on every keystroke. The server broadcasts the start,
re-broadcasts a still-typing user at most once per ``typing_throttle`` seconds, and clears
the state itself (broadcasting ``isTyping: false``) after ``typing_timeout`` seconds without
a refresh, when the device leaves the room, or when it disconnects. Receivers therefore
never need timers of their own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.events import MessageTyping
    from signaling.hub import Hub
    from signaling.state.models import RemoteConnection

log = logging.getLogger("switchboard.typing")

TIMER = "typing"


class TypingService:
    """Typing state lives in the hub state with a timer per (room, user), so the expiry
    fires even when the node that saw the keystrokes is gone."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        hub.timers.on(TIMER, self._expire)

    async def on_typing(self, conn: Connection, payload: MessageTyping) -> dict[str, Any]:
        room_id = payload.conversationId
        if room_id not in conn.rooms:
            raise HubError(
                ErrorCode.NOT_IN_ROOM, f"join conversation '{room_id}' before sending typing"
            )
        state, settings, name = self.hub.state, self.hub.settings, conn.principal.name
        if payload.isTyping:
            announce = await state.typing_start(
                room_id,
                conn.user_id,
                conn.id,
                name,
                settings.typing_timeout,
                settings.typing_throttle,
            )
            if announce:
                # Arming on announcements only keeps keystrokes off the timer store; the
                # timer re-checks the real expiry when it fires.
                await self.hub.timers.arm(settings.typing_timeout, TIMER, room_id, conn.user_id)
                await self._broadcast(room_id, conn.user_id, name, True)
        elif (stopped := await state.typing_stop(room_id, conn.user_id, None)) is not None:
            await self.hub.timers.disarm(TIMER, room_id, conn.user_id)
            await self._broadcast(room_id, conn.user_id, stopped, False)
        return {}

    async def clear(self, conn: Connection | RemoteConnection, room_id: str) -> None:
        """Stop the typing state of ``conn``'s user in ``room_id`` if ``conn`` owns it.

        With the shared state away this does nothing: the state's timer ends it later."""
        try:
            name = await self.hub.state.typing_stop(room_id, conn.user_id, conn.id)
        except HubError:
            return
        if name is not None:
            await self.hub.timers.disarm(TIMER, room_id, conn.user_id)
            await self._broadcast(room_id, conn.user_id, name, False)

    async def _expire(self, room_id: str, user_id: str) -> None:
        name, left = await self.hub.state.typing_expire(room_id, user_id)
        if name is not None:
            await self._broadcast(room_id, user_id, name, False)
        elif left is not None:
            await self.hub.timers.arm(left, TIMER, room_id, user_id)

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
