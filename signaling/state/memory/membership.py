"""Room membership in process memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from signaling.protocol import ErrorCode, HubError
from signaling.state.delivery import Delivery
from signaling.state.membership import Departure, Entry, MembershipStore
from signaling.state.models import Member


@dataclass(slots=True)
class _Room:
    members: dict[str, Member] = field(default_factory=dict)
    user_conns: dict[str, set[str]] = field(default_factory=dict)


class MemoryMembership(MembershipStore):
    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self._rooms: dict[str, _Room] = {}
        self._user_rooms: dict[str, set[str]] = {}

    async def join(
        self, room_id: str, member: Member, conn_id: str, capacity: int | None = None
    ) -> Entry:
        room = self._rooms.setdefault(room_id, _Room())
        if (
            capacity is not None
            and member.user_id not in room.members
            and len(room.members) >= capacity
        ):
            if not room.members:
                del self._rooms[room_id]
            raise HubError(ErrorCode.ROOM_FULL, f"room '{room_id}' is full ({capacity} members)")
        conns = room.user_conns.setdefault(member.user_id, set())
        first = not conns
        conns.add(conn_id)
        room.members[member.user_id] = member
        await self._delivery.room_joined(room_id, conn_id)
        self._user_rooms.setdefault(member.user_id, set()).add(room_id)
        return Entry(first, list(room.members.values()))

    async def leave(self, room_id: str, user_id: str, conn_id: str) -> Departure:
        room = self._rooms.get(room_id)
        if room is None:
            return Departure(False, 0)
        await self._delivery.room_left(room_id, conn_id)
        conns = room.user_conns.get(user_id)
        if not conns or conn_id not in conns:
            return Departure(False, len(room.members))
        conns.discard(conn_id)
        if conns:
            return Departure(False, len(room.members))
        del room.user_conns[user_id]
        room.members.pop(user_id, None)
        rooms = self._user_rooms.get(user_id)
        if rooms is not None:
            rooms.discard(room_id)
            if not rooms:
                del self._user_rooms[user_id]
        if not room.members:
            del self._rooms[room_id]
        return Departure(True, len(room.members))

    async def members(self, room_id: str) -> list[Member]:
        room = self._rooms.get(room_id)
        return list(room.members.values()) if room else []

    async def rooms_of(self, user_id: str) -> set[str]:
        return set(self._user_rooms.get(user_id, ()))
