"""The state interfaces' contract, run against both implementations (memory, real Redis,
the Redis one also on a real 3-primary Redis Cluster): every store answers the same, and
what the backend reports reaches the one registered handler the same way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from signaling.protocol import HubError, event_frame
from signaling.state.models import Call, CallParticipant, Member, RoomInfo
from signaling.state.typing_indicators import Announce, Announcement
from tests.conftest import make_state

STATE_KINDS = ("memory", "redis", "cluster")


class Recorder:
    """A BackendHandler that records what the backend reports."""

    def __init__(self) -> None:
        self.timers: list[tuple[str, list[str]]] = []
        self.controls: list[tuple[list[str], dict[str, Any]]] = []
        self.messages: list[dict[str, Any]] = []
        self.lost_hosts: list[tuple[str, list[str]]] = []
        self.lost_conns: list[Any] = []
        self.load: dict[str, Any] = {}
        self.arrived = asyncio.Event()

    async def connections_lost(self, lost):
        self.lost_conns.extend(lost)

    async def timer_fired(self, kind, parts):
        self.timers.append((kind, parts))
        self.arrived.set()

    async def control(self, users, command):
        self.controls.append((users, command))
        self.arrived.set()

    async def node_message(self, message):
        self.messages.append(message)
        self.arrived.set()

    async def media_hosts_lost(self, node, rooms):
        self.lost_hosts.append((node, rooms))

    def node_load(self):
        return self.load

    async def next(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()

    async def typing_expired(self, store, room: str, user: str) -> str:
        """What the typing service does: on each report, ask the store; a timer that
        fired early is re-armed by the store and reported again."""
        for _ in range(5):
            await self.next()
            assert self.timers[-1] == ("typing", [room, user])
            name = await store.expire(room, user)
            if name is not None:
                return name
        raise AssertionError("the typing state never expired")


@dataclass(eq=False)
class FakeSocket:
    id: str
    user_id: str
    name: str = "N"
    rooms: set[str] = field(default_factory=set)
    frames: list[bytes] = field(default_factory=list)

    def send_frame(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    async def close(self, code: int, reason: str) -> None:
        pass


@pytest.fixture
async def handler():
    return Recorder()


@pytest.fixture
async def state(state_kind, request, handler):
    s = make_state(state_kind, request)
    await s.start(handler)
    yield s
    await s.close()


async def wait_for(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.02)


# -- room records --------------------------------------------------------------------------


async def test_room_records(state):
    records = state.records
    room = RoomInfo(id="r1", created_at=1, capacity=2, metadata={"a": 1})
    assert await records.create(room) is True
    assert await records.create(RoomInfo(id="r1", created_at=2)) is False
    assert (await records.get("r1")).metadata == {"a": 1}

    def grant(info: RoomInfo) -> int:
        info.permissions["u"] = {"canPublish": False}
        return 7

    updated, result = await records.update("r1", grant)
    assert result == 7 and updated.permission("u", "canPublish") is False
    assert updated.permission("u", "canSubscribe") is True
    with pytest.raises(KeyError):
        await records.update("nope", grant)
    assert [r.id for r in await records.list_all()] == ["r1"]
    assert (await records.delete("r1")).id == "r1"
    assert await records.delete("r1") is None
    assert await records.list_all() == []


async def test_a_failed_record_update_writes_nothing(state):
    await state.records.create(RoomInfo(id="r2", created_at=1, metadata={"v": 1}))

    def half_then_fail(info: RoomInfo) -> None:
        info.metadata["v"] = 2
        raise HubError("invalid_state", "refused")  # type: ignore[arg-type]

    with pytest.raises(HubError):
        await state.records.update("r2", half_then_fail)
    assert (await state.records.get("r2")).metadata == {"v": 1}


# -- membership ----------------------------------------------------------------------------


async def test_join_capacity_is_atomic(state):
    joins = [
        state.membership.join("full", Member(f"u{i}", f"u{i}"), f"c_x.{i}", capacity=3)
        for i in range(8)
    ]
    results = await asyncio.gather(*joins, return_exceptions=True)
    refused = [r for r in results if isinstance(r, HubError)]
    assert len(refused) == 5 and {r.code.value for r in refused} == {"room_full"}
    members = await state.membership.members("full")
    assert len(members) == 3
    # the refused are not recorded as in the room anywhere
    joined = {m.user_id for m in members}
    for i in range(8):
        rooms = await state.membership.rooms_of(f"u{i}")
        assert rooms == ({"full"} if f"u{i}" in joined else set()), (i, rooms)
    # A member's second device is not refused.
    entry = await state.membership.join("full", Member("u0", "u0"), "c_x.extra", capacity=3)
    assert entry.first_device is False


async def test_first_and_last_device_and_who_shares_a_room(state):
    m = state.membership
    assert (await m.join("team", Member("alice", "Alice"), "c_x.phone")).first_device is True
    assert (await m.join("team", Member("alice", "Alice"), "c_x.laptop")).first_device is False
    entry = await m.join("team", Member("bob", "Bob"), "c_x.bob")
    # the join lists the members as they are just after it, the joiner among them
    assert entry.first_device is True
    assert sorted(x.user_id for x in entry.members) == ["alice", "bob"]
    assert (await m.join("other", Member("carol", "Carol"), "c_x.carol")).first_device is True
    assert sorted((x.user_id, x.name) for x in await m.members("team")) == [
        ("alice", "Alice"),
        ("bob", "Bob"),
    ]
    assert await m.rooms_of("alice") == {"team"}
    assert await m.share_a_room("alice", "bob") is True
    assert await m.share_a_room("alice", "carol") is False
    assert await m.leave("team", "alice", "c_x.phone") == (False, 2)  # the laptop stays
    assert await m.rooms_of("alice") == {"team"}
    assert await m.leave("team", "alice", "c_x.phone") == (False, 2)  # twice: nothing
    assert await m.leave("team", "alice", "c_x.laptop") == (True, 1)
    assert await m.rooms_of("alice") == set()
    assert [x.user_id for x in await m.members("team")] == ["bob"]


# -- presence ------------------------------------------------------------------------------


async def test_presence_aggregates_devices_and_reports_visible_changes(state):
    p = state.presence
    assert (await p.get(["nobody"]))["nobody"].status == "offline"
    change = await p.set_device("alice", "c_x.1", "online")
    assert (change.before.status, change.after.status, change.changed) == (
        "offline",
        "online",
        True,
    )
    assert change.after.last_seen is not None
    change = await p.set_device("alice", "c_x.2", "away")  # online beats away
    assert change.changed is False and change.after.status == "online"
    change = await p.set_device("alice", "c_x.1", None)
    assert (change.after.status, change.changed) == ("away", True)
    change = await p.set_device("alice", "c_x.2", "invisible")
    assert change.after.status == "offline"
    seen = change.after.last_seen
    await asyncio.sleep(0.01)
    # While invisible, last-seen does not move (it would leak activity).
    change = await p.set_device("alice", "c_x.2", "invisible")
    assert change.after.last_seen == seen
    assert (await p.get(["alice"]))["alice"].status == "offline"
    # A device's own earlier status no longer counts once it changes.
    await p.set_device("bob", "c_x.3", "dnd")
    await p.set_device("bob", "c_x.4", "away")
    change = await p.set_device("bob", "c_x.3", "online")
    assert (change.before.status, change.after.status) == ("dnd", "online")
    change = await p.set_device("bob", "c_x.3", None)
    assert (change.before.status, change.after.status) == ("online", "away")


# -- calls ---------------------------------------------------------------------------------


def _call(call_id: str) -> Call:
    call = Call(call_id, "video", "a", "room", 1)
    call.participants["a"] = CallParticipant("a", "A", "caller", "joined", conn_id="c_x.a")
    call.participants["b"] = CallParticipant("b", "B", "callee", "ringing")
    return call


async def test_calls_are_updated_atomically_and_listed_per_user(state):
    calls = state.calls
    await calls.create(_call("k1"))
    await calls.create(_call("k2"))
    assert (await calls.get("k1")).participants["b"].state == "ringing"
    assert await calls.get("missing") is None

    def accept(call: Call) -> str:
        call.participants["b"].state = "joined"
        call.state = "active"
        return "ok"

    updated, result = await calls.update("k1", accept)
    assert result == "ok" and updated.state == "active"
    assert (await calls.get("k1")).participants["b"].state == "joined"

    def refuse(call: Call) -> None:
        call.state = "ended"
        raise HubError("invalid_state", "no")  # type: ignore[arg-type]

    with pytest.raises(HubError):
        await calls.update("k2", refuse)
    assert (await calls.get("k2")).state == "ringing"
    with pytest.raises(KeyError):
        await calls.update("missing", accept)
    # Two devices accepting at once: both mutations run on top of each other's result.
    before = (await calls.get("k2")).created_at

    def bump(call: Call) -> None:
        call.created_at += 1  # a counter: a mutation lost to the race would show

    counts = await asyncio.gather(*(calls.update("k2", bump) for _ in range(5)))
    assert len(counts) == 5
    assert (await calls.get("k2")).created_at == before + 5
    assert sorted(c.id for c in await calls.of_user("b")) == ["k1", "k2"]
    assert sorted(c.id for c in await calls.list_all()) == ["k1", "k2"]
    await calls.delete("k1")
    assert await calls.get("k1") is None
    assert [c.id for c in await calls.of_user("b")] == ["k2"]


# -- typing and timers (reported through the handler) ----------------------------------------


async def test_typing_is_throttled_and_expires_by_itself(state, handler):
    t = state.typing
    assert await t.start("r", "u", "c_x.1", "U", 0.3, 0.1) is Announce.NEEDED
    assert await t.start("r", "u", "c_x.1", "U", 0.3, 0.1) is Announce.NONE  # throttled
    await asyncio.sleep(0.12)
    assert await t.start("r", "u", "c_x.1", "U", 0.3, 0.1) is Announce.NEEDED
    assert await t.stop("r", "u", "c_x.other") is None  # another device does not own it
    # The store arms its own expiry: the typing timer is reported once it runs out.
    assert await handler.typing_expired(t, "r", "u") == "U"
    assert await t.expire("r", "u") is None
    assert await t.stop("r", "u", None) is None


async def test_typing_refreshed_meanwhile_is_not_expired(state, handler):
    t = state.typing
    await t.start("r", "u", "c_x.1", "U", 0.3, 10.0)
    await asyncio.sleep(0.2)
    await t.start("r", "u", "c_x.1", "U", 0.3, 10.0)  # a keystroke moves the deadline
    await asyncio.sleep(0.15)
    # If the original deadline fires now, expire finds it fresh and re-arms it.
    assert await t.expire("r", "u") is None
    assert await handler.typing_expired(t, "r", "u") == "U"
    assert await t.start("r", "u", "c_x.1", "U", 0.3, 10.0) is Announce.NEEDED  # a new one
    assert await t.stop("r", "u", "c_x.1") == "U"


async def test_typing_announced_with_the_change_reaches_the_room_once(state, handler):
    """A store either publishes the announcement with the change (``SENT``: the room's
    members get that very frame, once) or leaves it to the caller (``NEEDED``)."""
    d, t = state.delivery, state.typing
    bob = FakeSocket(d.new_connection_id(), "bob")
    d.attach(bob)
    await state.membership.join("r", Member("bob", "Bob"), bob.id)
    frame = event_frame("user:typing", {"userId": "u", "isTyping": True})
    said = Announcement("user:typing", frame, "u")
    started = await t.start("r", "u", "c_x.1", "U", 5.0, 10.0, said)
    assert started in (Announce.SENT, Announce.NEEDED)
    assert await t.start("r", "u", "c_x.1", "U", 5.0, 10.0, said) is Announce.NONE
    stop = Announcement("user:typing", event_frame("user:typing", {"isTyping": False}), "u")
    stopped = await t.stop_announced("r", "u", stop)
    assert stopped is started  # the same store does the same both ways
    assert await t.stop_announced("r", "u", stop) is Announce.NONE  # nothing left to end
    assert await t.expire("r", "u") is None  # nothing left to expire either
    if started is Announce.SENT:
        await wait_for(lambda: len(bob.frames) == 2)
        assert bob.frames == [frame, stop.frame]
    await asyncio.sleep(0.1)
    assert len(bob.frames) == (2 if started is Announce.SENT else 0)
    await state.membership.leave("r", "bob", bob.id)
    d.detach(bob)


async def test_timers_fire_once_and_rearm_or_disarm(state, handler):
    timers = state.timers
    await timers.arm("ring", ["call-1"], 0.1)
    await timers.arm("grace", ["call-1", "u"], 0.1)
    await timers.arm("grace", ["call-1", "u"], 0.4)  # re-arming replaces the deadline
    await timers.arm("room-empty", ["r"], 0.1)
    await timers.disarm("room-empty", ["r"])
    await timers.arm("ring", ["call-2"], 0.1)
    await timers.arm("grace", ["call-2", "u"], 0.1)
    await timers.disarm_all([("ring", ["call-2"]), ("grace", ["call-2", "u"]), ("x", [])])
    await wait_for(lambda: len(handler.timers) >= 1)
    assert handler.timers == [("ring", ["call-1"])]
    await wait_for(lambda: len(handler.timers) >= 2)
    await asyncio.sleep(0.3)
    assert handler.timers == [("ring", ["call-1"]), ("grace", ["call-1", "u"])]


# -- delivery ------------------------------------------------------------------------------


async def test_delivery_reaches_local_sockets_once_each(state, handler):
    d = state.delivery
    a1 = FakeSocket(d.new_connection_id(), "alice")
    a2 = FakeSocket(d.new_connection_id(), "alice")
    b = FakeSocket(d.new_connection_id(), "bob")
    for socket in (a1, a2, b):
        d.attach(socket)
        await state.presence.set_device(socket.user_id, socket.id, "online")
    for socket, rooms in ((a1, ("x", "y")), (a2, ("x",)), (b, ("y",))):
        for room in rooms:
            await state.membership.join(room, Member(socket.user_id, "N"), socket.id)
    assert d.local_connection_count() == 3
    assert {s.id for s in d.local_connections_of("alice")} == {a1.id, a2.id}
    assert {s.id for s in d.local_room_members("x")} == {a1.id, a2.id}

    await d.to_rooms(["x", "y"], "user:typing", {"n": 1})
    await wait_for(lambda: len(b.frames) == 1)
    await asyncio.sleep(0.05)
    assert [len(s.frames) for s in (a1, a2, b)] == [1, 1, 1]  # a1 is in both: once
    assert b"user:typing" in b.frames[0]

    await d.to_rooms(["x"], "user:typing", {"n": 2}, exclude_user="alice")
    await d.to_users(["alice", "bob"], "call:incoming", {}, exclude_conn=a2.id)
    await d.to_conns([b.id], "sfu:offer", {})
    await wait_for(lambda: len(b.frames) == 3)
    await asyncio.sleep(0.05)
    assert [len(s.frames) for s in (a1, a2, b)] == [2, 1, 3]
    assert all(frame == a1.frames[1] for frame in (b.frames[1],))  # one encoding for all

    await d.send_control(["alice", "nobody"], {"op": "remove", "roomId": "x"})
    assert handler.controls == [(["alice"], {"op": "remove", "roomId": "x"})]
    for socket, rooms in ((a1, ("x", "y")), (a2, ("x",)), (b, ("y",))):
        for room in rooms:
            await state.membership.leave(room, socket.user_id, socket.id)
        d.detach(socket)
    assert d.local_connection_count() == 0 and d.local_room_members("x") == []


# -- the cluster: node messages, loads, media hosts ------------------------------------------


async def test_webhook_queue_leases_keys_to_one_owner(state):
    q = state.webhooks
    await q.push([("k1", b"1"), ("k2", b"a"), ("k1", b"2")])
    assert sorted(await q.claim("A", 10, 5.0)) == ["k1", "k2"]
    assert await q.claim("B", 10, 5.0) == []  # both leased to A
    assert await q.head("k1") == b"1"
    assert await q.ack("k1", "B") is False  # not B's lease: nothing dropped
    assert await q.ack("k1", "A") is True
    assert await q.head("k1") == b"2"
    await q.release("k1", "A")
    assert await q.claim("B", 10, 0.2) == ["k1"]  # released keys move on
    assert await q.renew("k1", "A", 5.0) is False
    await asyncio.sleep(0.3)  # B's lease runs out, as if B had died
    assert await q.claim("C", 10, 5.0) == ["k1"]
    assert await q.ack("k1", "B") is False
    assert await q.ack("k1", "C") is True
    assert await q.head("k1") is None
    assert await q.claim("D", 10, 5.0) == []  # emptied keys are not ready


async def test_room_host_is_placed_once_under_the_lock(state):
    """Many placers at once: each reads, chooses and writes under the lock, so only the
    first one writes and everyone sees its choice."""
    hosts = state.hosts
    writes: list[str] = []

    async def place(node: str) -> str:
        async with hosts.placement_lock("call"):
            current = await hosts.get("call")
            if current is not None:
                return current
            await asyncio.sleep(0.01)  # a slow chooser: the others must wait, not choose
            await hosts.set("call", node)
            writes.append(node)
            return node

    chosen = await asyncio.gather(*(place(f"n{i}") for i in range(6)))
    assert len(writes) == 1 and set(chosen) == {writes[0]}
    # Only the recorded node releases it (compare and delete).
    assert await hosts.release("call", "someone-else") is False
    assert await hosts.get("call") == writes[0]
    assert await hosts.release("call", writes[0]) is True
    assert await hosts.get("call") is None


async def test_node_messages_and_cluster_view(state, handler):
    handler.load = {"rooms": 3, "cpu": 0.25}
    nodes = state.nodes
    assert await nodes.send_to_node(state.node_id, {"op": "ping", "n": 1}) is True
    await handler.next()
    assert handler.messages == [{"op": "ping", "n": 1}]
    assert await nodes.send_to_node("no-such-node", {"op": "ping"}) is False
    await nodes.publish_load_now()
    live = await nodes.live_nodes()
    assert live[state.node_id] == {"rooms": 3, "cpu": 0.25}
    assert set(live) == {state.node_id}


async def test_reaper_hands_over_the_rooms_a_dead_node_still_hosts(request):
    """Redis only (one node never reaps itself): the hosted-rooms index follows the host
    records, and reaping a dead node names the rooms still recorded on it."""
    state = make_state("redis", request)
    handler = Recorder()
    await state.start(handler)
    client, keys = state.link.client, state.link.keys
    try:
        for room in ("r1", "r2", "r3"):
            await state.hosts.set(room, "m-dead")
        await state.hosts.set("r2", "m-live")  # moved elsewhere
        assert await state.hosts.release("r3", "m-dead") is True  # its call ended
        hosted = await client.smembers(keys.node_hosted("m-dead"))
        assert hosted == {b"r1"}
        assert await client.smembers(keys.node_hosted("m-live")) == {b"r2"}
        # m-dead stopped beating long ago; this node has been up long enough to judge.
        await client.zadd(keys.nodes, {"m-dead": 1})
        state.lifecycle.online_since -= state.lifecycle.dead_after
        await state.lifecycle.reap()
        assert handler.lost_hosts == [("m-dead", ["r1"])]
        assert not await client.exists(keys.node_hosted("m-dead"))
    finally:
        await state.close()


# -- room history --------------------------------------------------------------------------


async def test_room_history_numbers_keeps_and_recovers(state):
    from signaling.state.history import Position

    state.configure_history(size=3, ttl=60)
    delivery, history = state.delivery, state.history
    alice, bob = FakeSocket("c_x.a", "alice"), FakeSocket("c_x.b", "bob")
    for socket in (alice, bob):
        delivery.attach(socket)
        await state.membership.join("r", Member(socket.user_id, "N"), socket.id)
    assert await history.position("r") == Position("", 0)
    for n in range(1, 5):
        await delivery.to_room_recorded("r", "message:new", {"n": n}, exclude_user="alice")
    await wait_for(lambda: len(bob.frames) == 4)
    assert not alice.frames
    offsets = [orjson.loads(f[2:])["data"]["position"]["offset"] for f in bob.frames]
    assert offsets == [1, 2, 3, 4]
    top = await history.position("r")
    assert top.offset == 4 and len(top.epoch) == 8
    # The last three are kept: from offset 1 on, the client missed 2..4 and gets them;
    # from 0 on, offset 1 is gone: no partial recovery.
    found = await history.recover("r", Position(top.epoch, 1), "bob")
    assert found.recovered and [orjson.loads(p)["data"]["n"] for p in found.publications] == [
        2,
        3,
        4,
    ]
    assert not (await history.recover("r", Position(top.epoch, 0), "bob")).recovered
    # What was not sent to a user is not recovered for that user either.
    assert (await history.recover("r", Position(top.epoch, 1), "alice")).publications == []
    assert (await history.recover("r", top, "bob")).publications == []
    assert not (await history.recover("r", Position("other", 4), "bob")).recovered


async def test_room_history_off(state):
    from signaling.state.history import Position

    state.configure_history(size=0, ttl=60)
    bob = FakeSocket("c_x.b", "bob")
    state.delivery.attach(bob)
    await state.membership.join("r", Member("bob", "N"), bob.id)
    await state.delivery.to_room_recorded("r", "message:new", {"n": 1})
    await wait_for(lambda: len(bob.frames) == 1)
    assert orjson.loads(bob.frames[0][2:])["data"] == {"n": 1}  # no position
    assert await state.history.position("r") == Position("", 0)
    assert not (await state.history.recover("r", Position("e", 1), "bob")).recovered


# -- sent chat messages ----------------------------------------------------------------------


async def test_sent_messages_claims(state):
    from signaling.state.sent_messages import PENDING

    sent = state.sent
    assert await sent.claim("u", "t1", 60) is None  # first: send it
    assert await sent.claim("u", "t1", 60) == PENDING  # a resend meanwhile
    assert await sent.claim("v", "t1", 60) is None  # another user's t1 is another message
    await sent.settle("u", "t1", "m1", 60)
    assert await sent.claim("u", "t1", 60) == "m1"
    assert await sent.claim("u", "t2", 0.2) is None
    await sent.release("u", "t2")  # failed: may be sent again
    assert await sent.claim("u", "t2", 0.2) is None
    await asyncio.sleep(0.3)
    assert await sent.claim("u", "t2", 60) is None  # expired


# -- session snapshots ----------------------------------------------------------------------


async def test_session_snapshots_are_taken_once_by_their_user(state):
    snapshots = state.snapshots
    await snapshots.save("u", "s1", b'{"rooms":{}}', 60)
    assert await snapshots.take("v", "s1") is None  # another user's session id finds nothing
    assert await snapshots.take("u", "s1") == b'{"rooms":{}}'
    assert await snapshots.take("u", "s1") is None  # resumed once
    await snapshots.save("u", "s2", b"old", 60)
    await snapshots.save("u", "s2", b"new", 0.2)
    assert await snapshots.take("u", "s2") == b"new"
    await snapshots.save("u", "s3", b"x", 0.2)
    await asyncio.sleep(0.3)
    assert await snapshots.take("u", "s3") is None  # expired
