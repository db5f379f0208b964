"""Hub state shared through Redis, so several nodes behave as one hub.

What lives where:

- Redis holds the shared truth: presence, room membership, typing, calls, timers, room
  records, media hosts, the webhook queue and the node registry (layout in :mod:`.keys`,
  atomic changes in :mod:`.scripts`). Each concern has its own store module here.
- Each node keeps its own sockets (:class:`.delivery.RedisDelivery`, which extends the
  in-memory delivery) and is the authority on them: when Redis comes back after an outage
  (or restarts empty) the node re-publishes its devices, memberships, calls and timers
  (:mod:`.lifecycle`).

While Redis is unreachable a node keeps serving its own users (presence, rooms, local
delivery); cross-node delivery is lost and call operations answer ``unavailable`` until
it reconnects.
"""

from __future__ import annotations

import secrets
from typing import Any

from signaling.state import State
from signaling.state.handler import BackendHandler, Reports
from signaling.state.redis.calls import RedisCalls
from signaling.state.redis.delivery import RedisDelivery
from signaling.state.redis.history import RedisHistory
from signaling.state.redis.lifecycle import NodeLifecycle
from signaling.state.redis.link import RedisLink
from signaling.state.redis.media_hosts import RedisMediaHosts
from signaling.state.redis.membership import RedisMembership
from signaling.state.redis.nodes import RedisNodes
from signaling.state.redis.presence import RedisPresence
from signaling.state.redis.room_records import RedisRoomRecords
from signaling.state.redis.sent_messages import RedisSentMessages
from signaling.state.redis.session_snapshots import RedisSessionSnapshots
from signaling.state.redis.timers import RedisTimers
from signaling.state.redis.typing_indicators import RedisTyping
from signaling.state.redis.webhook_queue import RedisWebhookQueue


class RedisState(State):
    overlap = True  # several requests issued together cost one round trip

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sb",
        node_id: str | None = None,
        heartbeat_interval: float = 5.0,
        dead_after: float = 15.0,
        node_info: dict[str, Any] | None = None,
        busy_timeout: float = 30.0,
        flush_delay: float = 0.0,
    ) -> None:
        reports = Reports()
        node_id = node_id or secrets.token_hex(4)
        self.link = link = RedisLink(url, prefix, node_id, busy_timeout, flush_delay)
        history = RedisHistory(link)
        delivery = RedisDelivery(link, reports, history)
        nodes = RedisNodes(link, delivery, reports, dead_after=dead_after, info=node_info)
        presence = RedisPresence(link, delivery)
        membership = RedisMembership(link, delivery)
        calls = RedisCalls(link)
        delivery.on_call_changed = calls.changed_elsewhere
        timers = RedisTimers(link, reports)
        records = RedisRoomRecords(link)
        self.lifecycle = NodeLifecycle(
            link,
            reports,
            delivery=delivery,
            nodes=nodes,
            presence=presence,
            membership=membership,
            calls=calls,
            timers=timers,
            records=records,
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
        )
        self._delivery = delivery
        super().__init__(
            node_id=link.node_id,
            reports=reports,
            delivery=delivery,
            presence=presence,
            membership=membership,
            calls=calls,
            typing=RedisTyping(link, timers, delivery),
            timers=timers,
            nodes=nodes,
            hosts=RedisMediaHosts(link),
            records=records,
            webhooks=RedisWebhookQueue(link),
            history=history,
            sent=RedisSentMessages(link),
            snapshots=RedisSessionSnapshots(link),
        )

    async def start(self, handler: BackendHandler) -> None:
        await super().start(handler)
        await self.lifecycle.start()

    def status(self) -> dict[str, Any]:
        # Connected once re-publishing finished: from then on Redis holds this node's part.
        link = self.link
        return {"backend": "redis", "node": self.node_id, "connected": link.online and link.synced}

    def configure_history(self, *, size: int, ttl: float) -> None:
        super().configure_history(size=size, ttl=ttl)
        self._delivery.history.configure(size=size, ttl=ttl)  # while Redis is away

    async def close(self) -> None:
        await self.lifecycle.stop()
        await self._delivery.bus.close()
        await self.link.client.aclose()
        await super().close()


__all__ = ["RedisState"]
