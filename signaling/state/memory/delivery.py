"""This node's sockets and delivery to them: the whole fan-out on one node, and the local
half of it on every node of a cluster (:class:`signaling.state.redis.delivery.RedisDelivery`
adds what goes beyond this node). Every delivery writes one pre-built frame to each target.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from signaling import direct_writes
from signaling.direct_writes import BroadcastGate, RoomPlan
from signaling.metrics import FanoutMetrics
from signaling.protocol import event_frame, text_frame
from signaling.state.delivery import Delivery, Socket
from signaling.state.handler import Reports
from signaling.state.history import Template
from signaling.state.memory.history import MemoryHistory


class LocalDelivery(Delivery):
    def __init__(
        self, node_id: str, reports: Reports, history: MemoryHistory | None = None
    ) -> None:
        self.node_id = node_id
        self.reports = reports
        #: Where this node numbers and keeps recorded events when no shared store does.
        self.history = history or MemoryHistory()
        self.metrics = FanoutMetrics()
        self.conns: dict[str, Socket] = {}
        self.user_conns: dict[str, dict[str, Socket]] = {}
        self.room_conns: dict[str, dict[str, Socket]] = {}
        #: Rooms' recipients as a broadcast written at once reads them (built on first
        #: use, dropped when the room's membership changes): see
        #: :mod:`signaling.direct_writes`.
        self.plans: dict[str, RoomPlan] = {}
        self.gate = BroadcastGate() if direct_writes.AVAILABLE else None

    # -- the index ---------------------------------------------------------------------------

    def attach(self, socket: Socket) -> None:
        self.conns[socket.id] = socket
        self.user_conns.setdefault(socket.user_id, {})[socket.id] = socket

    def detach(self, socket: Socket) -> None:
        for room_id in socket.rooms:
            self.plans.pop(room_id, None)
        self.conns.pop(socket.id, None)
        devices = self.user_conns.get(socket.user_id)
        if devices is not None:
            devices.pop(socket.id, None)
            if not devices:
                del self.user_conns[socket.user_id]

    async def room_joined(self, room_id: str, conn_id: str) -> None:
        self.index_join(room_id, conn_id)

    async def room_left(self, room_id: str, conn_id: str) -> None:
        self.index_leave(room_id, conn_id)

    def index_join(self, room_id: str, conn_id: str) -> bool:
        """Index a local socket in a room; ``True`` if it is the node's first there."""
        socket = self.conns.get(conn_id)
        if socket is None:
            return False
        members = self.room_conns.setdefault(room_id, {})
        self.plans.pop(room_id, None)
        first = not members
        members[conn_id] = socket
        return first

    def index_leave(self, room_id: str, conn_id: str) -> bool:
        """Un-index a socket; ``True`` if the node has nobody left in the room."""
        members = self.room_conns.get(room_id)
        self.plans.pop(room_id, None)
        if members is None or members.pop(conn_id, None) is None:
            return False
        if members:
            return False
        del self.room_conns[room_id]
        return True

    def local_connections(self) -> list[Socket]:
        return list(self.conns.values())

    def local_connection_count(self) -> int:
        return len(self.conns)

    def local_connections_of(self, user_id: str) -> list[Socket]:
        return list(self.user_conns.get(user_id, {}).values())

    def local_room_members(self, room_id: str) -> list[Socket]:
        return list(self.room_conns.get(room_id, {}).values())

    # -- fan-out: encode once, then write (here) or publish (subclasses) ----------------------

    async def to_users(
        self, user_ids: Iterable[str], type_: str, data: Any, *, exclude_conn: str | None = None
    ) -> int:
        started = time.perf_counter()
        users = list(dict.fromkeys(user_ids))
        count = await self.users_frame(users, event_frame(type_, data), exclude_conn)
        self.metrics.observe(type_, started, count)
        return count

    async def to_rooms(
        self, room_ids: Iterable[str], type_: str, data: Any, *, exclude_user: str | None = None
    ) -> int:
        started = time.perf_counter()
        rooms = list(dict.fromkeys(room_ids))
        count = await self.rooms_frame(rooms, event_frame(type_, data), exclude_user)
        self.metrics.observe(type_, started, count)
        return count

    async def to_conns(self, conn_ids: Iterable[str], type_: str, data: Any) -> int:
        started = time.perf_counter()
        count = await self.conns_frame(list(conn_ids), event_frame(type_, data))
        self.metrics.observe(type_, started, count)
        return count

    @property
    def recording(self) -> bool:
        """Whether room history is on (``history_size`` > 0)."""
        return self.history.size > 0

    async def to_room_recorded(
        self, room_id: str, type_: str, data: dict[str, Any], *, exclude_user: str | None = None
    ) -> int:
        if not self.recording:
            return await self.to_rooms([room_id], type_, data, exclude_user=exclude_user)
        started = time.perf_counter()
        count = await self.room_recorded_frame(
            room_id, Template.of(room_id, type_, data), exclude_user
        )
        self.metrics.observe(type_, started, count)
        return count

    async def room_recorded_frame(
        self, room_id: str, template: Template, exclude_user: str | None
    ) -> int:
        envelope = self.history.record(room_id, template, exclude_user)
        return self.write_room(room_id, text_frame(envelope), exclude_user)

    async def users_frame(self, users: list[str], frame: bytes, exclude_conn: str | None) -> int:
        return self.write_users(users, frame, exclude_conn)

    async def rooms_frame(self, rooms: list[str], frame: bytes, exclude_user: str | None) -> int:
        return self.write_rooms(rooms, frame, exclude_user)

    async def conns_frame(self, conn_ids: list[str], frame: bytes) -> int:
        return sum(self.write_conn(conn_id, frame) for conn_id in conn_ids)

    async def send_control(self, user_ids: Iterable[str], command: dict[str, Any]) -> None:
        await self.reports.control_here(
            [u for u in dict.fromkeys(user_ids) if u in self.user_conns], command
        )

    # -- writing to this node's sockets --------------------------------------------------------

    def write_conn(self, conn_id: str, frame: bytes) -> int:
        socket = self.conns.get(conn_id)
        return 1 if socket is not None and socket.send_frame(frame) else 0

    def write_users(
        self, user_ids: Iterable[str], frame: bytes, exclude_conn: str | None = None
    ) -> int:
        sent = 0
        for user_id in user_ids:
            for socket in self.user_conns.get(user_id, {}).values():
                if socket.id != exclude_conn and socket.send_frame(frame):
                    sent += 1
        return sent

    def write_room(self, room_id: str, frame: bytes, exclude_user: str | None = None) -> int:
        """Each socket in the room gets the frame (most broadcasts: one room): written at
        once where the gate and the socket allow (:mod:`signaling.direct_writes`), else
        queued on each socket's outbox."""
        members = self.room_conns.get(room_id)
        if not members:
            return 0
        if self.gate is None:
            return self._write(members.values(), frame, exclude_user)
        direct = self.gate.admit()
        plan = self.plans.get(room_id)
        if plan is None or (plan.waiting and plan.stale):
            plan = self.plans[room_id] = RoomPlan(members.values())
        devices = self.user_conns.get(exclude_user) if exclude_user is not None else None
        skip = tuple(devices.values()) if devices else ()  # (_devices, inlined)
        return plan.write(frame, skip) if direct else plan.queue(frame, skip)

    def write_rooms(
        self, room_ids: Sequence[str], frame: bytes, exclude_user: str | None = None
    ) -> int:
        """Each socket in any of the rooms gets the frame once."""
        if len(room_ids) == 1:
            return self.write_room(room_ids[0], frame, exclude_user)
        rooms = [r for r in (self.room_conns.get(rid) for rid in room_ids) if r is not None]
        # send_frame only queues, so iterating the live dicts is safe (nothing is removed
        # until the connection's handler cleans up on a later loop iteration).
        if len(rooms) == 1:
            targets: Iterable[Socket] = rooms[0].values()
        else:
            targets = {cid: s for room in rooms for cid, s in room.items()}.values()
        return self._write(targets, frame, exclude_user)

    def write_room_share(
        self, rooms: Sequence[str], index: int, frame: bytes, exclude_user: str | None
    ) -> int:
        """Deliver a multi-room event arriving through ``rooms[index]``'s channel.

        A socket in several of the rooms receives it through the first of them in
        ``rooms`` only, so each socket still gets one copy, with no shared state between
        the channels.
        """
        if index == 0:
            return self.write_room(rooms[0], frame, exclude_user)
        members = self.room_conns.get(rooms[index])
        if not members:
            return 0
        earlier = [self.room_conns.get(r, {}) for r in rooms[:index]]
        targets = [s for cid, s in members.items() if not any(cid in e for e in earlier)]
        return self._write(targets, frame, exclude_user)

    def _devices(self, user_id: str | None) -> tuple[Socket, ...]:
        """``user_id``'s sockets on this node (a broadcast excluding the user skips them)."""
        devices = self.user_conns.get(user_id) if user_id is not None else None
        return tuple(devices.values()) if devices else ()

    def _write(self, targets: Iterable[Socket], frame: bytes, exclude_user: str | None) -> int:
        """``exclude_user``'s sockets are skipped by identity (its devices on this node,
        from the user index), so no recipient's user id is read: a broadcast starts with
        every recipient cold in memory, and each object not touched is a miss saved."""
        skip = self._devices(exclude_user)
        sent = 0
        for socket in targets:
            if socket not in skip and socket.send_frame(frame):
                sent += 1
        return sent
