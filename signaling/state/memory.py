"""Single-node hub state in process memory: the default, nothing else to install."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from signaling.protocol import ErrorCode, HubError
from signaling.state.base import HubState, LostConnections
from signaling.state.models import (
    Call,
    Member,
    PresenceChange,
    PresenceInfo,
    RoomInfo,
    aggregate_status,
    now_ms,
)

T = TypeVar("T")
R = TypeVar("R")


def _update(store: dict[str, R], key: str, mutate: Callable[[R], T]) -> tuple[R, T]:
    """Mutate a copy, so a mutation that raises halfway leaves the stored record intact."""
    stored = store.get(key)
    if stored is None:
        raise KeyError(key)
    work = copy.deepcopy(stored)
    result = mutate(work)
    store[key] = work
    return copy.deepcopy(work), result


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


@dataclass(slots=True)
class _Typing:
    conn_id: str
    name: str
    expires_at: float
    last_sent: float


class MemoryState(HubState):
    def __init__(self) -> None:
        super().__init__()
        self._typing: dict[tuple[str, str], _Typing] = {}
        self._timers: dict[str, tuple[float, int]] = {}
        self._timer_heap: list[tuple[float, int, str]] = []
        self._timer_seq = itertools.count()
        self._presence: dict[str, _UserPresence] = {}
        self._rooms: dict[str, _Room] = {}
        self._user_rooms: dict[str, set[str]] = {}
        self._calls: dict[str, Call] = {}
        self._user_calls: dict[str, set[str]] = {}
        self._room_info: dict[str, RoomInfo] = {}
        self._wh_queues: dict[str, deque[bytes]] = {}
        self._wh_leases: dict[str, tuple[str, float]] = {}
        self._hosts: dict[str, str] = {}
        self._placing: dict[str, tuple[asyncio.Lock, int]] = {}

    async def start(self, on_lost: LostConnections) -> None:
        """Nothing to connect to: one node, no other node can die."""

    # -- connections & delivery --------------------------------------------------------------

    async def deliver_to_connections(self, conn_ids: Iterable[str], frame: bytes) -> int:
        return sum(self.local.to_connection(conn_id, frame) for conn_id in conn_ids)

    async def deliver_to_users(
        self, user_ids: Iterable[str], frame: bytes, *, exclude_conn: str | None = None
    ) -> int:
        return self.local.to_users(user_ids, frame, exclude_conn)

    async def deliver_to_rooms(
        self, room_ids: Iterable[str], frame: bytes, *, exclude_user: str | None = None
    ) -> int:
        return self.local.to_rooms(room_ids, frame, exclude_user)

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

    async def join_room(
        self, room_id: str, member: Member, conn_id: str, capacity: int | None = None
    ) -> bool:
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
        self.local.join(room_id, conn_id)
        self._user_rooms.setdefault(member.user_id, set()).add(room_id)
        return first

    async def leave_room(self, room_id: str, user_id: str, conn_id: str) -> bool:
        room = self._rooms.get(room_id)
        if room is None:
            return False
        self.local.leave(room_id, conn_id)
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
        return _update(self._calls, call_id, mutate)

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

    # -- room records ------------------------------------------------------------------------

    async def create_room(self, room: RoomInfo) -> bool:
        if room.id in self._room_info:
            return False
        self._room_info[room.id] = copy.deepcopy(room)
        return True

    async def get_room(self, room_id: str) -> RoomInfo | None:
        room = self._room_info.get(room_id)
        return copy.deepcopy(room) if room else None

    async def update_room(
        self, room_id: str, mutate: Callable[[RoomInfo], T]
    ) -> tuple[RoomInfo, T]:
        return _update(self._room_info, room_id, mutate)

    async def delete_room(self, room_id: str) -> RoomInfo | None:
        return self._room_info.pop(room_id, None)

    async def list_rooms(self) -> list[RoomInfo]:
        return [copy.deepcopy(r) for r in self._room_info.values()]

    # -- control commands (one node: every socket is here) ----------------------------------

    async def send_control(self, user_ids: Iterable[str], command: dict[str, Any]) -> None:
        users = [u for u in dict.fromkeys(user_ids) if u in self.local.user_conns]
        if users and self.control_handler is not None:
            await self.control_handler(users, command)

    # -- the cluster (one node: itself) ------------------------------------------------------

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> bool:
        if node_id != self.node_id or self.node_message_handler is None:
            return False
        self._run_node_message(message)
        return True

    async def cluster_nodes(self) -> dict[str, dict[str, Any]]:
        load = self.load_provider() if self.load_provider is not None else {}
        return {self.node_id: load}

    async def publish_load_now(self) -> None:
        """Nobody else reads it: :meth:`cluster_nodes` asks the provider directly."""

    @contextlib.asynccontextmanager
    async def placement_lock(self, room_id: str, ttl: float = 5.0) -> AsyncIterator[None]:
        lock, users = self._placing.get(room_id, (asyncio.Lock(), 0))
        self._placing[room_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._placing[room_id]
            if users == 1:
                del self._placing[room_id]
            else:
                self._placing[room_id] = (lock, users - 1)

    async def get_room_host(self, room_id: str) -> str | None:
        return self._hosts.get(room_id)

    async def set_room_host(self, room_id: str, node_id: str) -> None:
        self._hosts[room_id] = node_id

    async def release_room_host(self, room_id: str, node_id: str) -> bool:
        if self._hosts.get(room_id) != node_id:
            return False
        del self._hosts[room_id]
        return True

    # -- webhook queue -----------------------------------------------------------------------

    def _holds(self, key: str, owner: str) -> bool:
        lease = self._wh_leases.get(key)
        return lease is not None and lease[0] == owner and lease[1] > time.monotonic()

    async def webhook_push(self, items: list[tuple[str, bytes]]) -> None:
        for key, delivery in items:
            self._wh_queues.setdefault(key, deque()).append(delivery)

    async def webhook_claim(self, owner: str, limit: int, lease: float) -> list[str]:
        now, claimed = time.monotonic(), []
        for key in self._wh_queues:
            if len(claimed) >= limit:
                break
            held = self._wh_leases.get(key)
            if held is None or held[1] <= now:
                self._wh_leases[key] = (owner, now + lease)
                claimed.append(key)
        return claimed

    async def webhook_head(self, key: str) -> bytes | None:
        queue = self._wh_queues.get(key)
        return queue[0] if queue else None

    async def webhook_ack(self, key: str, owner: str) -> bool:
        if not self._holds(key, owner):
            return False
        queue = self._wh_queues.get(key)
        if queue:
            queue.popleft()
        if not queue:
            self._wh_queues.pop(key, None)
            self._wh_leases.pop(key, None)
        return True

    async def webhook_renew(self, key: str, owner: str, lease: float) -> bool:
        if not self._holds(key, owner):
            return False
        self._wh_leases[key] = (owner, time.monotonic() + lease)
        return True

    async def webhook_release(self, key: str, owner: str) -> None:
        if self._holds(key, owner):
            del self._wh_leases[key]
        if not self._wh_queues.get(key, True):
            self._wh_queues.pop(key, None)

    # -- typing ------------------------------------------------------------------------------

    async def typing_start(
        self, room_id: str, user_id: str, conn_id: str, name: str, timeout: float, throttle: float
    ) -> bool:
        now = time.time()
        current = self._typing.get((room_id, user_id))
        if current is None:
            self._typing[(room_id, user_id)] = _Typing(conn_id, name, now + timeout, now)
            return True
        current.expires_at = now + timeout
        current.conn_id = conn_id
        if now - current.last_sent < throttle:
            return False
        current.last_sent = now
        return True

    async def typing_stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        current = self._typing.get((room_id, user_id))
        if current is None or (conn_id is not None and current.conn_id != conn_id):
            return None
        del self._typing[(room_id, user_id)]
        return current.name

    async def typing_expire(self, room_id: str, user_id: str) -> tuple[str | None, float | None]:
        current = self._typing.get((room_id, user_id))
        if current is None:
            return None, None
        left = current.expires_at - time.time()
        if left > 0:
            return None, left
        del self._typing[(room_id, user_id)]
        return current.name, None

    # -- timers ------------------------------------------------------------------------------

    async def arm_timer(self, key: str, delay: float) -> None:
        due, seq = time.monotonic() + delay, next(self._timer_seq)
        self._timers[key] = (due, seq)
        heapq.heappush(self._timer_heap, (due, seq, key))

    async def disarm_timer(self, key: str) -> None:
        self._timers.pop(key, None)

    async def claim_due_timers(self, limit: int = 100) -> list[str]:
        now = time.monotonic()
        heap, due = self._timer_heap, []
        while heap and heap[0][0] <= now and len(due) < limit:
            _, seq, key = heapq.heappop(heap)
            # Entries replaced by a re-arm or removed by a disarm are skipped lazily.
            if self._timers.get(key, (0.0, -1))[1] == seq:
                del self._timers[key]
                due.append(key)
        return due

    async def close(self) -> None:
        self._rooms.clear()
        self._calls.clear()
        self._room_info.clear()
