"""Room membership: which connections (devices) of which users joined which rooms."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

from signaling.state.models import Member


class Departure(NamedTuple):
    """What a device's leaving a room changed (read in the leave's own round trip, so
    that who announces it and who checks whether the room emptied need no other)."""

    last_device: bool  # it was the user's last device there: the user left the room
    members_left: int | None  # members the room still has (None: not known)


class Entry(NamedTuple):
    """What a device's joining a room found (read in the join's own round trip: the
    join's answer lists the members, and the first device is announced)."""

    first_device: bool  # the user's first device there: the user joined the room
    members: list[Member]  # the room's members just after the join, the joiner among them


class MembershipStore(ABC):
    @abstractmethod
    async def join(
        self, room_id: str, member: Member, conn_id: str, capacity: int | None = None
    ) -> Entry:
        """Join a connection to a room, and list the room's members as they are then.

        With ``capacity``, a user who is not yet a member is refused (``room_full``) when
        the room already has that many members; the check and the join are one step."""

    @abstractmethod
    async def leave(self, room_id: str, user_id: str, conn_id: str) -> Departure:
        """Remove a connection from a room."""

    @abstractmethod
    async def members(self, room_id: str) -> list[Member]: ...

    @abstractmethod
    async def rooms_of(self, user_id: str) -> set[str]: ...

    async def share_a_room(self, user_a: str, user_b: str) -> bool:
        return not (await self.rooms_of(user_a)).isdisjoint(await self.rooms_of(user_b))
