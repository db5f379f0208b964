"""The Socket.IO endpoint with socket.io-client 4.8 from npm (a client nobody here wrote):
both transports and the upgrade, refused tokens, presence, typing, rooms, a 1:1 call with a
``/ws`` client, acks, the replaced service's reply events, reconnects and a drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.protocol import CloseCode
from signaling.socketio.session import SioConnection
from switchboard.app import drain
from tests.sio_driver import NodeSocketIO

WS_ONLY = {"transports": ["websocket"]}


@pytest.fixture
async def sio() -> AsyncIterator[NodeSocketIO]:
    driver = await NodeSocketIO.start()
    yield driver
    await driver.close()


async def test_websocket_only_client_gets_session_ready(hub: Any, sio: NodeSocketIO) -> None:
    ready = await sio.connected("a", hub.base, hub.token("alice"), **WS_ONLY)
    assert ready["userId"] == "alice"
    sid, transport, recovered = await sio.expect("a", "connect")
    assert transport == "websocket"
    assert sid == ready["connectionId"]
    assert not recovered  # recovery is off by default (no pid)


async def test_default_client_polls_then_upgrades(hub: Any, sio: NodeSocketIO) -> None:
    await sio.connected("a", hub.base, hub.token("alice", rooms=["r1"]))
    assert (await sio.expect("a", "transport")) == ["polling"]
    assert (await sio.expect("a", "upgrade", timeout=10)) == ["websocket"]
    joined = await sio.emit("a", "room:join", {"roomId": "r1"}, ack=True)
    assert joined["roomId"] == "r1"
    # The hub connection, made while polling, now writes broadcasts to the WebSocket
    # without going through the session.
    (conn,) = hub.hub.state.delivery.user_conns["alice"].values()
    assert conn.wire is conn.session.wire is not None
    assert conn.frames is conn.session.frames
    bob = await hub.connect_in("bob", "r1", rooms=("r1",))
    await bob.send("message:typing", {"conversationId": "r1", "isTyping": True})
    typing = (await sio.expect("a", "user:typing"))[0]
    assert typing["userId"] == "bob" and typing["conversationId"] == "r1"
    assert typing["isTyping"] is True


async def test_polling_only_client_works(hub: Any, sio: NodeSocketIO) -> None:
    await sio.connected("a", hub.base, hub.token("alice", rooms=["r1"]), transports=["polling"])
    await sio.emit("a", "room:join", {"roomId": "r1"}, ack=True)
    bob = await hub.connect_in("bob", "r1", rooms=("r1",))
    await bob.send("message:typing", {"conversationId": "r1", "isTyping": True})
    assert (await sio.expect("a", "user:typing"))[0]["userId"] == "bob"
    await sio.emit("a", "message:typing", {"conversationId": "r1", "isTyping": True})
    assert (await bob.expect("user:typing"))["userId"] == "alice"


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_refused_tokens_get_connect_error_with_the_ws_codes(
    hub: Any, sio: NodeSocketIO, transports: list[str]
) -> None:
    cases = {
        "bad": ("not-a-jwt", "token_malformed"),
        "expired": (hub.token("alice", ttl=-60), "token_expired"),
        "forged": (hub.token("alice")[:-4] + "AAAA", "token_invalid_signature"),
    }
    for ref, (token, _) in cases.items():
        sio.connect(ref, hub.base, auth={"token": token}, transports=transports)
    sio.connect("none", hub.base, transports=transports)
    for ref, (_, code) in [*cases.items(), ("none", (None, "token_missing"))]:
        message, data = await sio.expect(ref, "connect_error")
        assert message == code
        assert data["code"] == code and data["message"]
    # CONNECT_ERROR does not make socket.io-client reconnect, and nothing was connected.
    await asyncio.sleep(0.3)
    assert not sio.take("none", "reconnect_attempt")
    assert hub.hub.state.delivery.local_connection_count() == 0


async def test_presence_and_rooms_between_protocols(hub: Any, sio: NodeSocketIO) -> None:
    await sio.connected("a", hub.base, hub.token("alice", rooms=["r1"]), **WS_ONLY)
    await sio.emit("a", "room:join", {"roomId": "r1"}, ack=True)
    bob = await hub.connect_in("bob", "r1", rooms=("r1",))
    joined = (await sio.expect("a", "room:member-joined"))[0]
    assert joined["userId"] == "bob" and joined["roomId"] == "r1"
    await sio.emit("a", "presence:update", {"status": "away"})
    changed = await bob.expect("presence:changed", where=lambda d: d["userId"] == "alice")
    assert changed["status"] == "away"
    await bob.request("room:leave", {"roomId": "r1"})
    left = (await sio.expect("a", "room:member-left"))[0]
    assert left["userId"] == "bob"
    await bob.request("room:join", {"roomId": "r1"})
    sio.disconnect("a")
    offline = await bob.expect("presence:changed", where=lambda d: d["status"] == "offline")
    assert offline["userId"] == "alice"


async def test_acks_carry_what_ws_acks_and_errors_carry(hub: Any, sio: NodeSocketIO) -> None:
    await sio.connected("a", hub.base, hub.token("alice", rooms=["r1"]), **WS_ONLY)
    pong = await sio.emit("a", "ping", {}, ack=True)
    assert isinstance(pong["serverTime"], int)
    refused = await sio.emit("a", "room:join", {"roomId": "other"}, ack=True)
    assert refused["error"]["code"] == "forbidden"
    invalid = await sio.emit("a", "room:join", {"roomId": 5}, ack=True)
    assert invalid["error"]["code"] == "invalid_payload"
    assert "data.roomId" in invalid["error"]["message"]
    unknown = await sio.emit("a", "nope:nope", {}, ack=True)
    assert unknown["error"]["code"] == "unknown_event"
    # Without an ack the error is an event naming what failed.
    await sio.emit("a", "room:join", {"roomId": "other"})
    (error,) = await sio.expect("a", "error")
    assert error == {
        "code": "forbidden",
        "message": error["message"],
        "event": "room:join",
    }


async def test_call_between_a_socketio_caller_and_a_ws_callee(hub: Any, sio: NodeSocketIO) -> None:
    """The replaced service's web client: emit without acks, listen for the reply events."""
    await sio.connected("alice", hub.base, hub.token("alice"), **WS_ONLY)
    bob = await hub.connect("bob")
    await sio.emit("alice", "call:initiate", {"callType": "video", "participants": ["bob"]})
    (initiated,) = await sio.expect("alice", "call:initiated")
    call_id = initiated["callId"]
    assert initiated["call"]["state"] == "ringing"
    incoming = await bob.expect("call:incoming")
    assert incoming["callId"] == call_id and incoming["from"]["userId"] == "alice"
    await bob.request("call:accept", {"callId": call_id})
    (accepted,) = await sio.expect("alice", "call:accepted")
    assert accepted["userId"] == "bob"
    sdp = {"type": "offer", "sdp": "v=0\r\n"}
    await sio.emit("alice", "call:offer", {"callId": call_id, "to": "bob", "sdp": sdp})
    offer = await bob.expect("call:offer")
    assert offer == {"callId": call_id, "from": "alice", "sdp": sdp}
    await bob.request(
        "call:answer", {"callId": call_id, "to": "alice", "sdp": {"type": "answer", "sdp": "v=0"}}
    )
    (answer,) = await sio.expect("alice", "call:answer")
    assert answer["from"] == "bob" and answer["sdp"]["type"] == "answer"
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}
    relay = {"callId": call_id, "to": "alice", "candidate": candidate}
    await bob.request("call:ice-candidate", relay)
    (ice,) = await sio.expect("alice", "call:ice-candidate")
    assert ice["candidate"] == candidate
    end_of_candidates = {"callId": call_id, "to": "bob", "candidate": None}
    await sio.emit("alice", "call:ice-candidate", end_of_candidates)
    assert (await bob.expect("call:ice-candidate"))["candidate"] is None
    await bob.request("media:toggle-video", {"callId": call_id, "enabled": False})
    (toggled,) = await sio.expect("alice", "peer:video-toggled")
    assert toggled == {"callId": call_id, "userId": "bob", "enabled": False}
    await bob.request("screen:share-start", {"callId": call_id})
    assert (await sio.expect("alice", "screen:sharing-started"))[0]["userId"] == "bob"
    await bob.request("call:end", {"callId": call_id})
    (ended,) = await sio.expect("alice", "call:ended")
    assert ended["callId"] == call_id and ended["reason"] == "hangup"
    # A failing call event without an ack is answered with call:error.
    await sio.emit("alice", "call:accept", {"callId": "call_missing"})
    (error,) = await sio.expect("alice", "call:error")
    assert error["code"] == "call_not_found" and error["event"] == "call:accept"


async def test_ws_caller_and_socketio_callee_who_rejects(hub: Any, sio: NodeSocketIO) -> None:
    await sio.connected("bob", hub.base, hub.token("bob"))
    alice = await hub.connect("alice")
    started = await alice.request("call:initiate", {"callType": "audio", "participants": ["bob"]})
    (incoming,) = await sio.expect("bob", "call:incoming")
    assert incoming["callId"] == started["callId"]
    snapshot = await sio.emit("bob", "call:reject", {"callId": started["callId"]}, ack=True)
    assert snapshot["callId"] == started["callId"]
    rejected = await alice.expect("call:rejected")
    assert rejected["userId"] == "bob"


async def test_client_reconnects_after_the_server_closes_its_transport(
    hub: Any, sio: NodeSocketIO
) -> None:
    await sio.connected("a", hub.base, hub.token("alice"), **WS_ONLY)
    (conn,) = hub.hub.state.delivery.local_connections()
    assert isinstance(conn, SioConnection)
    conn.abort(CloseCode.SLOW_CONSUMER, "test: transport cut")
    assert (await sio.expect("a", "disconnect")) == ["transport close"]
    ready = (await sio.expect("a", "session:ready", timeout=10))[0]
    assert ready["connectionId"] != conn.id
    assert ready["userId"] == "alice"


async def test_server_disconnect_after_too_many_errors_is_final(
    hub_factory: Any, sio: NodeSocketIO
) -> None:
    hub = await hub_factory(error_budget=2)
    await sio.connected("a", hub.base, hub.token("alice"), **WS_ONLY)
    for _ in range(3):
        await sio.emit("a", "nope:nope", {})
    assert (await sio.expect("a", "disconnect")) == ["io server disconnect"]
    await asyncio.sleep(0.5)
    assert not sio.take("a", "reconnect_attempt")


async def test_drain_makes_clients_reconnect_elsewhere(hub: Any, sio: NodeSocketIO) -> None:
    await sio.connected("ws", hub.base, hub.token("alice"), **WS_ONLY)
    await sio.connected("poll", hub.base, hub.token("bob"), transports=["polling"])
    await drain(hub.server.app)
    for ref in ("ws", "poll"):
        assert (await sio.expect(ref, "disconnect")) == ["transport close"], (ref, sio.history)
        # While this node drains, its handshakes are refused, so the client keeps trying.
        await sio.expect(ref, "reconnect_attempt", timeout=5)
        await sio.expect(ref, "connect_error", timeout=5)
