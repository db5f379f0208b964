"""The hub's state, one interface per concern, each with an in-memory implementation
(:mod:`signaling.state.memory`, one node) and a Redis one (:mod:`signaling.state.redis`,
several nodes acting as one hub). Both pass the same contract suite
(``tests/test_state_contract.py``).

A :class:`State` bundles one backend's stores; services are handed the stores they use,
never the bundle. What the backend learns by itself (dead nodes, due timers, commands and
messages from other nodes) reaches the node through the one
:class:`~signaling.state.handler.BackendHandler` given to :meth:`State.start`.
"""

from __future__ import annotations

from typing import Any

from signaling.state.calls import CallStore
from signaling.state.delivery import Delivery
from signaling.state.handler import BackendHandler, Reports
from signaling.state.history import RoomHistory
from signaling.state.media_hosts import MediaHosts
from signaling.state.membership import MembershipStore
from signaling.state.nodes import NodeRegistry
from signaling.state.presence import PresenceStore
from signaling.state.room_records import RoomRecords
from signaling.state.sent_messages import SentMessages
from signaling.state.session_snapshots import SessionSnapshots
from signaling.state.timers import TimerStore
from signaling.state.typing_indicators import TypingStore
from signaling.state.webhook_queue import WebhookQueue


class State:
    """One backend's stores, started and closed together."""

    #: Whether the stores answer over the network, so that independent requests are
    #: worth running side by side (:func:`signaling.overlap.overlapped`).
    overlap = False

    def __init__(
        self,
        *,
        node_id: str,
        reports: Reports,
        delivery: Delivery,
        presence: PresenceStore,
        membership: MembershipStore,
        calls: CallStore,
        typing: TypingStore,
        timers: TimerStore,
        nodes: NodeRegistry,
        hosts: MediaHosts,
        records: RoomRecords,
        webhooks: WebhookQueue,
        history: RoomHistory,
        sent: SentMessages,
        snapshots: SessionSnapshots,
    ) -> None:
        self.node_id = node_id
        self.reports = reports
        self.delivery = delivery
        self.presence = presence
        self.membership = membership
        self.calls = calls
        self.typing = typing
        self.timers = timers
        self.nodes = nodes
        self.hosts = hosts
        self.records = records
        self.webhooks = webhooks
        self.history = history
        self.sent = sent
        self.snapshots = snapshots

    def configure_history(self, *, size: int, ttl: float) -> None:
        """The bounds of room history (events and seconds kept per room)."""
        self.history.configure(size=size, ttl=ttl)

    async def start(self, handler: BackendHandler) -> None:
        """Register the node's handler, then connect to the shared store (if any)."""
        self.reports.bind(handler)

    async def close(self) -> None:
        """Release resources (connections to a shared store, running reports)."""
        await self.reports.close()

    def status(self) -> dict[str, Any]:
        """What ``/health`` reports about the state backend."""
        return {"backend": "memory"}

    def local_connection_count(self) -> int:
        return self.delivery.local_connection_count()


__all__ = ["BackendHandler", "State"]
