"""Where the hub hands webhook events over: a local, ordered buffer that a background task
moves into the shared queue. Emitting never awaits the store or the receiver, so a slow
or dead receiver (or Redis being away) never slows the hub; order is kept because one
task moves events, in emission order."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from signaling.background import cancel_and_wait
from signaling.state.models import now_ms

if TYPE_CHECKING:
    from signaling.metrics import HubMetrics
    from signaling.state.webhook_queue import WebhookQueue

log = logging.getLogger("switchboard.webhooks")

RETRY_PUSH_AFTER = 0.5


def receiver_tag(url: str) -> str:
    """Deliveries sharing a key (``<tag>:<scope>``) go out one at a time, in order: one
    queue per receiver and room (or user, for presence)."""
    return hashlib.sha1(url.encode()).hexdigest()[:10]


class WebhookOutbox:
    def __init__(
        self,
        queue: WebhookQueue,
        metrics: HubMetrics,
        urls: list[str],
        events: set[str],
        node_id: str,
        limit: int,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.urls = urls
        self._tags = {url: receiver_tag(url) for url in urls}
        self.events = events
        self.node_id = node_id
        self.limit = limit
        self._pending: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wants(self, event: str) -> bool:
        return bool(self.urls) and event in self.events

    def emit(self, event: str, scope: str, data: dict[str, Any]) -> str | None:
        """Queue ``event`` for every receiver; returns its id (``None`` if not wanted)."""
        if not self.wants(event):
            return None
        if len(self._pending) >= self.limit:
            # Only while the store has been away long enough to fill the buffer.
            log.warning("webhook buffer full; dropping a %s event", event)
            self.metrics.webhook_outcome("dropped")
            return None
        event_id = "evt_" + secrets.token_hex(12)
        created = now_ms()
        body = orjson.dumps(
            {"id": event_id, "type": event, "createdAt": created, "node": self.node_id, **data}
        )
        for url in self.urls:
            item = orjson.dumps({"id": event_id, "url": url, "at": created, "body": body.decode()})
            self._pending.append((f"{self._tags[url]}:{scope}", item))
        self._wake.set()
        return event_id

    def start(self) -> None:
        if self.urls:
            self._task = asyncio.create_task(self._run(), name="webhook-outbox")

    async def stop(self) -> None:
        """Move what is still buffered (bounded), then stop."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), 2.0)

    async def _flush(self) -> None:
        while self._pending:
            batch = list(self._pending)
            await self.queue.push(batch)
            for _ in batch:
                self._pending.popleft()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception as exc:  # the store is away: keep the events, try again
                log.debug("webhook push failed: %s", exc)
                await asyncio.sleep(RETRY_PUSH_AFTER)
                self._wake.set()
