"""Presence aggregated over a user's devices, announced to room co-members on change only."""

from __future__ import annotations

import pytest

from signaling.client import RequestError
from tests.conftest import unrecorded


async def test_multi_device_presence(hub):
    bob = await hub.connect_in("bob", "team")
    phone = await hub.connect_in("alice", "team")
    joined = await bob.expect("room:member-joined")
    assert joined["userId"] == "alice" and joined["status"] == "online"

    laptop = await hub.connect_in("alice", "team")
    # A second device neither re-announces membership nor changes the aggregate.
    await bob.expect_none("room:member-joined", within=0.2)
    await bob.expect_none("presence:changed", within=0.0)

    await phone.close()
    await bob.expect_none("presence:changed", within=0.3)
    await bob.expect_none("room:member-left", within=0.0)

    await laptop.close()
    offline = await bob.expect("presence:changed")
    assert offline["userId"] == "alice" and offline["status"] == "offline"
    assert isinstance(offline["lastSeen"], int) and offline["lastSeen"] > 0
    left = await bob.expect("room:member-left")
    assert unrecorded(left) == {"roomId": "team", "userId": "alice"}

    answer = await bob.request("presence:query", {"userIds": ["alice"]})
    # alice no longer shares a room with bob, so the query is denied rather than answered.
    assert answer["denied"] == ["alice"]


async def test_status_aggregation_and_announcements(hub):
    bob = await hub.connect_in("bob", "team")
    phone = await hub.connect_in("alice", "team")
    laptop = await hub.connect_in("alice", "team")
    await bob.expect("room:member-joined")

    ack = await phone.request("presence:update", {"status": "away"})
    assert ack["deviceStatus"] == "away" and ack["status"] == "online"
    await bob.expect_none("presence:changed", within=0.2)

    await laptop.request("presence:update", {"status": "away"})
    changed = await bob.expect("presence:changed")
    assert changed["status"] == "away" and changed["userId"] == "alice"

    await phone.request("presence:update", {"status": "dnd"})
    assert (await bob.expect("presence:changed"))["status"] == "dnd"

    await laptop.request("presence:update", {"status": "invisible"})
    hidden = await bob.expect("presence:changed")
    assert hidden["status"] == "offline"

    last_seen = hidden["lastSeen"]
    answer = await bob.request("presence:query", {"userIds": ["alice"]})
    assert answer["users"] == [{"userId": "alice", "status": "offline", "lastSeen": last_seen}]

    await laptop.request("presence:update", {"status": "online"})
    assert (await bob.expect("presence:changed"))["status"] == "dnd"
    # The user's own devices are not told about their own aggregate.
    await phone.expect_none("presence:changed", within=0.1)


async def test_presence_query_scope(hub):
    carol = await hub.connect("carol")
    bob = await hub.connect_in("bob", "team")
    await hub.connect_in("alice", "team")
    answer = await bob.request("presence:query", {"userIds": ["alice", "carol", "bob", "zed"]})
    assert {u["userId"]: u["status"] for u in answer["users"]} == {
        "alice": "online",
        "bob": "online",
    }
    assert answer["denied"] == ["carol", "zed"]

    scoped = await hub.connect("dave", token=hub.token("dave", presence=["carol", "zed"]))
    answer = await scoped.request("presence:query", {"userIds": ["carol", "zed", "alice"]})
    assert answer["users"] == [
        {"userId": "carol", "status": "online", "lastSeen": answer["users"][0]["lastSeen"]},
        {"userId": "zed", "status": "offline", "lastSeen": None},
    ]
    assert answer["denied"] == ["alice"]
    everyone = await hub.connect("eve", token=hub.token("eve", presence=["*"]))
    answer = await everyone.request("presence:query", {"userIds": ["carol"]})
    assert answer["users"][0]["status"] == "online"
    await carol.close()


async def test_presence_bad_status_and_query_limits(hub_factory):
    hub = await hub_factory(max_presence_query=3)
    alice = await hub.connect("alice")
    with pytest.raises(RequestError) as err:
        await alice.request("presence:update", {"status": "busy"})
    assert err.value.code == "invalid_payload" and "data.status" in err.value.message
    with pytest.raises(RequestError) as err:
        await alice.request("presence:query", {"userIds": ["a", "b", "c", "d"]})
    assert err.value.code == "invalid_payload"
    with pytest.raises(RequestError) as err:
        await alice.request("presence:query", {"userIds": "alice"})
    assert err.value.code == "invalid_payload"
