"""Redis Cluster specifics (the cross-node suite itself runs on the cluster too, in
``test_cluster.py``): room traffic is sharded pub/sub, spread over the primaries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from benchmarks.redis_cluster import RedisClusterServer
from signaling.state.redis.link import CLUSTER_NODE_CONNECTIONS, connect_client
from tests.cluster import Cluster

ROOMS = [f"room-{i}" for i in range(12)]


@pytest.fixture
async def cluster(tmp_path: Path, redis_cluster: RedisClusterServer) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, redis_cluster.url)
    yield c
    await c.close()


def subscriptions(server: RedisClusterServer, prefix: str) -> dict[int, tuple[set, set]]:
    """Per primary: its shard channels and its classic channels of this run."""
    out = {}
    for port in server.ports:
        with redis.Redis(port=port, decode_responses=True) as r:
            sharded = set(r.execute_command("PUBSUB", "SHARDCHANNELS", f"{prefix}:*"))
            classic = set(r.pubsub_channels(f"{prefix}:*"))
        out[port] = (sharded, classic)
    return out


async def test_room_channels_are_sharded_over_the_primaries(cluster, redis_cluster):
    a, b = await cluster.start("a"), await cluster.start("b")
    senders = [await a.connect(f"s{i}", room) for i, room in enumerate(ROOMS)]
    receivers = [await b.connect(f"r{i}", room) for i, room in enumerate(ROOMS)]

    for sender, room in zip(senders, ROOMS, strict=True):
        await sender.send("message:typing", {"conversationId": room, "isTyping": True})
    for receiver, room in zip(receivers, ROOMS, strict=True):
        typing = await receiver.expect("user:typing")
        assert typing["conversationId"] == room

    subs = subscriptions(redis_cluster, cluster.prefix)
    room_channels = {cluster.prefix + ":{r:" + room + "}:events" for room in ROOMS}
    found = set().union(*(sharded for sharded, _ in subs.values()))
    assert room_channels <= found  # every room's channel, on the shard owning its slot
    holding = [port for port, (sharded, _) in subs.items() if sharded & room_channels]
    assert len(holding) >= 2, subs  # spread over primaries, not all on one
    assert all(not classic for _, classic in subs.values())  # nothing cluster-wide
    # Each room channel is listened to by both nodes (each has a member there), on the
    # one primary that owns it.
    for port, (sharded, _) in subs.items():
        with redis.Redis(port=port) as r:
            for channel in sharded & room_channels:
                numsub = r.execute_command("PUBSUB", "SHARDNUMSUB", channel)
                assert numsub[1] == 2, (channel, numsub)

    # Nodes stop listening with their last member: room channels (and connections to
    # primaries left with none) go away.
    for client, room in [*zip(senders, ROOMS, strict=True), *zip(receivers, ROOMS, strict=True)]:
        await client.request("room:leave", {"roomId": room})
    for _ in range(50):
        subs = subscriptions(redis_cluster, cluster.prefix)
        if not set().union(*(sharded for sharded, _ in subs.values())) & room_channels:
            break
        await asyncio.sleep(0.1)
    assert not set().union(*(sharded for sharded, _ in subs.values())) & room_channels, subs
    await receivers[0].request("room:join", {"roomId": ROOMS[0]})  # and come back on demand
    await senders[0].request("room:join", {"roomId": ROOMS[0]})
    await senders[0].send("message:typing", {"conversationId": ROOMS[0], "isTyping": True})
    assert (await receivers[0].expect("user:typing"))["conversationId"] == ROOMS[0]


async def test_a_burst_past_the_connection_bound_waits_instead_of_failing(redis_cluster):
    """redis-py's cluster client fails a command at once when a primary's connections are
    all in use; Switchboard's waits for a place (a join burst must not be `unavailable`)."""
    client = connect_client(redis_cluster.url, busy_timeout=30.0)
    try:
        await client.ping()  # learns the slots first, as a node does when it connects
        burst = 4 * CLUSTER_NODE_CONNECTIONS

        async def one(i: int) -> bytes | None:
            if i % 2:
                return await client.get(f"burst:{{k{i % 7}}}")
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(f"burst:{{k{i % 7}}}", b"x")
                pipe.get(f"burst:{{k{i % 5}}}")
                return (await pipe.execute())[0]

        results = await asyncio.gather(*(one(i) for i in range(burst)))
        assert len(results) == burst  # every one answered, none refused
        for node in client.get_primaries():
            assert len(node._connections) <= CLUSTER_NODE_CONNECTIONS
    finally:
        await client.aclose()
