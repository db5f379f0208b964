"""Socket.IO clients on two nodes of a cluster: a polling session lives on the node that
opened it (sticky by ``sid``), WebSocket clients need nothing sticky, and events, rooms
and calls cross nodes whatever protocol each side speaks."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster import Cluster, token
from tests.redis_server import RedisServer
from tests.sio_driver import NodeSocketIO
from tests.test_socketio_bad_input import RawSession


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, redis_server.url)
    yield c
    await c.close()


@pytest.fixture
async def sio() -> AsyncIterator[NodeSocketIO]:
    driver = await NodeSocketIO.start()
    yield driver
    await driver.close()


async def test_socketio_across_two_nodes(cluster: Cluster, sio: NodeSocketIO) -> None:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    await sio.connected("poller", a.base, token("alice", rooms=["team"]), transports=["polling"])
    await sio.connected("ws", b.base, token("carol", rooms=["team"]), transports=["websocket"])
    bob = await b.connect("bob", "team", rooms=["team"])
    await sio.emit("poller", "room:join", {"roomId": "team"}, ack=True)
    await sio.emit("ws", "room:join", {"roomId": "team"}, ack=True)
    joined = await sio.expect("poller", "room:member-joined")
    assert joined[0]["userId"] == "carol"
    await bob.send("message:typing", {"conversationId": "team", "isTyping": True})
    for ref in ("poller", "ws"):
        assert (await sio.expect(ref, "user:typing"))[0]["userId"] == "bob"
    await sio.emit("poller", "message:typing", {"conversationId": "team", "isTyping": True})
    assert (await bob.expect("user:typing"))["userId"] == "alice"
    assert (await sio.expect("ws", "user:typing"))[0]["userId"] == "alice"

    # A 1:1 call from the poller on node a to the /ws client on node b.
    await sio.emit("poller", "call:initiate", {"callType": "audio", "participants": ["bob"]})
    (initiated,) = await sio.expect("poller", "call:initiated")
    incoming = await bob.expect("call:incoming")
    assert incoming["callId"] == initiated["callId"]
    await bob.request("call:accept", {"callId": incoming["callId"]})
    await sio.expect("poller", "call:accepted")
    offer = {"callId": incoming["callId"], "to": "bob", "sdp": "v=0"}
    await sio.emit("poller", "call:offer", offer)
    assert (await bob.expect("call:offer"))["from"] == "alice"


async def test_polling_session_is_sticky(cluster: Cluster) -> None:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    async with aiohttp.ClientSession() as http:
        session = RawSession(http, a.base + "/socket.io/")
        await session.open_polling()
        session.url = b.base + "/socket.io/"
        async with http.get(session.url, params=session.params()) as resp:
            assert resp.status == 400
            assert await resp.json() == {"code": 1, "message": "Session ID unknown"}


RECOVERY = {"SWITCHBOARD_SOCKETIO_RECOVERY": "30"}


async def test_a_session_dropped_on_one_node_resumes_on_another(
    cluster: Cluster, sio: NodeSocketIO
) -> None:
    a, b = await asyncio.gather(cluster.start("a", **RECOVERY), cluster.start("b", **RECOVERY))
    await sio.connected("alice", a.base, token("alice", rooms=["team"]), transports=["websocket"])
    await sio.expect("alice", "connect")
    await sio.emit("alice", "room:join", {"roomId": "team"}, ack=True)
    bob = await b.connect("bob", "team", rooms=["team"])
    joined, offset = await sio.expect("alice", "room:member-joined")
    assert joined["userId"] == "bob" and isinstance(offset, str)

    sio.drop("alice", b.base)  # the network drops; the balancer picks node b next
    await sio.expect("alice", "disconnect")
    carol = await b.connect("carol", "team", rooms=["team"])
    await carol.request("room:leave", {"roomId": "team"})
    _, _, recovered = await sio.expect("alice", "connect", timeout=10)
    assert recovered is True
    assert (await sio.expect("alice", "room:member-joined"))[0]["userId"] == "carol"
    assert (await sio.expect("alice", "room:member-left"))[0]["userId"] == "carol"
    await bob.send("message:typing", {"conversationId": "team", "isTyping": True})
    assert (await sio.expect("alice", "user:typing"))[0]["userId"] == "bob"

    # A rolling restart: node b drains (1012), alice comes back on node a, nothing lost.
    sio.point("alice", a.base)
    b.signal(signal.SIGTERM)
    await sio.expect("alice", "disconnect", timeout=10)
    dave = await a.connect("dave", "team", rooms=["team"])
    _, _, recovered = await sio.expect("alice", "connect", timeout=15)
    assert recovered is True
    assert (await sio.expect("alice", "room:member-joined"))[0]["userId"] == "dave"
    await asyncio.sleep(0.3)
    assert sio.take("alice", "room:member-joined") == []
    await dave.close()
