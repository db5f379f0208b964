"""Timers kept with the shared state, so the node that armed one need not be the node
that fires it: a ring timeout armed on a node that then dies must still fire. Exactly one
node reports a due timer to its :class:`~signaling.state.handler.BackendHandler`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import orjson


def timer_key(kind: str, parts: Sequence[str]) -> str:
    """One string per timer; JSON keeps arbitrary ids (user ids may hold any character)
    unambiguous."""
    return orjson.dumps([kind, *parts]).decode()


def parse_timer_key(key: str) -> tuple[str, list[str]]:
    kind, *parts = orjson.loads(key)
    if not isinstance(kind, str) or not all(isinstance(p, str) for p in parts):
        raise ValueError(key)
    return kind, parts


class TimerStore(ABC):
    @abstractmethod
    async def arm(self, kind: str, parts: Sequence[str], delay: float) -> None:
        """Fire ``(kind, *parts)`` in ``delay`` seconds; re-arming replaces the deadline."""

    @abstractmethod
    async def disarm(self, kind: str, parts: Sequence[str]) -> None: ...

    async def disarm_all(self, timers: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Disarm several at once (a store may do it in one round trip)."""
        for kind, parts in timers:
            await self.disarm(kind, parts)
