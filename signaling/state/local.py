"""The connections of this node and delivery to them.

Both state implementations keep this index: the memory state because it is everything, the
Redis state because a node can only write to its own sockets (and must keep serving them
when Redis is away). Every delivery writes the same pre-built frame to each target.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signaling.connection import Connection


class LocalIndex:
    __slots__ = ("conns", "room_conns", "user_conns")

    def __init__(self) -> None:
        self.conns: dict[str, Connection] = {}
        self.user_conns: dict[str, dict[str, Connection]] = {}
        self.room_conns: dict[str, dict[str, Connection]] = {}

    def attach(self, conn: Connection) -> None:
        self.conns[conn.id] = conn
        self.user_conns.setdefault(conn.user_id, {})[conn.id] = conn

    def detach(self, conn: Connection) -> None:
        self.conns.pop(conn.id, None)
        devices = self.user_conns.get(conn.user_id)
        if devices is not None:
            devices.pop(conn.id, None)
            if not devices:
                del self.user_conns[conn.user_id]

    def join(self, room_id: str, conn_id: str) -> bool:
        """Index a local connection in a room; ``True`` if it is the node's first there."""
        conn = self.conns.get(conn_id)
        if conn is None:
            return False
        members = self.room_conns.setdefault(room_id, {})
        first = not members
        members[conn_id] = conn
        return first

    def leave(self, room_id: str, conn_id: str) -> bool:
        """Un-index a connection; ``True`` if the node has nobody left in the room."""
        members = self.room_conns.get(room_id)
        if members is None or members.pop(conn_id, None) is None:
            return False
        if members:
            return False
        del self.room_conns[room_id]
        return True

    def to_connection(self, conn_id: str, frame: bytes) -> int:
        conn = self.conns.get(conn_id)
        return 1 if conn is not None and conn.send_frame(frame) else 0

    def to_users(
        self, user_ids: Iterable[str], frame: bytes, exclude_conn: str | None = None
    ) -> int:
        sent = 0
        for user_id in set(user_ids):
            for conn in self.user_conns.get(user_id, {}).values():
                if conn.id != exclude_conn and conn.send_frame(frame):
                    sent += 1
        return sent

    def to_rooms(
        self, room_ids: Iterable[str], frame: bytes, exclude_user: str | None = None
    ) -> int:
        """Each connection in any of the rooms gets the frame once."""
        rooms = [r for r in (self.room_conns.get(rid) for rid in set(room_ids)) if r is not None]
        # send_frame only queues, so iterating the live dicts is safe (nothing is removed
        # until the connection's handler cleans up on a later loop iteration).
        if len(rooms) == 1:
            targets: Iterable[Connection] = rooms[0].values()
        else:
            targets = {cid: c for room in rooms for cid, c in room.items()}.values()
        return self._send(targets, frame, exclude_user)

    def to_room_share(
        self, rooms: Sequence[str], index: int, frame: bytes, exclude_user: str | None
    ) -> int:
        """Deliver a multi-room event arriving through ``rooms[index]``'s channel.

        A connection in several of the rooms receives it through the first of them in
        ``rooms`` only, so each connection still gets one copy, with no shared state
        between the channels.
        """
        members = self.room_conns.get(rooms[index])
        if not members:
            return 0
        if index == 0:
            return self._send(members.values(), frame, exclude_user)
        earlier = [self.room_conns.get(r, {}) for r in rooms[:index]]
        targets = [c for cid, c in members.items() if not any(cid in e for e in earlier)]
        return self._send(targets, frame, exclude_user)

    @staticmethod
    def _send(targets: Iterable[Connection], frame: bytes, exclude_user: str | None) -> int:
        sent = 0
        for conn in targets:
            if conn.principal.user_id != exclude_user and conn.send_frame(frame):
                sent += 1
        return sent
