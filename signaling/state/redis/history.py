"""Room history in Redis: the epoch and last offset in a hash, the kept events in a list,
both under the room's hash tag and expiring together. Events are recorded by the
delivery's one script (``HISTORY_PUBLISH``); reading takes one round trip. While Redis is
away, nothing is recovered (``recovered: false``: the client reloads)."""

from __future__ import annotations

from signaling.state.history import Position, Recovery, RoomHistory, recovery
from signaling.state.redis.link import RedisLink


class RedisHistory(RoomHistory):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def _read(self, room_id: str, *, entries: bool) -> tuple[Position, list[bytes]]:
        keys = self.link.keys
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys.room_history_meta(room_id), "e", "o")
            if entries:
                pipe.lrange(keys.room_history(room_id), 0, -1)
            replies = await pipe.execute()
        epoch, offset = replies[0]
        position = Position(epoch.decode(), int(offset)) if epoch else Position("", 0)
        return position, (replies[1] if entries else [])

    async def position(self, room_id: str) -> Position:
        if self.link.online:
            with self.link.or_local():
                return (await self._read(room_id, entries=False))[0]
        return Position("", 0)

    async def recover(self, room_id: str, since: Position, user_id: str) -> Recovery:
        """With Redis away nothing can be recovered: ``recovered: false``."""
        if self.link.online:
            with self.link.or_local():
                position, kept = await self._read(room_id, entries=True)
                return recovery(position, kept, since, user_id)
        return Recovery(Position("", 0), False)
