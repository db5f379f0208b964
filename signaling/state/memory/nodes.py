"""The cluster of one: this node."""

from __future__ import annotations

from typing import Any

from signaling.state.handler import Reports
from signaling.state.nodes import NodeRegistry


class SingleNode(NodeRegistry):
    def __init__(self, node_id: str, reports: Reports) -> None:
        self.node_id = node_id
        self._reports = reports

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> bool:
        if node_id != self.node_id or self._reports.handler is None:
            return False
        self._reports.node_message(message)
        return True

    async def live_nodes(self) -> dict[str, dict[str, Any]]:
        return {self.node_id: self._reports.load()}

    async def publish_load_now(self) -> None:
        """Nobody else reads it: :meth:`live_nodes` asks the handler directly."""
