"""Call records in Redis: one JSON value per call, changed by WATCH/MULTI transactions, with
a sorted set of all calls and a set per user. Each write bumps the call's version, and the
node remembers the newest copy of the calls it wrote, to put them back (newest wins) if
Redis restarts empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from signaling.state.calls import CallStore
from signaling.state.models import Call
from signaling.state.redis.link import RedisLink

T = TypeVar("T")


class RedisCalls(CallStore):
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._calls: dict[str, bytes] = {}  # open calls this node wrote, newest copy

    def _remember(self, call: Call, raw: bytes) -> None:
        if call.state == "ended":
            self._calls.pop(call.id, None)
        else:
            self._calls[call.id] = raw

    async def create(self, call: Call) -> None:
        call.version = 1
        raw = orjson.dumps(call.to_dict())
        keys = self.link.keys
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.set(keys.call(call.id), raw)
                pipe.zadd(keys.calls, {call.id: call.created_at})
                for user_id in call.participants:
                    pipe.sadd(keys.user_calls(user_id), call.id)
                await pipe.execute()
        self._remember(call, raw)

    async def get(self, call_id: str) -> Call | None:
        async with self.link.shared():
            raw = await self.link.client.get(self.link.keys.call(call_id))
        return Call.from_dict(orjson.loads(raw)) if raw else None

    async def update(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        def bump(call: Call) -> T:
            result = mutate(call)
            call.version += 1
            return result

        async with self.link.shared():
            call, result, raw = await self.link.update_json(
                self.link.keys.call(call_id), call_id, Call.from_dict, bump
            )
        self._remember(call, raw)
        return call, result

    async def _by_ids(self, ids: list[bytes]) -> list[Call]:
        if not ids:
            return []
        async with self.link.client.pipeline(transaction=False) as pipe:
            for call_id in ids:
                pipe.get(self.link.keys.call(call_id.decode()))
            raws = await pipe.execute()
        return [Call.from_dict(orjson.loads(r)) for r in raws if r]

    async def of_user(self, user_id: str) -> list[Call]:
        async with self.link.shared():
            ids = list(await self.link.client.smembers(self.link.keys.user_calls(user_id)))
            return await self._by_ids(ids)

    async def delete(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        call = await self.get(call_id)
        keys = self.link.keys
        async with self.link.shared():
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.delete(keys.call(call_id))
                pipe.zrem(keys.calls, call_id)
                for user_id in call.participants if call else ():
                    pipe.srem(keys.user_calls(user_id), call_id)
                await pipe.execute()

    async def list_all(self) -> list[Call]:
        async with self.link.shared():
            ids = list(await self.link.client.zrange(self.link.keys.calls, 0, -1))
            return await self._by_ids(ids)

    async def republish(self, pipe: Any) -> None:
        """Queue this node's open calls on ``pipe``, each kept only if newer than what
        Redis holds (another node may have written a later copy)."""
        keys = self.link.keys
        for call_id, raw in self._calls.items():
            call = orjson.loads(raw)
            await self.link.run(
                "PUT_NEWER_CALL", [keys.call(call_id)], [raw, call.get("version", 0)], pipe
            )
            pipe.zadd(keys.calls, {call_id: call["created_at"]}, nx=True)
            for user_id in call["participants"]:
                pipe.sadd(keys.user_calls(user_id), call_id)
