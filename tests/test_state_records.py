"""The room records and webhook queue of the state interface, run against both
implementations (memory, real Redis): same answers from both."""

from __future__ import annotations

import asyncio

import pytest

from signaling.protocol import HubError
from signaling.state.models import Member, RoomInfo
from tests.conftest import make_state


@pytest.fixture
async def state(state_kind, request):
    s = make_state(state_kind, request)

    async def nothing(_):
        return None

    await s.start(nothing)
    yield s
    await s.close()


async def test_room_records(state):
    room = RoomInfo(id="r1", created_at=1, capacity=2, metadata={"a": 1})
    assert await state.create_room(room) is True
    assert await state.create_room(RoomInfo(id="r1", created_at=2)) is False
    assert (await state.get_room("r1")).metadata == {"a": 1}

    def grant(info: RoomInfo) -> int:
        info.permissions["u"] = {"canPublish": False}
        return 7

    updated, result = await state.update_room("r1", grant)
    assert result == 7 and updated.permission("u", "canPublish") is False
    assert updated.permission("u", "canSubscribe") is True
    with pytest.raises(KeyError):
        await state.update_room("nope", grant)
    assert [r.id for r in await state.list_rooms()] == ["r1"]
    assert (await state.delete_room("r1")).id == "r1"
    assert await state.delete_room("r1") is None
    assert await state.list_rooms() == []


async def test_join_capacity_is_atomic(state):
    joins = [
        state.join_room("full", Member(f"u{i}", f"u{i}"), f"c_x.{i}", capacity=3) for i in range(8)
    ]
    results = await asyncio.gather(*joins, return_exceptions=True)
    refused = [r for r in results if isinstance(r, HubError)]
    assert len(refused) == 5 and {r.code.value for r in refused} == {"room_full"}
    assert len(await state.room_members("full")) == 3
    # A member's second device is not refused.
    assert await state.join_room("full", Member("u0", "u0"), "c_x.extra", capacity=3) is False


async def test_webhook_queue_leases_keys_to_one_owner(state):
    await state.webhook_push([("k1", b"1"), ("k2", b"a"), ("k1", b"2")])
    assert sorted(await state.webhook_claim("A", 10, 5.0)) == ["k1", "k2"]
    assert await state.webhook_claim("B", 10, 5.0) == []  # both leased to A
    assert await state.webhook_head("k1") == b"1"
    assert await state.webhook_ack("k1", "B") is False  # not B's lease: nothing dropped
    assert await state.webhook_ack("k1", "A") is True
    assert await state.webhook_head("k1") == b"2"
    await state.webhook_release("k1", "A")
    assert await state.webhook_claim("B", 10, 0.2) == ["k1"]  # released keys move on
    assert await state.webhook_renew("k1", "A", 5.0) is False
    await asyncio.sleep(0.3)  # B's lease runs out, as if B had died
    assert await state.webhook_claim("C", 10, 5.0) == ["k1"]
    assert await state.webhook_ack("k1", "B") is False
    assert await state.webhook_ack("k1", "C") is True
    assert await state.webhook_head("k1") is None
    assert await state.webhook_claim("D", 10, 5.0) == []  # emptied keys are not ready


async def test_room_host_is_placed_once_under_the_lock(state):
    """Many placers at once: each reads, chooses and writes under the lock, so only the
    first one writes and everyone sees its choice."""
    writes: list[str] = []

    async def place(node: str) -> str:
        async with state.placement_lock("call"):
            current = await state.get_room_host("call")
            if current is not None:
                return current
            await asyncio.sleep(0.01)  # a slow chooser: the others must wait, not choose
            await state.set_room_host("call", node)
            writes.append(node)
            return node

    chosen = await asyncio.gather(*(place(f"n{i}") for i in range(6)))
    assert len(writes) == 1 and set(chosen) == {writes[0]}
    # Only the recorded node releases it (compare and delete).
    assert await state.release_room_host("call", "someone-else") is False
    assert await state.get_room_host("call") == writes[0]
    assert await state.release_room_host("call", writes[0]) is True
    assert await state.get_room_host("call") is None


async def test_node_messages_and_cluster_view(state):
    got: list[dict] = []
    arrived = asyncio.Event()

    async def handler(message: dict) -> None:
        got.append(message)
        arrived.set()

    state.node_message_handler = handler
    state.load_provider = lambda: {"rooms": 3, "cpu": 0.25}
    assert await state.send_to_node(state.node_id, {"op": "ping", "n": 1}) is True
    await asyncio.wait_for(arrived.wait(), 5)
    assert got == [{"op": "ping", "n": 1}]
    assert await state.send_to_node("no-such-node", {"op": "ping"}) is False
    await state.publish_load_now()
    nodes = await state.cluster_nodes()
    assert nodes[state.node_id] == {"rooms": 3, "cpu": 0.25}
    assert set(nodes) == {state.node_id}


async def test_reaper_hands_over_the_rooms_a_dead_node_still_hosts(request):
    """Redis only (one node never reaps itself): the hosted-rooms index follows the host
    records, and reaping a dead node names the rooms still recorded on it."""
    state = make_state("redis", request)
    reaped: list[tuple[str, list[str]]] = []

    async def nothing(_):
        return None

    async def host_lost(node: str, rooms: list[str]) -> None:
        reaped.append((node, rooms))

    state.media_host_lost_handler = host_lost
    await state.start(nothing)
    try:
        for room in ("r1", "r2", "r3"):
            await state.set_room_host(room, "m-dead")
        await state.set_room_host("r2", "m-live")  # moved elsewhere
        assert await state.release_room_host("r3", "m-dead") is True  # its call ended
        hosted = await state.client.smembers(state.keys.node_hosted("m-dead"))
        assert hosted == {b"r1"}
        assert await state.client.smembers(state.keys.node_hosted("m-live")) == {b"r2"}
        # m-dead stopped beating long ago; this node has been up long enough to judge.
        await state.client.zadd(state.keys.nodes, {"m-dead": 1})
        state.node.online_since -= state.node.dead_after
        await state.node.reap()
        assert reaped == [("m-dead", ["r1"])]
        assert not await state.client.exists(state.keys.node_hosted("m-dead"))
    finally:
        await state.close()
