"""Typing on Redis without a script on the hot path (signaling/state/redis/typing_indicators):
each node decides from what it announced itself, and Redis's replies correct it where that
view is short. Two stores on one real redis-server stand for two nodes."""

from __future__ import annotations

import asyncio
import secrets

import orjson
import pytest

from signaling.protocol import event_frame
from signaling.state.models import Member
from signaling.state.redis import RedisState
from signaling.state.typing_indicators import Announce, Announcement
from tests.test_state_contract import FakeSocket, Recorder, wait_for


def said(typing: bool) -> Announcement:
    return Announcement(
        "user:typing", event_frame("user:typing", {"userId": "u", "isTyping": typing}), "u"
    )


def typing_of(frames: list[bytes]) -> list[bool]:
    return [orjson.loads(f[f.index(b"{") :])["data"]["isTyping"] for f in frames]


async def started(url: str, prefix: str, node_id: str) -> RedisState:
    """A node on ``url``; ``state.recorder`` is what its handler was told."""
    state = RedisState(url, prefix=prefix, node_id=node_id)
    state.recorder = Recorder()
    await state.start(state.recorder)
    return state


async def listening(state: RedisState) -> FakeSocket:
    """bob, in room ``r`` on ``state``'s node."""
    bob = FakeSocket(state.delivery.new_connection_id(), "bob")
    state.delivery.attach(bob)
    await state.membership.join("r", Member("bob", "Bob"), bob.id)
    return bob


@pytest.fixture
async def nodes(redis_server):
    prefix = "t" + secrets.token_hex(6)
    pair = [await started(redis_server.url, prefix, f"n{i}") for i in (1, 2)]
    yield pair, await listening(pair[0])  # bob listens on the first node
    for state in pair:
        await state.close()


async def test_a_stop_from_a_device_on_another_node_is_announced_once(nodes):
    (one, two), bob = nodes
    assert await one.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True)) is Announce.SENT
    # The second node never announced it: its stop asks Redis what it really ends.
    assert await two.typing.stop_announced("r", "u", said(False)) is Announce.SENT
    assert await two.typing.stop_announced("r", "u", said(False)) is Announce.NONE
    await wait_for(lambda: len(bob.frames) == 2)
    await asyncio.sleep(0.1)
    assert typing_of(bob.frames) == [True, False]


async def test_a_start_ended_elsewhere_is_announced_again_inside_the_throttle(nodes):
    (one, two), bob = nodes
    assert await one.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True)) is Announce.SENT
    assert await one.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True)) is Announce.NONE
    assert await two.typing.stop_announced("r", "u", said(False)) is Announce.SENT
    # The first node still thinks it announced the state a moment ago; Redis says it is new.
    assert await one.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True)) is Announce.SENT
    await wait_for(lambda: len(bob.frames) == 3)
    assert typing_of(bob.frames) == [True, False, True]
    assert await two.typing.stop("r", "u", "c_1.a") == "U"  # its owner leaves
    # ... and the first node forgot nothing it should not announce: a new start is new.
    assert await one.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True)) is Announce.SENT


async def test_a_state_that_does_not_parse_counts_as_ended(nodes):
    (one, _), _bob = nodes
    link = one.link
    await link.client.hset(link.keys.typing("r"), "u", '{"n": "U", "c": "c_1.a"}')
    assert await one.typing.stop("r", "u", "c_1.a") is None
    assert await one.typing.expire("r", "u") is None
    assert await link.client.hget(link.keys.typing("r"), "u") is None
    # A name with the separator in it survives the round trip.
    await one.typing.start("r", "u", "c_1.a", "U|V", 5.0, 10.0)
    assert await one.typing.stop("r", "u", "c_1.a") == "U|V"


@pytest.fixture
async def alone(redis_server):
    """One node with bob listening: the only one to claim its timers."""
    state = await started(redis_server.url, "t" + secrets.token_hex(6), "n1")
    yield state, await listening(state)
    await state.close()


async def test_a_state_redis_forgot_still_has_its_end_announced(alone):
    """As after a Redis that restarted empty: the state is gone, the node's timer is not.
    (Any node may claim a timer; this holds where the announcing node claims it, as a
    node alone always does.)"""
    one, bob = alone
    assert await one.typing.start("r", "u", "c_1.a", "U", 0.3, 10.0, said(True)) is Announce.SENT
    await one.link.client.delete(one.link.keys.typing("r"))
    assert await one.recorder.typing_expired(one.typing, "r", "u") == "U"
    assert await one.typing.expire("r", "u") is None  # once
    # A stop of a forgotten state is announced too (the node announced its start).
    assert await one.typing.start("r", "u", "c_1.a", "U", 5.0, 10.0, said(True)) is Announce.SENT
    await one.link.client.delete(one.link.keys.typing("r"))
    assert await one.typing.stop_announced("r", "u", said(False)) is Announce.SENT
    await wait_for(lambda: len(bob.frames) == 3)
    assert typing_of(bob.frames) == [True, True, False]


async def test_commands_built_ahead_stay_right_past_the_cache_bound(nodes, monkeypatch):
    """The RESP encoded ahead per room and user, and per announcement, is dropped past a
    bound and built again: what reaches Redis and the room is the same either side of it
    (the state, its timer, the announcement)."""
    from signaling.state.redis import typing_indicators as module

    monkeypatch.setattr(module, "WIRE_CACHE", 2)
    (one, _), bob = nodes
    keys = one.link.keys
    for user in ("u", "v", "w", "u"):
        announcement = Announcement("user:typing", said(True).frame, user)
        assert await one.typing.start("r", user, "c_1.a", user.upper(), 5.0, 0.0, announcement)
    assert len(one.typing._wires) <= 2 and len(one.typing._publishes) <= 2
    state = await one.link.client.hgetall(keys.typing("r"))
    assert {k: v.split(b"|")[2] for k, v in state.items()} == {b"u": b"U", b"v": b"V", b"w": b"W"}
    timers = await one.link.client.zrange(keys.timers, 0, -1)
    assert sum(b'"typing","r"' in t for t in timers) == 3
    await wait_for(lambda: len(bob.frames) == 4)
    assert await one.typing.stop_announced("r", "v", said(False)) is Announce.SENT
    assert set(await one.link.client.hkeys(keys.typing("r"))) == {b"u", b"w"}
    await wait_for(lambda: len(bob.frames) == 5)


async def test_a_keystroke_on_one_redis_is_one_write_of_redis_to_the_node(nodes, redis_server):
    """A start's and a stop's commands go over the bus's connection, which hears the
    announcement too: Redis writes the replies and the node's copy together (on the
    command connection they were a write each)."""
    (one, _), bob = nodes
    probe = one.link.client

    async def writes() -> int:
        return int((await probe.info("stats"))["total_writes_processed"])

    await one.typing.start("r", "u", "c_1.a", "U", 5.0, 0.0, said(True))
    await wait_for(lambda: len(bob.frames) == 1)
    before = await writes()
    rounds = 40
    for i in range(rounds):
        if i % 2:
            await one.typing.start("r", "u", "c_1.a", "U", 5.0, 0.0, said(True))
        else:
            assert await one.typing.stop_announced("r", "u", said(False)) is Announce.SENT
    await wait_for(lambda: len(bob.frames) == 1 + rounds)
    # One write a keystroke, where it was two; slack for the probes, the node's heartbeat
    # and its idle timer poll.
    assert await writes() - before <= rounds + 8
    assert typing_of(bob.frames) == [True] + [False, True] * (rounds // 2)
