"""How many round trips to Redis a device's life costs: what the node's CPU (a write and a
wake-up each) and Redis's go by under churn. The counts are behaviour, not timing: each
is the number of writes to Redis that carry the device's or its room's keys. And the
per-device records that let a leave be one round trip, and an idle node's timer poll,
which runs no script."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from signaling.state.models import Member
from signaling.state.redis.multiplex import _Replies
from tests.conftest import make_state
from tests.test_state_contract import Recorder

STATE_KINDS = ("redis",)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write the node makes to Redis (the requests of one loop iteration each)."""
    seen: list[bytes] = []
    flush = _Replies.flush

    def spied(self: _Replies) -> None:
        if self.outgoing and not self.lost:
            seen.append(b"".join(self.outgoing))
        flush(self)

    monkeypatch.setattr(_Replies, "flush", spied)
    return seen


def about(writes: list[bytes], *names: bytes) -> int:
    """The writes that carry any of ``names`` (and then empties the record)."""
    count = sum(1 for w in writes if any(n in w for n in names))
    writes.clear()
    return count


async def settle() -> None:
    """Let the hooks that run after an answer finish (nothing else talks of carol)."""
    await asyncio.sleep(0.3)


async def test_a_device_connects_joins_and_leaves_in_ten_round_trips(
    hub_factory: Any, writes: list[bytes]
) -> None:
    hub = await hub_factory(presence_grace=0)
    bob = await hub.connect_in("bob", "team")
    await settle()
    writes.clear()

    carol = await hub.connect("carol")
    await settle()
    # The presence script, the user's rooms (its audience) and calls (any still ringing)
    # go out together.
    assert about(writes, b"carol") == 1

    await carol.request("room:join", {"roomId": "team"})
    await bob.expect("room:member-joined")
    await settle()
    # The room's record; the join with the members; their presence; the recorded
    # arrival; the history's position after it.
    assert about(writes, b"carol", b"{r:team}") == 5

    await carol.close()
    await bob.expect("room:member-left")
    await bob.expect("presence:changed", where=lambda d: d["status"] == "offline")
    await settle()
    # Presence, rooms and calls together; the presence announcement; the leave with the
    # user's and node's records and the members left; the recorded departure.
    assert about(writes, b"carol", b"{r:team}") == 4


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
    """The node polls the shared timers every 50 ms; with nothing due, a poll is a plain
    read, and the claiming script runs only for a timer that is due."""
    hub = await hub_factory(presence_grace=0)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await asyncio.sleep(0.2)
        await client.config_resetstat()
        await asyncio.sleep(0.5)
        stats = await client.info("commandstats")
        assert stats["cmdstat_zrangebyscore"]["calls"] >= 5
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
