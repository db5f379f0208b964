"""Room membership in Redis: per room a members hash (user -> name) and a device set per
user, changed by scripts that answer first/last device; per user the rooms of each of its
devices; per node the memberships of its sockets (what the reaper releases if the node
dies).

The user's and the node's records are per device, so a join and a leave write them on
the room script's own pipeline, whatever the script answers: one round trip each."""

from __future__ import annotations

from signaling.protocol import ErrorCode, HubError
from signaling.state.delivery import node_of
from signaling.state.membership import Departure, Entry, MembershipStore
from signaling.state.models import Member
from signaling.state.redis.delivery import RedisDelivery
from signaling.state.redis.link import RedisLink


class RedisMembership(MembershipStore):
    def __init__(self, link: RedisLink, delivery: RedisDelivery) -> None:
        self.link = link
        self.delivery = delivery

    def _here(self, room_id: str, user_id: str) -> bool:
        """Whether one of the user's sockets on this node is in the room (the answer to
        first/last device while Redis is away)."""
        return any(s.user_id == user_id for s in self.delivery.local_room_members(room_id))

    async def join(
        self, room_id: str, member: Member, conn_id: str, capacity: int | None = None
    ) -> Entry:
        locally_first = not self._here(room_id, member.user_id)
        await self.delivery.room_joined(room_id, conn_id)
        if self.link.online:
            with self.link.or_local():
                first, members = await self._write_join(
                    room_id, member.user_id, member.name, conn_id, capacity
                )
                if first < 0:
                    await self.delivery.room_left(room_id, conn_id)
                    raise HubError(
                        ErrorCode.ROOM_FULL, f"room '{room_id}' is full ({capacity} members)"
                    )
                return Entry(first == 1, members)
        return Entry(locally_first, await self.members(room_id))

    async def _write_join(
        self, room_id: str, user_id: str, name: str, conn_id: str, capacity: int | None = None
    ) -> tuple[int, list[Member]]:
        """1: first device, 0: another device, -1: refused (the room is full); and the
        members then.

        One round trip: the user's and the node's records of the membership are written
        with the join and the members read after it; the records are taken back in a
        second round trip only when the room refused the join."""
        k = self.link.keys
        user_rooms, node_rooms = k.user_rooms(user_id), k.node_rooms(node_of(conn_id))
        entry, device = _node_entry(conn_id, room_id, user_id), _device_entry(room_id, conn_id)
        async with self.link.client.pipeline(transaction=False) as pipe:
            await self.link.run(
                "JOIN_ROOM",
                [k.room_members(room_id), k.room_devices(room_id, user_id)],
                [user_id, name, conn_id, "" if capacity is None else capacity],
                pipe,
            )
            pipe.sadd(user_rooms, device)
            pipe.sadd(node_rooms, entry)
            pipe.hgetall(k.room_members(room_id))
            joined, _, _, row = await pipe.execute()
        first = int(joined)
        if first < 0:
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.srem(user_rooms, device)
                pipe.srem(node_rooms, entry)
                await pipe.execute()
        return first, _members(row)

    async def leave(self, room_id: str, user_id: str, conn_id: str) -> Departure:
        await self.delivery.room_left(room_id, conn_id)
        locally_last = Departure(not self._here(room_id, user_id), None)
        if not self.link.online:
            return locally_last
        k = self.link.keys
        with self.link.or_local():
            async with self.link.client.pipeline(transaction=False) as pipe:
                await self.link.run(
                    "LEAVE_ROOM",
                    [k.room_members(room_id), k.room_devices(room_id, user_id)],
                    [user_id, conn_id],
                    pipe,
                )
                pipe.srem(k.node_rooms(node_of(conn_id)), _node_entry(conn_id, room_id, user_id))
                # (with the bare room id an older node recorded per user, not per device)
                pipe.srem(k.user_rooms(user_id), _device_entry(room_id, conn_id), room_id)
                pipe.hlen(k.room_members(room_id))
                last, _, _, members_left = await pipe.execute()
            return Departure(bool(last), int(members_left))
        return locally_last

    async def members(self, room_id: str) -> list[Member]:
        k = self.link.keys
        if self.link.online:
            with self.link.or_local():
                return _members(await self.link.client.hgetall(k.room_members(room_id)))
        here = {
            s.user_id: Member(s.user_id, s.name) for s in self.delivery.local_room_members(room_id)
        }
        return list(here.values())

    async def rooms_of(self, user_id: str) -> set[str]:
        if self.link.online:
            with self.link.or_local():
                devices = await self.link.client.smembers(self.link.keys.user_rooms(user_id))
                return {d.decode().partition(" ")[0] for d in devices}
        return {r for r in self.delivery.room_conns if self._here(r, user_id)}

    async def republish(self) -> None:
        """Write this node's memberships back (each re-checked, as presence does)."""
        for room_id, conns in list(self.delivery.room_conns.items()):
            for conn_id, socket in list(conns.items()):
                if conn_id in self.delivery.room_conns.get(room_id, {}):
                    await self._write_join(room_id, socket.user_id, socket.name, conn_id)


def _members(row: dict[bytes, bytes]) -> list[Member]:
    return [Member(u.decode(), n.decode()) for u, n in row.items()]


def _node_entry(conn_id: str, room_id: str, user_id: str) -> str:
    """A membership in the node's record (read back by the reaper, ``lifecycle.py``)."""
    return f"{conn_id} {room_id} {user_id}"


def _device_entry(room_id: str, conn_id: str) -> str:
    """A device's membership in the user's record (``rooms_of`` reads the room first)."""
    return f"{room_id} {conn_id}"
