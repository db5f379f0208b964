"""How many round trips to Redis a device's life costs: what the node's CPU (a write and a
wake-up each) and Redis's go by under churn. The counts are behaviour, not timing: each
is the number of writes to Redis that carry the device's or its room's keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signaling.state.redis.multiplex import _Replies

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
