"""Hub state shared through Redis, so several nodes behave as one hub.

What lives where:

- Redis holds the shared truth: presence (a hash per user with one field per device,
  naming the device's node), room membership, typing, calls, timers and the node
  registry. Changes that must be atomic are Lua scripts or WATCH/MULTI transactions.
- Each node keeps its own sockets in a :class:`LocalIndex` and is the authority on them:
  when Redis comes back after an outage (or restarts empty) the node re-publishes its
  devices and memberships, and cleans up what it recorded for sockets that closed
  meanwhile.
- Room events go through the room's channel even to the sender's own node, so every
  member, on any node, sees a room's events in the one order Redis published them.
  Events for users and connections go to the nodes that hold their sockets.

While Redis is unreachable a node keeps serving its own users from the local index
(presence, rooms, local delivery); cross-node delivery is lost and call operations answer
``unavailable`` until it reconnects. See :mod:`signaling.state.redis_node` for the
heartbeat, reaping of dead nodes, and the reconnect loop.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from signaling.protocol import ErrorCode, HubError
from signaling.state import redis_scripts as lua
from signaling.state.base import HubState, LostConnections, node_of
from signaling.state.local import LocalIndex
from signaling.state.models import (
    Call,
    Member,
    PresenceChange,
    PresenceInfo,
    RemoteConnection,
    aggregate_status,
    now_ms,
)
from signaling.state.redis_bus import Bus, pack
from signaling.state.redis_keys import Keys
from signaling.state.redis_node import UNREACHABLE, NodeLifecycle, connect_client

if TYPE_CHECKING:
    from signaling.connection import Connection

log = logging.getLogger("switchboard.redis")
T = TypeVar("T")


class StateUnavailable(HubError):
    def __init__(self) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE, "shared state is unreachable right now; retry shortly"
        )


def _visible(statuses: Iterable[str]) -> str:
    return aggregate_status(s.split("|", 1)[0] for s in statuses)


class RedisState(HubState):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sb",
        node_id: str | None = None,
        heartbeat_interval: float = 5.0,
        dead_after: float = 15.0,
        node_info: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.node_id = node_id or secrets.token_hex(4)
        self.keys = Keys(prefix)
        self.local = LocalIndex()
        self.client: Redis = connect_client(url)
        self.bus = Bus(self._on_bus)
        self.online = False
        # What this node knows first-hand, re-published after an outage.
        self._status: dict[str, str] = {}
        self._calls: dict[str, bytes] = {}
        self._timers: dict[str, int] = {}
        self.node = NodeLifecycle(
            self, heartbeat_interval=heartbeat_interval, dead_after=dead_after, info=node_info
        )
        self._scripts = {
            name: self.client.register_script(getattr(lua, name))
            for name in (
                "SET_DEVICE",
                "JOIN_ROOM",
                "LEAVE_ROOM",
                "TYPING_START",
                "TYPING_STOP",
                "TYPING_EXPIRE",
                "CLAIM_TIMERS",
            )
        }

    # -- plumbing ---------------------------------------------------------------------------

    async def start(self, on_lost: LostConnections) -> None:
        await self.node.start(on_lost)

    def status(self) -> dict[str, Any]:
        return {"backend": "redis", "node": self.node_id, "connected": self.online}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    def failed(self, exc: BaseException) -> None:
        """A Redis call failed for lack of Redis: serve locally until it is back."""
        if self.online:
            log.warning("Redis connection lost (%s); serving local users only", exc)
        self.online = False
        self.node.reconnect_soon()

    @contextlib.contextmanager
    def _or_local(self) -> Iterator[None]:
        """Redis first, this node's own view as the fallback: a lost connection is noted
        and the caller goes on to answer from the local index."""
        try:
            yield
        except UNREACHABLE as exc:
            self.failed(exc)

    @contextlib.asynccontextmanager
    async def _shared(self) -> AsyncIterator[None]:
        """For operations that only Redis can answer (calls, typing, timers): refuse at
        once while it is away, and turn a lost connection into ``unavailable``."""
        if not self.online:
            raise StateUnavailable()
        try:
            yield
        except UNREACHABLE as exc:
            self.failed(exc)
            raise StateUnavailable() from exc

    # -- connections & delivery ---------------------------------------------------------------

    def attach(self, conn: Connection) -> None:
        self.local.attach(conn)

    def detach(self, conn: Connection) -> None:
        self.local.detach(conn)
        self._status.pop(conn.id, None)

    def local_connection_count(self) -> int:
        return len(self.local.conns)

    def local_connections(self) -> list[Connection]:
        return list(self.local.conns.values())

    async def _publish(self, messages: list[tuple[str, bytes]]) -> int:
        if not messages:
            return 0
        with self._or_local():
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, data in messages:
                    pipe.publish(channel, data)
                return sum(await pipe.execute())
        return 0

    async def deliver_to_connection(self, conn_id: str, frame: bytes) -> int:
        node = node_of(conn_id)
        if node == self.node_id or not self.online:
            return self.local.to_connection(conn_id, frame)
        return await self._publish([(self.keys.node_channel(node), pack({"c": conn_id}, frame))])

    async def deliver_to_users(
        self, user_ids: Iterable[str], frame: bytes, *, exclude_conn: str | None = None
    ) -> int:
        users = list(dict.fromkeys(user_ids))
        sent = self.local.to_users(users, frame, exclude_conn)
        if not self.online or not users:
            return sent
        with self._or_local():
            async with self.client.pipeline(transaction=False) as pipe:
                for user_id in users:
                    pipe.hkeys(self.keys.presence(user_id))
                fields = await pipe.execute()
            by_node: dict[str, list[str]] = {}
            for user_id, names in zip(users, fields, strict=True):
                for name in names:
                    if name.startswith(b"d:"):
                        node = node_of(name[2:].decode())
                        if node != self.node_id:
                            targets = by_node.setdefault(node, [])
                            if not targets or targets[-1] != user_id:
                                targets.append(user_id)
            messages = [
                (self.keys.node_channel(node), pack({"u": targets, "x": exclude_conn}, frame))
                for node, targets in by_node.items()
            ]
            return sent + await self._publish(messages)
        return sent

    async def deliver_to_rooms(
        self, room_ids: Iterable[str], frame: bytes, *, exclude_user: str | None = None
    ) -> int:
        rooms = list(dict.fromkeys(room_ids))
        if not self.online:
            return self.local.to_rooms(rooms, frame, exclude_user)
        # One message per room channel; a node delivers a multi-room event to each local
        # socket through the first of the rooms it is in (LocalIndex.to_room_share).
        messages = [
            (self.keys.room_channel(room), pack({"r": rooms, "i": i, "x": exclude_user}, frame))
            for i, room in enumerate(rooms)
        ]
        return await self._publish(messages)

    def _on_bus(self, header: dict[str, Any], frame: bytes) -> None:
        if "r" in header:
            self.local.to_room_share(header["r"], header["i"], frame, header.get("x"))
        elif "u" in header:
            self.local.to_users(header["u"], frame, header.get("x"))
        elif "c" in header:
            self.local.to_connection(header["c"], frame)

    # -- presence -----------------------------------------------------------------------------

    async def set_device_status(
        self, user_id: str, conn_id: str, status: str | None
    ) -> PresenceChange:
        local = conn_id in self.local.conns
        before_local = self._local_presence(user_id)
        if local:
            if status is None:
                self._status.pop(conn_id, None)
            else:
                self._status[conn_id] = status
        if self.online:
            with self._or_local():
                return await self._write_device(user_id, conn_id, status)
        return PresenceChange(before_local, self._local_presence(user_id))

    async def _write_device(self, user_id: str, conn_id: str, status: str | None) -> PresenceChange:
        node = node_of(conn_id)
        value = "" if status is None else f"{status}|{node}"
        async with self.client.pipeline(transaction=False) as pipe:
            await self._scripts["SET_DEVICE"](
                keys=[self.keys.presence(user_id)],
                args=[f"d:{conn_id}", value, now_ms()],
                client=pipe,
            )
            if status is None:
                pipe.hdel(self.keys.node_conns(node), conn_id)
            else:
                pipe.hset(self.keys.node_conns(node), conn_id, user_id)
            before, seen_before, after, seen_after = (await pipe.execute())[0]

        def info(status: bytes, seen: bytes) -> PresenceInfo:
            return PresenceInfo(user_id, status.decode(), int(seen) if seen else None)  # type: ignore[arg-type]

        return PresenceChange(info(before, seen_before), info(after, seen_after))

    def _local_presence(self, user_id: str) -> PresenceInfo:
        devices = self.local.user_conns.get(user_id, {})
        statuses = [self._status[c] for c in devices if c in self._status]
        return PresenceInfo(user_id, aggregate_status(statuses), now_ms() if statuses else None)

    async def get_presence(self, user_ids: Iterable[str]) -> dict[str, PresenceInfo]:
        users = list(user_ids)
        if self.online and users:
            with self._or_local():
                async with self.client.pipeline(transaction=False) as pipe:
                    for user_id in users:
                        pipe.hgetall(self.keys.presence(user_id))
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

    # -- rooms --------------------------------------------------------------------------------

    async def join_room(self, room_id: str, member: Member, conn_id: str) -> bool:
        locally_first = not self._user_in_room_here(room_id, member.user_id)
        if self.local.join(room_id, conn_id) and self.online:
            with self._or_local():
                await self.bus.subscribe(self.keys.room_channel(room_id))
        if not self.online:
            return locally_first
        with self._or_local():
            return await self._write_join(room_id, member.user_id, member.name, conn_id)
        return locally_first

    def _user_in_room_here(self, room_id: str, user_id: str) -> bool:
        """Whether one of the user's sockets on this node is in the room (the answer to
        first/last device while Redis is away)."""
        return any(c.user_id == user_id for c in self.local.room_conns.get(room_id, {}).values())

    async def _write_join(self, room_id: str, user_id: str, name: str, conn_id: str) -> bool:
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            await self._scripts["JOIN_ROOM"](
                keys=[k.room_members(room_id), k.room_devices(room_id, user_id)],
                args=[user_id, name, conn_id],
                client=pipe,
            )
            pipe.sadd(k.user_rooms(user_id), room_id)
            pipe.sadd(k.node_rooms(node_of(conn_id)), f"{conn_id} {room_id} {user_id}")
            return bool((await pipe.execute())[0])

    async def leave_room(self, room_id: str, user_id: str, conn_id: str) -> bool:
        if self.local.leave(room_id, conn_id) and self.online:
            with self._or_local():
                await self.bus.unsubscribe(self.keys.room_channel(room_id))
        locally_last = not self._user_in_room_here(room_id, user_id)
        if not self.online:
            return locally_last
        k = self.keys
        with self._or_local():
            async with self.client.pipeline(transaction=False) as pipe:
                await self._scripts["LEAVE_ROOM"](
                    keys=[k.room_members(room_id), k.room_devices(room_id, user_id)],
                    args=[user_id, conn_id],
                    client=pipe,
                )
                pipe.srem(k.node_rooms(node_of(conn_id)), f"{conn_id} {room_id} {user_id}")
                last = bool((await pipe.execute())[0])
            if last:
                await self.client.srem(k.user_rooms(user_id), room_id)
            return last
        return locally_last

    async def room_members(self, room_id: str) -> list[Member]:
        if self.online:
            with self._or_local():
                row = await self.client.hgetall(self.keys.room_members(room_id))
                return [Member(u.decode(), n.decode()) for u, n in row.items()]
        members = {
            c.user_id: Member(c.user_id, c.principal.name)
            for c in self.local.room_conns.get(room_id, {}).values()
        }
        return list(members.values())

    async def rooms_of_user(self, user_id: str) -> set[str]:
        if self.online:
            with self._or_local():
                return {
                    r.decode() for r in await self.client.smembers(self.keys.user_rooms(user_id))
                }
        return {r for r in self.local.room_conns if self._user_in_room_here(r, user_id)}

    async def shares_room(self, user_a: str, user_b: str) -> bool:
        rooms_a, rooms_b = await self.rooms_of_user(user_a), await self.rooms_of_user(user_b)
        return not rooms_a.isdisjoint(rooms_b)

    # -- calls --------------------------------------------------------------------------------

    def _remember(self, call: Call, raw: bytes) -> None:
        if call.state == "ended":
            self._calls.pop(call.id, None)
        else:
            self._calls[call.id] = raw

    async def create_call(self, call: Call) -> None:
        raw = orjson.dumps(call.to_dict())
        async with self._shared():
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.call(call.id), raw)
                pipe.zadd(self.keys.calls, {call.id: call.created_at})
                for user_id in call.participants:
                    pipe.sadd(self.keys.user_calls(user_id), call.id)
                await pipe.execute()
        self._remember(call, raw)

    async def get_call(self, call_id: str) -> Call | None:
        async with self._shared():
            raw = await self.client.get(self.keys.call(call_id))
        return Call.from_dict(orjson.loads(raw)) if raw else None

    async def update_call(self, call_id: str, mutate: Callable[[Call], T]) -> tuple[Call, T]:
        key = self.keys.call(call_id)
        async with self._shared():
            # Optimistic transaction: concurrent updates of one call (two devices accepting)
            # make all but one retry with the winner's result.
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        await pipe.reset()
                        raise KeyError(call_id)
                    call = Call.from_dict(orjson.loads(raw))
                    result = mutate(call)
                    new_raw = orjson.dumps(call.to_dict())
                    pipe.multi()
                    pipe.set(key, new_raw)
                    try:
                        await pipe.execute()
                    except WatchError:
                        continue
                    self._remember(call, new_raw)
                    return call, result

    async def _calls_by_ids(self, ids: list[bytes]) -> list[Call]:
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for call_id in ids:
                pipe.get(self.keys.call(call_id.decode()))
            raws = await pipe.execute()
        return [Call.from_dict(orjson.loads(r)) for r in raws if r]

    async def calls_of_user(self, user_id: str) -> list[Call]:
        async with self._shared():
            ids = list(await self.client.smembers(self.keys.user_calls(user_id)))
            return await self._calls_by_ids(ids)

    async def delete_call(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        call = await self.get_call(call_id)
        async with self._shared():
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.call(call_id))
                pipe.zrem(self.keys.calls, call_id)
                for user_id in call.participants if call else ():
                    pipe.srem(self.keys.user_calls(user_id), call_id)
                await pipe.execute()

    async def list_calls(self) -> list[Call]:
        async with self._shared():
            return await self._calls_by_ids(list(await self.client.zrange(self.keys.calls, 0, -1)))

    # -- typing -------------------------------------------------------------------------------

    async def _typing(self, name: str, room_id: str, args: list[Any]) -> Any:
        async with self._shared():
            return await self._run(name, [self.keys.typing(room_id)], args)

    async def typing_start(
        self, room_id: str, user_id: str, conn_id: str, name: str, timeout: float, throttle: float
    ) -> bool:
        args = [user_id, conn_id, name, now_ms(), int(timeout * 1000), int(throttle * 1000)]
        return bool(await self._typing("TYPING_START", room_id, args))

    async def typing_stop(self, room_id: str, user_id: str, conn_id: str | None) -> str | None:
        name = await self._typing("TYPING_STOP", room_id, [user_id, conn_id or ""])
        return name.decode() if name else None

    async def typing_expire(self, room_id: str, user_id: str) -> tuple[str | None, float | None]:
        found = await self._typing("TYPING_EXPIRE", room_id, [user_id, now_ms()])
        if found[0] == 1:
            return found[1].decode(), None
        if found[0] == 2:
            return None, int(found[1]) / 1000
        return None, None

    # -- timers -------------------------------------------------------------------------------

    async def arm_timer(self, key: str, delay: float) -> None:
        due = now_ms() + int(delay * 1000)
        self._timers[key] = due
        if self.online:
            with self._or_local():
                await self.client.zadd(self.keys.timers, {key: due})

    async def disarm_timer(self, key: str) -> None:
        self._timers.pop(key, None)
        if self.online:
            with self._or_local():
                await self.client.zrem(self.keys.timers, key)

    async def claim_due_timers(self, limit: int = 100) -> list[str]:
        async with self._shared():
            due = await self._run("CLAIM_TIMERS", [self.keys.timers], [now_ms(), limit])
        keys = [k.decode() for k in due]
        for key in keys:
            self._timers.pop(key, None)
        return keys

    # -- re-publishing (after an outage) -------------------------------------------------------

    async def republish(self) -> list[RemoteConnection]:
        """Write this node's first-hand state back to Redis; return the connections Redis
        still lists for this node that closed meanwhile (the hub cleans those up)."""
        k = self.keys
        recorded = await self.node.recorded_connections(self.node_id)
        stale = [c for c in recorded if c.id not in self.local.conns]
        # Each write re-checks that the socket is still here: the node is serving while
        # this runs, and a socket closing meanwhile must not be written back.
        for conn_id, conn in list(self.local.conns.items()):
            status = self._status.get(conn_id)
            if status is not None and conn_id in self.local.conns:
                await self._write_device(conn.user_id, conn_id, status)
        for room_id, conns in list(self.local.room_conns.items()):
            for conn_id, conn in list(conns.items()):
                if conn_id in self.local.room_conns.get(room_id, {}):
                    await self._write_join(room_id, conn.user_id, conn.principal.name, conn_id)
        now = now_ms()
        async with self.client.pipeline(transaction=False) as pipe:
            for call_id, raw in self._calls.items():
                pipe.set(k.call(call_id), raw, nx=True)
                call = orjson.loads(raw)
                pipe.zadd(k.calls, {call_id: call["created_at"]}, nx=True)
                for user_id in call["participants"]:
                    pipe.sadd(k.user_calls(user_id), call_id)
            # Timers another node already fired may come back; their handlers re-check
            # the state, so a second firing does nothing.
            for key, due in list(self._timers.items()):
                if due < now - 60_000:
                    del self._timers[key]
                else:
                    pipe.zadd(k.timers, {key: due}, nx=True)
            await pipe.execute()
        return stale

    async def close(self) -> None:
        await self.node.stop()
        await self.bus.close()
        await self.client.aclose()
