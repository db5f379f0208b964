"""Delivery across nodes: this node's sockets (the local half, inherited) plus pub/sub.

Room events go through the room's channel even to the sender's own node, so every member,
on any node, sees a room's events in the one order Redis published them. Events for users
and connections go to the channels of the nodes that hold their sockets. While Redis is
away, delivery falls back to this node's own sockets.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

from signaling.protocol import text_frame_header
from signaling.state.delivery import node_of
from signaling.state.handler import Reports
from signaling.state.history import EPOCH_LENGTH, RoomHistory, Template, entry
from signaling.state.memory.delivery import LocalDelivery
from signaling.state.redis.bus import Bus, pack
from signaling.state.redis.link import RedisLink


class RedisDelivery(LocalDelivery):
    def __init__(self, link: RedisLink, reports: Reports, history: RoomHistory) -> None:
        super().__init__(link.node_id, reports)
        self.link = link
        #: The bounds of recorded events (the shared history's, set by the node).
        self.shared_history = history
        self.bus = Bus(self._on_bus, link.failed)
        #: Told when another node announces a call's new version, with the record (the
        #: call store's copies).
        self.on_call_changed: Callable[[str, int, bytes], None] | None = None

    # -- room channels follow this node's members -------------------------------------------

    async def room_joined(self, room_id: str, conn_id: str) -> None:
        if self.index_join(room_id, conn_id) and self.link.online:
            with self.link.or_local():
                await self.bus.subscribe(self.link.keys.room_channel(room_id))

    async def room_left(self, room_id: str, conn_id: str) -> None:
        if self.index_leave(room_id, conn_id) and self.link.online:
            with self.link.or_local():
                await self.bus.unsubscribe(self.link.keys.room_channel(room_id))

    def channels(self) -> list[str]:
        """What this node listens to: its own channel and its rooms' channels."""
        keys = self.link.keys
        return [keys.node_channel(self.node_id), *(keys.room_channel(r) for r in self.room_conns)]

    # -- outbound --------------------------------------------------------------------------------

    async def conns_frame(self, conn_ids: list[str], frame: bytes) -> int:
        """One message per node for all its connections, not one per connection."""
        by_node: dict[str, list[str]] = {}
        for conn_id in conn_ids:
            by_node.setdefault(node_of(conn_id), []).append(conn_id)
        sent = sum(self.write_conn(c, frame) for c in by_node.pop(self.node_id, []))
        if not self.link.online:
            return sent
        messages = [
            (self.link.keys.node_channel(node), pack({"cs": conns}, frame))
            for node, conns in by_node.items()
        ]
        return sent + await self.link.publish(messages)

    async def _remote_nodes_of(self, users: list[str]) -> dict[str, list[str]]:
        """Other nodes holding a socket of any of the users (read from the presence
        hashes' device fields), each with those users."""
        keys = self.link.keys
        async with self.link.client.pipeline(transaction=False) as pipe:
            for user_id in users:
                pipe.hkeys(keys.presence(user_id))
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

    async def users_frame(self, users: list[str], frame: bytes, exclude_conn: str | None) -> int:
        sent = self.write_users(users, frame, exclude_conn)
        if not self.link.online or not users:
            return sent
        with self.link.or_local():
            by_node = await self._remote_nodes_of(users)
            messages = [
                (self.link.keys.node_channel(node), pack({"u": targets, "x": exclude_conn}, frame))
                for node, targets in by_node.items()
            ]
            return sent + await self.link.publish(messages)
        return sent

    def room_message(self, room_id: str, frame: bytes, exclude_user: str | None) -> bytes:
        """What a room event is on the room's channel (for stores whose scripts publish
        an event with the change it announces)."""
        return pack({"r": [room_id], "i": 0, "x": exclude_user}, frame)

    async def rooms_frame(self, rooms: list[str], frame: bytes, exclude_user: str | None) -> int:
        if not self.link.online:
            return self.write_rooms(rooms, frame, exclude_user)
        # One message per room channel; a node delivers a multi-room event to each local
        # socket through the first of the rooms it is in (write_room_share).
        keys = self.link.keys
        messages = [
            (keys.room_channel(room), pack({"r": rooms, "i": i, "x": exclude_user}, frame))
            for i, room in enumerate(rooms)
        ]
        return await self.link.publish(messages)

    @property
    def recording(self) -> bool:
        return self.shared_history.size > 0

    async def room_recorded_frame(
        self, room_id: str, template: Template, exclude_user: str | None
    ) -> int:
        """One script numbers, keeps and publishes the event (one round trip). While Redis
        is away the event reaches this node's members only, numbered by the node's own
        history; a client recovering across that gap gets ``recovered: false``."""
        if not self.link.online:
            return await super().room_recorded_frame(room_id, template, exclude_user)
        keys, history = self.link.keys, self.shared_history
        prefix = self.room_message(room_id, b"", exclude_user)
        with self.link.or_local():
            return await self.link.run(
                "HISTORY_PUBLISH",
                [keys.room_history_meta(room_id), keys.room_history(room_id)],
                [
                    keys.room_channel(room_id),
                    prefix + text_frame_header(template.length),
                    template.head,
                    template.middle,
                    template.tail,
                    entry(exclude_user, b""),
                    history.size,
                    int(history.ttl * 1000),
                    secrets.token_hex(EPOCH_LENGTH // 2),
                    self.link.publish_command,
                ],
            )
        return await super().room_recorded_frame(room_id, template, exclude_user)

    async def send_control(self, user_ids: Iterable[str], command: dict[str, Any]) -> None:
        users = list(dict.fromkeys(user_ids))
        here = [u for u in users if u in self.user_conns]
        if self.link.online and users:
            with self.link.or_local():
                by_node = await self._remote_nodes_of(users)
                await self.link.publish(
                    [
                        (self.link.keys.node_channel(node), pack({"k": command, "u": targets}, b""))
                        for node, targets in by_node.items()
                    ]
                )
        await self.reports.control_here(here, command)

    # -- inbound (the bus reader) --------------------------------------------------------------

    def _on_bus(self, header: dict[str, Any], frame: bytes) -> None:
        rooms = header.get("r")
        if rooms is not None:  # a room event: nearly every message
            index = header["i"]
            if index == 0:
                self.write_room(rooms[0], frame, header.get("x"))
            else:
                self.write_room_share(rooms, index, frame, header.get("x"))
        elif "n" in header:
            self.reports.node_message(header["n"])
        elif "cv" in header:
            if self.on_call_changed is not None:
                call_id, version = header["cv"]
                self.on_call_changed(call_id, version, frame)
        elif "k" in header:
            self.reports.control([u for u in header["u"] if u in self.user_conns], header["k"])
        elif "u" in header:
            self.write_users(header["u"], frame, header.get("x"))
        elif "cs" in header:
            for conn_id in header["cs"]:
                self.write_conn(conn_id, frame)
