"""Room records in Redis: one JSON value per room and a sorted set of rooms by creation.

Each node keeps the last version it wrote or read of the records of rooms (a bounded
mirror), so that after Redis comes back empty it can write back those of the rooms it
has members in, as it does their memberships: the API's settings (capacity, metadata,
permissions, publish caps) survive. A room nobody is in on any node is not written
back: it is lost with Redis, as its empty timeout would have finished it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson

from signaling.state.models import RoomInfo
from signaling.state.redis.link import RedisLink
from signaling.state.room_records import RoomRecords

T = TypeVar("T")
#: Records a node remembers (the most recently used beyond that are forgotten).
MIRROR_SIZE = 10_000


class RedisRoomRecords(RoomRecords):
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._mirror: OrderedDict[str, RoomInfo] = OrderedDict()

    def _seen(self, room: RoomInfo) -> RoomInfo:
        self._mirror[room.id] = room
        self._mirror.move_to_end(room.id)
        if len(self._mirror) > MIRROR_SIZE:
            self._mirror.popitem(last=False)
        return room

    def republish(self, pipe: Any, rooms: Iterable[str]) -> int:
        """Queue on ``pipe`` the records of ``rooms`` (those with members here) that this
        node knows, unless Redis has them again; returns how many."""
        keys, count = self.link.keys, 0
        for room_id in rooms:
            room = self._mirror.get(room_id)
            if room is None:
                continue
            pipe.set(keys.room_info(room.id), orjson.dumps(room.to_dict()), nx=True)
            pipe.zadd(keys.rooms, {room.id: room.created_at}, nx=True)
            count += 1
        return count

    async def create(self, room: RoomInfo) -> bool:
        keys = self.link.keys
        async with self.link.shared():
            created = await self.link.client.set(
                keys.room_info(room.id), orjson.dumps(room.to_dict()), nx=True
            )
            if created:
                await self.link.client.zadd(keys.rooms, {room.id: room.created_at})
                self._seen(room)
        return bool(created)

    async def get(self, room_id: str) -> RoomInfo | None:
        async with self.link.shared():
            raw = await self.link.client.get(self.link.keys.room_info(room_id))
        return self._seen(RoomInfo.from_dict(orjson.loads(raw))) if raw else None

    async def update(self, room_id: str, mutate: Callable[[RoomInfo], T]) -> tuple[RoomInfo, T]:
        async with self.link.shared():
            room, result, _ = await self.link.update_json(
                self.link.keys.room_info(room_id), room_id, RoomInfo.from_dict, mutate
            )
        return self._seen(room), result

    async def delete(self, room_id: str) -> RoomInfo | None:
        keys = self.link.keys
        async with self.link.shared():
            # Two slots (the record and the listing): not one transaction; each step is
            # idempotent and a listed id without a record is skipped by the listing.
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.getdel(keys.room_info(room_id))
                pipe.zrem(keys.rooms, room_id)
                raw, _ = await pipe.execute()
        self._mirror.pop(room_id, None)
        return RoomInfo.from_dict(orjson.loads(raw)) if raw else None

    async def list_all(self) -> list[RoomInfo]:
        keys = self.link.keys
        async with self.link.shared():
            ids = [r.decode() for r in await self.link.client.zrange(keys.rooms, 0, -1)]
            if not ids:
                return []
            async with self.link.client.pipeline(transaction=False) as pipe:
                for room_id in ids:
                    pipe.get(keys.room_info(room_id))  # one slot each: no MGET on a cluster
                raws = await pipe.execute()
        return [RoomInfo.from_dict(orjson.loads(raw)) for raw in raws if raw]
