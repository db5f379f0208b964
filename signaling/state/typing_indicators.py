"""Typing state per (room, user), with its expiry kept by the store itself: whichever
node is alive when it runs out reports the ``typing`` timer, with ``[room, user]``."""

from __future__ import annotations

from abc import ABC, abstractmethod

#: The timer kind the store arms for each typing user (parts: room id, user id).
TYPING_TIMER = "typing"


class TypingStore(ABC):
    @abstractmethod
    async def start(
        self, room_id: str, user_id: str, conn_id: str, name: str, timeout: float, throttle: float
    ) -> bool:
        """Record that the user types and (re)arm its expiry; ``True`` if it should be
        broadcast: the start, or a repeat at least ``throttle`` seconds after the last."""

    @abstractmethod
    async def stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        """End the typing state (only if ``conn_id`` owns it, unless ``None``); returns the
        display name to announce, or ``None`` if there was nothing to end."""

    @abstractmethod
    async def expire(self, room_id: str, user_id: str) -> str | None:
        """Run when the ``typing`` timer fires: end the state if it expired and return the
        name to announce; a state refreshed meanwhile is re-armed for what is left."""
