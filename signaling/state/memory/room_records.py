"""Room records in process memory."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

from signaling.state.memory.records import update_copy
from signaling.state.models import RoomInfo
from signaling.state.room_records import RoomRecords

T = TypeVar("T")


class MemoryRoomRecords(RoomRecords):
    def __init__(self) -> None:
        self._rooms: dict[str, RoomInfo] = {}

    async def create(self, room: RoomInfo) -> bool:
        if room.id in self._rooms:
            return False
        self._rooms[room.id] = copy.deepcopy(room)
        return True

    async def get(self, room_id: str) -> RoomInfo | None:
        room = self._rooms.get(room_id)
        return copy.deepcopy(room) if room else None

    async def update(self, room_id: str, mutate: Callable[[RoomInfo], T]) -> tuple[RoomInfo, T]:
        return update_copy(self._rooms, room_id, mutate)

    async def delete(self, room_id: str) -> RoomInfo | None:
        return self._rooms.pop(room_id, None)

    async def list_all(self) -> list[RoomInfo]:
        return [copy.deepcopy(r) for r in self._rooms.values()]
