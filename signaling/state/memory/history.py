"""Room history in process memory (one node)."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from signaling.state.history import (
    EPOCH_LENGTH,
    Position,
    Recovery,
    RoomHistory,
    Template,
    entry,
    recovery,
)


@dataclass(slots=True)
class _Room:
    epoch: str
    offset: int = 0
    last_at: float = 0.0
    kept: deque[tuple[float, bytes]] = field(default_factory=deque)


class MemoryHistory(RoomHistory):
    def __init__(self) -> None:
        self._rooms: OrderedDict[str, _Room] = OrderedDict()  # least recently written first

    def record(self, room_id: str, template: Template, exclude_user: str | None) -> bytes:
        """Number and keep one event; its envelope."""
        now = time.monotonic()
        self._expire(now)
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(secrets.token_hex(EPOCH_LENGTH // 2))
        else:
            self._rooms.move_to_end(room_id)
        room.offset += 1
        room.last_at = now
        envelope = template.fill(room.epoch, room.offset)
        room.kept.append((now, entry(exclude_user, envelope)))
        while len(room.kept) > self.size:
            room.kept.popleft()
        return envelope

    def _expire(self, now: float) -> None:
        """Forget rooms nobody wrote to for the TTL (their next event starts a new epoch)."""
        deadline = now - self.ttl
        while self._rooms:
            room_id, room = next(iter(self._rooms.items()))
            if room.last_at > deadline:
                break
            del self._rooms[room_id]

    def _room(self, room_id: str) -> _Room | None:
        now = time.monotonic()
        self._expire(now)
        room = self._rooms.get(room_id)
        if room is not None:
            while room.kept and room.kept[0][0] <= now - self.ttl:
                room.kept.popleft()
        return room

    async def position(self, room_id: str) -> Position:
        room = self._room(room_id)
        return Position(room.epoch, room.offset) if room is not None else Position("", 0)

    async def recover(self, room_id: str, since: Position, user_id: str) -> Recovery:
        room = self._room(room_id)
        if room is None:
            return recovery(Position("", 0), (), since, user_id)
        kept = [raw for _, raw in room.kept]
        return recovery(Position(room.epoch, room.offset), kept, since, user_id)
