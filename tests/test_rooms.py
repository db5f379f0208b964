"""Room joins, member lists with presence, and membership events per user."""

from __future__ import annotations

import pytest

from signaling.client import RequestError
from tests.conftest import unrecorded


async def test_join_answers_members_with_presence(hub):
    alice = await hub.connect_in("alice", "general")
    await alice.request("presence:update", {"status": "away"})
    bob = await hub.connect("bob", token=hub.token("bob", name="Bob B."))
    ack = await bob.request("room:join", {"roomId": "general"})
    assert ack["roomId"] == "general"
    members = {m["userId"]: m for m in ack["members"]}
    assert members["alice"]["status"] == "away" and members["alice"]["name"] == "alice"
    assert members["bob"]["name"] == "Bob B."
    joined = await alice.expect("room:member-joined")
    assert joined["userId"] == "bob" and joined["name"] == "Bob B."
    # Joining again is idempotent and silent.
    again = await bob.request("room:join", {"roomId": "general"})
    assert {m["userId"] for m in again["members"]} == {"alice", "bob"}
    await alice.expect_none("room:member-joined", within=0.2)


async def test_token_limits_rooms(hub):
    client = await hub.connect("alice", rooms=("general", "team-*"))
    await client.request("room:join", {"roomId": "team-blue"})
    with pytest.raises(RequestError) as err:
        await client.request("room:join", {"roomId": "secret"})
    assert err.value.code == "forbidden"
    with pytest.raises(RequestError) as err:
        await client.request("room:join", {"roomId": "bad room id!"})
    assert err.value.code == "invalid_payload"


async def test_leave_and_disconnect_emit_member_left(hub):
    alice = await hub.connect_in("alice", "general")
    bob = await hub.connect_in("bob", "general")
    await alice.expect("room:member-joined")
    assert await bob.request("room:leave", {"roomId": "general"}) == {"roomId": "general"}
    left = unrecorded(await alice.expect("room:member-left"))
    assert left == {"roomId": "general", "userId": "bob"}
    with pytest.raises(RequestError) as err:
        await bob.request("room:leave", {"roomId": "general"})
    assert err.value.code == "not_in_room"
    carol = await hub.connect_in("carol", "general")
    await alice.expect("room:member-joined")
    await carol.close()
    await alice.expect("room:member-left", where=lambda d: d["userId"] == "carol")


async def test_room_limit_per_connection(hub_factory):
    hub = await hub_factory(max_rooms_per_connection=2)
    alice = await hub.connect("alice")
    await alice.request("room:join", {"roomId": "a"})
    await alice.request("room:join", {"roomId": "b"})
    with pytest.raises(RequestError) as err:
        await alice.request("room:join", {"roomId": "c"})
    assert err.value.code == "too_many_rooms"
