"""Every class of bad input gets a precise error; the offender alone suffers; nothing breaks."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.client import HubClient


async def bystander_ok(hub, watcher: HubClient, talker: HubClient) -> None:
    """A second pair of clients is still served: request/ack and room fan-out both work."""
    await watcher.request("ping")
    await talker.request("message:typing", {"conversationId": "lobby", "isTyping": True})
    assert (await watcher.expect("user:typing"))["userId"] == talker.ready["userId"]
    await talker.request("message:typing", {"conversationId": "lobby", "isTyping": False})
    await watcher.expect("user:typing")


@pytest.fixture
async def bystanders(hub):
    watcher = await hub.connect_in("watcher", "lobby")
    talker = await hub.connect_in("talker", "lobby")
    await watcher.expect("room:member-joined")
    return watcher, talker


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        ("{not json", "invalid_json", "not valid JSON"),
        ("[1, 2, 3]", "invalid_envelope", "JSON object"),
        ('{"data": {}}', "invalid_envelope", "'type'"),
        ('{"type": "ping", "data": [1]}', "invalid_envelope", "'data'"),
        ('{"type": "ping", "id": {"x": 1}}', "invalid_envelope", "'id'"),
        ('{"type": "chat:explode", "id": "q1"}', "unknown_event", "chat:explode"),
        ('{"type": "room:join", "id": 7, "data": {"roomId": 5}}', "invalid_payload", "data.roomId"),
        ('{"type": "room:join", "id": 8, "data": {}}', "invalid_payload", "data.roomId"),
    ],
)
async def test_malformed_frames_get_precise_errors(hub, bystanders, raw, code, fragment):
    client = await hub.connect("alice")
    await client.send_raw(raw)
    err = await client.expect("error")
    assert err["code"] == code
    assert fragment in err["message"]
    assert (await client.request("ping"))["serverTime"] > 0
    await bystander_ok(hub, *bystanders)


async def test_error_echoes_request_id(hub):
    client = await hub.connect("alice")
    await client.send_raw('{"type": "nope", "id": "abc", "data": {}}')
    await client.send_raw('{"type": "ping", "id": 42}')
    await asyncio.sleep(0.2)
    frames = [f for f in client.events if f["type"] in {"error", "ack"}]
    assert frames[0] == {
        "type": "error",
        "id": "abc",
        "data": {"code": "unknown_event", "message": "unknown event type 'nope'"},
    }
    assert frames[1]["type"] == "ack" and frames[1]["id"] == 42


async def test_oversized_and_binary_frames(hub_factory):
    hub = await hub_factory(max_frame_bytes=1024)
    watcher = await hub.connect_in("watcher", "lobby")
    talker = await hub.connect_in("talker", "lobby")
    await watcher.expect("room:member-joined")
    client = await hub.connect("alice")
    await client.send("ping", {"pad": "x" * 5000})
    err = await client.expect("error")
    assert err["code"] == "frame_too_large" and "1024" in err["message"]
    await client.send_raw(b"\x00\x01binary")
    assert (await client.expect("error"))["code"] == "unsupported_frame"
    assert await client.request("ping")
    # Far beyond the hard cap the frame is not even buffered: close 1009.
    await client.send("ping", {"pad": "x" * 300_000})
    assert await client.wait_closed() == 1009
    await bystander_ok(hub, watcher, talker)


async def test_flood_is_rate_limited_then_closed(hub_factory):
    hub = await hub_factory(
        rate_limit_per_second=10, rate_limit_burst=10, error_budget=5, error_refill_per_second=0.5
    )
    watcher = await hub.connect_in("watcher", "lobby")
    talker = await hub.connect_in("talker", "lobby")
    await watcher.expect("room:member-joined")
    flooder = await hub.connect("flooder")
    for i in range(200):
        if flooder.closed.is_set():
            break
        await flooder.send("ping", id_=i)
    code = await flooder.wait_closed()
    assert code == 1008
    errors = [f["data"] for f in flooder.events if f["type"] == "error"]
    assert errors and all(e["code"] == "rate_limited" for e in errors)
    assert errors[0]["retryAfterMs"] > 0
    acks = [f for f in flooder.events if f["type"] == "ack"]
    assert len(acks) >= 10  # the burst was served before limiting kicked in
    await bystander_ok(hub, watcher, talker)
    limited = hub.hub.metrics.registry.get_sample_value(
        "switchboard_errors_total", {"code": "rate_limited"}
    )
    assert limited >= 5


async def test_close_reason_names_the_offence(hub_factory):
    hub = await hub_factory(error_budget=3)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(hub.ws_url, params={"access_token": hub.token("x")})
        for _ in range(5):
            await ws.send_str("garbage")
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert ws.close_code == 1008
        assert msg.extra == "too many errors (last: invalid_json)"


async def test_slow_reader_is_dropped(hub_factory):
    """A callee that stops reading is cut off at the send-buffer bound (close 4008)."""
    hub = await hub_factory(
        send_buffer_limit=64 * 1024, rate_limit_per_second=10_000, rate_limit_burst=10_000
    )
    watcher = await hub.connect_in("watcher", "lobby")
    talker = await hub.connect_in("talker", "lobby")
    await watcher.expect("room:member-joined")
    caller = await hub.connect("alice")
    # A raw socket with a tiny receive window that never reads.
    reader, writer = await asyncio.open_connection(hub.server.host, hub.server.port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    token = hub.token("bob")
    writer.write(
        f"GET /ws?access_token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"101" in head.split(b"\r\n")[0]
    ack = await caller.request("call:initiate", {"callType": "video", "participants": ["bob"]})
    sdp = "a=x" * 15_000
    dropped = False
    for _ in range(400):
        try:
            await caller.request("call:offer", {"callId": ack["callId"], "to": "bob", "sdp": sdp})
        except Exception as exc:
            assert getattr(exc, "code", None) == "peer_unavailable"
            dropped = True
            break
    assert dropped, "slow reader was never dropped"
    for _ in range(60):  # the dropped socket gets 2 s to flush its close frame
        if hub.hub.state.local_connection_count() == 3:
            break
        await asyncio.sleep(0.05)
    assert hub.hub.state.local_connection_count() == 3
    closes = hub.hub.metrics.registry.get_sample_value(
        "switchboard_server_closes_total", {"code": "4008"}
    )
    assert closes == 1
    writer.close()
    await bystander_ok(hub, watcher, talker)


async def test_silent_client_is_closed_by_heartbeat(hub_factory):
    hub = await hub_factory(heartbeat_interval=0.3)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            hub.ws_url, params={"access_token": hub.token("ghost")}, autoping=False
        )
        assert hub.hub.state.local_connection_count() == 1
        # Never answer pings: after interval + interval/2 the server gives up.
        deadline = asyncio.get_running_loop().time() + 3
        while hub.hub.state.local_connection_count():
            assert asyncio.get_running_loop().time() < deadline, "silent client not closed"
            await asyncio.sleep(0.05)
        assert hub.hub.state.local_connection_count() == 0
        await ws.close()


async def test_answering_client_survives_heartbeat(hub_factory):
    hub = await hub_factory(heartbeat_interval=0.2)
    client = await hub.connect("alive")
    await asyncio.sleep(1.0)
    assert (await client.request("ping"))["serverTime"]


envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(
            st.sampled_from(
                [
                    "ping",
                    "room:join",
                    "room:leave",
                    "message:typing",
                    "presence:update",
                    "presence:query",
                    "call:initiate",
                    "call:accept",
                    "call:offer",
                    "call:ice-candidate",
                    "media:toggle-audio",
                    "screen:share-start",
                ]
            ),
            st.text(max_size=10),
            st.integers(),
            st.none(),
        ),
        "id": st.one_of(st.text(max_size=5), st.integers(), st.none(), st.booleans()),
        "data": st.one_of(
            st.dictionaries(
                st.sampled_from(
                    [
                        "roomId",
                        "conversationId",
                        "isTyping",
                        "status",
                        "userIds",
                        "callId",
                        "to",
                        "sdp",
                        "candidate",
                        "enabled",
                        "participants",
                        "callType",
                    ]
                ),
                st.one_of(
                    st.text(max_size=8),
                    st.integers(),
                    st.booleans(),
                    st.none(),
                    st.lists(st.text(max_size=4), max_size=3),
                ),
                max_size=4,
            ),
            st.integers(),
            st.text(max_size=5),
            st.none(),
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(envelopes, min_size=1, max_size=8))
async def test_fuzzed_envelopes_never_break_the_hub(frames):
    """Random envelopes: never an internal error, and the connection keeps answering."""
    from aiohttp.test_utils import TestServer

    from config import Settings
    from signaling.tokens import mint_token
    from switchboard.app import create_app
    from tests.conftest import FAST, SECRET

    app = create_app(Settings(**{**FAST, "error_budget": 1000}))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        client = await HubClient.connect(str(server.make_url("/ws")), mint_token(SECRET, "fz"))
        for frame in frames:
            await client.send_raw(json.dumps(frame))
        assert (await client.request("ping"))["serverTime"] > 0
        codes = {f["data"]["code"] for f in client.events if f["type"] == "error"}
        assert "internal_error" not in codes
        await client.close()
    finally:
        await server.close()
