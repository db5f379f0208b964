"""When a node asks Redis for due timers: when one it armed itself is due (checked every
50 ms against its own record), and otherwise once a second for the timers of nodes gone
since. Checked on a real redis-server: the node's own timers still fire on time, another
node's are still claimed, a burst past the claim's limit is all fired at once, and timers
re-armed or disarmed cost no round trip when their old deadline passes."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from signaling.state.redis import RedisState
from signaling.state.redis.timers import CLAIM_LIMIT, IDLE_POLL, POLL_INTERVAL
from signaling.state.timers import timer_key
from tests.test_state_contract import Recorder


class Timed(Recorder):
    """Notes when each timer is reported (``time.monotonic``)."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    async def timer_fired(self, kind: str, parts: list[str]) -> None:
        self.at[timer_key(kind, parts)] = time.monotonic()
        await super().timer_fired(kind, parts)


@pytest.fixture
async def node(redis_server: Any) -> Any:
    state = RedisState(redis_server.url, prefix="t" + secrets.token_hex(6))
    timed = Timed()
    await state.start(timed)
    client = aioredis.Redis.from_url(redis_server.url)
    yield state, timed, client
    await client.aclose()
    await state.close()


async def polls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_zrangebyscore", {}).get("calls", 0))


async def until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_an_idle_node_asks_redis_once_a_second(node: Any) -> None:
    _, _, client = node
    await asyncio.sleep(0.1)
    await client.config_resetstat()
    await asyncio.sleep(2.2 * IDLE_POLL)
    stats = await client.info("commandstats")
    assert 1 <= await polls(client) <= 3  # not one every 50 ms (44)
    assert "cmdstat_evalsha" not in stats


async def test_a_timer_armed_here_fires_on_time(node: Any) -> None:
    state, timed, _ = node
    await asyncio.sleep(IDLE_POLL / 2)  # between idle polls
    armed = time.monotonic()
    await state.timers.arm("ring", ["call-1"], 0.3)
    await until(lambda: timed.timers, 3)
    late = timed.at[timer_key("ring", ["call-1"])] - armed - 0.3
    assert -0.01 <= late < 0.3, late  # the tick's 50 ms, not the idle poll's second


async def test_a_timer_of_a_node_gone_is_claimed_within_the_idle_poll(node: Any) -> None:
    state, timed, client = node
    key = timer_key("ring", ["orphan"])
    written = time.monotonic()
    await client.zadd(state.link.keys.timers, {key: int(time.time() * 1000) - 5})
    await until(lambda: timed.timers, 3 * IDLE_POLL)
    assert timed.timers == [("ring", ["orphan"])]
    assert timed.at[key] - written <= IDLE_POLL + 0.5


async def test_more_due_at_once_than_a_claim_takes_all_fire_at_once(node: Any) -> None:
    state, timed, _ = node
    count = 2 * CLAIM_LIMIT + 50
    await asyncio.sleep(IDLE_POLL / 2)
    armed = time.monotonic()
    await asyncio.gather(*(state.timers.arm("ring", [f"c{i}"], 0.2) for i in range(count)))
    await until(lambda: len(timed.timers) == count, 3 * IDLE_POLL)
    # Three claims on consecutive ticks, not one per idle poll.
    assert max(timed.at.values()) - armed < 0.2 + 10 * POLL_INTERVAL
    assert sorted(p[0] for _, p in timed.timers) == sorted(f"c{i}" for i in range(count))


async def test_timers_moved_or_disarmed_cost_no_round_trip_when_their_old_deadline_passes(
    node: Any,
) -> None:
    state, timed, client = node
    await asyncio.sleep(0.1)
    for i in range(20):
        await state.timers.arm("typing", ["r", f"u{i}"], 0.1)
        await state.timers.arm("typing", ["r", f"u{i}"], 30)  # a keystroke re-arms
        await state.timers.arm("ring", [f"c{i}"], 0.1)
        await state.timers.disarm("ring", [f"c{i}"])
    await client.config_resetstat()
    await asyncio.sleep(0.5)
    assert await polls(client) <= 1  # at most the idle poll
    assert timed.timers == []
    assert len(state.timers._dues) == 20  # the passed deadlines are dropped
