"""Call records (1:1 and small mesh calls), changed atomically by pure transitions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from signaling.state.models import Call

T = TypeVar("T")


class CallStore(ABC):
    @abstractmethod
    async def create(self, call: Call) -> None: ...

    @abstractmethod
    async def get(self, call_id: str) -> Call | None: ...

    async def peek(self, call_id: str) -> Call | None:
        """The call as this node last knew it, for reads that only route (relaying an
        offer or ICE candidate). A store may answer from a copy it keeps fresh (Redis:
        nodes tell each other about every change); the default reads it."""
        return await self.get(call_id)

    @abstractmethod
    async def update(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        """Apply ``mutate`` to the stored call atomically and persist it.

        ``mutate`` may raise to abort without writing. Returns the updated call and what
        ``mutate`` returned. Raises ``KeyError`` if the call does not exist.
        """

    @abstractmethod
    async def of_user(self, user_id: str) -> list[Call]: ...

    @abstractmethod
    async def delete(self, call_id: str) -> None: ...

    @abstractmethod
    async def list_all(self) -> list[Call]: ...
