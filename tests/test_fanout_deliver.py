"""The fan-out's queueing for each recipient (``LocalDelivery._write``): the pure loop
(``deliver_each``, every socket's ``send_frame``) and the compiled one
(``signaling._fanout.deliver``, which queues on a socket's outbox itself where its
``queue_kind`` allows) leave the same state behind, on real ``/ws`` connections and
Engine.IO sessions over real uvloop TCP transports: the same frames queued per socket, the
same outboxes marked in the same order, the same sockets found closed, the same count, and
the same bytes at every peer once the batcher flushes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from signaling import outbox
from signaling.outbox import QUEUE_BY_CALL, QUEUE_ON_SELF, QUEUE_ON_SESSION, WriteBatcher
from signaling.protocol import event_frame
from signaling.ratelimit import TokenBucket
from signaling.socketio import packets as p
from signaling.socketio.session import EngineSession, SioConnection
from signaling.state.memory.delivery import LocalDelivery, deliver_each
from signaling.tokens import Principal
from signaling.websocket import Connection

DELIVERERS = {"pure": deliver_each, "compiled": outbox.compiled_deliver}


def test_the_compiled_delivery_is_built_and_used():
    assert outbox.compiled_deliver is not None
    assert LocalDelivery._write is outbox.compiled_deliver


class CountingTranslator(p.BroadcastTranslator):
    """Counts translations: a broadcast is translated once for all its Socket.IO recipients."""

    def __init__(self) -> None:
        super().__init__()
        self.made = 0

    def translate(self, frame: bytes) -> tuple[bytes, bytes, Any]:
        if frame is not self._frame:
            self.made += 1
        return super().translate(frame)


@dataclass
class Recorder:
    """A socket that says nothing about its queue: only ``send_frame`` reaches it."""

    user_id: str
    got: list[bytes] = field(default_factory=list)

    def send_frame(self, frame: bytes) -> bool:
        self.got.append(frame)
        return True


@dataclass
class World:
    """One room's sockets on this node, each kind and state the fan-out meets."""

    ws_batcher: WriteBatcher
    sio_batcher: WriteBatcher
    translator: CountingTranslator
    sockets: list[Any]
    peers: dict[int, socket.socket]  # id(socket) -> the far end of its transport

    def queued(self) -> list[Any]:
        """What each socket holds now (frames, a polling queue, closed flags)."""
        out: list[Any] = []
        for s in self.sockets:
            if isinstance(s, SioConnection):
                out.append((s.closed, s.session.closed, list(s.session.frames), s.session._queue))
            elif isinstance(s, Connection):
                out.append((s.closed, list(s.frames)))
            else:
                out.append(list(s.got))
        return out

    def marked(self, batcher: WriteBatcher) -> list[int]:
        return [self.sockets.index(getattr(box, "conn", None) or box) for box in batcher.dirty]


@pytest.fixture
async def world() -> AsyncIterator[Callable[..., asyncio.Future[World]]]:
    """Build rooms on real TCP transports (a uvloop server's accepted connections)."""
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.put_nowait(transport)  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ends: list[socket.socket] = []
    wires: list[asyncio.Transport] = []
    sessions: list[EngineSession] = []

    async def transport() -> tuple[asyncio.Transport, socket.socket]:
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        ends.append(sock)
        wires.append(await accepted.get())
        return wires[-1], sock

    def limits() -> dict[str, Any]:
        return {"rate": TokenBucket(100, 100), "errors": TokenBucket(10, 10)}

    async def build(*, compiled: bool = True) -> World:
        ws_batcher, sio_batcher = WriteBatcher(compiled), WriteBatcher(compiled)
        translator = CountingTranslator()
        sockets: list[Any] = []
        peers: dict[int, socket.socket] = {}

        async def ws(user: str) -> Connection:
            wire, end = await transport()
            conn = Connection(
                f"c-{len(sockets)}",
                Principal(user, user),
                None,  # type: ignore[arg-type]  # the aiohttp side is not needed to queue
                wire,
                send_buffer_limit=1 << 20,
                batcher=ws_batcher,
                **limits(),
            )
            sockets.append(conn)
            peers[id(conn)] = end
            return conn

        async def sio(user: str, *, websocket: bool = True) -> SioConnection:
            session = EngineSession(
                f"s-{len(sockets)}",
                transport="websocket" if websocket else "polling",
                ping_interval=60,
                ping_timeout=60,
                send_buffer_limit=1 << 20,
                batcher=sio_batcher,
                handshake_token=None,
                on_closed=lambda _s: None,
            )
            sessions.append(session)
            conn = SioConnection(
                f"c-{len(sockets)}",
                Principal(user, user),
                session,
                send_buffer_limit=1 << 20,
                batcher=sio_batcher,
                translator=translator,
                **limits(),
            )
            session.conn = conn
            if websocket:
                wire, end = await transport()
                session.attach_websocket(None, wire)  # type: ignore[arg-type]
                peers[id(conn)] = end
            sockets.append(conn)
            return conn

        await ws("ann")
        await sio("bob")
        await ws("cid")  # the sender: excluded
        (await ws("dee")).closed = True
        gone = await ws("eve")
        gone.wire.close()  # closing: found at the queue, marked closed by send_frame
        await sio("fay", websocket=False)  # polling: its queue, not a frame
        await sio("gus")
        sockets.append(Recorder("hal"))
        (await sio("ivy")).session.closed = True
        await ws("jo")
        await sio("kit")
        return World(ws_batcher, sio_batcher, translator, sockets, peers)

    yield build  # type: ignore[misc]
    for session in sessions:
        session.close("test over", final=True)
    for end in ends:
        end.close()
    for wire in wires:
        wire.abort()
    server.close()
    await server.wait_closed()


async def test_kinds_of_real_sockets(world):
    on = await world(compiled=True)
    kinds = [getattr(s, "queue_kind", None) for s in on.sockets]
    assert kinds.count(QUEUE_ON_SELF) == 5 and kinds.count(QUEUE_ON_SESSION) == 5
    off = await world(compiled=False)
    assert {getattr(s, "queue_kind", QUEUE_BY_CALL) for s in off.sockets} == {QUEUE_BY_CALL}


@pytest.mark.parametrize("compiled_sockets", [True, False], ids=["kinds", "calls"])
async def test_compiled_and_pure_leave_the_same_state(world, compiled_sockets):
    worlds = {name: await world(compiled=compiled_sockets) for name in DELIVERERS}
    frames = [event_frame("user:typing", {"userId": "cid", "n": n}) for n in range(3)]
    counts: dict[str, list[int]] = {}
    for name, w in worlds.items():
        exclude = "".join(["c", "id"])  # equal to the sender's id, not the same object
        counts[name] = [DELIVERERS[name](w.sockets, f, exclude) for f in frames]
        counts[name].append(DELIVERERS[name](w.sockets, frames[0], None))
    pure, compiled = worlds["pure"], worlds["compiled"]
    # ann, bob, fay (polling), gus, hal, jo, kit: 7; cid excluded; dee, eve, ivy closed
    assert counts["pure"] == counts["compiled"] == [7, 7, 7, 8]
    assert compiled.queued() == pure.queued()
    for batcher in ("ws_batcher", "sio_batcher"):
        assert compiled.marked(getattr(compiled, batcher)) == pure.marked(getattr(pure, batcher))
    assert compiled.sockets[4].closed and pure.sockets[4].closed  # eve: found closing
    assert compiled.translator.made == pure.translator.made == 4  # once per broadcast

    # flushed at the end of the iteration: every open peer reads what was queued for it
    expected = [queued_bytes(s) for s in pure.sockets]
    assert expected == [queued_bytes(s) for s in compiled.sockets]
    await asyncio.sleep(0)
    for i, s in enumerate(pure.sockets):
        if id(s) not in pure.peers or not expected[i]:
            continue
        for w in (pure, compiled):
            end = w.peers[id(w.sockets[i])]
            assert await asyncio.wait_for(read_exactly(end, len(expected[i])), 5) == expected[i]
    assert sum(1 for e in expected if e) == 6  # ann, bob, cid, gus, jo, kit; fay's is a queue


def queued_bytes(s: Any) -> bytes:
    frames = s.session.frames if isinstance(s, SioConnection) else getattr(s, "frames", [])
    return b"".join(frames)


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await asyncio.get_running_loop().sock_recv(sock, size - len(data))
        assert chunk
        data += chunk
    return data


async def test_the_frames_are_the_hub_frame_or_its_one_translation(world):
    w = await world()
    frame = event_frame("message:new", {"text": "hi"})
    assert outbox.compiled_deliver(w.sockets, frame, None) == 8
    ws_frames = {s.frames[0] for s in w.sockets if type(s) is Connection and s.frames}
    sio_frames = {
        s.session.frames[0] for s in w.sockets if type(s) is SioConnection and s.session.frames
    }
    assert ws_frames == {frame}
    (only,) = sio_frames
    assert only.endswith(b'42["message:new",{"text":"hi"}]')
    # all Socket.IO recipients share one bytes object: encoded once per protocol
    assert (
        len(
            {
                id(s.session.frames[0])
                for s in w.sockets
                if type(s) is SioConnection and s.session.frames
            }
        )
        == 1
    )
    assert w.ws_batcher.scheduled and w.sio_batcher.scheduled


async def test_what_a_socket_raises_reaches_the_caller(world):
    w = await world()

    class Broken(Recorder):
        def send_frame(self, frame: bytes) -> bool:
            raise RuntimeError("broken socket")

    frame = event_frame("user:typing", {"userId": "x"})
    with pytest.raises(RuntimeError, match="broken socket"):
        outbox.compiled_deliver([*w.sockets[:2], Broken("x")], frame, None)
    with pytest.raises(ValueError, match="not a hub event"):  # the translator's own error
        outbox.compiled_deliver(w.sockets, b"\x81\x00", None)
    with pytest.raises(TypeError):
        outbox.compiled_deliver(w.sockets, frame, 5)
    with pytest.raises(TypeError):
        outbox.compiled_deliver(w.sockets, frame)  # type: ignore[call-arg]
