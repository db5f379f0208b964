"""Room records and what the chat backend can do to a room: open it (by the API or by a
first join), close it, kick, change metadata and permissions, mute a published track.

Rooms without members (and without group call media) for their ``empty_timeout`` are
finished by a state timer, so any node may close them. Actions on users' sockets go out
as control commands through the delivery, so they reach sockets on every node; each node
applies them to its own sockets (:mod:`signaling.room_control`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, RoomInfo, RoomType, now_ms

if TYPE_CHECKING:
    from config.hub import HubSettings
    from signaling.calls import CallService
    from signaling.state.calls import CallStore
    from signaling.state.delivery import Delivery
    from signaling.state.membership import MembershipStore
    from signaling.state.room_records import RoomRecords
    from signaling.state.timers import TimerStore
    from signaling.webhooks.outbox import WebhookOutbox

log = logging.getLogger("switchboard.rooms")
T = TypeVar("T")

EMPTY = "room-empty"


def room_wire(room: RoomInfo) -> dict[str, Any]:
    return {
        "roomId": room.id,
        "type": room.type,
        "capacity": room.capacity,
        "emptyTimeout": room.empty_timeout,
        "metadata": room.metadata,
        "createdAt": room.created_at,
        "createdBy": room.created_by,
        "maxPublishBitrate": room.max_publish_bitrate,
    }


class RoomLifecycle:
    def __init__(
        self,
        *,
        records: RoomRecords,
        membership: MembershipStore,
        call_store: CallStore,
        calls: CallService,
        timers: TimerStore,
        delivery: Delivery,
        webhooks: WebhookOutbox,
        settings: HubSettings,
    ) -> None:
        self.records = records
        self.membership = membership
        self.call_store = call_store
        self.calls = calls
        self.timers = timers
        self.delivery = delivery
        self.webhooks = webhooks
        self.settings = settings

    # -- opening --------------------------------------------------------------------------

    async def ensure(self, room_id: str) -> RoomInfo:
        """The room's record; a first join opens a room the API did not create, unless
        ``room_auto_create`` is off.

        While the shared state is away, joins go on (this node serves its own users) with
        the default settings: capacity and permissions are not enforced meanwhile."""
        default = RoomInfo(
            id=room_id, created_at=now_ms(), empty_timeout=self.settings.room_empty_timeout
        )
        try:
            room = await self.records.get(room_id)
            if room is not None:
                return room
            if not self.settings.room_auto_create:
                raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist")
            if await self.create(default):
                return default
            # Another node opened it meanwhile: use its record.
            return await self.records.get(room_id) or default
        except HubError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE:
                raise
            return default

    async def create(self, room: RoomInfo) -> bool:
        """Store the record and announce ``room_started``; ``False`` if it existed."""
        if not await self.records.create(room):
            return False
        self.webhooks.emit("room_started", room.id, {"room": room_wire(room)})
        log.info("room opened", extra={"room": room.id, "by": room.created_by})
        # Nobody may ever come: the empty timeout runs from the start.
        await self.timers.arm(EMPTY, [room.id], room.empty_timeout)
        return True

    def new_room(
        self,
        room_id: str,
        *,
        type_: RoomType,
        capacity: int | None,
        empty_timeout: float | None,
        metadata: dict[str, Any],
        max_publish_bitrate: int = 0,
    ) -> RoomInfo:
        timeout = self.settings.room_empty_timeout if empty_timeout is None else empty_timeout
        return RoomInfo(
            id=room_id,
            created_at=now_ms(),
            type=type_,
            capacity=capacity,
            empty_timeout=timeout,
            metadata=metadata,
            created_by="api",
            max_publish_bitrate=max_publish_bitrate,
        )

    # -- membership hooks (from the membership and SFU services) --------------------------

    def member_joined(self, room_id: str, user_id: str, name: str) -> None:
        self.webhooks.emit(
            "participant_joined", room_id, {"roomId": room_id, "userId": user_id, "name": name}
        )

    async def member_left(
        self, room_id: str, user_id: str, reason: str, members_left: int | None = None
    ) -> None:
        self.webhooks.emit(
            "participant_left", room_id, {"roomId": room_id, "userId": user_id, "reason": reason}
        )
        await self.check_empty(room_id, members_left)

    async def check_empty(self, room_id: str, members_left: int | None = None) -> None:
        """Start the empty timeout once the last member and group call participant left.
        (With the shared state away it is not started: the room then stays open.)
        ``members_left``: how many members the room has, when the caller just read it."""
        if members_left is None:
            members_left = len(await self.membership.members(room_id))
        if members_left:
            return
        try:
            room = await self.records.get(room_id)
        except HubError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE:
                raise
            return
        if room is None or room.media_participants():
            return
        await self.timers.arm(EMPTY, [room_id], room.empty_timeout)

    async def empty_expired(self, room_id: str) -> None:
        """The ``room-empty`` timer fired: finish the room if it is still empty."""
        room = await self.records.get(room_id)
        if room is None or room.media_participants():
            return
        if await self.membership.members(room_id):
            return
        if await self.records.delete(room_id) is not None:
            self._finished(room, "empty_timeout")

    def _finished(self, room: RoomInfo, reason: str) -> None:
        duration = round((now_ms() - room.created_at) / 1000, 3)
        self.webhooks.emit(
            "room_finished",
            room.id,
            {"room": room_wire(room), "reason": reason, "duration": duration},
        )
        log.info("room finished", extra={"room": room.id, "reason": reason})

    # -- what the API does ------------------------------------------------------------------

    async def room(self, room_id: str) -> RoomInfo:
        room = await self.records.get(room_id)
        if room is None:
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist")
        return room

    async def users_in(self, room: RoomInfo) -> list[str]:
        members = [m.user_id for m in await self.membership.members(room.id)]
        media = [p["userId"] for p in room.media_participants()]
        return list(dict.fromkeys([*members, *media]))

    async def open_calls(self, room_id: str) -> list[Call]:
        """The room's calls that have not ended (calls started in its conversation)."""
        calls = await self.call_store.list_all()
        return [c for c in calls if c.conversation_id == room_id and c.state != "ended"]

    async def close(self, room_id: str, reason: str) -> RoomInfo:
        """Everyone leaves with ``room:closed``, the room's calls end, the record goes."""
        room = await self.records.delete(room_id)
        if room is None:
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist")
        await self.timers.disarm(EMPTY, [room_id])
        users = await self.users_in(room)
        command = {"op": "remove", "roomId": room_id, "reason": reason, "event": "room:closed"}
        await self.delivery.send_control(users, command)
        for call in await self.open_calls(room_id):
            await self.calls.end_call(call.id, "room_closed")
        self._finished(room, reason)
        return room

    async def kick(self, room: RoomInfo, user_id: str, reason: str) -> None:
        if user_id not in await self.users_in(room):
            raise HubError(ErrorCode.NOT_IN_ROOM, f"user '{user_id}' is not in room '{room.id}'")
        command = {"op": "remove", "roomId": room.id, "reason": reason, "event": "room:removed"}
        await self.delivery.send_control([user_id], command)

    async def set_metadata(self, room_id: str, metadata: dict[str, Any]) -> RoomInfo:
        def apply(room: RoomInfo) -> None:
            room.metadata = metadata

        room, _ = await self._update(room_id, apply)
        await self.delivery.to_room_recorded(
            room_id, "room:metadata-updated", {"roomId": room_id, "metadata": metadata}
        )
        return room

    async def set_permissions(
        self, room_id: str, user_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Change a user's permissions (``canPublish``, ``canSubscribe``) and publish cap
        (``maxPublishBitrate``, 0: none of its own); its devices in the group call are
        told. Returns them all, the cap as in force: the user's, else the room's."""

        def apply(room: RoomInfo) -> dict[str, Any]:
            current = room.permissions.setdefault(user_id, {})
            current.update(changes)
            return {
                "canPublish": room.permission(user_id, "canPublish"),
                "canSubscribe": room.permission(user_id, "canSubscribe"),
                "maxPublishBitrate": room.publish_cap(user_id) or room.max_publish_bitrate,
            }

        _, permissions = await self._update(room_id, apply)
        command = {"op": "permissions", "roomId": room_id, "permissions": permissions}
        await self.delivery.send_control([user_id], command)
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
        await self.delivery.send_control([user_id], command)

    async def _update(self, room_id: str, mutate: Callable[[RoomInfo], T]) -> tuple[RoomInfo, T]:
        try:
            return await self.records.update(room_id, mutate)
        except KeyError:
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist") from None
