"""Room membership (``room:join``/``room:leave``): joins are per connection, membership
events per user.

``room:member-joined`` fires when a user's first device joins and ``room:member-left``
when the last one leaves, so multi-device users do not spam their rooms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from signaling.protocol import ErrorCode, HubError
from signaling.state.history import Position, Recovery
from signaling.state.models import Member

if TYPE_CHECKING:
    from signaling.events import RoomJoin, RoomRef
    from signaling.room_lifecycle import RoomLifecycle
    from signaling.state.delivery import Fanout
    from signaling.state.history import RoomHistory
    from signaling.state.membership import Entry, MembershipStore
    from signaling.state.models import PresenceInfo, RemoteConnection, RoomInfo
    from signaling.state.presence import PresenceStore
    from signaling.typing_indicators import TypingService
    from signaling.websocket import Connection


class MembershipService:
    def __init__(
        self,
        *,
        store: MembershipStore,
        presence: PresenceStore,
        history: RoomHistory,
        fanout: Fanout,
        lifecycle: RoomLifecycle,
        typing: TypingService,
        max_rooms_per_connection: int,
    ) -> None:
        self.store = store
        self.presence = presence
        self.history = history
        self.fanout = fanout
        self.lifecycle = lifecycle
        self.typing = typing
        self.max_rooms = max_rooms_per_connection

    async def on_join(self, conn: Connection, payload: RoomJoin) -> dict[str, Any]:
        room_id = payload.roomId
        room, entry = await self._admit(conn, room_id)
        first, members = entry if entry is not None else (False, await self.store.members(room_id))
        presence = await self.presence.get([m.user_id for m in members])
        if first:  # announced with the presence the answer read (no read of its own)
            await self._announce_joined(conn, room_id, presence.get(conn.user_id))
        # Read after joining (and after the arrival it records): what is recorded from now
        # on reaches the connection live, what was before is in the history (a client
        # drops offsets it already has).
        since = None
        if payload.recover is not None:
            since = Position(payload.recover.epoch, payload.recover.offset)
        found = await self._recovery(conn, room_id, since)
        answer = {
            "roomId": room_id,
            "type": room.type,
            "metadata": room.metadata,
            "members": [{"name": m.name, **presence[m.user_id].to_wire()} for m in members],
            "position": {"room": room_id, **found.position.to_wire()},
        }
        if since is None:
            return answer
        return {
            **answer,
            "recovered": found.recovered,
            "publications": [orjson.Fragment(p) for p in found.publications],
        }

    async def resume(self, conn: Connection, room_id: str, since: Position | None) -> Recovery:
        """Join again for a resuming session (Socket.IO's connection-state recovery): what
        was recorded in the room after ``since`` (just the position without it)."""
        await self._enter(conn, room_id)
        return await self._recovery(conn, room_id, since)

    async def _recovery(self, conn: Connection, room_id: str, since: Position | None) -> Recovery:
        """What was recorded in the room after ``since`` (just the position without it),
        which becomes the connection's position there."""
        if since is None:
            found = Recovery(await self.history.position(room_id), False)
        else:
            found = await self.history.recover(room_id, since, conn.user_id)
        conn.room_position(room_id, found.position.epoch, found.position.offset)
        return found

    async def _enter(self, conn: Connection, room_id: str) -> RoomInfo:
        room, entry = await self._admit(conn, room_id)
        if entry is not None and entry.first_device:
            await self._announce_joined(conn, room_id)
        return room

    async def _admit(self, conn: Connection, room_id: str) -> tuple[RoomInfo, Entry | None]:
        """Join the device to the room: what the join found (whether it is the user's
        first device there, to be announced by the caller), or ``None`` if the device
        was in already."""
        if not conn.principal.may_join(room_id):
            raise HubError(ErrorCode.FORBIDDEN, f"token does not allow joining room '{room_id}'")
        room = await self.lifecycle.ensure(room_id)
        if room_id not in conn.rooms:
            if len(conn.rooms) >= self.max_rooms:
                raise HubError(
                    ErrorCode.TOO_MANY_ROOMS, f"at most {self.max_rooms} rooms per connection"
                )
            entry = await self.store.join(
                room_id, Member(conn.user_id, conn.name), conn.id, room.capacity
            )
            conn.rooms.add(room_id)
            return room, entry
        return room, None

    async def _announce_joined(
        self, conn: Connection, room_id: str, me: PresenceInfo | None = None
    ) -> None:
        self.lifecycle.member_joined(room_id, conn.user_id, conn.name)
        if me is None:
            me = (await self.presence.get([conn.user_id]))[conn.user_id]
        await self.fanout.to_room_recorded(
            room_id,
            "room:member-joined",
            {"roomId": room_id, "name": conn.name, **me.to_wire()},
            exclude_user=conn.user_id,
        )

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
        await self.typing.clear(conn, room_id)
        conn.rooms.discard(room_id)
        departure = await self.store.leave(room_id, conn.user_id, conn.id)
        if departure.last_device:
            await self.fanout.to_room_recorded(
                room_id,
                "room:member-left",
                {"roomId": room_id, "userId": conn.user_id},
                exclude_user=conn.user_id,
            )
            await self.lifecycle.member_left(room_id, conn.user_id, reason, departure.members_left)
