"""The webhook queue: deliveries per ordering key, each key leased to one node at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod


class WebhookQueue(ABC):
    @abstractmethod
    async def push(self, items: list[tuple[str, bytes]]) -> None:
        """Append ``(key, delivery)`` pairs, in order, to their keys' queues."""

    @abstractmethod
    async def claim(self, owner: str, limit: int, lease: float) -> list[str]:
        """Lease up to ``limit`` keys with pending deliveries that nobody holds."""

    @abstractmethod
    async def head(self, key: str) -> bytes | None:
        """The oldest pending delivery of a key (the one to send next)."""

    @abstractmethod
    async def ack(self, key: str, owner: str) -> bool:
        """Drop the head after it was delivered (or given up); ``False`` if ``owner`` lost
        the lease meanwhile, in which case nothing is dropped."""

    @abstractmethod
    async def renew(self, key: str, owner: str, lease: float) -> bool: ...

    @abstractmethod
    async def release(self, key: str, owner: str) -> None: ...
