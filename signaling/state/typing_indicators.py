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
    """The room event a change is announced with, encoded once by the service. The store
    delivers it with the change and answers :attr:`Announce.SENT` (memory: written to the
    room's sockets; Redis: the script publishes it in the change's round trip)."""

    type_: str
    frame: bytes
    exclude_user: str


class Announce(IntEnum):
    NONE = 0  # nothing to announce (a throttled repeat)
    NEEDED = 1  # to announce, and no announcement came with it: the caller broadcasts
    SENT = 2  # the store delivered the announcement with the change


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

    @abstractmethod
    async def stop_announced(
        self, room_id: str, user_id: str, announcement: Announcement
    ) -> Announce:
        """End the typing state whoever owns it, delivering ``announcement`` (made with
        the stopping device's own name) as its end: ``SENT``, or ``NONE`` if there was
        nothing to end."""

    @abstractmethod
    async def expire(self, room_id: str, user_id: str) -> str | None:
        """Run when the ``typing`` timer fires: end the state if it expired and return the
        name to announce; a state refreshed meanwhile is re-armed for what is left."""
