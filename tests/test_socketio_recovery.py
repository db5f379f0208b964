"""Socket.IO connection-state recovery on room history: socket.io-client 4.8 from npm,
dropped and reconnected, gets what it missed in every room, once, with
``socket.recovered``; or a clean ``recovered: false`` and its rooms back. The offsets and
the per-session log behind it are unit-tested first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from signaling.socketio import packets as p
from signaling.socketio.recovery_log import RecoveryLog, resume_positions
from signaling.state.history import Template
from tests.redis_server import free_port
from tests.sio_driver import NodeSocketIO
from tests.test_socketio_bad_input import RawSession

WS_ONLY = {"transports": ["websocket"]}


# -- offsets on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize("room", ["r1", 'odd "room" \\ é', "x" * 100])
def test_a_recorded_event_carries_its_offset_as_last_argument(room: str) -> None:
    data = {"roomId": room, "text": '"position":{"room":"fake"}'}
    envelope = Template.of(room, "message:new", data).fill("ab12cd34", 42)
    mark = p.mark_of(envelope)
    assert mark == ("ab12cd34:42", room, "ab12cd34", 42)
    packet = p.packet_of_envelope(envelope, mark)
    name, got, offset = orjson.loads(packet[2:])
    assert (name, offset) == ("message:new", "ab12cd34:42")
    assert got["position"] == {"room": room, "epoch": "ab12cd34", "offset": 42}


def test_plain_events_have_no_offset() -> None:
    plain = orjson.dumps({"type": "user:typing", "data": {"userId": "a"}})
    assert p.mark_of(plain) is None
    # Data shaped like a position, but written by orjson: its offset is not right-aligned.
    forged = {"position": {"room": "r", "epoch": "ab12cd34", "offset": 10**19}}
    assert p.mark_of(orjson.dumps({"type": "room:updated", "data": forged})) is None
    translator = p.BroadcastTranslator(recovery=True)
    frame = p.text_frame(plain)
    packet, _, mark = translator.translate(frame)
    assert mark is None and orjson.loads(packet[2:]) == ["user:typing", {"userId": "a"}]


# -- the session's log --------------------------------------------------------------------------


def mark(room: str, offset: int, epoch: str = "e0000000") -> p.Mark:
    return f"{epoch}:{offset}", room, epoch, offset


def test_log_writes_each_recorded_event_once() -> None:
    log = RecoveryLog(None)
    assert log.record(mark("a", 5))
    assert not log.record(mark("a", 5))  # live and from history: once
    assert not log.record(mark("a", 4))
    assert log.record(mark("b", 1))
    assert log.record(mark("a", 1, epoch="e1111111"))  # a new history starts again


def snapshot(log: RecoveryLog, rooms: set[str]) -> dict[str, Any]:
    return orjson.loads(log.snapshot(rooms))


def test_the_client_offset_places_it_in_every_room() -> None:
    log = RecoveryLog("old:1")
    log.joined("a", "e0000000", 3)
    log.joined("b", "e0000000", 10)
    log.joined("c", "e0000000", 7)
    for m in (mark("a", 4), mark("b", 11), mark("a", 5), mark("b", 12)):
        log.record(m)
    taken = snapshot(log, {"a", "b", "c"})
    # Received up to b:11 (so a:4 too); a:5 and b:12 were in flight.
    assert resume_positions(taken, "e0000000:11") == {
        "a": ("e0000000", 4),
        "b": ("e0000000", 11),
        "c": ("e0000000", 7),
    }
    # Nothing this session sent arrived: each room from where its join put it.
    assert resume_positions(taken, "old:1") == {
        "a": ("e0000000", 3),
        "b": ("e0000000", 10),
        "c": ("e0000000", 7),
    }
    assert resume_positions(taken, "e0000000:99") is None  # not an offset it was sent
    assert resume_positions(taken, None) is None


def test_a_room_whose_join_answer_was_not_seen_cannot_resume() -> None:
    log = RecoveryLog(None)
    log.record(mark("a", 4))
    assert resume_positions(snapshot(log, {"a", "b"}), "e0000000:4") is None


def test_events_sent_before_the_join_position_was_read_are_not_skipped() -> None:
    log = RecoveryLog(None)
    log.record(mark("a", 6))  # live, while the join was still reading the room's position
    log.joined("a", "e0000000", 7)
    assert resume_positions(snapshot(log, {"a"}), None) == {"a": ("e0000000", 5)}


def test_forgotten_events_move_the_start_and_cannot_be_missed() -> None:
    log = RecoveryLog(None, capacity=3)
    log.joined("a", "e0000000", 0)
    for i in range(1, 6):
        log.record(mark("a", i))
    taken = snapshot(log, {"a"})
    assert resume_positions(taken, "e0000000:3") == {"a": ("e0000000", 3)}
    assert resume_positions(taken, "e0000000:2") is None  # forgotten: cannot tell
    assert resume_positions(taken, None) is None  # events 1 and 2 may never have arrived


# -- socket.io-client against the hub -------------------------------------------------------------


@pytest.fixture
async def sio() -> AsyncIterator[NodeSocketIO]:
    driver = await NodeSocketIO.start()
    yield driver
    await driver.close()


async def push(api: Any, room: str, n: int) -> None:
    status, _ = await api.post(f"/rooms/{room}/events", {"type": "message:new", "data": {"n": n}})
    assert status == 200


async def numbers(sio: NodeSocketIO, ref: str, count: int) -> list[tuple[int, str]]:
    """The next ``count`` ``message:new`` events: (n, offset argument)."""
    got = []
    for _ in range(count):
        data, offset = await sio.expect(ref, "message:new")
        got.append((data["n"], offset))
    return got


async def reconnected(sio: NodeSocketIO, ref: str) -> bool:
    await sio.expect(ref, "disconnect")
    _, _, recovered = await sio.expect(ref, "connect", timeout=10)
    return recovered


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]])
async def test_a_dropped_client_gets_what_it_missed_in_every_room(
    hub_factory: Any, sio: NodeSocketIO, http: aiohttp.ClientSession, transports: list[str]
) -> None:
    hub = await hub_factory(socketio_recovery=30)
    api = hub.api(http)
    token = hub.token("alice", rooms=["r1", "r2"])
    await sio.connected("a", hub.base, token, transports=transports)
    _, _, recovered = await sio.expect("a", "connect")
    assert recovered is False  # a first connection
    await sio.emit("a", "room:join", {"roomId": "r1"}, ack=True)
    await sio.emit("a", "room:join", {"roomId": "r2"})  # no ack, as the old clients join
    await sio.emit("a", "ping", {}, ack=True)  # handled in order: r2 is joined by now
    await push(api, "r2", 0)
    await push(api, "r1", 1)
    got = await numbers(sio, "a", 2)
    assert [n for n, _ in got] == [0, 1]
    epoch, offset = got[1][1].split(":")
    assert len(epoch) == 8 and int(offset) >= 1

    sio.drop("a")
    await sio.expect("a", "disconnect")
    for n, room in ((2, "r1"), (3, "r2"), (4, "r1")):
        await push(api, room, n)
    _, _, recovered = await sio.expect("a", "connect", timeout=10)
    assert recovered is True
    missed = await numbers(sio, "a", 3)
    assert sorted(n for n, _ in missed) == [2, 3, 4]
    await push(api, "r1", 5)  # the rooms are still joined: live again
    assert [n for n, _ in await numbers(sio, "a", 1)] == [5]

    # Dropped again with nothing missed; then once more with one event missed.
    sio.drop("a")
    assert await reconnected(sio, "a") is True
    sio.drop("a")
    await sio.expect("a", "disconnect")
    await push(api, "r2", 6)
    _, _, recovered = await sio.expect("a", "connect", timeout=10)
    assert recovered is True
    assert [n for n, _ in await numbers(sio, "a", 1)] == [6]
    await asyncio.sleep(0.3)
    assert sio.take("a", "message:new") == []  # nothing twice


async def test_recovery_that_cannot_be_complete_is_refused_and_rooms_come_back(
    hub_factory: Any, sio: NodeSocketIO, http: aiohttp.ClientSession
) -> None:
    hub = await hub_factory(socketio_recovery=30, history_size=3)
    api = hub.api(http)
    await sio.connected("a", hub.base, hub.token("alice", rooms=["r1"]), **WS_ONLY)
    await sio.expect("a", "connect")
    await sio.emit("a", "room:join", {"roomId": "r1"}, ack=True)
    # Away for sure while the room moves on: reconnects fail until pointed back.
    sio.drop("a", f"http://127.0.0.1:{free_port()}")
    await sio.expect("a", "disconnect")
    for n in range(5):  # more than the room keeps
        await push(api, "r1", n)
    sio.point("a", hub.base)
    _, _, recovered = await sio.expect("a", "connect", timeout=10)
    assert recovered is False
    await push(api, "r1", 9)
    assert [n for n, _ in await numbers(sio, "a", 1)] == [9]  # nothing replayed; in r1


async def test_a_socketio_disconnect_is_not_resumed(
    hub_factory: Any, http: aiohttp.ClientSession
) -> None:
    hub = await hub_factory(socketio_recovery=30)
    url = hub.base + "/socket.io/"

    async def connect(token: str, **auth: Any) -> tuple[RawSession, dict[str, Any]]:
        raw = RawSession(http, url)
        await raw.open_ws()
        assert raw.ws is not None
        await raw.ws.send_str("40" + orjson.dumps({"token": token, **auth}).decode())
        reply = await raw.recv()
        assert reply.startswith("40{")
        return raw, orjson.loads(reply[2:])

    alice = hub.token("alice", rooms=["r1"])
    first, opened = await connect(alice)
    pid = opened["pid"]
    assert first.ws is not None
    await first.ws.send_str("41")  # the client ends its session: nothing to resume
    await first.ws.close()
    await asyncio.sleep(0.2)
    again, reopened = await connect(alice, pid=pid, offset=None)
    assert reopened["pid"] != pid
    # A transport that just closes leaves its session to resume, for its own user only.
    assert again.ws is not None
    await again.ws.close()
    await asyncio.sleep(0.2)
    _, other = await connect(hub.token("mallory", rooms=["r1"]), pid=reopened["pid"])
    assert other["pid"] != reopened["pid"]
    _, mine = await connect(alice, pid=reopened["pid"])
    assert mine["pid"] == reopened["pid"]
    # Made-up or oversized ids resume nothing and break nothing.
    _, made_up = await connect(alice, pid="x" * 500, offset={"no": 1})
    assert made_up["pid"] != "x" * 500
