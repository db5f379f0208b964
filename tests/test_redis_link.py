"""The Redis link's coalesced publishing, on one redis-server and on a Redis Cluster:
concurrent publishes go out in the order they were made, each told how many heard it."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from signaling.state.redis.link import RedisLink


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    server = "redis_server" if request.param == "redis" else "redis_cluster"
    return request.getfixturevalue(server).url


async def test_concurrent_publishes_keep_their_order_and_counts(url):
    link = RedisLink(url, "tl", "n1")
    await link.reset()
    channel = link.keys.room_channel("order")
    if link.sharded:
        node = link.client.get_node_from_key(channel)
        listener = Redis(host=node.host, port=node.port)
    else:
        listener = Redis.from_url(url)
    pubsub = listener.pubsub()
    try:
        if link.sharded:
            await pubsub.ssubscribe(channel)
        else:
            await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=2)  # the confirmation
        heard = await asyncio.gather(
            *(link.publish([(channel, str(i).encode())]) for i in range(200)),
            link.publish([]),
        )
        assert heard == [1] * 200 + [0]
        got = []
        while len(got) < 200:
            message = await pubsub.get_message(timeout=2)
            assert message is not None, f"only {len(got)} arrived"
            if message["type"] in ("message", "smessage"):
                got.append(int(message["data"]))
        assert got == list(range(200))  # one order: the order publish() was called in
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await link.client.aclose()


async def test_batch_returns_raw_replies_in_order_and_raises_the_first_error(url):
    """The typing store's round trip: the commands' replies as Redis sent them, in order;
    an error reply is raised, and the commands around it ran (Redis runs each one)."""
    link = RedisLink(url, "tb", "n1")
    await link.reset()
    typing, timers = link.keys.typing("r1"), link.keys.timers
    try:
        replies = await link.batch(
            [("HSET", typing, "u1", "v1"), ("ZADD", timers, 5, "t1"), ("HSET", typing, "u1", "v2")],
            deferrable=True,
        )
        assert replies == [1, 1, 0]
        await link.client.set(link.keys.typing("r2"), "not a hash")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await link.batch([("HDEL", typing, "u1"), ("HSET", link.keys.typing("r2"), "u1", "v")])
        assert await link.client.hget(typing, "u1") is None  # the HDEL before it ran
        assert await link.client.zscore(timers, "t1") == 5
    finally:
        await link.client.aclose()
