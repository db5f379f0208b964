"""Single-node hub state in process memory: the default, nothing else to install."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from signaling.state.base import HubState
from signaling.state.models import (
    Call,
    Member,
    PresenceChange,
    PresenceInfo,
    aggregate_status,
    now_ms,
)

if TYPE_CHECKING:
    from signaling.connection import Connection

T = TypeVar("T")


@dataclass(slots=True)
class _UserPresence:
    devices: dict[str, str] = field(default_factory=dict)
    last_seen: int | None = None

    def visible(self, user_id: str) -> PresenceInfo:
        return PresenceInfo(user_id, aggregate_status(self.devices.values()), self.last_seen)


@dataclass(slots=True)
class _Room:
    members: dict[str, Member] = field(default_factory=dict)
    user_conns: dict[str, set[str]] = field(default_factory=dict)
    conns: dict[str, Connection] = field(default_factory=dict)


class MemoryState(HubState):
    def __init__(self) -> None:
        self._conns: dict[str, Connection] = {}
        self._user_conns: dict[str, dict[str, Connection]] = {}
        self._presence: dict[str, _UserPresence] = {}
        self._rooms: dict[str, _Room] = {}
        self._user_rooms: dict[str, set[str]] = {}
        self._calls: dict[str, Call] = {}
        self._user_calls: dict[str, set[str]] = {}

    # -- connections & delivery --------------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        self._conns[conn.id] = conn
        self._user_conns.setdefault(conn.user_id, {})[conn.id] = conn

    def detach(self, conn: Connection) -> None:
        self._conns.pop(conn.id, None)
        devices = self._user_conns.get(conn.user_id)
        if devices is not None:
            devices.pop(conn.id, None)
            if not devices:
                del self._user_conns[conn.user_id]

    def local_connection_count(self) -> int:
        return len(self._conns)

    def local_connections(self) -> list[Connection]:
        return list(self._conns.values())

    async def deliver_to_connection(self, conn_id: str, frame: bytes) -> int:
        conn = self._conns.get(conn_id)
        return 1 if conn is not None and conn.send_frame(frame) else 0

    async def deliver_to_users(
        self, user_ids: Iterable[str], frame: bytes, *, exclude_conn: str | None = None
    ) -> int:
        sent = 0
        for user_id in set(user_ids):
            for conn in self._user_conns.get(user_id, {}).values():
                if conn.id != exclude_conn and conn.send_frame(frame):
                    sent += 1
        return sent

    async def deliver_to_rooms(
        self, room_ids: Iterable[str], frame: bytes, *, exclude_user: str | None = None
    ) -> int:
        rooms = [r for r in (self._rooms.get(rid) for rid in set(room_ids)) if r is not None]
        # send_frame only queues, so iterating the live dicts is safe (nothing is removed
        # until the connection's handler cleans up on a later loop iteration).
        if len(rooms) == 1:
            targets: Iterable[Connection] = rooms[0].conns.values()
        else:
            targets = {cid: c for room in rooms for cid, c in room.conns.items()}.values()
        sent = 0
        for conn in targets:
            if conn.principal.user_id != exclude_user and conn.send_frame(frame):
                sent += 1
        return sent

    # -- presence ----------------------------------------------------------------------------

    async def set_device_status(
        self, user_id: str, conn_id: str, status: str | None
    ) -> PresenceChange:
        entry = self._presence.setdefault(user_id, _UserPresence())
        before = entry.visible(user_id)
        if status is None:
            entry.devices.pop(conn_id, None)
        else:
            entry.devices[conn_id] = status
        # last_seen moves only while others can see the user, so going invisible does not
        # leak activity through a ticking timestamp.
        if before.status != "offline" or aggregate_status(entry.devices.values()) != "offline":
            entry.last_seen = now_ms()
        return PresenceChange(before, entry.visible(user_id))

    async def get_presence(self, user_ids: Iterable[str]) -> dict[str, PresenceInfo]:
        out = {}
        for user_id in user_ids:
            entry = self._presence.get(user_id)
            out[user_id] = (
                entry.visible(user_id) if entry else PresenceInfo(user_id, "offline", None)
            )
        return out

    # -- rooms -------------------------------------------------------------------------------

    async def join_room(self, room_id: str, member: Member, conn_id: str) -> bool:
        room = self._rooms.setdefault(room_id, _Room())
        conns = room.user_conns.setdefault(member.user_id, set())
        first = not conns
        conns.add(conn_id)
        room.members[member.user_id] = member
        conn = self._conns.get(conn_id)
        if conn is not None:
            room.conns[conn_id] = conn
        self._user_rooms.setdefault(member.user_id, set()).add(room_id)
        return first

    async def leave_room(self, room_id: str, user_id: str, conn_id: str) -> bool:
        room = self._rooms.get(room_id)
        if room is None:
            return False
        room.conns.pop(conn_id, None)
        conns = room.user_conns.get(user_id)
        if not conns or conn_id not in conns:
            return False
        conns.discard(conn_id)
        if conns:
            return False
        del room.user_conns[user_id]
        room.members.pop(user_id, None)
        rooms = self._user_rooms.get(user_id)
        if rooms is not None:
            rooms.discard(room_id)
            if not rooms:
                del self._user_rooms[user_id]
        if not room.members:
            del self._rooms[room_id]
        return True

    async def room_members(self, room_id: str) -> list[Member]:
        room = self._rooms.get(room_id)
        return list(room.members.values()) if room else []

    async def rooms_of_user(self, user_id: str) -> set[str]:
        return set(self._user_rooms.get(user_id, ()))

    async def shares_room(self, user_a: str, user_b: str) -> bool:
        rooms_a = self._user_rooms.get(user_a)
        rooms_b = self._user_rooms.get(user_b)
        return bool(rooms_a and rooms_b and not rooms_a.isdisjoint(rooms_b))

    # -- calls -------------------------------------------------------------------------------

    async def create_call(self, call: Call) -> None:
        self._calls[call.id] = copy.deepcopy(call)
        for user_id in call.participants:
            self._user_calls.setdefault(user_id, set()).add(call.id)

    async def get_call(self, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        return copy.deepcopy(call) if call else None

    async def update_call(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        stored = self._calls.get(call_id)
        if stored is None:
            raise KeyError(call_id)
        # Mutate a copy so a mutation that raises halfway leaves the stored call intact.
        work = copy.deepcopy(stored)
        result = mutate(work)
        self._calls[call_id] = work
        return copy.deepcopy(work), result

    async def calls_of_user(self, user_id: str) -> list[Call]:
        ids = self._user_calls.get(user_id, ())
        return [copy.deepcopy(self._calls[i]) for i in ids if i in self._calls]

    async def delete_call(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        for user_id in call.participants:
            ids = self._user_calls.get(user_id)
            if ids is not None:
                ids.discard(call_id)
                if not ids:
                    del self._user_calls[user_id]

    async def list_calls(self) -> list[Call]:
        return [copy.deepcopy(c) for c in self._calls.values()]

    async def close(self) -> None:
        self._rooms.clear()
        self._calls.clear()
