"""The route tables: every WebSocket event and every HTTP path a node serves, in one place.

Nothing registers itself: each row names the handler and (for events) the model its
``data`` is validated against. The room API's own table is :mod:`signaling.api.routes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from media.web import web_routes
from signaling import events as e
from signaling.api.openapi import document_routes
from signaling.hub import Route, call_or_room, ping

if TYPE_CHECKING:
    from config import Settings
    from media.signaling import SfuSignaling
    from signaling.api.endpoints import RoomApi
    from signaling.calls import CallService
    from signaling.http_api import NodeHttp
    from signaling.membership import MembershipService
    from signaling.message_proxy import MessageProxy
    from signaling.presence import PresenceService
    from signaling.read_receipts import ReadReceipts
    from signaling.socketio.endpoint import SocketIoEndpoint
    from signaling.token_refresh import TokenRefresh
    from signaling.typing_indicators import TypingService
    from signaling.websocket import WebSocketEndpoint


def event_routes(
    *,
    presence: PresenceService,
    membership: MembershipService,
    typing: TypingService,
    calls: CallService,
    sfu: SfuSignaling,
    tokens: TokenRefresh,
    receipts: ReadReceipts,
    messages: MessageProxy,
) -> dict[str, Route]:
    """Inbound event type -> (payload model, handler). docs/protocol.md describes each."""
    toggles = {
        "media:toggle-audio": ("audio", None),
        "media:toggle-video": ("video", None),
        "screen:share-start": ("screen", True),
        "screen:share-stop": ("screen", False),
    }
    toggle_routes = {
        name: Route(
            e.MediaToggle if fixed is None else e.CallOrRoomRef,
            call_or_room(calls.toggle(kind, fixed), sfu.on_toggle, kind, fixed),
        )
        for name, (kind, fixed) in toggles.items()
    }
    return {
        "ping": Route(e.Empty, ping),
        "session:refresh": Route(e.SessionRefresh, tokens.on_refresh),
        "presence:update": Route(e.PresenceUpdate, presence.on_update),
        "presence:query": Route(e.PresenceQuery, presence.on_query),
        "room:join": Route(e.RoomJoin, membership.on_join),
        "room:leave": Route(e.RoomRef, membership.on_leave),
        "message:typing": Route(e.MessageTyping, typing.on_typing),
        "message:read": Route(e.MessageRead, receipts.on_read),
        "message:send": Route(e.MessageSend, messages.on_send),
        "call:initiate": Route(e.CallInitiate, calls.on_initiate),
        "call:accept": Route(e.CallRef, calls.on_accept),
        "call:reject": Route(e.CallReject, calls.on_reject),
        "call:end": Route(e.CallRef, calls.on_end),
        "call:reconnected": Route(e.CallRef, calls.on_reconnected),
        "call:offer": Route(e.CallSdp, calls.relay("call:offer", "sdp")),
        "call:answer": Route(e.CallSdp, calls.relay("call:answer", "sdp")),
        "call:ice-candidate": Route(e.CallIce, calls.relay("call:ice-candidate", "candidate")),
        **toggle_routes,
        "sfu:join": Route(e.RoomRef, sfu.on_join),
        "sfu:resume": Route(e.SfuResume, sfu.on_resume),
        "sfu:leave": Route(e.RoomRef, sfu.on_leave),
        "sfu:publish": Route(e.SfuPublish, sfu.on_publish),
        "sfu:answer": Route(e.SfuAnswer, sfu.on_answer),
        "sfu:ice-candidate": Route(e.SfuIce, sfu.on_ice),
        "sfu:mute": Route(e.SfuMute, sfu.on_mute),
        "sfu:subscription": Route(e.SfuSubscription, sfu.on_subscription),
        "sfu:stats": Route(e.RoomRef, sfu.on_stats),
    }


def http_routes(
    *,
    websocket: WebSocketEndpoint,
    socketio: SocketIoEndpoint | None,
    node_http: NodeHttp,
    room_api: RoomApi,
    settings: Settings,
) -> list[web.RouteDef]:
    """Every HTTP path: the WebSocket upgrade, the Socket.IO endpoint, health and metrics,
    the room API and its document, the browser SDK and demo."""
    return [
        web.get("/ws", websocket.handle),
        *(socketio.routes() if socketio is not None else ()),
        *node_http.routes(),
        *room_api.routes(),
        *document_routes(),
        *web_routes(settings),
    ]
