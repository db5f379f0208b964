"""Presence in Redis: a hash per user with one field per device (``d:<conn>`` ->
``<status>|<node>``) and ``seen``, changed by one script that returns the visible status
before and after. The node also keeps its own devices' statuses, to serve its users while
Redis is away and to write them back when it returns."""

from __future__ import annotations

from collections.abc import Iterable

from signaling.state.delivery import node_of
from signaling.state.memory.delivery import LocalDelivery
from signaling.state.models import PresenceChange, PresenceInfo, aggregate_status, now_ms
from signaling.state.presence import PresenceStore
from signaling.state.redis.link import RedisLink


def _visible(statuses: Iterable[str]) -> str:
    return aggregate_status(s.split("|", 1)[0] for s in statuses)


class RedisPresence(PresenceStore):
    def __init__(self, link: RedisLink, local: LocalDelivery) -> None:
        self.link = link
        self.local = local
        self._status: dict[str, str] = {}  # this node's devices, first-hand

    async def set_device(self, user_id: str, conn_id: str, status: str | None) -> PresenceChange:
        before_local = self._local_presence(user_id)
        if status is None:
            self._status.pop(conn_id, None)
        elif conn_id in self.local.conns:
            self._status[conn_id] = status
        if self.link.online:
            with self.link.or_local():
                return await self._write(user_id, conn_id, status)
        return PresenceChange(before_local, self._local_presence(user_id))

    async def _write(self, user_id: str, conn_id: str, status: str | None) -> PresenceChange:
        keys, node = self.link.keys, node_of(conn_id)
        value = "" if status is None else f"{status}|{node}"
        async with self.link.client.pipeline(transaction=False) as pipe:
            await self.link.run(
                "SET_DEVICE", [keys.presence(user_id)], [f"d:{conn_id}", value, now_ms()], pipe
            )
            if status is None:
                pipe.hdel(keys.node_conns(node), conn_id)
            else:
                pipe.hset(keys.node_conns(node), conn_id, user_id)
            before, seen_before, after, seen_after = (await pipe.execute())[0]

        def info(status: bytes, seen: bytes) -> PresenceInfo:
            return PresenceInfo(user_id, status.decode(), int(seen) if seen else None)  # type: ignore[arg-type]

        return PresenceChange(info(before, seen_before), info(after, seen_after))

    def _local_presence(self, user_id: str) -> PresenceInfo:
        devices = self.local.user_conns.get(user_id, {})
        statuses = [self._status[c] for c in devices if c in self._status]
        return PresenceInfo(user_id, aggregate_status(statuses), now_ms() if statuses else None)

    async def get(self, user_ids: Iterable[str]) -> dict[str, PresenceInfo]:
        users = list(user_ids)
        if self.link.online and users:
            with self.link.or_local():
                async with self.link.client.pipeline(transaction=False) as pipe:
                    for user_id in users:
                        pipe.hgetall(self.link.keys.presence(user_id))
                    rows = await pipe.execute()
                out = {}
                for user_id, row in zip(users, rows, strict=True):
                    devices = [v.decode() for k, v in row.items() if k.startswith(b"d:")]
                    seen = row.get(b"seen")
                    out[user_id] = PresenceInfo(
                        user_id,
                        _visible(devices),  # type: ignore[arg-type]
                        int(seen) if seen else None,
                    )
                return out
        return {u: self._local_presence(u) for u in users}

    async def republish(self) -> None:
        """Write this node's devices back. Each write re-checks that the socket is still
        here: the node is serving while this runs, and a socket closing meanwhile must not
        be written back."""
        for conn_id, conn in list(self.local.conns.items()):
            status = self._status.get(conn_id)
            if status is not None and conn_id in self.local.conns:
                await self._write(conn.user_id, conn_id, status)
