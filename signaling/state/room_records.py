"""Room records: what the chat backend configured (or a first join's defaults), per-user
permissions, and each node's summary of the group call media it hosts for the room."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from signaling.state.models import RoomInfo

T = TypeVar("T")


class RoomRecords(ABC):
    @abstractmethod
    async def create(self, room: RoomInfo) -> bool:
        """Store a new room record; ``False`` (and nothing written) if one exists."""

    @abstractmethod
    async def get(self, room_id: str) -> RoomInfo | None: ...

    @abstractmethod
    async def update(self, room_id: str, mutate: Callable[[RoomInfo], T]) -> tuple[RoomInfo, T]:
        """Like :meth:`CallStore.update` for room records; ``KeyError`` if there is none."""

    @abstractmethod
    async def delete(self, room_id: str) -> RoomInfo | None:
        """Remove the record; returns it, or ``None`` if another caller removed it first."""

    @abstractmethod
    async def list_all(self) -> list[RoomInfo]: ...
