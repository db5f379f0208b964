"""The webhook queue in process memory."""

from __future__ import annotations

import time
from collections import deque

from signaling.state.webhook_queue import WebhookQueue


class MemoryWebhookQueue(WebhookQueue):
    def __init__(self) -> None:
        self._queues: dict[str, deque[bytes]] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    def _holds(self, key: str, owner: str) -> bool:
        lease = self._leases.get(key)
        return lease is not None and lease[0] == owner and lease[1] > time.monotonic()

    async def push(self, items: list[tuple[str, bytes]]) -> None:
        for key, delivery in items:
            self._queues.setdefault(key, deque()).append(delivery)

    async def claim(self, owner: str, limit: int, lease: float) -> list[str]:
        now, claimed = time.monotonic(), []
        for key in self._queues:
            if len(claimed) >= limit:
                break
            held = self._leases.get(key)
            if held is None or held[1] <= now:
                self._leases[key] = (owner, now + lease)
                claimed.append(key)
        return claimed

    async def head(self, key: str) -> bytes | None:
        queue = self._queues.get(key)
        return queue[0] if queue else None

    async def ack(self, key: str, owner: str) -> bool:
        if not self._holds(key, owner):
            return False
        queue = self._queues.get(key)
        if queue:
            queue.popleft()
        if not queue:
            self._queues.pop(key, None)
            self._leases.pop(key, None)
        return True

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        if not self._holds(key, owner):
            return False
        self._leases[key] = (owner, time.monotonic() + lease)
        return True

    async def release(self, key: str, owner: str) -> None:
        if self._holds(key, owner):
            del self._leases[key]
        if not self._queues.get(key, True):
            self._queues.pop(key, None)
