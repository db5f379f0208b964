"""Redis Cluster over one multiplexed connection per primary, on a real 3-primary cluster:
commands and pipelines go to the primary owning their slot, and a command sent to the
wrong primary (the slot moved: MOVED) is run where it belongs, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from benchmarks.redis_cluster import RedisClusterServer
from signaling.state.redis.link import WaitingCluster, connect_client


@pytest.fixture
async def client(redis_cluster: RedisClusterServer) -> AsyncIterator[WaitingCluster]:
    c = connect_client(redis_cluster.url)
    assert isinstance(c, WaitingCluster)
    await c.ping()  # learns the slots
    yield c
    await c.aclose()


def keys_on_every_primary(client: WaitingCluster, prefix: str) -> list[str]:
    """One key per primary."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < 3:
        key = f"{prefix}{i}"
        found.setdefault(client.get_node_from_key(key).name, key)
        i += 1
    return list(found.values())


async def test_commands_and_pipelines_use_one_connection_per_primary(client):
    keys = keys_on_every_primary(client, "mxc:k")
    await asyncio.gather(*(client.set(k, k) for k in keys))
    assert await asyncio.gather(*(client.get(k) for k in keys)) == [k.encode() for k in keys]
    assert len(client._muxes) == 3  # the fast path served them, one per primary
    async with client.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.incr(f"{{{k}}}:n")
            pipe.get(k)
            pipe.hgetall(f"{{{k}}}:none")
        out = await pipe.execute()
    assert out == [v for k in keys for v in (1, k.encode(), {})]
    async with client.pipeline(transaction=True) as pipe:  # one slot: a transaction
        pipe.incr("{mxc}:a")
        pipe.incr("{mxc}:a")
        pipe.get("{mxc}:a")
        assert await pipe.execute() == [1, 2, b"2"]
    script = client.register_script("return redis.call('GET', KEYS[1])")
    assert await script(keys=[keys[1]]) == keys[1].encode()
    await client.delete(*keys)  # several slots: redis-py's path splits it
    assert await asyncio.gather(*(client.get(k) for k in keys)) == [None, None, None]


def misroute(client: WaitingCluster, key: str) -> None:
    """Make the client believe ``key``'s slot lives on another primary, as after the slot
    moved: that primary answers MOVED (and redis-py's path corrects the map)."""
    owner = client.get_node_from_key(key)
    wrong = next(n for n in client.get_primaries() if n.name != owner.name)
    client.nodes_manager.slots_cache[client.keyslot(key)] = [wrong]


async def test_a_moved_command_runs_where_it_belongs_once(client):
    key, other = keys_on_every_primary(client, "mxc:moved")[:2]
    await client.set(key, "0")
    await client.set(other, "0")
    misroute(client, key)
    assert await client.incr(key) == 1  # MOVED, then redis-py's path
    misroute(client, key)
    async with client.pipeline(transaction=False) as pipe:
        pipe.incr(key)  # redirected
        pipe.incr(other)  # applied where it went, not again
        pipe.get(key)
        assert await pipe.execute() == [2, 1, b"2"]
    misroute(client, key)
    async with client.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.incr(key)
        assert await pipe.execute() == [3, 4]  # the whole transaction, once, where it belongs
    assert client.get_node_from_key(key).name != ""  # the map was corrected
    assert await client.get(key) == b"4"
    assert await client.get(other) == b"1"
    await client.delete(key)
    await client.delete(other)


async def test_a_pipeline_with_a_command_of_unknown_key_keeps_its_order(client):
    key, other = keys_on_every_primary(client, "mxc:order")[:2]
    async with client.pipeline(transaction=False) as pipe:
        pipe.set(key, "1")
        pipe.append(key, "x")  # no key the client knows of: redis-py's path places it
        pipe.get(key)
        pipe.set(other, "y")
        assert await pipe.execute() == [True, 2, b"1x", True]  # in the order written
    await client.delete(key)
    await client.delete(other)
