"""What the state backend reports to its node, through one registered handler.

Shared state is where nodes learn things they did not cause: a node died and its
connections are gone, a timer armed anywhere is due, the room API on another node wants a
user kicked, another node relays a request, the heartbeat wants this node's load. The node
registers one :class:`BackendHandler` when it starts the state (as Centrifuge's
``BrokerEventHandler``); every store reports through the same :class:`Reports`, so "who
handles this?" has one answer, in the composition root that implements the handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from signaling.background import cancel_and_wait
from signaling.state.models import RemoteConnection

log = logging.getLogger("switchboard.state")


class BackendHandler(Protocol):
    async def connections_lost(self, lost: list[RemoteConnection]) -> None:
        """Connections of a dead node (or closed during an outage): release them as if
        each had disconnected."""

    async def timer_fired(self, kind: str, parts: list[str]) -> None:
        """A timer armed as ``(kind, *parts)`` is due; exactly one node is told. Handlers
        re-check the state they act on: a timer says "look now", not "this is true"."""

    async def control(self, users: list[str], command: dict[str, Any]) -> None:
        """Apply a room API command (kick, close, mute, permissions) to this node's sockets
        of ``users``."""

    async def node_message(self, message: dict[str, Any]) -> None:
        """A message another node (or this one) addressed to this node."""

    async def media_hosts_lost(self, node: str, rooms: list[str]) -> None:
        """This node reaped ``node``, which hosted group call media for ``rooms``."""

    def node_load(self) -> dict[str, Any]:
        """This node's load and media facts, published with its heartbeat."""


class Reports:
    """Hands reports to the registered handler, each in its own task so one slow handler
    holds up no other report; a failure is logged and touches nothing else."""

    def __init__(self) -> None:
        self._handler: BackendHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def handler(self) -> BackendHandler | None:
        return self._handler

    def bind(self, handler: BackendHandler) -> None:
        self._handler = handler

    def load(self) -> dict[str, Any]:
        return self._handler.node_load() if self._handler is not None else {}

    def spawn(self, what: str, coro: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def timer_fired(self, kind: str, parts: list[str]) -> None:
        if self._handler is not None:
            self.spawn(f"timer {kind}", self._handler.timer_fired(kind, parts))

    def control(self, users: list[str], command: dict[str, Any]) -> None:
        """A command from another node, run in its own task."""
        if self._handler is not None and users:
            self.spawn("control command", self._handler.control(users, command))

    async def control_here(self, users: list[str], command: dict[str, Any]) -> None:
        """A command this node sent to its own sockets, run before the sender goes on (a
        room closed here tells its local members before it reports the room finished)."""
        if self._handler is not None and users:
            await self._handler.control(users, command)

    def node_message(self, message: dict[str, Any]) -> None:
        if self._handler is not None:
            self.spawn("node message", self._handler.node_message(message))

    async def close(self) -> None:
        for task in list(self._tasks):
            await cancel_and_wait(task)
