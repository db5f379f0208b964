"""Awaiting independent requests side by side, where that pays.

On Redis, requests issued in the same loop iteration leave in one write and come back in
one round trip, so independent ones are run as tasks side by side. In memory they
complete at once when awaited; as tasks they would each wait for a loop turn, and their
caller for one or two more. On a media node busy with packets a turn takes milliseconds,
and a connection's hooks run before its next frame is read (a join's ``sfu:join``), so
there the same requests are awaited one after another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def overlapped(overlap: bool, *requests: Awaitable[Any]) -> list[Any]:
    """The results of ``requests``: awaited side by side when ``overlap`` (the state is
    remote), else in order. Either way the first failure is raised; in order, the
    requests after it are never started."""
    if overlap and len(requests) > 1:
        return list(await asyncio.gather(*requests))
    results: list[Any] = []
    pending = iter(requests)
    try:
        for request in pending:
            results.append(await request)
    finally:
        for request in pending:  # not started: close them without a warning
            if asyncio.iscoroutine(request):
                request.close()
    return results
