"""Room API handlers: pushing events to sockets, presence, join tokens, calls (routes in
:mod:`signaling.api.routes`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import TypeAdapter

from signaling.api.endpoints import Context, Query
from signaling.api.models import (
    BatchOut,
    CallList,
    CallOut,
    Delivery,
    EventIn,
    PresenceList,
    PresenceOut,
    RoomEventIn,
    TokenIn,
    TokenOut,
    UsersEventIn,
)
from signaling.call_transitions import call_duration
from signaling.events import RoomId, UserId
from signaling.protocol import ErrorCode, HubError
from signaling.tokens import mint_token

if TYPE_CHECKING:
    from signaling.state.models import Call


def call_out(call: Call) -> CallOut:
    return CallOut(**call.to_wire(), duration=call_duration(call))


# -- pushing events -------------------------------------------------------------------------


async def push_to_room(ctx: Context) -> Delivery:
    """Send an event (e.g. message:new) to every socket joined to a room, recorded in the
    room's history so members who were away recover it."""
    body: EventIn = ctx.body
    count = await ctx.api.fanout.to_room_recorded(ctx.params["roomId"], body.type, body.data)
    return Delivery(delivered=count)


async def push_to_user(ctx: Context) -> Delivery:
    """Send an event to every device of one user."""
    body: EventIn = ctx.body
    count = await ctx.api.fanout.to_users([ctx.params["userId"]], body.type, body.data)
    return Delivery(delivered=count)


async def push_to_users(ctx: Context) -> Delivery:
    """Send one event to every device of each listed user (encoded once)."""
    body: UsersEventIn = ctx.body
    count = await ctx.api.fanout.to_users(body.userIds, body.type, body.data)
    return Delivery(delivered=count)


async def push_batch(ctx: Context) -> BatchOut:
    """Up to 100 events, each to a room or to users, sent in the given order."""
    results = []
    for item in ctx.body.events:
        if isinstance(item, RoomEventIn):
            count = await ctx.api.fanout.to_room_recorded(item.roomId, item.type, item.data)
        else:
            count = await ctx.api.fanout.to_users(item.userIds, item.type, item.data)
        results.append(Delivery(delivered=count))
    return BatchOut(results=results)


# -- presence -------------------------------------------------------------------------------


async def query_presence(ctx: Context) -> PresenceList:
    """Status and last-seen of up to 1000 users."""
    wanted = list(dict.fromkeys(ctx.body.userIds))
    found = await ctx.api.presence.get(wanted)
    return PresenceList(users=[PresenceOut(**found[u].to_wire()) for u in wanted])


# -- tokens ---------------------------------------------------------------------------------


async def create_token(ctx: Context) -> TokenOut:
    """Mint a client join token (the same format as `switchboard token`)."""
    body: TokenIn = ctx.body
    secret = ctx.api.settings.jwt_secret
    assert secret is not None
    issued = int(time.time())
    token = mint_token(
        secret.get_secret_value(),
        body.userId,
        name=body.name,
        rooms=body.rooms,
        presence=body.presence,
        ttl=body.ttl,
        now=issued,
    )
    return TokenOut(token=token, userId=body.userId, expiresAt=issued + body.ttl)


# -- calls ----------------------------------------------------------------------------------

CALL_QUERY = (
    Query("state", TypeAdapter(Literal["ringing", "active", "ended"]), "only calls in this state"),
    Query("userId", TypeAdapter(UserId), "only calls with this participant"),
    Query("conversationId", TypeAdapter(RoomId), "only calls of this conversation"),
)


async def list_calls(ctx: Context) -> CallList:
    """Calls still held: active, ringing, and ended ones within call_history_ttl."""
    q = ctx.query
    calls = await ctx.api.calls.list_all()
    chosen = [
        call_out(c)
        for c in sorted(calls, key=lambda c: c.created_at)
        if ("state" not in q or c.state == q["state"])
        and ("userId" not in q or q["userId"] in c.participants)
        and ("conversationId" not in q or c.conversation_id == q["conversationId"])
    ]
    return CallList(calls=chosen)


async def _call(ctx: Context) -> Call:
    call = await ctx.api.calls.get(ctx.params["callId"])
    if call is None:
        raise HubError(ErrorCode.CALL_NOT_FOUND, f"no call '{ctx.params['callId']}'")
    return call


async def get_call(ctx: Context) -> CallOut:
    """One call's status and participants."""
    return call_out(await _call(ctx))


async def end_call(ctx: Context) -> CallOut:
    """End a call for everyone (call:ended with the given reason)."""
    call = await ctx.api.call_service.end_call(ctx.params["callId"], ctx.body.reason)
    return call_out(call)
