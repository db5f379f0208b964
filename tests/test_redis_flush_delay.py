"""Deferrable requests on the multiplexed connection, on a real redis-server: under load
they share one write (Redis reads them in one go: its own count of reads says so), the
first after a quiet spell goes at once, and any other request takes the waiting ones
along without reordering the replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import hiredis
import pytest
from redis.asyncio import Redis

from signaling.state.models import Member
from signaling.state.redis import RedisState
from signaling.state.redis.link import connect_client
from signaling.state.redis.multiplex import MultiplexedRedis
from signaling.state.typing_indicators import Announce
from tests.redis_server import RedisServer
from tests.test_redis_typing import said, typing_of
from tests.test_state_contract import FakeSocket, Recorder, wait_for


@pytest.fixture
async def observer(own_redis: RedisServer) -> AsyncIterator[Redis]:
    """A plain client of its own, to read Redis's statistics."""
    client = Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


async def reads(observer: Redis) -> int:
    """Read events Redis has processed (the INFO command's own included)."""
    return int((await observer.info("stats"))["total_reads_processed"])


async def deferred_set(client: MultiplexedRedis, key: str, value: str) -> float:
    """SET in a deferrable pipeline; how long it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.pipeline(transaction=False) as pipe:
        pipe.deferrable = True
        pipe.set(key, value)
        assert await pipe.execute() == [True]
    return loop.time() - started


async def five_deferred_sets(client: MultiplexedRedis) -> list[float]:
    """Five deferrable SETs, each queued in a loop iteration of its own, 10 ms apart."""
    tasks = []
    for i in range(5):
        tasks.append(asyncio.ensure_future(deferred_set(client, f"fd:{i}", str(i))))
        await asyncio.sleep(0.01)
    return list(await asyncio.gather(*tasks))


@pytest.mark.parametrize("delay", [0.0, 0.3])
async def test_deferrable_requests_share_one_write_under_load(own_redis, observer, delay):
    client = connect_client(own_redis.url, flush_delay=delay)
    assert isinstance(client, MultiplexedRedis)
    try:
        assert await client.ping() is True  # connected, and just written to
        before = await reads(observer)
        waits = await five_deferred_sets(client)
        after = await reads(observer)
        if delay:
            # One write, read once (the second INFO is the other read); none went
            # before the delay had run since the PING's write.
            assert after - before == 2
            assert min(waits) > 0.15, waits
            assert max(waits) < 0.3 + 0.25, waits
        else:  # each on its own
            assert after - before == 6
            assert max(waits) < 0.1, waits
        assert await client.mget([f"fd:{i}" for i in range(5)]) == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        await client.aclose()


async def test_the_first_after_a_quiet_spell_goes_at_once(own_redis):
    client = connect_client(own_redis.url, flush_delay=0.3)
    assert isinstance(client, MultiplexedRedis)
    try:
        assert await client.ping() is True
        await asyncio.sleep(0.35)  # longer than the delay since the last write
        assert await deferred_set(client, "fd:q", "1") < 0.1
    finally:
        await client.aclose()


async def test_another_request_takes_the_waiting_ones_along_in_order(own_redis, observer):
    client = connect_client(own_redis.url, flush_delay=0.5)
    assert isinstance(client, MultiplexedRedis)
    loop = asyncio.get_running_loop()
    try:
        assert await client.ping() is True
        before = await reads(observer)
        started = loop.time()
        waiting = asyncio.ensure_future(deferred_set(client, "fd:o", "written first"))
        await asyncio.sleep(0.05)  # it is waiting for its delay
        assert not waiting.done()
        assert await client.get("fd:o") == b"written first"  # behind the SET, same write
        assert await waiting < 0.25
        assert loop.time() - started < 0.25
        assert await reads(observer) - before == 2
    finally:
        await client.aclose()


async def test_typing_changes_are_the_requests_that_may_wait(own_redis):
    """On a node, typing changes are written deferrable; everything else (a join, call
    set-up) is written at once. The node's own writes are recorded on the way to the
    real connection (its background timers write too, so timing alone cannot tell),
    read back from the RESP written (typing's start and stop come encoded already)."""
    state = RedisState(own_redis.url, prefix="fd", node_id="n1", flush_delay=0.05)
    state.recorder = Recorder()
    await state.start(state.recorder)
    mux = state.link.client.mux
    written: list[tuple[bytes | str, bool]] = []
    send = mux._send

    def recorded(conn, payload, count, deferrable=False):
        reader = hiredis.Reader()
        reader.feed(payload)
        while (command := reader.gets()) is not False:
            written.append((command[0].decode(), deferrable))
        return send(conn, payload, count, deferrable)

    mux._send = recorded
    try:
        bob = FakeSocket(state.delivery.new_connection_id(), "bob")
        state.delivery.attach(bob)
        await state.membership.join("r", Member("bob", "Bob"), bob.id)
        joined = len(written)
        sent = await state.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True))
        assert sent is Announce.SENT
        await wait_for(lambda: typing_of(bob.frames) == [True])
        assert await state.typing.stop_announced("r", "u", said(False)) is Announce.SENT
        await wait_for(lambda: typing_of(bob.frames) == [True, False])
        assert not any(deferrable for _, deferrable in written[:joined])
        # (the timers' poll, a plain read, is not the store's)
        typed = {n: deferrable for n, deferrable in written[joined:] if n != "ZRANGEBYSCORE"}
        assert typed == {"HSET": True, "ZADD": True, "PUBLISH": True, "HDEL": True, "ZREM": True}
    finally:
        del mux._send
        await state.close()


async def test_the_setting_reaches_the_nodes_connection(own_redis, monkeypatch):
    from config.settings import load_settings
    from switchboard.node import make_state

    monkeypatch.setenv("SWITCHBOARD_REDIS_FLUSH_DELAY", "0.02")
    state = make_state(load_settings(redis_url=own_redis.url))
    assert isinstance(state, RedisState)
    try:
        assert state.link.client.mux.flush_delay == 0.02
    finally:
        await state.link.client.aclose()
