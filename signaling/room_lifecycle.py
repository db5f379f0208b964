"""Room records and what the chat backend can do to a room: open it (by the API or by a
first join), close it, kick, change metadata and permissions, mute a published track.

Rooms without members (and without group call media) for their ``empty_timeout`` are
finished by a state timer, so any node may close them. Actions on users' sockets go out
as control commands through the state, so they reach sockets on every node; each node
applies them to its own sockets with :meth:`RoomLifecycle.on_control`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, RoomInfo, RoomType, now_ms

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.hub import Hub

log = logging.getLogger("switchboard.rooms")

EMPTY = "room-empty"


class MediaControl(Protocol):
    """What the SFU offers the room API for a connection's group call participant."""

    async def evict(self, conn: Connection, room_id: str, reason: str) -> None: ...

    async def apply_permissions(
        self, conn: Connection, room_id: str, permissions: dict[str, bool]
    ) -> None: ...

    async def server_mute(
        self, conn: Connection, room_id: str, track_id: str, muted: bool
    ) -> None: ...

    async def drain_node(self, node: str, deadline: float) -> bool: ...


def room_wire(room: RoomInfo) -> dict[str, Any]:
    return {
        "roomId": room.id,
        "type": room.type,
        "capacity": room.capacity,
        "emptyTimeout": room.empty_timeout,
        "metadata": room.metadata,
        "createdAt": room.created_at,
        "createdBy": room.created_by,
    }


class RoomLifecycle:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.media: MediaControl | None = None
        hub.timers.on(EMPTY, self._empty_expired)
        hub.state.control_handler = self.on_control

    # -- opening --------------------------------------------------------------------------

    async def ensure(self, room_id: str) -> RoomInfo:
        """The room's record; a first join opens a room the API did not create, unless
        ``room_auto_create`` is off.

        While the shared state is away, joins go on (this node serves its own users) with
        the default settings: capacity and permissions are not enforced meanwhile."""
        default = RoomInfo(
            id=room_id, created_at=now_ms(), empty_timeout=self.hub.settings.room_empty_timeout
        )
        try:
            room = await self.hub.state.get_room(room_id)
            if room is not None:
                return room
            if not self.hub.settings.room_auto_create:
                raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist")
            if await self.create(default):
                return default
            # Another node opened it meanwhile: use its record.
            return await self.hub.state.get_room(room_id) or default
        except HubError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE:
                raise
            return default

    async def create(self, room: RoomInfo) -> bool:
        """Store the record and announce ``room_started``; ``False`` if it existed."""
        if not await self.hub.state.create_room(room):
            return False
        self.hub.webhooks.emit("room_started", room.id, {"room": room_wire(room)})
        log.info("room opened", extra={"room": room.id, "by": room.created_by})
        # Nobody may ever come: the empty timeout runs from the start.
        await self.hub.timers.arm(room.empty_timeout, EMPTY, room.id)
        return True

    def new_room(
        self,
        room_id: str,
        *,
        type_: RoomType,
        capacity: int | None,
        empty_timeout: float | None,
        metadata: dict[str, Any],
    ) -> RoomInfo:
        timeout = self.hub.settings.room_empty_timeout if empty_timeout is None else empty_timeout
        return RoomInfo(
            id=room_id,
            created_at=now_ms(),
            type=type_,
            capacity=capacity,
            empty_timeout=timeout,
            metadata=metadata,
            created_by="api",
        )

    # -- membership hooks (from the room and SFU services) --------------------------------

    def member_joined(self, room_id: str, user_id: str, name: str) -> None:
        self.hub.webhooks.emit(
            "participant_joined", room_id, {"roomId": room_id, "userId": user_id, "name": name}
        )

    async def member_left(self, room_id: str, user_id: str, reason: str) -> None:
        self.hub.webhooks.emit(
            "participant_left", room_id, {"roomId": room_id, "userId": user_id, "reason": reason}
        )
        await self.check_empty(room_id)

    async def check_empty(self, room_id: str) -> None:
        """Start the empty timeout once the last member and group call participant left.
        (With the shared state away it is not started: the room then stays open.)"""
        if await self.hub.state.room_members(room_id):
            return
        try:
            room = await self.hub.state.get_room(room_id)
        except HubError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE:
                raise
            return
        if room is None or room.media_participants():
            return
        await self.hub.timers.arm(room.empty_timeout, EMPTY, room_id)

    async def _empty_expired(self, room_id: str) -> None:
        room = await self.hub.state.get_room(room_id)
        if room is None or room.media_participants():
            return
        if await self.hub.state.room_members(room_id):
            return
        if await self.hub.state.delete_room(room_id) is not None:
            self._finished(room, "empty_timeout")

    def _finished(self, room: RoomInfo, reason: str) -> None:
        duration = round((now_ms() - room.created_at) / 1000, 3)
        self.hub.webhooks.emit(
            "room_finished",
            room.id,
            {"room": room_wire(room), "reason": reason, "duration": duration},
        )
        log.info("room finished", extra={"room": room.id, "reason": reason})

    # -- what the API does ------------------------------------------------------------------

    async def users_in(self, room: RoomInfo) -> list[str]:
        members = [m.user_id for m in await self.hub.state.room_members(room.id)]
        media = [p["userId"] for p in room.media_participants()]
        return list(dict.fromkeys([*members, *media]))

    async def open_calls(self, room_id: str) -> list[Call]:
        """The room's calls that have not ended (calls started in its conversation)."""
        calls = await self.hub.state.list_calls()
        return [c for c in calls if c.conversation_id == room_id and c.state != "ended"]

    async def close(self, room_id: str, reason: str) -> RoomInfo:
        """Everyone leaves with ``room:closed``, the room's calls end, the record goes."""
        room = await self.hub.state.delete_room(room_id)
        if room is None:
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist")
        await self.hub.timers.disarm(EMPTY, room_id)
        users = await self.users_in(room)
        command = {"op": "remove", "roomId": room_id, "reason": reason, "event": "room:closed"}
        await self.hub.state.send_control(users, command)
        for call in await self.open_calls(room_id):
            await self.hub.calls.end_call(call.id, "room_closed")
        self._finished(room, reason)
        return room

    async def kick(self, room: RoomInfo, user_id: str, reason: str) -> None:
        if user_id not in await self.users_in(room):
            raise HubError(ErrorCode.NOT_IN_ROOM, f"user '{user_id}' is not in room '{room.id}'")
        command = {"op": "remove", "roomId": room.id, "reason": reason, "event": "room:removed"}
        await self.hub.state.send_control([user_id], command)

    async def set_metadata(self, room_id: str, metadata: dict[str, Any]) -> RoomInfo:
        def apply(room: RoomInfo) -> None:
            room.metadata = metadata

        room, _ = await self._update(room_id, apply)
        await self.hub.to_rooms(
            [room_id], "room:metadata-updated", {"roomId": room_id, "metadata": metadata}
        )
        return room

    async def set_permissions(
        self, room_id: str, user_id: str, changes: dict[str, bool]
    ) -> dict[str, bool]:
        def apply(room: RoomInfo) -> dict[str, bool]:
            current = room.permissions.setdefault(user_id, {})
            current.update(changes)
            return {
                "canPublish": room.permission(user_id, "canPublish"),
                "canSubscribe": room.permission(user_id, "canSubscribe"),
            }

        _, permissions = await self._update(room_id, apply)
        command = {"op": "permissions", "roomId": room_id, "permissions": permissions}
        await self.hub.state.send_control([user_id], command)
        return permissions

    async def mute_track(self, room: RoomInfo, user_id: str, track_id: str, muted: bool) -> None:
        owned = any(
            p["userId"] == user_id and any(t["trackId"] == track_id for t in p.get("tracks", []))
            for p in room.media_participants()
        )
        if not owned:
            raise HubError(
                ErrorCode.TRACK_NOT_FOUND,
                f"user '{user_id}' publishes no track '{track_id}' in room '{room.id}'",
            )
        command = {"op": "mute", "roomId": room.id, "trackId": track_id, "muted": muted}
        await self.hub.state.send_control([user_id], command)

    async def _update(self, room_id: str, mutate: Any) -> tuple[RoomInfo, Any]:
        try:
            return await self.hub.state.update_room(room_id, mutate)
        except KeyError:
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist") from None

    # -- control commands, run on the node holding the sockets ---------------------------

    async def on_control(self, users: list[str], command: dict[str, Any]) -> None:
        room_id = command["roomId"]
        for user_id in users:
            for conn in self.hub.state.local_connections_of(user_id):
                await self._apply_control(conn, room_id, command)

    async def _apply_control(self, conn: Connection, room_id: str, command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "remove":
            reason = command["reason"]
            if room_id in conn.rooms:
                conn.send(command["event"], {"roomId": room_id, "reason": reason})
                await self.hub.rooms.leave(conn, room_id, reason)
            if self.media is not None:
                await self.media.evict(conn, room_id, reason)
        elif op == "permissions" and self.media is not None:
            await self.media.apply_permissions(conn, room_id, command["permissions"])
        elif op == "mute" and self.media is not None:
            await self.media.server_mute(conn, room_id, command["trackId"], command["muted"])
