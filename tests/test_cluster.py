"""Two real nodes sharing a real Redis: users on different nodes see each other exactly as
if they were on one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.client import RequestError
from tests.cluster import Cluster, Node
from tests.redis_server import RedisServer


@pytest.fixture(params=["redis", "redis-cluster"])
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """The nodes share one redis-server, or a 3-primary Redis Cluster (sharded pub/sub)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = request.getfixturevalue("redis_cluster").url
    c = Cluster(tmp_path, url)
    yield c
    await c.close()


@pytest.fixture
async def two(cluster: Cluster) -> tuple[Node, Node]:
    a, b = await asyncio.gather(cluster.start("a"), cluster.start("b"))
    return a, b


async def test_presence_room_events_and_multi_device_across_nodes(two):
    a, b = two
    alice = await a.connect("alice", "team")
    bob = await b.connect("bob")
    joined = await bob.request("room:join", {"roomId": "team"})
    assert {m["userId"] for m in joined["members"]} == {"alice", "bob"}
    assert {m["status"] for m in joined["members"]} == {"online"}
    seen = await alice.expect("room:member-joined")
    assert seen["userId"] == "bob" and seen["name"] == "Bob"

    await alice.request("presence:update", {"status": "away"})
    changed = await bob.expect("presence:changed")
    assert (changed["userId"], changed["status"]) == ("alice", "away")
    # A second device of alice, on the other node, online: the aggregate becomes online.
    alice2 = await b.connect("alice", "team")
    changed = await bob.expect("presence:changed")
    assert (changed["userId"], changed["status"]) == ("alice", "online")
    await bob.expect_none("room:member-joined", within=0.3)  # not her first device there
    query = await bob.request("presence:query", {"userIds": ["alice"]})
    assert query["users"][0]["status"] == "online"

    # Events to a user reach every device wherever it is.
    call = await bob.request("call:initiate", {"callType": "audio", "participants": ["alice"]})
    ring_a = await alice.expect("call:incoming")
    ring_b = await alice2.expect("call:incoming")
    assert ring_a["callId"] == ring_b["callId"] == call["callId"]
    await alice2.request("call:accept", {"callId": call["callId"]})
    stop = await alice.expect("call:cancelled")
    assert stop["reason"] == "answered_elsewhere"
    await bob.expect("call:accepted")
    await bob.request("call:end", {"callId": call["callId"]})

    # Leaving: the last device going away is what others hear.
    await alice2.close()
    await bob.expect_none("room:member-left", within=0.3)
    await alice.close()
    left = await bob.expect("room:member-left")
    assert left["userId"] == "alice"
    offline = await bob.expect("presence:changed", where=lambda d: d["status"] == "offline")
    assert offline["userId"] == "alice" and offline["lastSeen"]


async def test_typing_and_its_expiry_cross_nodes(two):
    a, b = two
    alice = await a.connect("alice", "team")
    bob = await b.connect("bob", "team")
    await alice.request("message:typing", {"conversationId": "team", "isTyping": True})
    started = await bob.expect("user:typing")
    assert started == {
        "userId": "alice",
        "username": "Alice",
        "conversationId": "team",
        "isTyping": True,
    }
    # Nobody refreshes it: the server ends it after typing_timeout (0.6 s).
    ended = await bob.expect("user:typing", timeout=3)
    assert ended["isTyping"] is False and ended["userId"] == "alice"


async def test_one_to_one_call_signaling_between_nodes(two):
    a, b = two
    alice = await a.connect("alice")
    bob = await b.connect("bob")
    call = await alice.request("call:initiate", {"callType": "video", "participants": ["bob"]})
    call_id = call["callId"]
    incoming = await bob.expect("call:incoming")
    assert incoming["from"]["userId"] == "alice"
    accepted = await bob.request("call:accept", {"callId": call_id})
    assert accepted["state"] == "active"
    await alice.expect("call:accepted")

    sdp = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"}
    await alice.request("call:offer", {"callId": call_id, "to": "bob", "sdp": sdp})
    offer = await bob.expect("call:offer")
    assert offer["sdp"] == sdp and offer["from"] == "alice"
    answer = {**sdp, "type": "answer"}
    await bob.request("call:answer", {"callId": call_id, "to": "alice", "sdp": answer})
    assert (await alice.expect("call:answer"))["sdp"] == answer
    host = "1 udp 2122260223 127.0.0.1"
    candidates = [f"candidate:{i} {host} {50000 + i} typ host" for i in range(5)]
    for cand in candidates:
        await alice.send(
            "call:ice-candidate",
            {"callId": call_id, "to": "bob", "candidate": {"candidate": cand, "sdpMid": "0"}},
        )
    got = [(await bob.expect("call:ice-candidate"))["candidate"]["candidate"] for _ in candidates]
    assert got == candidates  # relayed in order
    await bob.request("media:toggle-video", {"callId": call_id, "enabled": False})
    toggled = await alice.expect("peer:video-toggled")
    assert toggled == {"callId": call_id, "userId": "bob", "enabled": False}
    await alice.request("call:end", {"callId": call_id})
    ended = await bob.expect("call:ended")
    assert ended["reason"] == "hangup" and ended["duration"] >= 0


async def test_relays_follow_a_participant_who_moved_to_another_socket(two):
    """Relays route by the call as the sender's node knows it: a change made on the other
    node (bob resuming on a new socket there) reaches it before the next relay."""
    a, b = two
    alice = await a.connect("alice")
    bob = await b.connect("bob")
    call_id = (
        await alice.request("call:initiate", {"callType": "audio", "participants": ["bob"]})
    )["callId"]
    await bob.expect("call:incoming")
    await bob.request("call:accept", {"callId": call_id})
    await alice.expect("call:accepted")

    def candidate(i: int) -> dict:
        line = f"candidate:{i} 1 udp 2122260223 127.0.0.1 {50000 + i} typ host"
        return {"callId": call_id, "to": "bob", "candidate": {"candidate": line, "sdpMid": "0"}}

    await alice.request("call:ice-candidate", candidate(0))  # node a now knows the call
    assert (await bob.expect("call:ice-candidate"))["candidate"]["candidate"][10] == "0"
    for round_ in range(1, 4):
        # bob's network changed: a new socket on node b resumes the call there
        moved = await b.connect("bob")
        await moved.request("call:reconnected", {"callId": call_id})
        await alice.expect("call:peer-reconnected")
        await alice.request("call:ice-candidate", candidate(round_))
        got = await moved.expect("call:ice-candidate")
        assert got["candidate"]["candidate"].startswith(f"candidate:{round_} ")
        await bob.expect_none("call:ice-candidate", within=0.2)
        bob = moved
    await bob.request("call:end", {"callId": call_id})  # ended on node b ...
    assert (await alice.expect("call:ended"))["reason"] == "hangup"
    with pytest.raises(RequestError) as err:  # ... and known on node a at once
        await alice.request("call:ice-candidate", candidate(9))
    assert err.value.code in ("not_in_call", "invalid_state", "call_not_found")


async def test_unanswered_call_is_missed_by_whichever_node_fires_the_timer(cluster):
    a, b = await asyncio.gather(
        cluster.start("a", SWITCHBOARD_RING_TIMEOUT="0.8"),
        cluster.start("b", SWITCHBOARD_RING_TIMEOUT="0.8"),
    )
    alice = await a.connect("alice")
    bob = await b.connect("bob")
    await alice.request("call:initiate", {"callType": "audio", "participants": ["bob"]})
    await bob.expect("call:incoming")
    missed = await bob.expect("call:missed", timeout=4)
    assert missed["from"]["userId"] == "alice"
    ended = await alice.expect("call:ended")
    assert ended["reason"] == "no_answer"
    # Exactly one node fired it.
    await bob.expect_none("call:missed", within=0.5)


async def test_room_events_keep_one_order_for_every_member(two):
    """Two senders on different nodes flood one room; members on both nodes see the
    same sequence."""
    a, b = two
    alice = await a.connect("alice", "r")
    carol = await b.connect("carol", "r")
    bob = await a.connect("bob", "r")
    dave = await b.connect("dave", "r")
    rounds = 40

    async def flood(client) -> None:
        for i in range(rounds):
            await client.send("message:typing", {"conversationId": "r", "isTyping": i % 2 == 0})

    got: dict[str, list[tuple[str, bool]]] = {"bob": [], "dave": []}
    bob.listeners["user:typing"] = lambda d: got["bob"].append((d["userId"], d["isTyping"]))
    dave.listeners["user:typing"] = lambda d: got["dave"].append((d["userId"], d["isTyping"]))
    await asyncio.gather(flood(alice), flood(carol))
    for _ in range(100):
        if len(got["bob"]) == len(got["dave"]) == 2 * rounds:
            break
        await asyncio.sleep(0.05)
    assert len(got["bob"]) == 2 * rounds
    assert got["bob"] == got["dave"]
    for user in ("alice", "carol"):  # and each sender's own events in sending order
        assert [t for u, t in got["bob"] if u == user] == [i % 2 == 0 for i in range(rounds)]


async def test_calls_and_typing_answer_unavailable_while_redis_is_away(tmp_path):
    """Errors, not hangs: a node without Redis refuses shared operations precisely."""
    redis = RedisServer(tmp_path / "redis").start()
    cluster = Cluster(tmp_path, redis.url)
    try:
        a = await cluster.start("a")
        alice = await a.connect("alice", "team")
        bob = await a.connect("bob", "team")
        redis.stop()
        await asyncio.sleep(0.5)
        with pytest.raises(RequestError) as err:
            await alice.request("call:initiate", {"callType": "audio", "participants": ["bob"]})
        assert err.value.code == "unavailable"
        # Local users keep each other: presence travels on the node itself.
        await alice.request("presence:update", {"status": "dnd"})
        changed = await bob.expect("presence:changed")
        assert (changed["userId"], changed["status"]) == ("alice", "dnd")
    finally:
        await cluster.close()
        redis.stop()


async def test_webhooks_once_per_event_across_nodes(cluster, tmp_path):
    """Both nodes deliver from the one queue in Redis: every event arrives exactly once,
    and a room's events arrive in order even when they happen on different nodes."""
    from tests.webhook_receiver import Receiver

    receiver = await Receiver().start()
    # Some first attempts fail, so retries and both nodes' dispatchers are exercised.
    receiver.behaviour = lambda e, attempt: 500 if attempt == 1 and hash(e["id"]) % 4 == 0 else 200
    hooks = {
        "SWITCHBOARD_API_KEY": "k",
        "SWITCHBOARD_API_SECRET": "cluster-api-secret-0123456789abcdef0123",
        "SWITCHBOARD_WEBHOOK_URLS": receiver.url,
        "SWITCHBOARD_WEBHOOK_BACKOFF_INITIAL": "0.05",
        "SWITCHBOARD_WEBHOOK_BACKOFF_MAX": "0.2",
    }
    try:
        a, b = await asyncio.gather(cluster.start("a", **hooks), cluster.start("b", **hooks))
        users = [f"u{i}" for i in range(10)]
        for i, user in enumerate(users):
            await (a if i % 2 == 0 else b).connect(user, "shared")
        delivered = await receiver.wait_for(
            lambda d: sum(e["type"] == "participant_joined" for e in d) >= 10, timeout=15
        )
        await asyncio.sleep(1.0)  # a duplicate would arrive meanwhile
        delivered = receiver.delivered
        ids = [e["id"] for e in delivered]
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        joins = [e["userId"] for e in delivered if e["type"] == "participant_joined"]
        assert joins == users
        assert [e["type"] for e in delivered].count("room_started") == 1
        assert {e["node"] for e in delivered if e["type"] == "participant_joined"} == {"a", "b"}
        # No event was sent successfully twice (attempt-level, not only by id).
        assert len([d for d in receiver.attempts if d.status == 200]) == len(ids)
    finally:
        await receiver.close()
