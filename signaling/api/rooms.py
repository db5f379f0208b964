"""Room API handlers: rooms and their participants (routes in :mod:`signaling.api.routes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from signaling.api.endpoints import ApiServices, Context, Query
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
    RoomMediaOut,
    RoomOut,
)
from signaling.protocol import ErrorCode, HubError
from signaling.room_lifecycle import room_wire

if TYPE_CHECKING:
    from signaling.state.models import RoomInfo

REASON = Query("reason", TypeAdapter(Reason), "told to the clients and in the webhook")


async def _summary(api: ApiServices, room: RoomInfo) -> dict[str, Any]:
    members = await api.membership.members(room.id)
    return {
        **room_wire(room),
        "memberCount": len(members),
        "mediaParticipantCount": len(room.media_participants()),
    }


async def _participants(api: ApiServices, room: RoomInfo) -> list[ParticipantOut]:
    members = {m.user_id: m.name for m in await api.membership.members(room.id)}
    media: dict[str, list[MediaParticipantOut]] = {}
    for entry in room.media_participants():
        media.setdefault(entry["userId"], []).append(MediaParticipantOut.model_validate(entry))
    users = list(dict.fromkeys([*members, *media]))
    presence = await api.presence.get(users)
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


async def create_room(ctx: Context) -> RoomOut:
    """Create a room (it also opens by itself on a first join, with the defaults)."""
    body: RoomCreate = ctx.body
    lifecycle = ctx.api.lifecycle
    room = lifecycle.new_room(
        body.roomId,
        type_=body.type,
        capacity=body.capacity,
        empty_timeout=body.emptyTimeout,
        metadata=body.metadata,
        max_publish_bitrate=body.maxPublishBitrate,
    )
    if not await lifecycle.create(room):
        raise ApiError(409, "room_exists", f"room '{body.roomId}' already exists")
    return RoomOut(**await _summary(ctx.api, room))


async def list_rooms(ctx: Context) -> RoomList:
    """List open rooms."""
    rooms = await ctx.api.records.list_all()
    return RoomList(rooms=[RoomOut(**await _summary(ctx.api, room)) for room in rooms])


async def get_room(ctx: Context) -> RoomDetail:
    """A room with its participants, their presence, its calls and group call media."""
    api = ctx.api
    room = await api.lifecycle.room(ctx.params["roomId"])
    calls = [call_out(c) for c in await api.lifecycle.open_calls(room.id)]
    return RoomDetail(
        **await _summary(api, room),
        participants=await _participants(api, room),
        calls=calls,
        media=[MediaParticipantOut.model_validate(p) for p in room.media_participants()],
        mediaNode=await api.hosts.get(room.id),
    )


async def room_media(ctx: Context) -> RoomMediaOut:
    """Live statistics of a room's group call media, from its media node: every published
    track, and for simulcast videos each layer's size, bitrate and viewers."""
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    media = await ctx.api.media.room_media(room.id)
    if media is None:
        return RoomMediaOut(roomId=room.id, mediaNode=None, tracks=[])
    return RoomMediaOut(roomId=room.id, **media)


async def update_room(ctx: Context) -> RoomOut:
    """Replace a room's metadata; its members get room:metadata-updated."""
    room = await ctx.api.lifecycle.set_metadata(ctx.params["roomId"], ctx.body.metadata)
    return RoomOut(**await _summary(ctx.api, room))


async def close_room(ctx: Context) -> RoomOut:
    """Close a room: everyone leaves it with room:closed and its calls end."""
    reason = ctx.query.get("reason", "closed")
    room = await ctx.api.lifecycle.close(ctx.params["roomId"], reason)
    return RoomOut(**room_wire(room), memberCount=0, mediaParticipantCount=0)


# -- participants ---------------------------------------------------------------------------


async def list_participants(ctx: Context) -> ParticipantList:
    """Members and group call participants of a room, with presence and permissions."""
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    return ParticipantList(participants=await _participants(ctx.api, room))


async def get_participant(ctx: Context) -> ParticipantOut:
    """One participant of a room."""
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    user_id = ctx.params["userId"]
    for participant in await _participants(ctx.api, room):
        if participant.userId == user_id:
            return participant
    raise HubError(ErrorCode.NOT_IN_ROOM, f"user '{user_id}' is not in room '{room.id}'")


async def remove_participant(ctx: Context) -> None:
    """Kick a user: every device leaves the room (room:removed) and its group call."""
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    reason = ctx.query.get("reason", KickBody().reason)
    await ctx.api.lifecycle.kick(room, ctx.params["userId"], reason)


async def mute_track(ctx: Context) -> None:
    """Mute (or unmute) a published track: the SFU stops forwarding it, everyone is told."""
    body: MuteBody = ctx.body
    room = await ctx.api.lifecycle.room(ctx.params["roomId"])
    await ctx.api.lifecycle.mute_track(
        room, ctx.params["userId"], ctx.params["trackId"], body.muted
    )


async def update_permissions(ctx: Context) -> PermissionsOut:
    """Allow or forbid publishing and subscribing (also before the user joins)."""
    body: PermissionsBody = ctx.body
    changes = {
        name: value
        for name, value in (
            ("canPublish", body.canPublish),
            ("canSubscribe", body.canSubscribe),
            ("maxPublishBitrate", body.maxPublishBitrate),
        )
        if value is not None
    }
    room_id, user_id = ctx.params["roomId"], ctx.params["userId"]
    permissions = await ctx.api.lifecycle.set_permissions(room_id, user_id, changes)
    return PermissionsOut(roomId=room_id, userId=user_id, **permissions)
