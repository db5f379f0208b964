"""Request/answer between nodes over the state's node messages (Redis pub/sub).

The node holding a participant's WebSocket sends each SFU request to the node hosting
the room's media and waits for the answer; the media node sends session notices back.
A call to this node runs the handler directly, so one node (or the in-memory state) pays
nothing for the relay. Round trips to other nodes are timed in
``switchboard_sfu_relay_seconds`` (the latency the relay adds to each request).

Messages: ``{"t": "req", "id", "from", "op", "body"}``, answered by
``{"t": "res", "id", "ok": <result>}`` or ``{"t": "res", "id", "err": [code, message]}``;
one-way notices are ``{"t": "note", "from", "op", "body"}``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.metrics import HubMetrics
    from signaling.state.nodes import NodeRegistry

log = logging.getLogger("switchboard.relay")

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class NodeUnreachable(HubError):
    def __init__(self, node: str, what: str) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, f"media node '{node}' {what}; retry shortly")
        self.node = node


class NodeRelay:
    """Requests and notices to other nodes; messages addressed to this node come in
    through :meth:`on_message` (the node's backend handler hands them over)."""

    def __init__(
        self, nodes: NodeRegistry, metrics: HubMetrics, timeout: float, handler: Handler
    ) -> None:
        self.nodes = nodes
        self.me = nodes.node_id
        self.metrics = metrics
        self.timeout = timeout
        self.handler = handler
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def call(self, node: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run ``op`` on ``node`` and return its result (its ``HubError`` is raised here)."""
        if node == self.me:
            return await self.handler(op, body) or {}
        rid = f"{self.me}.{next(self._ids)}"
        waiter = self._waiting[rid] = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        try:
            message = {"t": "req", "id": rid, "from": self.me, "op": op, "body": body}
            if not await self.nodes.send_to_node(node, message):
                raise NodeUnreachable(node, "is not reachable")
            try:
                answer = await asyncio.wait_for(waiter, self.timeout)
            except TimeoutError:
                raise NodeUnreachable(node, f"did not answer within {self.timeout:g} s") from None
        finally:
            self._waiting.pop(rid, None)
        self.metrics.relay_seconds.labels(op).observe(time.perf_counter() - started)
        if "err" in answer:
            code, text = answer["err"]
            raise HubError(ErrorCode(code), text)
        return answer.get("ok") or {}

    async def notify(self, node: str, op: str, body: dict[str, Any]) -> bool:
        """One-way notice; ``False`` if ``node`` is not listening."""
        if node == self.me:
            await self.handler(op, body)
            return True
        return await self.nodes.send_to_node(
            node, {"t": "note", "from": self.me, "op": op, "body": body}
        )

    async def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "res":
            waiter = self._waiting.get(message["id"])
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            return
        op, body = message["op"], message["body"]
        if kind == "note":
            await self.handler(op, body)
            return
        answer: dict[str, Any] = {"t": "res", "id": message["id"]}
        try:
            answer["ok"] = await self.handler(op, body) or {}
        except HubError as exc:
            answer["err"] = [exc.code.value, exc.message]
        except Exception:
            log.exception("relayed request failed", extra={"op": op})
            answer["err"] = [ErrorCode.INTERNAL_ERROR.value, "internal error"]
        await self.nodes.send_to_node(message["from"], answer)
