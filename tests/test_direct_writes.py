"""A room's broadcast written at once (signaling.direct_writes and ``broadcast`` in
signaling/_fanout.c), with real ``/ws`` connection objects on real uvloop TCP connections
over loopback: written without the outboxes only while a recipient has nothing queued or
buffered, so every connection's frames keep their order; coalesced when the loop is busy;
never written to a closed or closing connection, nor to a new connection that got a closed
one's descriptor."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from signaling import direct_writes
from signaling.outbox import WriteBatcher
from signaling.ratelimit import TokenBucket
from signaling.state.handler import Reports
from signaling.state.memory.delivery import LocalDelivery
from signaling.tokens import Principal
from signaling.websocket import Connection
from tests.loopback import Loopback, nothing_more, read_exactly

ROOM = "room-1"
ids = itertools.count()


class Member(Connection):
    """The ``/ws`` connection, counting the frames that went through its outbox."""

    __slots__ = ("queued", "slow", "sock")

    def send_frame(self, frame: bytes) -> bool:
        self.queued += 1
        if self.wire is None:  # as an Engine.IO session between polls: kept for the next
            return True
        return super().send_frame(frame)

    def too_slow(self) -> None:
        self.slow += 1
        self.closed = True

    async def read(self, size: int, timeout: float = 5.0) -> bytes:
        return await read_exactly(self.sock, size, timeout)

    def nothing_more(self) -> None:
        nothing_more(self.sock)


async def quiet() -> None:
    """Let the loop run a few quiet iterations: flushes done, the gate open again."""
    await asyncio.sleep(0.01)


@pytest.fixture
async def room() -> AsyncIterator[tuple[LocalDelivery, Callable[..., asyncio.Future[Member]]]]:
    """A delivery, and a way to connect a member of ``ROOM`` through a uvloop server."""
    delivery = LocalDelivery("node", Reports())
    batcher = WriteBatcher(compiled=True)
    made: list[Member] = []

    async def connect(
        user: str | None = None,
        *,
        join: bool = True,
        rcvbuf: int = 0,
        limit: int = 1 << 20,
        sock: socket.socket | None = None,
    ) -> Member:
        sock, transport = await server.connect(rcvbuf=rcvbuf, sock=sock)
        n = next(ids)
        member = Member(
            f"c{n}",
            Principal(user or f"u{n}", "name"),
            None,  # type: ignore[arg-type]  # no aiohttp WebSocket: frames are written raw
            transport,
            rate=TokenBucket(10, 10),
            errors=TokenBucket(10, 10),
            send_buffer_limit=limit,
            batcher=batcher,
        )
        member.queued = member.slow = 0
        member.sock = sock
        delivery.attach(member)
        if join:
            delivery.index_join(ROOM, member.id)
        made.append(member)
        return member

    async with Loopback() as server:
        yield delivery, connect  # type: ignore[misc]
        for member in made:
            member.sock.close()
            if member.wire is not None:  # a test may have taken it (a polling session)
                member.wire.abort()


def test_the_compiled_broadcast_is_built():
    assert direct_writes.AVAILABLE


async def test_a_quiet_rooms_broadcast_skips_the_outboxes_once_they_are_empty(room):
    delivery, connect = room
    members = [await connect() for _ in range(4)]
    assert all(m.direct_kind == 0 and m.wire_fd >= 0 for m in members)
    # a frame of its own for each first: known to have an empty outbox after the flush
    assert all(m.send_frame(b"one;") for m in members)
    await quiet()
    written = direct_writes.written()
    assert delivery.write_room(ROOM, b"two;") == 4
    # written before this coroutine yields: no outbox, no flush
    assert [m.queued for m in members] == [1] * 4
    assert direct_writes.written() == written + 4  # the node's metric counts them
    assert all(m.frames == [] for m in members)
    for m in members:
        assert m.sock.recv(100) == b"one;two;"


async def test_a_frame_queued_first_stays_first(room):
    delivery, connect = room
    first, second = await connect(), await connect()
    delivery.write_room(ROOM, b"warm;")
    await quiet()
    queued = (first.queued, second.queued)
    assert first.send_frame(b"own;")  # in first's outbox until the flush
    assert delivery.write_room(ROOM, b"room;") == 2
    # first's went after its own frame, second's at once
    assert (first.queued, second.queued) == (queued[0] + 2, queued[1])
    assert second.sock.recv(100) == b"warm;room;"
    await quiet()
    assert await first.read(14) == b"warm;own;room;"
    # the flush emptied first's outbox: written directly again
    assert delivery.write_room(ROOM, b"next;") == 2
    assert first.queued == queued[0] + 2
    assert await first.read(5) == b"next;"


async def test_a_busy_loop_coalesces_broadcasts_in_the_outboxes(room):
    delivery, connect = room
    members = [await connect() for _ in range(3)]
    assert all(m.send_frame(b"warm;") for m in members)
    await quiet()
    written = direct_writes.written()
    for k in range(3):  # three in one iteration: the first at once, the rest queued
        assert delivery.write_room(ROOM, f"b{k};".encode()) == 3
    assert direct_writes.written() == written + 3
    assert [m.frames for m in members] == [[b"b1;", b"b2;"]] * 3
    # queued by the compiled call, as send_frame would have, without calling it
    assert [m.queued for m in members] == [1] * 3
    await asyncio.sleep(0)  # the next iteration follows a busy one: through the outboxes
    assert delivery.write_room(ROOM, b"b3;") == 3
    assert [m.frames for m in members] == [[b"b3;"]] * 3
    await quiet()
    assert direct_writes.written() == written + 3
    for m in members:
        assert await m.read(17) == b"warm;b0;b1;b2;b3;"
    assert delivery.write_room(ROOM, b"b4;") == 3  # quiet again: at once
    assert direct_writes.written() == written + 6
    for m in members:
        assert await m.read(3) == b"b4;"


async def test_a_queued_broadcast_leaves_closed_closing_and_polling_members_to_send_frame(room):
    delivery, connect = room
    closed, closing, polling, fine = [await connect() for _ in range(4)]
    polling.wire, polling.wire_fd = None, -1  # an Engine.IO session between polls
    delivery.index_join(ROOM, fine.id)  # rebuild the plan
    delivery.write_room(ROOM, b"warm;")
    await quiet()
    for m in (closed, closing, fine):
        assert await m.read(5) == b"warm;"
    closed.closed = True
    closing.wire.close()
    before = [m.queued for m in (closed, closing, polling, fine)]
    assert delivery.write_room(ROOM, b"first;") == 2  # at once: fine, and polling's kept
    assert delivery.write_room(ROOM, b"queued;") == 2  # the gate is closed: queued
    calls = [m.queued - n for m, n in zip((closed, closing, polling, fine), before, strict=True)]
    # send_frame decided for the three that are not plainly open, both times; the open
    # one was written once at once and once queued by the compiled call
    assert calls == [2, 2, 2, 0]
    assert closing.closed  # send_frame noticed its transport closing
    assert fine.frames == [b"queued;"]
    await quiet()
    assert await fine.read(13) == b"first;queued;"
    closed.nothing_more()


async def test_a_peer_that_stops_reading_gets_everything_in_order_then_is_dropped(room):
    delivery, connect = room
    slow = await connect(rcvbuf=4096, limit=600_000)
    other = await connect()
    delivery.write_room(ROOM, b"w")
    await quiet()
    chunks = [bytes([65 + k % 26]) * 50_000 for k in range(10)]
    for chunk in chunks:
        # the first fill the kernel's buffers and the rest wait in the transport's,
        # whichever way each one went
        assert delivery.write_room(ROOM, chunk) == 2
        await quiet()
    assert slow.wire.get_write_buffer_size() > 0
    assert slow.queued > 1  # once the transport buffered, through the outbox
    assert slow.slow == 0
    expected = b"w" + b"".join(chunks)
    assert await slow.read(len(expected), timeout=10) == expected
    for _ in range(40):  # a reader that never reads: past the limit it is dropped
        if slow.slow:
            break
        delivery.write_room(ROOM, b"y" * 50_000)
        await quiet()
    assert slow.slow == 1
    assert await other.read(len(expected), timeout=10) == expected


async def test_closed_and_closing_connections_are_not_written(room):
    delivery, connect = room
    closed, closing, fine = [await connect() for _ in range(3)]
    delivery.write_room(ROOM, b"warm;")
    await quiet()
    for m in (closed, closing, fine):
        assert await m.read(5) == b"warm;"
    closed.closed = True
    closing.wire.close()
    assert delivery.write_room(ROOM, b"after;") == 1
    assert await fine.read(6) == b"after;"
    closed.nothing_more()
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(closing.sock, 10), 2) == b""


async def test_a_descriptor_reused_by_a_new_connection_gets_nothing_of_the_room(room):
    delivery, connect = room
    gone, stays = await connect(), await connect()
    delivery.write_room(ROOM, b"warm;")
    await quiet()
    fd = gone.wire_fd
    client = socket.socket()  # made first, so the server's accept gets the number freed
    # the server drops it before the hub has cleaned up: the room's plan still has it
    gone.wire.abort()
    await quiet()
    newcomer = await connect(join=False, sock=client)
    assert newcomer.wire_fd == fd  # the kernel handed the number out again
    assert ROOM in delivery.plans
    assert delivery.write_room(ROOM, b"secret;") == 1
    assert await stays.read(12) == b"warm;secret;"
    await quiet()
    newcomer.nothing_more()


async def test_the_excluded_users_devices_are_skipped(room):
    delivery, connect = room
    phone, laptop, other = await connect("ann"), await connect("ann"), await connect("bob")
    delivery.write_room(ROOM, b"warm;")
    await quiet()
    assert delivery.write_room(ROOM, b"typing;", exclude_user="ann") == 1
    assert other.sock.recv(100) == b"warm;typing;"
    await quiet()
    for m in (phone, laptop):
        assert await m.read(5) == b"warm;"
        m.nothing_more()


async def test_a_member_without_a_descriptor_yet_joins_the_plan_when_it_has_one(room):
    delivery, connect = room
    member = await connect()
    wire, fd = member.wire, member.wire_fd
    member.wire, member.wire_fd = None, -1  # an Engine.IO session still polling
    delivery.index_join(ROOM, member.id)  # a change of membership: the plan is rebuilt
    delivery.write_room(ROOM, b"polling;")
    plan = delivery.plans[ROOM]
    assert plan.waiting == [member] and not plan.stale
    member.wire, member.wire_fd = wire, fd  # upgraded to a WebSocket
    assert plan.stale
    delivery.write_room(ROOM, b"a;")
    await quiet()
    queued = member.queued
    assert delivery.write_room(ROOM, b"b;") == 1
    assert member.queued == queued  # directly, from the rebuilt plan
    assert await member.read(4) == b"a;b;"


async def test_without_the_compiled_flush_every_broadcast_goes_through_the_outboxes(room):
    delivery, connect = room
    members = [await connect() for _ in range(2)]
    for m in members:
        m.direct_kind = None  # what a connection of a pure-Python batcher has
    delivery.index_join(ROOM, members[0].id)  # rebuild the plan
    for k in range(3):
        delivery.write_room(ROOM, f"{k};".encode())
        await quiet()
    assert [m.queued for m in members] == [3, 3]
    for m in members:
        assert await m.read(6) == b"0;1;2;"
    assert Connection.__init__  # the real class decides direct_kind from its batcher
    assert not WriteBatcher(compiled=False).compiled


class Failing(Member):
    """A connection whose drop fails (a bug in the code a send runs)."""

    __slots__ = ()

    def too_slow(self) -> None:
        raise RuntimeError("drop failed")


async def test_an_error_at_one_recipient_is_raised_after_every_other_is_written(room):
    delivery, connect = room
    before = await connect()
    broken = await connect(rcvbuf=4096, limit=0)
    after = await connect()
    broken.__class__ = Failing
    delivery.write_room(ROOM, b"w")
    await quiet()
    big = b"x" * 300_000  # more than broken's socket takes: the rest is buffered, too much
    with pytest.raises(RuntimeError, match="drop failed"):
        delivery.write_room(ROOM, big)
    for m in (before, after):
        assert await m.read(1 + len(big)) == b"w" + big
