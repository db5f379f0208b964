"""Room records in Redis: one JSON value per room and a sorted set of rooms by creation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import orjson

from signaling.state.models import RoomInfo
from signaling.state.redis.link import RedisLink
from signaling.state.room_records import RoomRecords

T = TypeVar("T")


class RedisRoomRecords(RoomRecords):
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def create(self, room: RoomInfo) -> bool:
        keys = self.link.keys
        async with self.link.shared():
            created = await self.link.client.set(
                keys.room_info(room.id), orjson.dumps(room.to_dict()), nx=True
            )
            if created:
                await self.link.client.zadd(keys.rooms, {room.id: room.created_at})
        return bool(created)

    async def get(self, room_id: str) -> RoomInfo | None:
        async with self.link.shared():
            raw = await self.link.client.get(self.link.keys.room_info(room_id))
        return RoomInfo.from_dict(orjson.loads(raw)) if raw else None

    async def update(self, room_id: str, mutate: Callable[[RoomInfo], T]) -> tuple[RoomInfo, T]:
        async with self.link.shared():
            room, result, _ = await self.link.update_json(
                self.link.keys.room_info(room_id), room_id, RoomInfo.from_dict, mutate
            )
        return room, result

    async def delete(self, room_id: str) -> RoomInfo | None:
        keys = self.link.keys
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.getdel(keys.room_info(room_id))
                pipe.zrem(keys.rooms, room_id)
                raw, _ = await pipe.execute()
        return RoomInfo.from_dict(orjson.loads(raw)) if raw else None

    async def list_all(self) -> list[RoomInfo]:
        keys = self.link.keys
        async with self.link.shared():
            ids = [r.decode() for r in await self.link.client.zrange(keys.rooms, 0, -1)]
            if not ids:
                return []
            raws = await self.link.client.mget([keys.room_info(r) for r in ids])
        return [RoomInfo.from_dict(orjson.loads(raw)) for raw in raws if raw]
