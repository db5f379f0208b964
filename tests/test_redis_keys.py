"""Keys one Lua script or transaction touches together hash to one Redis Cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from signaling.state.redis.keys import Keys


def slots(*keys: str) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


@pytest.mark.parametrize("user", ["alice", "a}b{c", "ünïcode user", "x" * 128])
def test_a_users_keys_share_a_slot(user):
    k = Keys("sb")
    assert len(slots(k.presence(user), k.user_rooms(user), k.user_calls(user))) == 1


@pytest.mark.parametrize("room", ["team", "dm:alice@bob", "a-b_c.d"])
def test_a_rooms_keys_share_a_slot(room):
    k = Keys("prod")
    keys = [k.room_members(room), k.typing(room), *(k.room_devices(room, u) for u in "abc")]
    assert len(slots(*keys)) == 1


def test_a_nodes_keys_share_a_slot_and_tags_spread():
    k = Keys("sb")
    node = "node-1"
    assert (
        len(slots(k.node_info(node), k.node_conns(node), k.node_rooms(node), k.node_hosted(node)))
        == 1
    )
    assert len(slots(k.node_reaper(node), k.node_conns(node))) == 1
    # Different users, rooms and calls are spread over the cluster, not pinned to one slot.
    assert len(slots(*(k.presence(f"user{i}") for i in range(50)))) > 40
    assert len(slots(*(k.call(f"call_{i}") for i in range(50)))) > 40
