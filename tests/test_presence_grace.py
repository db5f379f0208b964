"""Presence grace: a page refresh (the connection drops, the user is back a second later)
is nothing to co-members; a user who does not come back is announced offline when the
grace ends; a client that says goodbye is announced at once. Both state kinds, and across
nodes (the grace is a shared timer)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.cluster import Cluster
from tests.redis_server import RedisServer

GOING_AWAY = 1001  # what browsers send when a page is left or refreshed
QUIET = ("presence:changed", "room:member-left", "room:member-joined")


async def drop(client: Any) -> None:
    """End a connection the way a page refresh does (not a goodbye)."""
    await client.ws.close(code=GOING_AWAY)
    await client.wait_closed()


async def test_refresh_within_the_grace_is_nothing(hub_factory: Any) -> None:
    hub = await hub_factory(presence_grace=2.0)
    alice = await hub.connect_in("alice", "team")
    bob = await hub.connect_in("bob", "team")
    await alice.expect("room:member-joined")
    await bob.send("message:typing", {"conversationId": "team", "isTyping": True})
    await alice.expect("user:typing", where=lambda d: d["isTyping"])
    old_id = bob.ready["connectionId"]
    await drop(bob)
    # Typing ends at once, and this node stops writing to the dropped connection.
    assert not (await alice.expect("user:typing"))["isTyping"]
    members = hub.hub.state.delivery.local_room_members("team")
    assert old_id not in {s.id for s in members}
    await asyncio.sleep(0.3)
    await hub.connect_in("bob", "team")  # the page is back
    for event in QUIET:
        await alice.expect_none(event, within=0.5 if event != QUIET[-1] else 1.5)
    found = await alice.request("presence:query", {"userIds": ["bob"]})
    assert found["users"][0]["status"] == "online"


async def test_user_who_does_not_come_back_goes_offline_after_the_grace(hub_factory: Any):
    hub = await hub_factory(presence_grace=0.8)
    alice = await hub.connect_in("alice", "team")
    bob = await hub.connect_in("bob", "team")
    await alice.expect("room:member-joined")
    await drop(bob)
    await alice.expect_none("presence:changed", within=0.5)
    offline = await alice.expect("presence:changed", timeout=2)
    assert offline["userId"] == "bob" and offline["status"] == "offline"
    assert (await alice.expect("room:member-left"))["userId"] == "bob"


async def test_goodbye_is_announced_at_once(hub_factory: Any) -> None:
    hub = await hub_factory(presence_grace=30)
    alice = await hub.connect_in("alice", "team")
    bob = await hub.connect_in("bob", "team")
    await alice.expect("room:member-joined")
    await bob.close()  # close 1000: the user left
    offline = await alice.expect("presence:changed", timeout=1)
    assert offline["status"] == "offline"
    await alice.expect("room:member-left", timeout=1)


async def test_refresh_onto_another_node_is_nothing(tmp_path: Path, redis_server: RedisServer):
    cluster = Cluster(tmp_path, redis_server.url)
    try:
        a, b = await asyncio.gather(
            cluster.start("a", SWITCHBOARD_PRESENCE_GRACE="1.5"),
            cluster.start("b", SWITCHBOARD_PRESENCE_GRACE="1.5"),
        )
        alice = await a.connect("alice", "team")
        bob = await a.connect("bob", "team")
        await alice.expect("room:member-joined")
        await drop(bob)
        await asyncio.sleep(0.3)
        back = await b.connect("bob", "team")
        for event in QUIET:
            await alice.expect_none(event, within=0.7)  # past the grace, altogether
        await back.close()
        offline = await alice.expect("presence:changed", timeout=3)
        assert offline["userId"] == "bob" and offline["status"] == "offline"
    finally:
        await cluster.close()
