"""Typing state per (room, user), with its expiry kept by the store itself: whichever
node is alive when it runs out reports the ``typing`` timer, with ``[room, user]``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum

#: The timer kind the store arms for each typing user (parts: room id, user id).
TYPING_TIMER = "typing"


@dataclass(frozen=True, slots=True)
class Announcement:
    """The room event a change would be announced with, encoded once by the service. A
    store that can publish it in the same round trip as the change (Redis: the script
    publishes it to the room's channel) does so and answers :attr:`Announce.SENT`."""

    type_: str
    frame: bytes
    exclude_user: str


class Announce(IntEnum):
    NONE = 0  # nothing to announce (a throttled repeat)
    NEEDED = 1  # the caller broadcasts
    SENT = 2  # the store published the announcement with the change


class TypingStore(ABC):
    @abstractmethod
    async def start(
        self,
        room_id: str,
        user_id: str,
        conn_id: str,
        name: str,
        timeout: float,
        throttle: float,
        announcement: Announcement | None = None,
    ) -> Announce:
        """Record that the user types and (re)arm its expiry. To be announced: the start,
        or a repeat at least ``throttle`` seconds after the last."""

    @abstractmethod
    async def stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        """End the typing state (only if ``conn_id`` owns it, unless ``None``); returns the
        display name to announce, or ``None`` if there was nothing to end."""

    async def stop_announced(
        self, room_id: str, user_id: str, announcement: Announcement
    ) -> Announce:
        """End the typing state whoever owns it, with ``announcement`` as its end (the
        stopping device's own name). The default: :meth:`stop`, the caller announces."""
        name = await self.stop(room_id, user_id, None)
        return Announce.NONE if name is None else Announce.NEEDED

    @abstractmethod
    async def expire(self, room_id: str, user_id: str) -> str | None:
        """Run when the ``typing`` timer fires: end the state if it expired and return the
        name to announce; a state refreshed meanwhile is re-armed for what is left."""
