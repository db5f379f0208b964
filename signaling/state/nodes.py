"""The cluster as a node sees it: messages to a node, the live nodes and their loads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class NodeRegistry(ABC):
    node_id: str

    @abstractmethod
    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> bool:
        """Report ``message`` (``BackendHandler.node_message``) on ``node_id``, this node
        included; ``False`` if no such node is listening. Messages from one sender to one
        node arrive in the order they were sent."""

    @abstractmethod
    async def live_nodes(self) -> dict[str, dict[str, Any]]:
        """The live nodes (this one included), each with the load it last published."""

    @abstractmethod
    async def publish_load_now(self) -> None:
        """Publish this node's load at once (a join, a leave, draining), not at the next
        heartbeat."""
