"""Stopping background tasks reliably.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives in the loop
iteration in which the awaited operation completes (CPython gh-86296, fixed in 3.12), and
redis-py sends every command through it: a loop cancelled while it talks to Redis may go
on running. :func:`cancel_and_wait` cancels again until the task has really ended (or a
bound passes), so stopping a node never hangs on one of its loops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("switchboard.tasks")

ATTEMPT_WAIT = 0.5
ATTEMPTS = 10


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` and wait until it is done, re-cancelling a task that went on."""
    if task is None:
        return
    for _ in range(ATTEMPTS):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=ATTEMPT_WAIT)
    else:
        log.warning("a background task did not stop: %r", task)
        return
    if not task.cancelled() and task.exception() is not None:
        log.debug("background task ended with an error", exc_info=task.exception())
