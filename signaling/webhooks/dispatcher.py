"""Delivers queued webhooks: one node at a time per ordering key (a lease in the hub
state), the key's deliveries strictly in order, each retried with exponential back-off
until it succeeds or ``webhook_retry_for`` seconds have passed since the event.

A lease that runs out (its node died) lets another node carry on with the key; the event
being delivered at that moment may then arrive twice, which the unique ``webhook-id``
lets receivers detect. Otherwise every event is delivered once, cluster-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from signaling import __version__
from signaling.background import cancel_and_wait
from signaling.state.models import now_ms
from signaling.webhooks.signing import sign

if TYPE_CHECKING:
    from config.api import WebhookSettings
    from signaling.metrics import HubMetrics
    from signaling.state.webhook_queue import WebhookQueue

log = logging.getLogger("switchboard.webhooks")

POLL_INTERVAL = 0.2


class LeaseLost(Exception):
    """Another node took the key over (this node was too slow to renew its lease)."""


class WebhookDispatcher:
    def __init__(
        self,
        queue: WebhookQueue,
        metrics: HubMetrics,
        settings: WebhookSettings,
        secret: str,
        node_id: str,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.secret = secret
        self.timeout = settings.webhook_timeout
        self.retry_for = settings.webhook_retry_for
        self.backoff_initial = settings.webhook_backoff_initial
        self.backoff_max = settings.webhook_backoff_max
        self.concurrency = settings.webhook_concurrency
        # Long enough to cover a full attempt plus the longest back-off sleep between
        # renewals, so a live node never loses its lease while it waits.
        self.lease = 2 * (self.timeout + self.backoff_max) + 5
        self.owner = f"{node_id}:{secrets.token_hex(4)}"
        self._active: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": f"Switchboard-Webhooks/{__version__}"}
        )
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        for task in [*([self._task] if self._task else []), *self._active.values()]:
            await cancel_and_wait(task)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            free = self.concurrency - len(self._active)
            if free > 0:
                try:
                    keys = await self.queue.claim(self.owner, free, self.lease)
                except Exception as exc:  # store away: deliveries wait, nothing is lost
                    log.debug("webhook claim failed: %s", exc)
                    keys = []
                for key in keys:
                    if key not in self._active:
                        task = asyncio.create_task(self._drain(key))
                        self._active[key] = task
                        task.add_done_callback(lambda _, k=key: self._active.pop(k, None))
            await asyncio.sleep(POLL_INTERVAL)

    async def _drain(self, key: str) -> None:
        """Send the key's deliveries in order until its queue is empty."""
        try:
            while True:
                raw = await self.queue.head(key)
                if raw is None:
                    break
                await self._deliver(key, orjson.loads(raw))
                if not await self.queue.ack(key, self.owner):
                    raise LeaseLost
        except LeaseLost:
            log.warning("webhook key taken over by another node", extra={"key": key})
            return
        except Exception:
            log.exception("webhook delivery loop failed", extra={"key": key})
        with contextlib.suppress(Exception):
            await self.queue.release(key, self.owner)

    async def _deliver(self, key: str, item: dict[str, Any]) -> None:
        """Attempt until delivered or out of time; either way the head is then done."""
        body = item["body"].encode()
        attempt = 0
        while True:
            if not await self.queue.renew(key, self.owner, self.lease):
                raise LeaseLost
            attempt += 1
            started = time.perf_counter()
            outcome = await self._attempt(item["url"], item["id"], body, attempt)
            self.metrics.webhook_seconds.observe(time.perf_counter() - started)
            if outcome is None:
                self.metrics.webhook_outcome("delivered")
                return
            age = (now_ms() - item["at"]) / 1000
            if age >= self.retry_for:
                self.metrics.webhook_outcome("abandoned")
                log.error(
                    "webhook abandoned after %d attempts over %.0f s (last: %s)",
                    attempt,
                    age,
                    outcome,
                    extra={"url": item["url"], "event": item["id"]},
                )
                return
            self.metrics.webhook_outcome("retried")
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
            delay = min(delay * random.uniform(0.8, 1.2), max(0.0, self.retry_for - age))
            log.info(
                "webhook attempt %d failed (%s); retrying in %.1f s",
                attempt,
                outcome,
                delay,
                extra={"url": item["url"], "event": item["id"]},
            )
            await asyncio.sleep(delay)

    async def _attempt(self, url: str, event_id: str, body: bytes, attempt: int) -> str | None:
        """One POST; ``None`` on a 2xx answer, otherwise why it failed."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "webhook-attempt": str(attempt),
            **sign(self.secret, event_id, int(time.time()), body),
        }
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"
