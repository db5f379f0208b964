"""Rooms (conversations): joins are per connection, membership events per user.

``room:member-joined`` fires when a user's first device joins and ``room:member-left``
when the last one leaves, so multi-device users do not spam their rooms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Member

if TYPE_CHECKING:
    from signaling.connection import Connection
    from signaling.events import RoomRef
    from signaling.hub import Hub
    from signaling.state.models import RemoteConnection


class RoomService:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def on_join(self, conn: Connection, payload: RoomRef) -> dict[str, Any]:
        room_id = payload.roomId
        if not conn.principal.may_join(room_id):
            raise HubError(ErrorCode.FORBIDDEN, f"token does not allow joining room '{room_id}'")
        state = self.hub.state
        room = await self.hub.room_lifecycle.ensure(room_id)
        if room_id not in conn.rooms:
            if len(conn.rooms) >= self.hub.settings.max_rooms_per_connection:
                raise HubError(
                    ErrorCode.TOO_MANY_ROOMS,
                    f"at most {self.hub.settings.max_rooms_per_connection} rooms per connection",
                )
            first = await state.join_room(
                room_id, Member(conn.user_id, conn.principal.name), conn.id, room.capacity
            )
            conn.rooms.add(room_id)
            if first:
                self.hub.room_lifecycle.member_joined(room_id, conn.user_id, conn.principal.name)
                me = (await state.get_presence([conn.user_id]))[conn.user_id]
                await self.hub.to_rooms(
                    [room_id],
                    "room:member-joined",
                    {"roomId": room_id, "name": conn.principal.name, **me.to_wire()},
                    exclude_user=conn.user_id,
                )
        members = await state.room_members(room_id)
        presence = await state.get_presence([m.user_id for m in members])
        return {
            "roomId": room_id,
            "type": room.type,
            "metadata": room.metadata,
            "members": [{"name": m.name, **presence[m.user_id].to_wire()} for m in members],
        }

    async def on_leave(self, conn: Connection, payload: RoomRef) -> dict[str, Any]:
        if payload.roomId not in conn.rooms:
            raise HubError(ErrorCode.NOT_IN_ROOM, f"not joined to room '{payload.roomId}'")
        await self.leave(conn, payload.roomId, "left")
        return {"roomId": payload.roomId}

    async def connection_gone(self, conn: Connection | RemoteConnection) -> None:
        for room_id in list(conn.rooms):
            await self.leave(conn, room_id, "disconnected")

    async def leave(self, conn: Connection | RemoteConnection, room_id: str, reason: str) -> None:
        """Take one device out of the room (``reason`` goes to the webhook)."""
        await self.hub.typing.clear(conn, room_id)
        conn.rooms.discard(room_id)
        last = await self.hub.state.leave_room(room_id, conn.user_id, conn.id)
        if last:
            await self.hub.to_rooms(
                [room_id],
                "room:member-left",
                {"roomId": room_id, "userId": conn.user_id},
                exclude_user=conn.user_id,
            )
            await self.hub.room_lifecycle.member_left(room_id, conn.user_id, reason)
