"""Which node hosts a room's group call media, chosen once and kept while the call lives.

A room's media must meet on one SFU, whichever node each participant's WebSocket landed
on. The first join places the room: under the room's short placement lock, the node
reads the recorded host; if there is none (or it is dead, or being drained away from),
it picks the least-loaded open node (see :mod:`media.load`) and records it. The lock
makes the read-choose-write one step across the cluster, so two simultaneous first joins
on different nodes place the room once. The host releases the record when its room
empties (compare-and-delete: a newer placement is never removed).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from media.load import NodeLoad, least_loaded, with_rooms
from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from signaling.state.media_hosts import MediaHosts
    from signaling.state.nodes import NodeRegistry

log = logging.getLogger("switchboard.placement")


class Placement:
    def __init__(self, nodes: NodeRegistry, hosts: MediaHosts, window: float) -> None:
        self.nodes = nodes
        self.hosts = hosts
        self.window = window
        self._recent: dict[str, deque[float]] = {}  # node -> when this node placed rooms there

    async def loads(self) -> dict[str, NodeLoad]:
        """Published loads, plus the rooms this node placed since (a burst of first
        joins must not all go to the node that looked idlest at its last beat)."""
        nodes = await self.nodes.live_nodes()
        horizon = time.monotonic() - self.window
        for stamps in self._recent.values():
            while stamps and stamps[0] < horizon:
                stamps.popleft()
        return {
            name: with_rooms(NodeLoad.from_wire(name, data), len(self._recent.get(name, ())))
            for name, data in nodes.items()
        }

    async def host_for(self, room_id: str, *, avoid: str | None = None) -> tuple[str, bool]:
        """The room's live media node, placing the room if it has none.

        ``avoid``: a node that must not keep the room (a dead or drained host the caller
        saw). Returns ``(node, placed_now)``.
        """
        host = await self.hosts.get(room_id)
        if host is not None and host != avoid and host in await self.nodes.live_nodes():
            return host, False  # the common case, without the lock
        async with self.hosts.placement_lock(room_id):
            host = await self.hosts.get(room_id)
            loads = await self.loads()
            if host is not None and host != avoid and host in loads:
                return host, False
            # Choose and count the choice with no await in between: concurrent placements
            # of other rooms on this node then see it.
            chosen = least_loaded(list(loads.values()), exclude={avoid} if avoid else None)
            if chosen is None:
                raise HubError(ErrorCode.NO_CAPACITY, no_capacity_message(list(loads.values())))
            self._recent.setdefault(chosen.node, deque()).append(time.monotonic())
            await self.hosts.set(room_id, chosen.node)
        log.info(
            "room placed",
            extra={"room": room_id, "node": chosen.node, "previous": host, "score": chosen.score},
        )
        return chosen.node, True


def no_capacity_message(loads: list[NodeLoad]) -> str:
    reasons = "; ".join(f"{n.node}: {n.full()}" for n in loads if n.full()) or "no media node"
    return f"every media node is full or draining, try again later ({reasons})"
