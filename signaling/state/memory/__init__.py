"""Single-node state in process memory: the default, nothing else to install."""

from __future__ import annotations

from signaling.state import State
from signaling.state.handler import Reports
from signaling.state.memory.calls import MemoryCalls
from signaling.state.memory.delivery import LocalDelivery
from signaling.state.memory.history import MemoryHistory
from signaling.state.memory.media_hosts import MemoryMediaHosts
from signaling.state.memory.membership import MemoryMembership
from signaling.state.memory.nodes import SingleNode
from signaling.state.memory.presence import MemoryPresence
from signaling.state.memory.room_records import MemoryRoomRecords
from signaling.state.memory.sent_messages import MemorySentMessages
from signaling.state.memory.session_snapshots import MemorySessionSnapshots
from signaling.state.memory.timers import MemoryTimers
from signaling.state.memory.typing_indicators import MemoryTyping
from signaling.state.memory.webhook_queue import MemoryWebhookQueue


class MemoryState(State):
    def __init__(self, node_id: str = "local") -> None:
        reports = Reports()
        self.history = history = MemoryHistory()
        delivery = LocalDelivery(node_id, reports, history)
        self._timers = MemoryTimers(reports)
        self._typing = MemoryTyping(reports, delivery)
        super().__init__(
            node_id=node_id,
            reports=reports,
            delivery=delivery,
            presence=MemoryPresence(),
            membership=MemoryMembership(delivery),
            calls=MemoryCalls(),
            typing=self._typing,
            timers=self._timers,
            nodes=SingleNode(node_id, reports),
            hosts=MemoryMediaHosts(),
            records=MemoryRoomRecords(),
            webhooks=MemoryWebhookQueue(),
            history=history,
            sent=MemorySentMessages(),
            snapshots=MemorySessionSnapshots(),
        )

    async def close(self) -> None:
        self._timers.close()
        self._typing.close()
        await super().close()


__all__ = ["MemoryState"]
