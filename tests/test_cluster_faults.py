"""Faults with real processes: a node killed, Redis restarted (empty), a node stopped
gracefully, Redis missing at start. Asserts what the surviving users see and that nothing
else is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from signaling.api.auth import mint_api_token
from tests.cluster import Cluster, Node, token, wait_healthy
from tests.redis_sentinel import SentinelSetup
from tests.redis_server import RedisServer, free_port

API_KEY, API_SECRET = "backend", "cluster-api-secret-0123456789abcdef0123"
API_ENV = {"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_API_SECRET": API_SECRET}


@pytest.fixture
async def cluster(tmp_path: Path, own_redis: RedisServer) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, own_redis.url)
    yield c
    await c.close()


async def call_status(node: Node, call_id: str, user: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.base}/api/calls/{call_id}/status", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def wait_connected(node: Node, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = await wait_healthy(node)
        if health["state"]["connected"] or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.1)


async def start_call(caller, callee) -> str:
    call = await caller.request("call:initiate", {"callType": "audio", "participants": [callee]})
    return call["callId"]


async def test_killed_node_users_go_offline_and_its_calls_end(cluster):
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    alice = await a.connect("alice", "team")
    carol = await a.connect("carol")
    dave = await a.connect("dave")
    bob = await b.connect("bob", "team", presence=["alice", "carol", "dave"])
    # A call only among the doomed node's users, and one across the two nodes.
    local_call = await start_call(alice, "carol")
    await carol.expect("call:incoming")
    await carol.request("call:accept", {"callId": local_call})
    cross_call = await start_call(bob, "dave")
    await dave.expect("call:incoming")
    await dave.request("call:accept", {"callId": cross_call})
    await bob.expect("call:accepted")

    a.signal(signal.SIGKILL)
    killed = time.monotonic()
    left = await bob.expect("room:member-left", timeout=8)
    detected = time.monotonic() - killed
    assert left["userId"] == "alice"
    offline = await bob.expect("presence:changed", where=lambda d: d["userId"] == "alice")
    assert offline["status"] == "offline"
    # node_dead_after 1.5 s + heartbeat 0.3 s, plus scheduling slack.
    print(f"node death noticed {detected:.2f} s after SIGKILL")
    assert detected < 4.0, detected

    # The cross-node call gets the grace period (3 s), then ends for its survivor.
    lost = await bob.expect("call:peer-disconnected", timeout=5)
    assert lost["userId"] == "dave"
    ended = await bob.expect("call:ended", timeout=6)
    assert ended["reason"] == "connection_lost"
    # The call of the dead node's users alone ends too, with a reason.
    for _ in range(60):
        status = await call_status(b, local_call, "carol")
        if not status["active"]:
            break
        await asyncio.sleep(0.1)
    assert status["state"] == "ended" and status["endReason"] == "connection_lost"
    query = await bob.request("presence:query", {"userIds": ["alice", "carol", "dave"]})
    assert {u["status"] for u in query["users"]} == {"offline"}


async def api(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {mint_api_token(API_KEY, API_SECRET)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{node.base}/api/v1{path}", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_redis_restart_nodes_serve_locally_then_republish(cluster, own_redis):
    a, b = await asyncio.gather(cluster.start("a", **API_ENV), cluster.start("b", **API_ENV))
    # the chat backend configured the room: settings Redis holds, not the nodes
    settings = {"roomId": "team", "capacity": 40, "metadata": {"topic": "launch"}}
    assert (await api(a, "POST", "/rooms", settings))[0] == 201
    path = "/rooms/team/participants/bob/permissions"
    assert (await api(a, "PATCH", path, {"canPublish": False}))[0] == 200
    alice = await a.connect("alice", "team")
    bob = await a.connect("bob", "team")
    dave = await b.connect("dave", "team")
    call_id = await start_call(alice, "dave")
    await dave.expect("call:incoming")
    await dave.request("call:accept", {"callId": call_id})
    await alice.expect("call:accepted")

    own_redis.stop()
    await asyncio.sleep(0.6)
    # Outage: same-node users keep each other (presence, room events)...
    await alice.request("presence:update", {"status": "away"})
    changed = await bob.expect("presence:changed")
    assert (changed["userId"], changed["status"]) == ("alice", "away")
    # ... a user joining a room meanwhile is known locally at once ...
    await a.connect("erin", "team")
    await alice.expect("room:member-joined", where=lambda d: d["userId"] == "erin")
    # ... and cross-node delivery is what is lost (documented).
    await dave.expect_none("presence:changed", within=0.3)
    health = await wait_healthy(a)
    assert health["status"] == "degraded" and health["state"]["connected"] is False

    own_redis.start()  # same port, empty: nothing persisted
    for node in (a, b):
        health = await wait_connected(node, timeout=10.0)
        assert health["state"]["connected"], node.output()

    # Re-published: the room's settings and permissions (by the nodes its members are
    # on), presence, memberships (erin's too), the active call.
    status, room = await api(b, "GET", "/rooms/team")
    assert status == 200, room
    assert (room["capacity"], room["metadata"]) == (40, {"topic": "launch"})
    assert (await api(b, "GET", "/rooms/team/participants/bob"))[1]["canPublish"] is False
    query = await dave.request("presence:query", {"userIds": ["alice", "erin"]})
    assert {u["userId"]: u["status"] for u in query["users"]} == {
        "alice": "away",
        "erin": "online",
    }
    frank = await b.connect("frank")
    joined = await frank.request("room:join", {"roomId": "team"})
    assert {m["userId"] for m in joined["members"]} == {"alice", "bob", "dave", "erin", "frank"}
    # Resubscribed: cross-node room events flow again.
    await alice.request("message:typing", {"conversationId": "team", "isTyping": True})
    assert (await dave.expect("user:typing"))["userId"] == "alice"
    await dave.request("call:end", {"callId": call_id})
    assert (await alice.expect("call:ended"))["reason"] == "hangup"


async def test_graceful_stop_moves_users_without_ending_their_call(cluster, own_redis):
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    alice = await a.connect("alice")
    bob = await b.connect("bob")
    call_id = await start_call(alice, "bob")
    await bob.expect("call:incoming")
    await bob.request("call:accept", {"callId": call_id})
    await alice.expect("call:accepted")

    a.signal(signal.SIGTERM)
    assert await alice.wait_closed() == 1012
    assert alice.close_reason == "server restarting, please reconnect"
    assert await a.wait() == 0
    assert (await bob.expect("call:peer-disconnected"))["userId"] == "alice"
    # The stopped node deregistered itself: nothing is left for others to reap.
    redis = Redis.from_url(own_redis.url)
    try:
        assert await redis.zscore(f"{cluster.prefix}:nodes", "a") is None
        assert await redis.zscore(f"{cluster.prefix}:nodes", "b") is not None
    finally:
        await redis.aclose()

    # The client reconnects to the other node and resumes within the grace period.
    alice2 = await b.connect("alice")
    resumed = await alice2.request("call:reconnected", {"callId": call_id})
    assert resumed["state"] == "active"
    assert (await bob.expect("call:peer-reconnected"))["userId"] == "alice"
    await bob.expect_none("call:ended", within=3.5)  # past the 3 s grace period
    await alice2.request("call:end", {"callId": call_id})
    assert (await bob.expect("call:ended"))["reason"] == "hangup"


async def test_redis_missing_at_start_is_reported_and_retried(tmp_path):
    port = free_port()
    cluster = Cluster(tmp_path, f"redis://127.0.0.1:{port}/0")
    redis = RedisServer(tmp_path / "redis", port=port)
    try:
        node = await cluster.start("a", wait=False)
        for _ in range(100):
            if "retrying" in node.output():
                break
            await asyncio.sleep(0.1)
        out = node.output()
        assert f"Redis at redis://127.0.0.1:{port}/0 unavailable" in out and "retrying" in out
        assert node.proc.returncode is None  # waiting, not crashed
        redis.start()
        health = await wait_healthy(node)
        assert health["state"] == {"backend": "redis", "node": "a", "connected": True}
    finally:
        await cluster.close()
        redis.stop()


async def test_sentinel_failover_keeps_presence_rooms_and_calls(tmp_path):
    """Primary + replica + three Sentinels; the nodes connect through the Sentinels. The
    primary is killed: the Sentinels promote the replica, the nodes follow it and carry
    on with presence, rooms, calls and the room API's records intact."""
    setup = SentinelSetup(tmp_path / "sentinel")
    # Nodes reconnect at different moments of their back-off: a node_dead_after longer
    # than the failover keeps them from reaping each other meanwhile.
    cluster = Cluster(tmp_path, setup.url)
    slow_reaping = {"SWITCHBOARD_NODE_DEAD_AFTER": "15", **API_ENV}
    try:
        setup.start()
        a, b = await asyncio.gather(
            cluster.start("a", **slow_reaping), cluster.start("b", **slow_reaping)
        )
        settings = {"roomId": "team", "capacity": 40, "metadata": {"topic": "failover"}}
        assert (await api(a, "POST", "/rooms", settings))[0] == 201
        alice = await a.connect("alice", "team")
        bob = await b.connect("bob", "team", presence=["alice"])
        await alice.request("presence:update", {"status": "away"})
        await bob.expect("presence:changed", where=lambda d: d["status"] == "away")
        call_id = await start_call(alice, "bob")
        await bob.expect("call:incoming")
        await bob.request("call:accept", {"callId": call_id})
        await alice.expect("call:accepted")

        old = setup.primary()
        setup.kill_primary()
        killed = time.monotonic()
        setup.wait(lambda: setup.primary() != old)
        promoted = time.monotonic() - killed
        for node in (a, b):
            health = await wait_connected(node)
            assert health["state"]["connected"], node.output()
        back = time.monotonic() - killed
        print(f"replica promoted {promoted:.1f} s after the kill; nodes back at {back:.1f} s")

        # Nothing was lost: the sockets, presence, the room and its record, the call.
        assert not alice.closed.is_set() and not bob.closed.is_set()
        query = await bob.request("presence:query", {"userIds": ["alice"]})
        assert query["users"][0]["status"] == "away"
        status, room = await api(b, "GET", "/rooms/team")
        assert status == 200 and room["metadata"] == {"topic": "failover"}, room
        carol = await b.connect("carol")
        joined = await carol.request("room:join", {"roomId": "team"})
        assert {m["userId"] for m in joined["members"]} == {"alice", "bob", "carol"}
        await alice.expect("room:member-joined", where=lambda d: d["userId"] == "carol")
        await alice.request("message:typing", {"conversationId": "team", "isTyping": True})
        assert (await bob.expect("user:typing"))["userId"] == "alice"
        assert (await call_status(a, call_id, "alice"))["active"] is True
        await bob.request("call:end", {"callId": call_id})
        assert (await alice.expect("call:ended"))["reason"] == "hangup"
    finally:
        await cluster.close()
        setup.stop()
