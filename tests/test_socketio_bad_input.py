"""Malformed Engine.IO / Socket.IO input, sent raw: each gets its protocol-correct answer
(an HTTP refusal, a CONNECT_ERROR, an ``error`` event or an error in the ack), and other
clients are untouched. Also the server's pings and the bounded poll queue."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.sfu_helpers import wait_until

STATE_KINDS = ("memory",)


class RawSession:
    """One Engine.IO session spoken by hand, over polling or WebSocket."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.sid = ""
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    def params(self, transport: str = "polling", **extra: str) -> dict[str, str]:
        session = {"sid": self.sid} if self.sid else {}
        return {"EIO": "4", "transport": transport, **session, **extra}

    async def open_polling(self) -> dict[str, Any]:
        async with self.http.get(self.url, params=self.params()) as resp:
            assert resp.status == 200
            body = await resp.text()
        assert body[0] == "0"
        opened = orjson.loads(body[1:])
        self.sid = opened["sid"]
        return opened

    async def open_ws(self) -> dict[str, Any]:
        self.ws = await self.http.ws_connect(self.url, params=self.params("websocket"))
        opened = await self.ws.receive_str()
        assert opened[0] == "0"
        return orjson.loads(opened[1:])

    async def post(self, *packets: str | bytes) -> tuple[int, str]:
        parts = [p.encode() if isinstance(p, str) else p for p in packets]
        async with self.http.post(self.url, params=self.params(), data=b"\x1e".join(parts)) as r:
            return r.status, await r.text()

    async def get(self) -> tuple[int, list[str]]:
        async with self.http.get(self.url, params=self.params()) as resp:
            return resp.status, (await resp.text()).split("\x1e")

    async def recv(self, timeout: float = 5.0) -> str:
        """The next WebSocket packet, answering the server's pings on the way."""
        assert self.ws is not None
        while True:
            msg = await self.ws.receive(timeout=timeout)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return f"<{msg.type.name}>"
            if msg.data == "2":
                await self.ws.send_str("3")
                continue
            return msg.data

    async def connect_ws(self, token: str) -> None:
        await self.open_ws()
        assert self.ws is not None
        await self.ws.send_str("40" + orjson.dumps({"token": token}).decode())
        assert (await self.recv()).startswith('40{"sid":')
        assert (await self.recv()).startswith('42["session:ready"')

    async def error_event(self) -> dict[str, Any]:
        packet = await self.recv()
        assert packet.startswith("42["), packet
        name, data = orjson.loads(packet[2:])
        assert name == "error", packet
        return data


@pytest.fixture
async def raw(http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    sessions: list[RawSession] = []

    def make(hub: Any) -> RawSession:
        session = RawSession(http, hub.base + "/socket.io/")
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        if session.ws is not None:
            await session.ws.close()


async def test_http_refusals_use_engine_io_codes(hub: Any, http: aiohttp.ClientSession) -> None:
    url = hub.base + "/socket.io/"
    cases = [
        ({"EIO": "3", "transport": "polling"}, 400, 5),
        ({"transport": "polling"}, 400, 5),
        ({"EIO": "4", "transport": "flash"}, 400, 0),
        ({"EIO": "4", "transport": "polling", "sid": "nope"}, 400, 1),
    ]
    for params, status, code in cases:
        async with http.get(url, params=params) as resp:
            assert resp.status == status
            assert (await resp.json())["code"] == code
    async with http.post(url, params=cases[-1][0], data=b"40") as resp:
        assert resp.status == 400 and (await resp.json())["code"] == 1


async def test_origins_and_cors(hub_factory: Any, http: aiohttp.ClientSession) -> None:
    hub = await hub_factory(allowed_origins=["https://chat.example"])
    url = hub.base + "/socket.io/"
    params = {"EIO": "4", "transport": "polling"}
    async with http.get(url, params=params, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["code"] == 4
    good = {"Origin": "https://chat.example"}
    async with http.get(url, params=params, headers=good) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "https://chat.example"
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    preflight = {**good, "Access-Control-Request-Headers": "content-type"}
    async with http.options(url, params=params, headers=preflight) as resp:
        assert resp.status == 204
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]


async def test_packets_before_connect_end_the_session(hub: Any, raw: Any) -> None:
    for first in ('42["ping",{}]', "9", '4{"x"', "0"):
        session = raw(hub)
        await session.open_ws()
        await session.ws.send_str(first)
        refusal = await session.recv()
        assert refusal.startswith("44"), (first, refusal)
        assert orjson.loads(refusal[2:])["data"]["code"] in (
            "invalid_state",
            "invalid_envelope",
            "invalid_json",
        )
        assert await session.recv() == "<CLOSE>"


async def test_unknown_namespace_is_refused_the_socketio_way(hub: Any, raw: Any) -> None:
    session = raw(hub)
    await session.open_ws()
    await session.ws.send_str('40/admin,{"token":"x"}')
    assert await session.recv() == '44/admin,{"message":"Invalid namespace"}'
    # The session is still usable for the default namespace.
    await session.ws.send_str("40" + orjson.dumps({"token": hub.token("alice")}).decode())
    assert (await session.recv()).startswith('40{"sid":')


async def test_malformed_packets_of_a_connected_client(hub: Any, raw: Any) -> None:
    bystander = await hub.connect_in("bob", "r1", rooms=("r1",))
    session = raw(hub)
    await session.connect_ws(hub.token("alice", rooms=["r1"]))
    ws = session.ws
    cases: list[tuple[str | bytes, str]] = [
        ("9", "invalid_envelope"),
        ("49", "invalid_envelope"),
        ('42["room:join",', "invalid_json"),
        ('42{"type":"room:join"}', "invalid_envelope"),
        ("42[]", "invalid_envelope"),
        ('42["room:join","r1"]', "invalid_envelope"),
        ('42/admin,["room:join",{"roomId":"r1"}]', "invalid_envelope"),
        ('40{"token":"again"}', "invalid_state"),
        ('44{"message":"x"}', "invalid_envelope"),
        (b"\x00\x01", "unsupported_frame"),
        ("42" + orjson.dumps(["ping", {"pad": "x" * 300_000}]).decode(), "frame_too_large"),
        ('42["nope:nope",{}]', "unknown_event"),
    ]
    for packet, code in cases:
        if isinstance(packet, bytes):
            await ws.send_bytes(packet)
        else:
            await ws.send_str(packet)
        assert (await session.error_event())["code"] == code, packet
    # A binary event: refused (in its ack), and its attachment swallowed, not refused again.
    await ws.send_str('451-7["room:join",{"roomId":{"_placeholder":true,"num":0}}]')
    await ws.send_bytes(b"r1")
    ack = await session.recv()
    assert ack.startswith("437[")
    assert orjson.loads(ack[3:])[0]["error"]["code"] == "unsupported_frame"
    await ws.send_str('423["ping",{}]')
    assert (await session.recv()).startswith('433[{"serverTime":')
    # Nobody else noticed; the bystander still hears the room.
    await ws.send_str('42["room:join",{"roomId":"r1"}]')
    await bystander.expect("room:member-joined")
    assert not [e for e in bystander.events if e["type"] == "error"]


async def test_too_many_errors_disconnect_for_good(hub_factory: Any, raw: Any) -> None:
    hub = await hub_factory(error_budget=3)
    session = raw(hub)
    await session.connect_ws(hub.token("alice"))
    for _ in range(4):
        await session.ws.send_str("42[")
    packets = []
    while not packets or packets[-1][0] != "<":
        packets.append(await session.recv())
    assert packets[-2:] == ["41", "<CLOSE>"], packets
    # The server lets go of it once its disconnect hooks are through.
    await wait_until(lambda: hub.hub.state.delivery.local_connection_count() == 0, 5)


async def test_polling_body_limits_and_overlapping_polls(hub: Any, raw: Any) -> None:
    session = raw(hub)
    opened = await session.open_polling()
    status, _ = await session.post("4" + "x" * (opened["maxPayload"] + 10))
    assert status == 413
    assert (await session.get())[1] == ["1"]  # the session is over
    session = raw(hub)
    await session.open_polling()
    status, _ = await session.post("40" + orjson.dumps({"token": hub.token("alice")}).decode())
    assert status == 200
    status, packets = await session.get()
    assert packets[0].startswith('40{"sid":')
    first = asyncio.ensure_future(session.get())
    await asyncio.sleep(0.1)
    status, _ = await session.get()
    assert status == 400
    assert (await first)[1] == ["1"]
    status, _ = await session.post('42["ping",{}]')
    assert status == 400  # closed
    status, _ = await session.post(b"b" + base64.b64encode(b"x"))
    assert status == 400


async def test_bad_polling_bodies(hub: Any, raw: Any) -> None:
    session = raw(hub)
    await session.open_polling()
    status, _ = await session.post(b"b!!notbase64")
    assert status == 400
    session = raw(hub)
    await session.open_polling()
    status, _ = await session.post(b"\xff\xfe")
    assert status == 400


async def test_server_pings_and_closes_silent_clients(hub_factory: Any, raw: Any) -> None:
    hub = await hub_factory(heartbeat_interval=0.2, socketio_ping_timeout=0.3)
    answering, silent = raw(hub), raw(hub)
    await answering.connect_ws(hub.token("alice"))
    listening = asyncio.ensure_future(answer_pings(answering, 1.5))
    await silent.connect_ws(hub.token("bob"))
    assert await silent.ws.receive_str(timeout=2) == "2"
    msg = await silent.ws.receive(timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert await listening >= 4  # pings answered, and still open
    users = [c.user_id for c in hub.hub.state.delivery.local_connections()]
    assert users == ["alice"]


async def answer_pings(session: RawSession, seconds: float) -> int:
    """Answer the server's pings for a while; how many came."""
    assert session.ws is not None
    loop = asyncio.get_running_loop()
    deadline, pings = loop.time() + seconds, 0
    while (remaining := deadline - loop.time()) > 0:
        try:
            msg = await session.ws.receive(timeout=remaining)
        except TimeoutError:
            break
        assert msg.type is aiohttp.WSMsgType.TEXT and msg.data == "2", msg
        await session.ws.send_str("3")
        pings += 1
    return pings


async def test_a_poller_that_stops_polling_is_dropped(hub_factory: Any, raw: Any) -> None:
    hub = await hub_factory(send_buffer_limit=4096)
    session = raw(hub)
    await session.open_polling()
    await session.post("40" + orjson.dumps({"token": hub.token("alice", rooms=["r1"])}).decode())
    await session.post('42["room:join",{"roomId":"r1"}]')
    fanout = hub.hub.state.delivery
    for i in range(10):
        await fanout.to_rooms(["r1"], "room:updated", {"roomId": "r1", "pad": "x" * 1000, "i": i})
    await asyncio.sleep(0.05)
    assert fanout.local_connection_count() == 0
    assert hub.hub.metrics is not None


async def test_rate_limit_answers_in_the_ack(hub_factory: Any, raw: Any) -> None:
    hub = await hub_factory(rate_limit_per_second=1.0, rate_limit_burst=2)
    session = raw(hub)
    await session.connect_ws(hub.token("alice"))
    for ack_id in (1, 2, 3):
        await session.ws.send_str(f'42{ack_id}["ping",{{}}]')
    replies = [await session.recv() for _ in range(3)]
    assert replies[0].startswith('431[{"serverTime"') and replies[1].startswith("432[")
    (refused,) = orjson.loads(replies[2][3:])
    assert refused["error"]["code"] == "rate_limited" and refused["error"]["retryAfterMs"] > 0


def masked_text_frame(payload: bytes) -> bytes:
    """A client WebSocket text frame (masked with a zero key, so the payload is as is)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x81, 0x80 | length])
    else:
        header = bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + payload


async def test_websocket_slow_reader_is_dropped(hub_factory: Any) -> None:
    """A Socket.IO client that stops reading is cut off at the send-buffer bound (4008),
    as on ``/ws``; the sender learns it, nobody else is affected."""
    hub = await hub_factory(
        send_buffer_limit=64 * 1024, rate_limit_per_second=10_000, rate_limit_burst=10_000
    )
    caller = await hub.connect("alice")
    reader, writer = await asyncio.open_connection(hub.server.host, hub.server.port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"101" in head.split(b"\r\n")[0]
    writer.write(masked_text_frame(b"40" + orjson.dumps({"token": hub.token("bob")})))
    await writer.drain()
    for _ in range(100):
        if hub.hub.state.local_connection_count() == 2:
            break
        await asyncio.sleep(0.02)
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
    for _ in range(60):
        if hub.hub.state.local_connection_count() == 1:
            break
        await asyncio.sleep(0.05)
    assert hub.hub.state.local_connection_count() == 1
    closes = hub.hub.metrics.registry.get_sample_value(
        "switchboard_server_closes_total", {"code": "4008"}
    )
    assert closes == 1
    writer.close()
    assert (await caller.request("ping"))["serverTime"] > 0
