"""Typing indicators with server-side expiry and repeat throttling.

Clients often send ``isTyping: true`` on every keystroke. The server broadcasts the start,
re-broadcasts a still-typing user at most once per ``typing_throttle`` seconds, and clears
the state itself (broadcasting ``isTyping: false``) after ``typing_timeout`` seconds without
a refresh, when the device leaves the room, or when it disconnects. Receivers therefore
never need timers of their own. The typing store keeps the expiry with the state, so it
fires even when the node that saw the keystrokes is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError, event_frame
from signaling.state.typing_indicators import Announcement

if TYPE_CHECKING:
    from signaling.events import MessageTyping
    from signaling.state.delivery import Fanout
    from signaling.state.models import RemoteConnection
    from signaling.state.typing_indicators import TypingStore
    from signaling.websocket import Connection


#: Past this many the announcements kept are dropped and made again as they come.
ANNOUNCEMENTS_KEPT = 1 << 14


class TypingService:
    def __init__(
        self, *, store: TypingStore, fanout: Fanout, timeout: float, throttle: float
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.timeout = timeout
        self.throttle = throttle
        #: A user's start and stop in a room are the same event every time: encoded once
        #: (and, on Redis, the store's ``PUBLISH`` of it too), not per keystroke.
        self._announcements: dict[tuple[str, str, str, bool], Announcement] = {}

    async def on_typing(self, conn: Connection, payload: MessageTyping) -> dict[str, Any]:
        room_id = payload.conversationId
        if room_id not in conn.rooms:
            raise HubError(
                ErrorCode.NOT_IN_ROOM, f"join conversation '{room_id}' before sending typing"
            )
        user_id, name, typing = conn.user_id, conn.name, payload.isTyping
        # The announcement goes with the change: the store delivers it (on Redis in the
        # change's own round trip), so it is encoded once and never broadcast here.
        key = (room_id, user_id, name, typing)
        announcement = self._announcements.get(key)
        if announcement is None:
            if len(self._announcements) >= ANNOUNCEMENTS_KEPT:
                self._announcements.clear()
            announcement = self._announcements[key] = Announcement(
                "user:typing",
                event_frame("user:typing", self._event(room_id, user_id, name, typing)),
                user_id,
            )
        if typing:
            conn.typed_in.add(room_id)
            await self.store.start(
                room_id, user_id, conn.id, name, self.timeout, self.throttle, announcement
            )
        else:
            conn.typed_in.discard(room_id)
            await self.store.stop_announced(room_id, user_id, announcement)
        return {}

    async def clear(self, conn: Connection | RemoteConnection, room_id: str) -> None:
        """Stop the typing state of ``conn``'s user in ``room_id`` if ``conn`` owns it.

        With the shared state away this does nothing: the state's expiry ends it later.
        A live device that never said it types here (or said it stopped) owns no state:
        nothing to ask the store (on Redis, a round trip per room of every leave)."""
        typed_in = conn.typed_in
        if typed_in is not None:
            if room_id not in typed_in:
                return
            typed_in.discard(room_id)
        try:
            name = await self.store.stop(room_id, conn.user_id, conn.id)
        except HubError:
            return
        if name is not None:
            await self._broadcast(room_id, conn.user_id, name, False)

    async def expired(self, room_id: str, user_id: str) -> None:
        """The ``typing`` timer fired: announce the end if the state really expired."""
        name = await self.store.expire(room_id, user_id)
        if name is not None:
            await self._broadcast(room_id, user_id, name, False)

    @staticmethod
    def _event(room_id: str, user_id: str, username: str, typing: bool) -> dict[str, Any]:
        return {
            "userId": user_id,
            "username": username,
            "conversationId": room_id,
            "isTyping": typing,
        }

    async def _broadcast(self, room_id: str, user_id: str, username: str, typing: bool) -> None:
        await self.fanout.to_rooms(
            [room_id],
            "user:typing",
            self._event(room_id, user_id, username, typing),
            exclude_user=user_id,
        )
