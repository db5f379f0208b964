"""The multiplexed Redis connection, on real redis-servers: replies reach their callers in
order under concurrency, error replies and cancelled callers leave the stream in step,
pipelines and transactions keep redis-py's results, and a Redis that dies, hangs or comes
back is reported with redis-py's failure types and reconnected to."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import hiredis
import pytest
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.state.redis.link import connect_client
from signaling.state.redis.multiplex import MultiplexedRedis
from signaling.state.redis.resp import bulk, command, head
from signaling.state.redis.subscriber import Subscriber
from tests.redis_server import RedisServer
from tests.test_state_contract import wait_for


async def multiplexed(server: RedisServer) -> AsyncIterator[MultiplexedRedis]:
    c = connect_client(server.url)
    assert isinstance(c, MultiplexedRedis)
    yield c
    await c.aclose()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[MultiplexedRedis]:
    async for c in multiplexed(redis_server):
        yield c


@pytest.fixture
async def own_client(own_redis: RedisServer) -> AsyncIterator[MultiplexedRedis]:
    async for c in multiplexed(own_redis):
        yield c


async def test_concurrent_callers_get_their_own_replies_in_one_connection(client):
    await client.mset({f"mx:k{i}": f"v{i}" for i in range(500)})
    replies = await asyncio.gather(*(client.get(f"mx:k{i}") for i in range(500)))
    assert replies == [f"v{i}".encode() for i in range(500)]
    names = await asyncio.gather(*(client.client_id() for _ in range(50)))
    assert len(set(names)) == 1  # every command on the one connection


async def test_reply_conversions_are_redis_pys(client):
    assert await client.set("mx:s", "1", nx=True, ex=30) is True
    assert await client.set("mx:s", "2", nx=True) is None
    await client.hset("mx:h", mapping={"a": "1", "b": "2"})
    assert await client.hgetall("mx:h") == {b"a": b"1", b"b": b"2"}
    assert await client.hgetall("mx:missing") == {}
    await client.sadd("mx:set", "x", "y")
    assert await client.smembers("mx:set") == {b"x", b"y"}
    await client.zadd("mx:z", {"a": 1.5, "b": 2})
    assert await client.zrangebyscore("mx:z", "-inf", "+inf", withscores=True) == [
        (b"a", 1.5),
        (b"b", 2.0),
    ]
    assert await client.ping() is True
    assert await client.delete("mx:s", "mx:h", "mx:set", "mx:z") == 4


async def test_error_replies_raise_and_leave_the_stream_in_step(client):
    await client.set("mx:str", "x")
    results = await asyncio.gather(
        client.get("mx:str"),
        client.hgetall("mx:str"),  # WRONGTYPE
        client.evalsha("0" * 40, 0),  # NOSCRIPT
        client.get("mx:str"),
        return_exceptions=True,
    )
    assert results[0] == b"x" and results[3] == b"x"
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    assert isinstance(results[2], NoScriptError)
    # A registered script loads itself after NOSCRIPT, as with redis-py.
    script = client.register_script("return ARGV[1]")
    assert await script(args=["back"]) == b"back"


def test_resp_built_ahead_is_what_hiredis_packs():
    """Typing's commands are encoded in pieces ahead of time (signaling.state.redis.resp);
    joined, they are byte for byte what hiredis writes for the same arguments."""
    for args in [
        ("HSET", "sb:{r:ü-1}:typing", "user 1", "1700000000000|c_1.a|Zoë"),
        ("PUBLISH", "ch", b"{}\n\x81\x00"),
        ("ZADD", "sb:timers", 1700000000000, '["typing","r","u"]'),
        ("ZREM", "", b""),
    ]:
        assert command(*args) == hiredis.pack_command(args)
        assert head(len(args), *args[:2]) + b"".join(map(bulk, args[2:])) == (
            hiredis.pack_command(args)
        )


async def test_commands_in_resp_get_their_replies_in_step(client):
    """``packed``: commands already in RESP, in one write, their raw replies in order
    (an error reply among them returned as its exception, the stream still in step)."""
    payload = command("SET", "mx:p", "1") + command("HGETALL", "mx:p") + command("INCR", "mx:p")
    replies, after = await asyncio.gather(client.mux.packed(payload, 3), client.get("mx:p"))
    assert replies[0] == b"OK" and replies[2] == 2
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    assert after == b"2"


async def test_a_cancelled_caller_does_not_shift_the_replies(client):
    await client.set("mx:a", "a")
    await client.set("mx:b", "b")
    slow = asyncio.ensure_future(client.blpop(["mx:nothing"], 0.2))
    first = asyncio.ensure_future(client.get("mx:a"))
    await asyncio.sleep(0.05)
    slow.cancel()
    first.cancel()
    assert await client.get("mx:b") == b"b"  # not the cancelled callers' replies


async def test_pipelines_and_transactions(client):
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.set("mx:p", "1")
            pipe.incr("mx:p")
            pipe.hgetall("mx:p")  # WRONGTYPE in the middle
            pipe.get("mx:p")
            out = await pipe.execute(raise_on_error=False)
        assert out[:2] == [True, 2] and out[3] == b"2"
        assert isinstance(out[2], ResponseError)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get("mx:p")
            pipe.hgetall("mx:p")
            with pytest.raises(ResponseError, match="Command # 2"):
                await pipe.execute()
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("mx:p")
            pipe.hset("mx:ph", "f", "v")
            pipe.hgetall("mx:ph")
            assert await pipe.execute() == [3, 1, {b"f": b"v"}]
        # A command refused while queueing aborts the whole transaction.
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("mx:p")
            pipe.execute_command("NOSUCHCOMMAND")
            with pytest.raises(ResponseError, match="unknown command"):
                await pipe.execute()
        assert await client.get("mx:p") == b"3"
        async with client.pipeline() as pipe:
            with pytest.raises(Exception, match="WATCH"):
                await pipe.watch("mx:p")
        assert await client.get("mx:p") == b"3"  # still in step afterwards
    finally:
        await client.delete("mx:p", "mx:ph")


async def test_a_dead_redis_fails_waiting_callers_and_is_reconnected_to(own_redis, own_client):
    await own_client.set("mx:d", "1")
    pending = asyncio.ensure_future(own_client.blpop(["mx:nothing"], 1))
    await asyncio.sleep(0.1)
    own_redis.stop()
    with pytest.raises(RedisConnectionError):
        await pending
    with pytest.raises(RedisConnectionError):
        await own_client.get("mx:d")  # refused: nobody listens
    own_redis.start()  # same port, empty
    assert await own_client.get("mx:d") is None
    assert await own_client.set("mx:d", "2") is True


async def test_a_hung_redis_times_out_within_the_bound(own_redis, own_client):
    await own_client.set("mx:h", "1")
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        await own_client.get("mx:h")
    waited = time.monotonic() - started
    assert 2.9 < waited < 5.0, waited  # socket_timeout 3 s, checked every second
    os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert await own_client.get("mx:h") == b"1"  # a new connection


async def test_password_database_and_unix_socket(tmp_path: Path):
    sock = tmp_path / "r.sock"
    server = RedisServer(
        tmp_path / "redis",
        extra=("--requirepass", "s3cret", "--unixsocket", str(sock), "--unixsocketperm", "700"),
    ).start()
    try:
        good = connect_client(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        await good.set("mx:db", "three")
        via_unix = connect_client(f"unix://:s3cret@{sock}?db=3")
        assert isinstance(via_unix, MultiplexedRedis)
        assert await via_unix.get("mx:db") == b"three"
        other_db = connect_client(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        assert await other_db.get("mx:db") is None
        wrong = connect_client(f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(AuthenticationError):
            await wrong.get("mx:db")
        for client in (good, via_unix, other_db, wrong):
            await client.aclose()
    finally:
        server.stop()


async def test_a_subscriber_hands_over_messages_as_they_are_read(own_redis):
    client = connect_client(own_redis.url)
    assert isinstance(client, MultiplexedRedis)
    pushed: asyncio.Queue[list[object]] = asyncio.Queue()
    subscriber = Subscriber(client.mux, pushed.put_nowait)

    async def next_push() -> list[object]:
        return await asyncio.wait_for(pushed.get(), 5)

    try:
        await subscriber.subscribe("mx:ch1", "mx:ch2")
        assert await next_push() == [b"subscribe", b"mx:ch1", 1]
        assert await next_push() == [b"subscribe", b"mx:ch2", 2]
        counts = await asyncio.gather(*(client.publish("mx:ch1", str(i)) for i in range(100)))
        assert counts == [1] * 100
        for i in range(100):  # all, in order
            assert await next_push() == [b"message", b"mx:ch1", str(i).encode()]
        await subscriber.unsubscribe("mx:ch1")
        assert await next_push() == [b"unsubscribe", b"mx:ch1", 1]
        assert await client.publish("mx:ch1", "unheard") == 0
        assert await client.publish("mx:ch2", "last") == 1
        assert await next_push() == [b"message", b"mx:ch2", b"last"]
        own_redis.stop()  # a lost connection ends ``closed`` with the error
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(subscriber.closed, 5)
    finally:
        await subscriber.aclose()
        await client.aclose()


async def writes_of(server: RedisServer) -> int:
    """Redis's writes to its clients so far (the asking client's ``INFO`` counts one)."""
    probe = connect_client(server.url)
    try:
        return int((await probe.info("stats"))["total_writes_processed"])
    finally:
        await probe.aclose()


async def test_a_subscriber_takes_commands_and_hears_what_they_publish_in_the_same_write(
    own_redis,
):
    """RESP3: the subscribed connection takes commands; a command's replies and the
    message it published to the connection's own channel come back in one write."""
    client = connect_client(own_redis.url)
    assert isinstance(client, MultiplexedRedis)
    pushed: list[list[object]] = []
    subscriber = Subscriber(client.mux, pushed.append)
    payload = command("SET", "mx:own", "v") + command("PUBLISH", "mx:mine", "hi")
    try:
        assert subscriber.packed(payload, 2, False) is None  # not open yet
        await subscriber.subscribe("mx:mine")
        await wait_for(lambda: pushed == [[b"subscribe", b"mx:mine", 1]])
        before = await writes_of(own_redis)
        rounds = 50
        for _ in range(rounds):
            sent = subscriber.packed(payload, 2, False)
            assert sent is not None
            assert await sent == [b"OK", 1]
        after = await writes_of(own_redis)
        assert after - before <= rounds + 2  # not two writes a request (the probes: 2)
        assert pushed[1:] == [[b"message", b"mx:mine", b"hi"]] * rounds
        assert await client.get("mx:own") == b"v"
        # An error reply is the caller's, in step with the rest.
        sent = subscriber.packed(command("INCR", "mx:own") + command("GET", "mx:own"), 2, False)
        replies = await sent  # type: ignore[misc]
        assert isinstance(replies[0], ResponseError) and replies[1] == b"v"
    finally:
        await subscriber.aclose()
        await client.aclose()


async def test_a_hung_redis_fails_a_subscribers_commands_within_the_bound(own_redis):
    client = connect_client(own_redis.url)
    assert isinstance(client, MultiplexedRedis)
    subscriber = Subscriber(client.mux, lambda _: None)
    try:
        await subscriber.subscribe("mx:hung")
        await asyncio.sleep(0.1)
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        sent = subscriber.packed(command("GET", "mx:h"), 0, False)
        assert sent is not None
        with pytest.raises(RedisTimeoutError):
            await sent
        assert 2.9 < time.monotonic() - started < 5.0  # socket_timeout 3 s
        with pytest.raises(RedisTimeoutError):
            await asyncio.wait_for(subscriber.closed, 1)
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        await subscriber.aclose()
        await client.aclose()


async def test_a_server_that_accepts_and_never_answers_times_out_connecting():
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = connect_client(f"redis://:pw@127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await client.get("x")  # its AUTH is never answered
        assert 1.9 < time.monotonic() - started < 4.0  # socket_connect_timeout 2 s
        assert accepted
    finally:
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
