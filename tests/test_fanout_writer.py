"""The batcher's write of queued frames (signaling.outbox), pure-Python, compiled
(signaling/_fanout.c) and compiled with the sends submitted through io_uring
(signaling/_uring.c), on real uvloop TCP connections over loopback: the same bytes in
the same order, a peer that stops reading buffered then dropped, a reset peer reported by
the transport, and the closed and closing cases left alone."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import pytest

from config.server import ServerSettings
from signaling import outbox
from signaling.outbox import WriteBatcher, direct_fd, write_out
from tests.loopback import Loopback, nothing_more, read_exactly

WRITERS = {
    "pure": write_out,
    "compiled": outbox.compiled_write_out,
    "io_uring": outbox.batched_write_out,
}


def test_the_compiled_loop_is_built():
    # make test installs a compiler: the suite must run the compiled loop, not skip it
    assert outbox.COMPILED_FANOUT and outbox.compiled_write_out is not None


def test_io_uring_is_there():
    # the suite runs where the kernel allows io_uring: the batched sends must be tested
    assert outbox.io_uring_ready()


@dataclass
class Box:
    """An outbox as the batcher sees it (what ``Connection`` and ``EngineSession`` have)."""

    wire: asyncio.Transport | None
    send_buffer_limit: int = 1 << 20
    frames: list[bytes] = field(default_factory=list)
    closed: bool = False
    wire_fd: int = -1
    lost: int = 0
    slow: int = 0

    def transport_lost(self) -> None:
        self.lost += 1
        self.closed = True

    def too_slow(self) -> None:
        self.slow += 1
        self.closed = True


@dataclass
class Peer:
    """One accepted connection's far end: a plain socket the test reads (or does not)."""

    sock: socket.socket
    box: Box

    async def read(self, size: int, timeout: float = 5.0) -> bytes:
        return await read_exactly(self.sock, size, timeout)

    def nothing_more(self) -> None:
        """Nothing (more) waits to be read (the socket is non-blocking)."""
        nothing_more(self.sock)


@pytest.fixture
async def peers() -> AsyncIterator[Callable[..., asyncio.Future[Peer]]]:
    """Make connections to a uvloop server: its transport in a :class:`Box`, the client
    end a non-blocking socket."""
    made: list[Peer] = []

    async def connect(*, rcvbuf: int = 0, **box: object) -> Peer:
        sock, transport = await server.connect(rcvbuf=rcvbuf)
        peer = Peer(sock, Box(transport, wire_fd=direct_fd(transport), **box))  # type: ignore[arg-type]
        made.append(peer)
        return peer

    async with Loopback() as server:
        yield connect  # type: ignore[misc]
        for peer in made:
            peer.sock.close()
            if peer.box.wire is not None:
                peer.box.wire.abort()


def test_only_a_plain_uvloop_tcp_transport_is_written_directly():
    assert direct_fd(None) == -1
    assert direct_fd(asyncio.Transport()) == -1


@pytest.mark.parametrize("writer", WRITERS)
async def test_frames_arrive_whole_and_in_order_at_every_recipient(peers, writer):
    write: Callable[[Iterable[Box]], None] = WRITERS[writer]
    group = [await peers() for _ in range(5)]
    assert all(p.box.wire_fd >= 0 for p in group)
    sent = {id(p): b"" for p in group}
    lists = [p.box.frames for p in group]
    for round_ in range(20):
        for i, p in enumerate(group):
            frames = [f"{round_}:{i}:{k};".encode() * (k + 1) for k in range(round_ % 3 + 1)]
            p.box.frames.extend(frames)
            sent[id(p)] += b"".join(frames)
        write(p.box for p in group)
        assert all(p.box.frames == [] for p in group)
        # emptied in place: the outbox keeps its list (no list made per write)
        assert all(p.box.frames is kept for p, kept in zip(group, lists, strict=True))
    for p in group:
        assert await p.read(len(sent[id(p)])) == sent[id(p)]
        assert p.box.lost == p.box.slow == 0


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_peer_that_stops_reading_is_buffered_in_order_then_dropped(peers, writer):
    write: Callable[[Iterable[Box]], None] = WRITERS[writer]
    parked = outbox.io_uring_parked()
    peer = await peers(rcvbuf=4096, send_buffer_limit=600_000)
    other = await peers()
    chunks = [bytes([65 + k % 26]) * 50_000 for k in range(10)]
    for chunk in chunks:
        # the first ones fill the kernel's buffers (a part of one is taken), the rest
        # wait in the transport's buffer, after what the socket took
        peer.box.frames.append(chunk)
        other.box.frames.append(b"x")
        write([peer.box, other.box])
    assert peer.box.wire is not None and peer.box.wire.get_write_buffer_size() > 0
    assert peer.box.slow == 0  # under the limit so far
    assert await peer.read(len(b"".join(chunks)), timeout=10) == b"".join(chunks)
    # now a reader that never reads: more than the limit waits, and it is dropped
    for _ in range(40):
        if peer.box.slow:
            break
        peer.box.frames.append(b"y" * 50_000)
        write([peer.box, other.box])
    assert peer.box.slow == 1
    # ... while the other recipient got every frame meant for it
    assert await other.read(10) == b"x" * 10
    # a full socket's send came back at once (-EAGAIN or a part), none was parked
    assert outbox.io_uring_parked() == parked


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_reset_peer_is_reported_by_the_transport_and_nothing_raises(peers, writer):
    write: Callable[[Iterable[Box]], None] = WRITERS[writer]
    peer = await peers()
    other = await peers()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.sock.close()  # a reset: the next send fails
    await asyncio.sleep(0.05)
    assert peer.box.wire is not None
    for _ in range(3):
        peer.box.frames.append(b"after the reset")
        other.box.frames.append(b"z")
        write([peer.box, other.box])
        await asyncio.sleep(0.02)
    assert peer.box.wire.is_closing() or peer.box.lost
    assert await other.read(3) == b"zzz"


@pytest.mark.parametrize("writer", WRITERS)
async def test_closed_and_closing_outboxes_are_emptied_and_not_written(peers, writer):
    write: Callable[[Iterable[Box]], None] = WRITERS[writer]
    closed, closing, polling, fine = [await peers() for _ in range(4)]
    closed.box.closed = True
    assert closing.box.wire is not None
    closing.box.wire.close()
    polling.box.wire = None  # an Engine.IO session between polls
    for p in (closed, closing, polling, fine):
        p.box.frames.append(b"frame")
    write([closed.box, closing.box, polling.box, fine.box])
    assert all(p.box.frames == [] for p in (closed, closing, polling, fine))
    assert closing.box.lost == 1 and closed.box.lost == 0 and polling.box.lost == 0
    assert await fine.read(5) == b"frame"
    loop = asyncio.get_running_loop()
    closed.nothing_more()  # nothing came
    assert await asyncio.wait_for(loop.sock_recv(closing.sock, 10), 2) == b""  # just the close


class OpenTransport(asyncio.Transport):
    def is_closing(self) -> bool:
        return False


def test_frames_that_are_not_bytes_are_refused():
    box = Box(wire=OpenTransport(), frames=[b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        outbox.compiled_write_out([box])  # type: ignore[misc]


async def test_the_setting_chooses_the_loop(peers):
    assert WriteBatcher(compiled=True).compiled
    assert WriteBatcher(compiled=True).io_uring
    assert not WriteBatcher(compiled=True, io_uring=False).io_uring
    assert WriteBatcher(compiled=True, io_uring=False).compiled
    assert not WriteBatcher(compiled=False).compiled
    assert not WriteBatcher(compiled=False).io_uring
    assert ServerSettings().compiled_fanout and ServerSettings().fanout_io_uring
    batcher = WriteBatcher(compiled=True)
    peer = await peers()
    peer.box.frames.append(b"batched")
    batcher.mark(peer.box)  # type: ignore[arg-type]
    assert await peer.read(7) == b"batched"


def test_without_the_module_the_batcher_uses_the_pure_loop(monkeypatch):
    monkeypatch.setattr(outbox, "compiled_write_out", None)
    assert not WriteBatcher(compiled=True).compiled


async def test_more_recipients_than_one_submission_carries(peers):
    """A flush to more outboxes than the ring holds (256) goes out in several submissions,
    every recipient getting its own frames once."""
    group = [await peers() for _ in range(300)]
    for i, p in enumerate(group):
        p.box.frames.append(f"frame {i};".encode())
    outbox.batched_write_out(p.box for p in group)  # type: ignore[misc]
    for i, p in enumerate(group):
        expected = f"frame {i};".encode()
        assert await p.read(len(expected)) == expected


def test_a_forked_child_sets_up_its_own_ring():
    """A process forked after the ring was set up (a worker started by fork) must not
    submit to its parent's ring: it makes its own on first use."""
    script = """
import os, socket
from signaling import outbox

class Wire:
    def is_closing(self): return False
    def get_write_buffer_size(self): return 0
    def write(self, data): raise AssertionError("the socket took everything")

class Box:
    def __init__(self, fd):
        self.frames, self.closed, self.wire, self.wire_fd = [], False, Wire(), fd
        self.send_buffer_limit = 1 << 20

assert outbox.io_uring_ready()
ours, theirs = socket.socketpair()
pid = os.fork()
if pid == 0:
    box = Box(ours.fileno())
    box.frames.append(b"from the child")
    outbox.batched_write_out([box])
    os._exit(0)
os.waitpid(pid, 0)
box = Box(ours.fileno())
box.frames.append(b", then the parent")
outbox.batched_write_out([box])
print(theirs.recv(100).decode())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from the child, then the parent"


def test_a_node_says_when_io_uring_is_not_there(monkeypatch, caplog):
    """Where the kernel refuses io_uring the batcher sends client by client, and a node
    starting with the setting on says so once."""
    from switchboard import node

    monkeypatch.setattr(outbox, "_io_uring_ready", lambda: False)
    monkeypatch.setattr(node, "io_uring_ready", outbox.io_uring_ready)
    batcher = WriteBatcher(compiled=True)
    assert batcher.compiled and not batcher.io_uring
    with caplog.at_level("WARNING", logger="switchboard.node"):
        node.warn_about_fanout(ServerSettings(fanout_io_uring=False))
        assert not caplog.records  # asked for sends one by one: nothing to say
        node.warn_about_fanout(ServerSettings())
    assert "io_uring is unavailable here" in caplog.text


async def test_a_flush_reached_again_from_a_callback_keeps_both_batches(peers):
    """Python code a flush runs (here a closing transport's ``transport_lost``) may flush
    other outboxes itself: the inner flush sends its own, and the outer batch, queued
    before and after it, is neither lost nor sent twice."""
    first, closing, last, inner = [await peers() for _ in range(4)]
    assert closing.box.wire is not None
    closing.box.wire.close()

    def lost() -> None:
        closing.box.closed = True
        inner.box.frames.append(b"inner")
        outbox.batched_write_out([inner.box])  # type: ignore[misc]

    closing.box.transport_lost = lost  # type: ignore[method-assign]
    for p, frame in ((first, b"first"), (closing, b"never"), (last, b"last")):
        p.box.frames.append(frame)
    outbox.batched_write_out([first.box, closing.box, last.box])  # type: ignore[misc]
    assert await first.read(5) == b"first"
    assert await last.read(4) == b"last"
    assert await inner.read(5) == b"inner"
    for p in (first, last, inner):
        p.nothing_more()  # nothing twice
