"""Call records in Redis: one JSON value per call, changed by compare-and-set, with a sorted
set of all calls and a set per user. Each write bumps the call's version, and the node
remembers the newest copy of the calls it wrote, to put them back (newest wins) if Redis
restarts empty.

Relays (offer, answer, ICE: most of a call set-up's requests) only route, so they read a
node-local copy (:meth:`RedisCalls.peek`) instead of Redis. It stays fresh because every
write tells the nodes holding the call's joined connections (before and after the change;
only they can relay) its new version on their channels, with the record itself; a copy
older than the newest version announced is read again. A change starts from a fresh copy
too, trusted only if the compare-and-set finds it unchanged. Copies are dropped whenever
the node reconnects."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from signaling.state.calls import CallStore
from signaling.state.delivery import node_of
from signaling.state.models import Call
from signaling.state.redis.bus import pack
from signaling.state.redis.link import RedisLink

T = TypeVar("T")

#: Calls whose copies (and newest announced versions) a node keeps for relays.
RECENT_CALLS = 10_000


def conns_of(call: Call) -> set[str]:
    return {p.conn_id for p in call.participants.values() if p.conn_id}


class RedisCalls(CallStore):
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._calls: dict[str, bytes] = {}  # open calls this node wrote, newest copy
        self._recent: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # for peek()
        self._newest: OrderedDict[str, int] = OrderedDict()  # versions others announced

    def _keep(self, call_id: str, version: int, raw: bytes) -> None:
        """Keep ``raw`` as this node's copy of the call, unless a newer one is known."""
        kept = self._recent.get(call_id)
        if version < self._newest.get(call_id, 0) or (kept is not None and kept[0] > version):
            return  # already superseded by a write announced meanwhile
        self._recent[call_id] = (version, raw)
        self._recent.move_to_end(call_id)
        if len(self._recent) > RECENT_CALLS:
            self._recent.popitem(last=False)

    def changed_elsewhere(self, call_id: str, version: int, raw: bytes = b"") -> None:
        """Another node wrote ``version`` of the call (``raw``, when the note carries it):
        older copies are stale, and the one carried is the newest."""
        if version > self._newest.get(call_id, 0):
            self._newest[call_id] = version
            self._newest.move_to_end(call_id)
            if len(self._newest) > RECENT_CALLS:
                self._newest.popitem(last=False)
        kept = self._recent.get(call_id)
        if kept is not None and kept[0] < version:
            del self._recent[call_id]
        if raw:
            self._keep(call_id, version, raw)

    def _fresh(self, call_id: str) -> bytes | None:
        """This node's copy of the call, if no newer version was announced since."""
        kept = self._recent.get(call_id)
        if kept is not None and kept[0] >= self._newest.get(call_id, 0):
            return kept[1]
        return None

    async def peek(self, call_id: str) -> Call | None:
        raw = self._fresh(call_id)
        if raw is not None:
            return Call.from_dict(orjson.loads(raw))
        return await self.get(call_id)

    async def _announce(self, call: Call, conns: set[str], raw: bytes) -> None:
        """Tell the other nodes holding the call's joined connections its new version,
        with the record itself: they relay and change the call from that copy, with no
        read of their own."""
        nodes = sorted({node_of(c) for c in conns} - {self.link.node_id})
        if nodes:
            note = pack({"cv": [call.id, call.version]}, raw)
            await self.link.publish([(self.link.keys.node_channel(n), note) for n in nodes])

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
        self._keep(call.id, call.version, raw)

    async def get(self, call_id: str) -> Call | None:
        async with self.link.shared():
            raw = await self.link.client.get(self.link.keys.call(call_id))
        if not raw:
            self._recent.pop(call_id, None)
            return None
        call = Call.from_dict(orjson.loads(raw))
        self._keep(call.id, call.version, raw)
        return call

    async def update(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        before: set[str] = set()

        def bump(call: Call) -> T:
            before.clear()
            before.update(conns_of(call))
            result = mutate(call)
            call.version += 1
            return result

        async with self.link.shared():
            call, result, raw = await self.link.update_json(
                self.link.keys.call(call_id), call_id, Call.from_dict, bump, self._fresh(call_id)
            )
        self._remember(call, raw)
        self._keep(call.id, call.version, raw)
        await self._announce(call, before | conns_of(call), raw)
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
        self._recent.pop(call_id, None)
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
        # Changes announced while this node was away were missed: read calls afresh.
        self._recent.clear()
        self._newest.clear()
        keys = self.link.keys
        for call_id, raw in self._calls.items():
            call = orjson.loads(raw)
            await self.link.run(
                "PUT_NEWER_CALL", [keys.call(call_id)], [raw, call.get("version", 0)], pipe
            )
            pipe.zadd(keys.calls, {call_id: call["created_at"]}, nx=True)
            for user_id in call["participants"]:
                pipe.sadd(keys.user_calls(user_id), call_id)
