"""The node registry in Redis: ``<prefix>:nodes`` maps node id -> last heartbeat (epoch
ms), ``{n:<node>}:info`` holds what the node published (its load among it). Messages to a
node go to its own pub/sub channel."""

from __future__ import annotations

from typing import Any

import orjson

from signaling.state.handler import Reports
from signaling.state.memory.delivery import LocalDelivery
from signaling.state.models import now_ms
from signaling.state.nodes import NodeRegistry
from signaling.state.redis.bus import pack
from signaling.state.redis.link import RedisLink


class RedisNodes(NodeRegistry):
    def __init__(
        self,
        link: RedisLink,
        local: LocalDelivery,
        reports: Reports,
        *,
        dead_after: float,
        info: dict[str, Any] | None,
    ) -> None:
        self.node_id = link.node_id
        self.link = link
        self.local = local
        self.reports = reports
        self.dead_after = dead_after
        self.info = {"startedAt": now_ms(), **(info or {})}

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> bool:
        if not self.link.online:
            if node_id == self.node_id and self.reports.handler is not None:
                self.reports.node_message(message)
                return True
            return False
        channel = self.link.keys.node_channel(node_id)
        return await self.link.publish([(channel, pack({"n": message}, b""))]) > 0

    async def live_nodes(self) -> dict[str, dict[str, Any]]:
        keys, client = self.link.keys, self.link.client
        async with self.link.shared():
            cutoff = now_ms() - int(self.dead_after * 1000)
            names = [n.decode() for n in await client.zrangebyscore(keys.nodes, cutoff, "+inf")]
            async with client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hget(keys.node_info(name), "load")
                loads = await pipe.execute()
        out = {
            name: orjson.loads(raw) if raw else {} for name, raw in zip(names, loads, strict=True)
        }
        if self.reports.handler is not None:
            out[self.node_id] = self.reports.load()  # its own load is known first-hand
        return out

    async def publish_load_now(self) -> None:
        if self.link.online:
            with self.link.or_local():
                await self.beat()

    async def beat(self) -> None:
        """Announce this node alive, with its load (what media placement reads)."""
        keys, me = self.link.keys, self.node_id
        info = {**self.info, "connections": self.local.local_connection_count(), "beatAt": now_ms()}
        if self.reports.handler is not None:
            info["load"] = orjson.dumps(self.reports.load()).decode()
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.nodes, {me: now_ms()})
            pipe.hset(keys.node_info(me), mapping={k: str(v) for k, v in info.items()})
            await pipe.execute()
