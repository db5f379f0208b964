"""How many round trips to Redis a device's life costs: what the node's CPU (a write and a
wake-up each) and Redis's go by under churn. The counts are behaviour, not timing: each
is the number of writes to Redis that carry the device's or its room's keys. And the
per-device records that let a leave be one round trip, an idle node's timer poll, which
runs no script, a call's ring, and a call changed on another node, relayed and changed
from the copy that node sent."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis

from signaling.protocol import ErrorCode, HubError
from signaling.state.models import Call, CallParticipant, Member
from signaling.state.redis import RedisState
from signaling.state.redis.multiplex import Replies
from tests.conftest import make_state
from tests.test_state_contract import Recorder

STATE_KINDS = ("redis",)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write the node makes to Redis (the requests of one loop iteration each)."""
    seen: list[bytes] = []
    flush = Replies.flush

    def spied(self: Replies) -> None:
        if self.outgoing and not self.lost:
            seen.append(b"".join(self.outgoing))
        flush(self)

    monkeypatch.setattr(Replies, "flush", spied)
    return seen


def about(writes: list[bytes], hub: Any, *names: bytes) -> int:
    """The writes to ``hub``'s own keys that carry any of ``names`` (and then empties the
    record). The spy sees every connection in the process: a node another test left
    behind, writing of its own ``carol`` or ``{r:team}``, has another key prefix."""
    prefix = f"{hub.hub.state.link.keys.prefix}:".encode()
    count = sum(1 for w in writes if prefix in w and any(n in w for n in names))
    writes.clear()
    return count


async def settle() -> None:
    """Let the hooks that run after an answer finish (nothing else talks of the user)."""
    await asyncio.sleep(0.3)


async def a_device_life(hub: Any, bob: Any, writes: list[bytes], user: str) -> list[int]:
    """The writes of a device that connects, joins bob's room and leaves."""
    name = user.encode()
    writes.clear()
    device = await hub.connect(user)
    await settle()
    connected = about(writes, hub, name)

    await device.request("room:join", {"roomId": "team"})
    await bob.expect("room:member-joined", where=lambda d: d["userId"] == user)
    await settle()
    joined = about(writes, hub, name, b"{r:team}")

    await device.close()
    await bob.expect("room:member-left", where=lambda d: d["userId"] == user)
    await bob.expect(
        "presence:changed", where=lambda d: d["userId"] == user and d["status"] == "offline"
    )
    await settle()
    return [connected, joined, about(writes, hub, name, b"{r:team}")]


async def test_a_device_connects_joins_and_leaves_in_ten_round_trips(
    hub_factory: Any, writes: list[bytes]
) -> None:
    """Connecting is one write: the presence script, the user's rooms (its audience) and
    calls (any still ringing) go out together. Joining is five: the room's record; the
    join with the members; their presence; the recorded arrival; the history's position
    after it. Leaving is four: presence, rooms and calls together; the presence
    announcement; the leave with the user's and node's records and the members left; the
    recorded departure.

    A write is what one loop iteration queued, so a loaded machine can split one or
    merge two; up to three users live the same life, and one of them must take exactly
    these writes (an added round trip would show in every life)."""
    hub = await hub_factory(presence_grace=0)
    bob = await hub.connect_in("bob", "team")
    await settle()
    lives = []
    for user in ("carol", "dave", "erin"):
        lives.append(await a_device_life(hub, bob, writes, user))
        if lives[-1] == [1, 5, 4]:
            break
    assert [1, 5, 4] in lives, lives


async def test_a_call_rings_in_two_round_trips(hub_factory: Any, writes: list[bytes]) -> None:
    """The record is written first; the ring's timer, the ring and the callee's presence
    then go out in one write (one after another they took three)."""
    hub = await hub_factory(presence_grace=0)
    alice = await hub.connect("alice")
    bob = await hub.connect("bob")
    await settle()
    writes.clear()

    answer = await alice.request("call:initiate", {"participants": ["bob"], "callType": "audio"})
    incoming = await bob.expect("call:incoming")
    assert incoming["callId"] == answer["callId"] and answer["offline"] == []
    call_key = answer["callId"].encode()
    assert about(writes, hub, call_key, b"presence") == 2


async def test_a_leave_takes_back_the_room_record_an_older_node_wrote(
    request: pytest.FixtureRequest,
) -> None:
    """Older nodes recorded a user's rooms as bare room ids, taken back by the last
    device's leave; a device's leave now takes back its own entry and any bare one."""
    state = make_state("redis", request)
    await state.start(Recorder())
    try:
        membership, link = state.membership, state.link
        await membership.join("team", Member("alice", "Alice"), "c_x.phone")
        await link.client.sadd(link.keys.user_rooms("alice"), "team", "older")
        assert await membership.rooms_of("alice") == {"team", "older"}
        await membership.leave("team", "alice", "c_x.phone")
        assert await membership.rooms_of("alice") == {"older"}
    finally:
        await state.close()


async def test_an_idle_nodes_timer_poll_runs_no_script(hub_factory: Any, redis_server: Any) -> None:
    """With nothing due a node's poll of the shared timers (once a second when idle:
    ``tests/test_redis_timer_polls.py``) is a plain read; the claiming script runs only
    for a timer that is due."""
    hub = await hub_factory(presence_grace=0)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await asyncio.sleep(0.2)
        await client.config_resetstat()
        await asyncio.sleep(2.2)
        stats = await client.info("commandstats")
        assert stats["cmdstat_zrangebyscore"]["calls"] >= 1
        assert "cmdstat_evalsha" not in stats
        # A due timer is still claimed and fired: typing expires.
        alice = await hub.connect_in("alice", "team")
        bob = await hub.connect_in("bob", "team")
        await alice.request("message:typing", {"conversationId": "team", "isTyping": True})
        await bob.expect("user:typing", where=lambda d: d["isTyping"])
        stopped = await bob.expect("user:typing", where=lambda d: not d["isTyping"], timeout=3)
        assert stopped["userId"] == "alice"
    finally:
        await client.aclose()


async def test_a_call_changed_elsewhere_is_relayed_and_changed_from_the_copy_sent(
    redis_server: Any,
) -> None:
    """Node b changes a call whose caller is on node a: the note telling a of the new
    version carries the record, so a relays (``peek``) and changes the call from it with
    no read of the record (one script, where it took a read and a script)."""
    prefix = "t" + secrets.token_hex(6)
    a = RedisState(redis_server.url, prefix=prefix)
    b = RedisState(redis_server.url, prefix=prefix)
    await a.start(Recorder())
    await b.start(Recorder())
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        call = Call("k1", "video", "alice", None, 1)
        call.participants["alice"] = CallParticipant(
            "alice", "A", "caller", "joined", conn_id=f"c_{a.link.node_id}.1"
        )
        call.participants["bob"] = CallParticipant("bob", "B", "callee", "ringing")
        await a.calls.create(call)

        def accept(c: Call) -> None:
            c.participants["bob"].state = "joined"
            c.participants["bob"].conn_id = f"c_{b.link.node_id}.2"

        await b.calls.update("k1", accept)
        for _ in range(100):
            if a.calls._fresh("k1") is not None:
                break
            await asyncio.sleep(0.02)
        await client.config_resetstat()
        seen = await a.calls.peek("k1")
        assert seen is not None and seen.version == 2
        assert seen.participants["bob"].state == "joined"

        def end(c: Call) -> None:
            if c.state == "ended":
                raise HubError(ErrorCode.CALL_NOT_FOUND, "ended already")
            c.state = "ended"

        ended, _ = await a.calls.update("k1", end)
        assert ended.version == 3
        stats = await client.info("commandstats")
        # (the script's own GET, which compares, is the only one)
        assert stats["cmdstat_evalsha"]["calls"] == stats["cmdstat_get"]["calls"] == 1
        # A refusal worked out from a copy is checked again on a fresh read: b's copy is
        # version 2, stale now, but the note from a brought it the ended call.
        for _ in range(100):
            if (b.calls._recent.get("k1") or (0,))[0] == 3:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(HubError) as refused:
            await b.calls.update("k1", end)
        assert refused.value.code is ErrorCode.CALL_NOT_FOUND
        assert (await b.calls.get("k1")).version == 3
    finally:
        await client.aclose()
        await a.close()
        await b.close()
