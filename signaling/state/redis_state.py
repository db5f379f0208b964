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

import asyncio
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
from signaling.state.models import (
    Call,
    Member,
    PresenceChange,
    PresenceInfo,
    RemoteConnection,
    RoomInfo,
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
R = TypeVar("R", Call, RoomInfo)


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
        super().__init__()
        self.url = url
        self.node_id = node_id or secrets.token_hex(4)
        self.keys = Keys(prefix)
        self.client: Redis = connect_client(url)
        self.bus = Bus(self._on_bus)
        self.online = False
        # Whether this node's first-hand state is back in Redis after (re)connecting.
        self.synced = False
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
                "WEBHOOK_CLAIM",
                "WEBHOOK_ACK",
                "WEBHOOK_RENEW",
                "WEBHOOK_RELEASE",
                "PUT_NEWER_CALL",
                "DELETE_IF",
            )
        }

    # -- plumbing ---------------------------------------------------------------------------

    async def start(self, on_lost: LostConnections) -> None:
        await self.node.start(on_lost)

    def status(self) -> dict[str, Any]:
        # Connected once re-publishing finished: from then on Redis holds this node's part.
        return {"backend": "redis", "node": self.node_id, "connected": self.online and self.synced}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    def failed(self, exc: BaseException) -> None:
        """A Redis call failed for lack of Redis: serve locally until it is back."""
        if self.online:
            log.warning("Redis connection lost (%s); serving local users only", exc)
        self.online = self.synced = False
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

    def detach(self, conn: Connection) -> None:
        super().detach(conn)
        self._status.pop(conn.id, None)

    async def _publish(self, messages: list[tuple[str, bytes]]) -> int:
        if not messages:
            return 0
        with self._or_local():
            async with self.client.pipeline(transaction=False) as pipe:
                for channel, data in messages:
                    pipe.publish(channel, data)
                return sum(await pipe.execute())
        return 0

    async def deliver_to_connections(self, conn_ids: Iterable[str], frame: bytes) -> int:
        """One message per node for all its connections, not one per connection."""
        by_node: dict[str, list[str]] = {}
        for conn_id in conn_ids:
            by_node.setdefault(node_of(conn_id), []).append(conn_id)
        sent = sum(self.local.to_connection(c, frame) for c in by_node.pop(self.node_id, []))
        if not self.online:
            return sent
        messages = [
            (self.keys.node_channel(node), pack({"cs": conns}, frame))
            for node, conns in by_node.items()
        ]
        return sent + await self._publish(messages)

    async def _remote_nodes_of(self, users: list[str]) -> dict[str, list[str]]:
        """Other nodes holding a socket of any of the users, each with those users."""
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
        return by_node

    async def deliver_to_users(
        self, user_ids: Iterable[str], frame: bytes, *, exclude_conn: str | None = None
    ) -> int:
        users = list(dict.fromkeys(user_ids))
        sent = self.local.to_users(users, frame, exclude_conn)
        if not self.online or not users:
            return sent
        with self._or_local():
            by_node = await self._remote_nodes_of(users)
            messages = [
                (self.keys.node_channel(node), pack({"u": targets, "x": exclude_conn}, frame))
                for node, targets in by_node.items()
            ]
            return sent + await self._publish(messages)
        return sent

    async def send_control(self, user_ids: Iterable[str], command: dict[str, Any]) -> None:
        users = list(dict.fromkeys(user_ids))
        here = [u for u in users if u in self.local.user_conns]
        if self.online and users:
            with self._or_local():
                by_node = await self._remote_nodes_of(users)
                await self._publish(
                    [
                        (self.keys.node_channel(node), pack({"k": command, "u": targets}, b""))
                        for node, targets in by_node.items()
                    ]
                )
        if here and self.control_handler is not None:
            await self.control_handler(here, command)

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
        if "n" in header:
            self._run_node_message(header["n"])
        elif "k" in header:
            here = [u for u in header["u"] if u in self.local.user_conns]
            if here and self.control_handler is not None:
                self._spawn(self._control(here, header["k"]))
        elif "r" in header:
            self.local.to_room_share(header["r"], header["i"], frame, header.get("x"))
        elif "u" in header:
            self.local.to_users(header["u"], frame, header.get("x"))
        elif "cs" in header:
            for conn_id in header["cs"]:
                self.local.to_connection(conn_id, frame)

    # -- the cluster: node messages, live nodes, media placement -------------------------------

    async def send_to_node(self, node_id: str, message: dict[str, Any]) -> bool:
        if not self.online:
            if node_id == self.node_id and self.node_message_handler is not None:
                self._run_node_message(message)
                return True
            return False
        channel = self.keys.node_channel(node_id)
        return await self._publish([(channel, pack({"n": message}, b""))]) > 0

    async def cluster_nodes(self) -> dict[str, dict[str, Any]]:
        async with self._shared():
            cutoff = now_ms() - int(self.node.dead_after * 1000)
            names = [
                n.decode() for n in await self.client.zrangebyscore(self.keys.nodes, cutoff, "+inf")
            ]
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hget(self.keys.node_info(name), "load")
                loads = await pipe.execute()
        out = {
            name: orjson.loads(raw) if raw else {} for name, raw in zip(names, loads, strict=True)
        }
        if self.load_provider is not None:
            out[self.node_id] = self.load_provider()  # its own load is known first-hand
        return out

    async def publish_load_now(self) -> None:
        if self.online:
            with self._or_local():
                await self.node.beat()

    @contextlib.asynccontextmanager
    async def placement_lock(self, room_id: str, ttl: float = 5.0) -> AsyncIterator[None]:
        key, token = self.keys.room_placing(room_id), secrets.token_hex(8)
        deadline = asyncio.get_running_loop().time() + ttl
        async with self._shared():
            while not await self.client.set(key, token, nx=True, px=int(ttl * 1000)):
                if asyncio.get_running_loop().time() > deadline:
                    raise HubError(
                        ErrorCode.UNAVAILABLE, f"room '{room_id}' is being placed; retry shortly"
                    )
                await asyncio.sleep(0.02)
        try:
            yield
        finally:
            with contextlib.suppress(*UNREACHABLE):
                await self._run("DELETE_IF", [key], [token])

    async def get_room_host(self, room_id: str) -> str | None:
        async with self._shared():
            raw = await self.client.get(self.keys.room_host(room_id))
        return raw.decode() if raw else None

    async def set_room_host(self, room_id: str, node_id: str) -> None:
        async with self._shared():
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.room_host(room_id), node_id, get=True)
                pipe.sadd(self.keys.node_hosted(node_id), room_id)
                previous, _ = await pipe.execute()
            if previous is not None and previous.decode() != node_id:
                await self.client.srem(self.keys.node_hosted(previous.decode()), room_id)

    async def release_room_host(self, room_id: str, node_id: str) -> bool:
        async with self._shared():
            if not await self._run("DELETE_IF", [self.keys.room_host(room_id)], [node_id]):
                return False
            await self.client.srem(self.keys.node_hosted(node_id), room_id)
            return True

    async def _control(self, users: list[str], command: dict[str, Any]) -> None:
        assert self.control_handler is not None
        try:
            await self.control_handler(users, command)
        except Exception:
            log.exception("control command failed", extra={"command": command.get("op")})

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

    async def join_room(
        self, room_id: str, member: Member, conn_id: str, capacity: int | None = None
    ) -> bool:
        locally_first = not self._user_in_room_here(room_id, member.user_id)
        if self.local.join(room_id, conn_id) and self.online:
            with self._or_local():
                await self.bus.subscribe(self.keys.room_channel(room_id))
        if not self.online:
            return locally_first
        with self._or_local():
            first = await self._write_join(room_id, member.user_id, member.name, conn_id, capacity)
            if first < 0:
                if self.local.leave(room_id, conn_id):
                    await self.bus.unsubscribe(self.keys.room_channel(room_id))
                raise HubError(
                    ErrorCode.ROOM_FULL, f"room '{room_id}' is full ({capacity} members)"
                )
            return first == 1
        return locally_first

    def _user_in_room_here(self, room_id: str, user_id: str) -> bool:
        """Whether one of the user's sockets on this node is in the room (the answer to
        first/last device while Redis is away)."""
        return any(c.user_id == user_id for c in self.local.room_conns.get(room_id, {}).values())

    async def _write_join(
        self, room_id: str, user_id: str, name: str, conn_id: str, capacity: int | None = None
    ) -> int:
        """1: first device, 0: another device, -1: refused (the room is full)."""
        k = self.keys
        first = int(
            await self._run(
                "JOIN_ROOM",
                [k.room_members(room_id), k.room_devices(room_id, user_id)],
                [user_id, name, conn_id, "" if capacity is None else capacity],
            )
        )
        if first >= 0:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.sadd(k.user_rooms(user_id), room_id)
                pipe.sadd(k.node_rooms(node_of(conn_id)), f"{conn_id} {room_id} {user_id}")
                await pipe.execute()
        return first

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
        call.version = 1
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
        def bump(call: Call) -> T:
            result = mutate(call)
            call.version += 1
            return result

        async with self._shared():
            call, result, raw = await self._update_record(
                self.keys.call(call_id), call_id, Call.from_dict, bump
            )
        self._remember(call, raw)
        return call, result

    async def _update_record(
        self,
        key: str,
        record_id: str,
        load: Callable[[dict[str, Any]], R],
        mutate: Callable[[R], T],
    ) -> tuple[R, T, bytes]:
        """Optimistic transaction: concurrent updates of one record (two devices accepting a
        call) make all but one retry on top of the winner's result."""
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if raw is None:
                    await pipe.reset()
                    raise KeyError(record_id)
                record = load(orjson.loads(raw))
                result = mutate(record)
                new_raw = orjson.dumps(record.to_dict())
                pipe.multi()
                pipe.set(key, new_raw)
                try:
                    await pipe.execute()
                except WatchError:
                    continue
                return record, result, new_raw

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

    # -- room records -------------------------------------------------------------------------

    async def create_room(self, room: RoomInfo) -> bool:
        async with self._shared():
            created = await self.client.set(
                self.keys.room_info(room.id), orjson.dumps(room.to_dict()), nx=True
            )
            if created:
                await self.client.zadd(self.keys.rooms, {room.id: room.created_at})
        return bool(created)

    async def get_room(self, room_id: str) -> RoomInfo | None:
        async with self._shared():
            raw = await self.client.get(self.keys.room_info(room_id))
        return RoomInfo.from_dict(orjson.loads(raw)) if raw else None

    async def update_room(
        self, room_id: str, mutate: Callable[[RoomInfo], T]
    ) -> tuple[RoomInfo, T]:
        async with self._shared():
            room, result, _ = await self._update_record(
                self.keys.room_info(room_id), room_id, RoomInfo.from_dict, mutate
            )
        return room, result

    async def delete_room(self, room_id: str) -> RoomInfo | None:
        async with self._shared():
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.getdel(self.keys.room_info(room_id))
                pipe.zrem(self.keys.rooms, room_id)
                raw, _ = await pipe.execute()
        return RoomInfo.from_dict(orjson.loads(raw)) if raw else None

    async def list_rooms(self) -> list[RoomInfo]:
        async with self._shared():
            ids = [r.decode() for r in await self.client.zrange(self.keys.rooms, 0, -1)]
            if not ids:
                return []
            raws = await self.client.mget([self.keys.room_info(r) for r in ids])
        return [RoomInfo.from_dict(orjson.loads(raw)) for raw in raws if raw]

    # -- webhook queue ------------------------------------------------------------------------

    async def webhook_push(self, items: list[tuple[str, bytes]]) -> None:
        k, now = self.keys, now_ms()
        async with self._shared():
            async with self.client.pipeline(transaction=True) as pipe:
                for key, delivery in items:
                    pipe.rpush(k.webhook_queue(key), delivery)
                    pipe.zadd(k.webhook_ready, {key: now}, nx=True)
                await pipe.execute()

    async def webhook_claim(self, owner: str, limit: int, lease: float) -> list[str]:
        args = [self.keys.webhook_lease(""), owner, int(lease * 1000), limit, limit * 8]
        async with self._shared():
            keys = await self._run("WEBHOOK_CLAIM", [self.keys.webhook_ready], args)
        return [key.decode() for key in keys]

    async def webhook_head(self, key: str) -> bytes | None:
        async with self._shared():
            head: bytes | None = await self.client.lindex(self.keys.webhook_queue(key), 0)
        return head

    def _webhook_keys(self, key: str) -> list[str]:
        k = self.keys
        return [k.webhook_queue(key), k.webhook_ready, k.webhook_lease(key)]

    async def webhook_ack(self, key: str, owner: str) -> bool:
        async with self._shared():
            return bool(await self._run("WEBHOOK_ACK", self._webhook_keys(key), [key, owner]))

    async def webhook_renew(self, key: str, owner: str, lease: float) -> bool:
        args = [owner, int(lease * 1000)]
        async with self._shared():
            return bool(await self._run("WEBHOOK_RENEW", [self.keys.webhook_lease(key)], args))

    async def webhook_release(self, key: str, owner: str) -> None:
        async with self._shared():
            await self._run("WEBHOOK_RELEASE", self._webhook_keys(key), [key, owner])

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
                call = orjson.loads(raw)
                await self._scripts["PUT_NEWER_CALL"](
                    keys=[k.call(call_id)], args=[raw, call.get("version", 0)], client=pipe
                )
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
