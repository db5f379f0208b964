"""Room API: rooms and their participants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from signaling.api.endpoints import AUTH_ERRORS, BODY_ERRORS, Context, Query, endpoint
from signaling.api.errors import ApiError
from signaling.api.messaging import call_out
from signaling.api.models import (
    KickBody,
    MediaParticipantOut,
    MuteBody,
    ParticipantList,
    ParticipantOut,
    PermissionsBody,
    PermissionsOut,
    Reason,
    RoomCreate,
    RoomDetail,
    RoomList,
    RoomOut,
    RoomUpdate,
)
from signaling.protocol import ErrorCode, HubError
from signaling.room_lifecycle import room_wire

if TYPE_CHECKING:
    from signaling.hub import Hub
    from signaling.state.models import RoomInfo

REASON = Query("reason", TypeAdapter(Reason), "told to the clients and in the webhook")


async def _room(hub: Hub, room_id: str) -> RoomInfo:
    room = await hub.state.get_room(room_id)
    if room is None:
        raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' does not exist")
    return room


async def _summary(hub: Hub, room: RoomInfo) -> dict[str, Any]:
    members = await hub.state.room_members(room.id)
    return {
        **room_wire(room),
        "memberCount": len(members),
        "mediaParticipantCount": len(room.media_participants()),
    }


async def _participants(hub: Hub, room: RoomInfo) -> list[ParticipantOut]:
    members = {m.user_id: m.name for m in await hub.state.room_members(room.id)}
    media: dict[str, list[MediaParticipantOut]] = {}
    for entry in room.media_participants():
        media.setdefault(entry["userId"], []).append(MediaParticipantOut.model_validate(entry))
    users = list(dict.fromkeys([*members, *media]))
    presence = await hub.state.get_presence(users)
    out = []
    for user_id in users:
        name = members.get(user_id) or media[user_id][0].name
        out.append(
            ParticipantOut(
                **presence[user_id].to_wire(),
                name=name,
                member=user_id in members,
                canPublish=room.permission(user_id, "canPublish"),
                canSubscribe=room.permission(user_id, "canSubscribe"),
                media=media.get(user_id, []),
            )
        )
    return out


# -- rooms ----------------------------------------------------------------------------------


@endpoint(
    "POST",
    "/rooms",
    tag="rooms",
    body=RoomCreate,
    response=RoomOut,
    status=201,
    errors=(*BODY_ERRORS, 409),
)
async def create_room(ctx: Context) -> RoomOut:
    """Create a room (it also opens by itself on a first join, with the defaults)."""
    body: RoomCreate = ctx.body
    lifecycle = ctx.hub.room_lifecycle
    room = lifecycle.new_room(
        body.roomId,
        type_=body.type,
        capacity=body.capacity,
        empty_timeout=body.emptyTimeout,
        metadata=body.metadata,
    )
    if not await lifecycle.create(room):
        raise ApiError(409, "room_exists", f"room '{body.roomId}' already exists")
    return RoomOut(**await _summary(ctx.hub, room))


@endpoint("GET", "/rooms", tag="rooms", response=RoomList, errors=AUTH_ERRORS)
async def list_rooms(ctx: Context) -> RoomList:
    """List open rooms."""
    rooms = await ctx.hub.state.list_rooms()
    return RoomList(rooms=[RoomOut(**await _summary(ctx.hub, room)) for room in rooms])


@endpoint("GET", "/rooms/{roomId}", tag="rooms", response=RoomDetail, errors=(*AUTH_ERRORS, 404))
async def get_room(ctx: Context) -> RoomDetail:
    """A room with its participants, their presence, its calls and group call media."""
    hub = ctx.hub
    room = await _room(hub, ctx.params["roomId"])
    calls = [call_out(c) for c in await hub.room_lifecycle.open_calls(room.id)]
    return RoomDetail(
        **await _summary(hub, room),
        participants=await _participants(hub, room),
        calls=calls,
        media=[MediaParticipantOut.model_validate(p) for p in room.media_participants()],
        mediaNode=await hub.state.get_room_host(room.id),
    )


@endpoint(
    "PATCH",
    "/rooms/{roomId}",
    tag="rooms",
    body=RoomUpdate,
    response=RoomOut,
    errors=(*BODY_ERRORS, 404),
)
async def update_room(ctx: Context) -> RoomOut:
    """Replace a room's metadata; its members get room:metadata-updated."""
    room = await ctx.hub.room_lifecycle.set_metadata(ctx.params["roomId"], ctx.body.metadata)
    return RoomOut(**await _summary(ctx.hub, room))


@endpoint(
    "DELETE",
    "/rooms/{roomId}",
    tag="rooms",
    response=RoomOut,
    query=(REASON,),
    errors=(*AUTH_ERRORS, 404),
)
async def close_room(ctx: Context) -> RoomOut:
    """Close a room: everyone leaves it with room:closed and its calls end."""
    reason = ctx.query.get("reason", "closed")
    room = await ctx.hub.room_lifecycle.close(ctx.params["roomId"], reason)
    return RoomOut(**room_wire(room), memberCount=0, mediaParticipantCount=0)


# -- participants ---------------------------------------------------------------------------


@endpoint(
    "GET",
    "/rooms/{roomId}/participants",
    tag="participants",
    response=ParticipantList,
    errors=(*AUTH_ERRORS, 404),
)
async def list_participants(ctx: Context) -> ParticipantList:
    """Members and group call participants of a room, with presence and permissions."""
    room = await _room(ctx.hub, ctx.params["roomId"])
    return ParticipantList(participants=await _participants(ctx.hub, room))


@endpoint(
    "GET",
    "/rooms/{roomId}/participants/{userId}",
    tag="participants",
    response=ParticipantOut,
    errors=(*AUTH_ERRORS, 404),
)
async def get_participant(ctx: Context) -> ParticipantOut:
    """One participant of a room."""
    room = await _room(ctx.hub, ctx.params["roomId"])
    user_id = ctx.params["userId"]
    for participant in await _participants(ctx.hub, room):
        if participant.userId == user_id:
            return participant
    raise HubError(ErrorCode.NOT_IN_ROOM, f"user '{user_id}' is not in room '{room.id}'")


@endpoint(
    "DELETE",
    "/rooms/{roomId}/participants/{userId}",
    tag="participants",
    query=(REASON,),
    status=204,
    errors=(*AUTH_ERRORS, 404),
)
async def remove_participant(ctx: Context) -> None:
    """Kick a user: every device leaves the room (room:removed) and its group call."""
    room = await _room(ctx.hub, ctx.params["roomId"])
    reason = ctx.query.get("reason", KickBody().reason)
    await ctx.hub.room_lifecycle.kick(room, ctx.params["userId"], reason)


@endpoint(
    "POST",
    "/rooms/{roomId}/participants/{userId}/tracks/{trackId}/mute",
    tag="participants",
    body=MuteBody,
    body_optional=True,
    status=204,
    errors=(*BODY_ERRORS, 404),
)
async def mute_track(ctx: Context) -> None:
    """Mute (or unmute) a published track: the SFU stops forwarding it, everyone is told."""
    room = await _room(ctx.hub, ctx.params["roomId"])
    await ctx.hub.room_lifecycle.mute_track(
        room, ctx.params["userId"], ctx.params["trackId"], ctx.body.muted
    )


@endpoint(
    "PATCH",
    "/rooms/{roomId}/participants/{userId}/permissions",
    tag="participants",
    body=PermissionsBody,
    response=PermissionsOut,
    errors=(*BODY_ERRORS, 404),
)
async def update_permissions(ctx: Context) -> PermissionsOut:
    """Allow or forbid publishing and subscribing (also before the user joins)."""
    body: PermissionsBody = ctx.body
    changes = {
        name: value
        for name, value in (("canPublish", body.canPublish), ("canSubscribe", body.canSubscribe))
        if value is not None
    }
    room_id, user_id = ctx.params["roomId"], ctx.params["userId"]
    permissions = await ctx.hub.room_lifecycle.set_permissions(room_id, user_id, changes)
    return PermissionsOut(roomId=room_id, userId=user_id, **permissions)
