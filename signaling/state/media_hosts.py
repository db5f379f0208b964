"""Which node hosts each room's group call media, and the lock placement runs under."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager


class MediaHosts(ABC):
    @abstractmethod
    def placement_lock(self, room_id: str, ttl: float = 5.0) -> AbstractAsyncContextManager[None]:
        """Hold the short lock under which a room's media node is read, chosen and
        written, so two nodes never both place one room. The lock expires after ``ttl``
        seconds if its holder dies; waiting longer than ``ttl`` raises ``unavailable``."""

    @abstractmethod
    async def get(self, room_id: str) -> str | None:
        """The node hosting the room's group call media, if it has one."""

    @abstractmethod
    async def set(self, room_id: str, node_id: str) -> None:
        """Record the room's media node (call under :meth:`placement_lock`), and the room
        among the rooms that node hosts."""

    @abstractmethod
    async def release(self, room_id: str, node_id: str) -> bool:
        """Forget the room's media node if it is still ``node_id`` (compare and delete)."""
