"""Socket.IO packets: parsing, building, and a broadcast translated once for all of a
room's Socket.IO members."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from signaling.outbox import write_out
from signaling.protocol import event_frame, text_frame
from signaling.ratelimit import TokenBucket
from signaling.socketio import packets as p
from signaling.socketio.packets import PacketError, SioType
from signaling.socketio.session import EngineSession, SioConnection
from signaling.tokens import Principal
from tests.test_socketio_bad_input import RawSession

STATE_KINDS = ("memory",)


@pytest.mark.parametrize(
    ("raw", "type_", "namespace", "ack_id", "data", "attachments"),
    [
        ("0", SioType.CONNECT, "/", None, None, 0),
        ('0{"token":"t"}', SioType.CONNECT, "/", None, {"token": "t"}, 0),
        ('0/admin,{"token":"t"}', SioType.CONNECT, "/admin", None, {"token": "t"}, 0),
        ("1", SioType.DISCONNECT, "/", None, None, 0),
        ('2["a",{"b":1}]', SioType.EVENT, "/", None, ["a", {"b": 1}], 0),
        ('212["a"]', SioType.EVENT, "/", 12, ["a"], 0),
        ('2/chat,7["a"]', SioType.EVENT, "/chat", 7, ["a"], 0),
        ('3/chat,7["a"]', SioType.ACK, "/chat", 7, ["a"], 0),
        ('52-["a",{"_placeholder":true,"num":0}]', SioType.BINARY_EVENT, "/", None, None, 2),
    ],
)
def test_parse_socketio(
    raw: str, type_: SioType, namespace: str, ack_id: int | None, data: Any, attachments: int
) -> None:
    packet = p.parse_socketio(raw)
    assert (packet.type, packet.namespace, packet.ack_id, packet.attachments) == (
        type_,
        namespace,
        ack_id,
        attachments,
    )
    if data is not None:
        assert packet.data == data


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "invalid_envelope"),
        ("7", "invalid_envelope"),
        ("x", "invalid_envelope"),
        ('2["a",', "invalid_json"),
        ("2" + "9" * 20 + "[]", "invalid_envelope"),
        ('5["a"]', "invalid_envelope"),
        ("599-[]", "invalid_envelope"),
    ],
)
def test_parse_socketio_refuses(raw: str, code: str) -> None:
    with pytest.raises(PacketError) as refused:
        p.parse_socketio(raw)
    assert refused.value.code == code


@pytest.mark.parametrize(
    "raw",
    ['42["message:typing",{"conversationId":"r","isTyping":true}]', '42["a"]', "42[]"],
)
def test_a_plain_event_parses_in_one_step_as_the_general_path_parses_it(raw: str) -> None:
    assert p.plain_event(raw) == p.parse_socketio(raw[1:])


@pytest.mark.parametrize(
    "raw", ['421["a"]', '42/chat,["a"]', '42["a"', '43["a"]', "2", "", '41["a"]', "42{}"]
)
def test_other_packets_are_left_to_the_general_path(raw: str) -> None:
    assert p.plain_event(raw) is None


def test_polling_bodies() -> None:
    assert p.parse_polling_body(b'42["a"]\x1e3\x1ebAAE=') == ['42["a"]', "3", b"\x00\x01"]
    with pytest.raises(PacketError):
        p.parse_polling_body(b"b%%%")


@pytest.mark.parametrize("size", [10, 500, 70_000])
def test_broadcast_frame_becomes_an_event_packet(size: int) -> None:
    data = {"roomId": "r1", "pad": "x" * size, "quote": 'a "b" \\ c'}
    packet, _, _ = p.BroadcastTranslator().translate(event_frame("room:updated", data))
    assert packet.startswith(b"42")
    assert orjson.loads(packet[2:]) == ["room:updated", data]


def test_translator_remembers_the_last_broadcast() -> None:
    translator = p.BroadcastTranslator()
    frame = event_frame("user:typing", {"userId": "a"})
    first = translator.translate(frame)
    assert translator.translate(frame) is not None
    assert translator.translate(frame)[1] is first[1]
    other = event_frame("user:typing", {"userId": "a"})  # equal bytes, another broadcast
    assert translator.translate(other)[1] is not first[1]


async def test_a_room_broadcast_is_translated_once(
    hub: Any, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = [RawSession(http, hub.base + "/socket.io/") for _ in range(3)]
    for i, member in enumerate(members):
        await member.connect_ws(hub.token(f"u{i}", rooms=["r1"]))
        await member.ws.send_str('421["room:join",{"roomId":"r1"}]')
        assert (await member.recv()).startswith("431[")
        for other in members[:i]:
            assert '"room:member-joined"' in await other.recv()
    ws_member = await hub.connect_in("w", "r1", rooms=("r1",))
    for member in members:
        assert '"room:member-joined"' in await member.recv()
    calls: list[bytes] = []
    real = p.packet_of_envelope

    def counting(frame: bytes, mark: Any = None) -> bytes:
        calls.append(frame)
        return real(frame, mark)

    monkeypatch.setattr(p, "packet_of_envelope", counting)
    await ws_member.send("message:typing", {"conversationId": "r1", "isTyping": True})
    received = await asyncio.gather(*(m.recv() for m in members))
    assert len(set(received)) == 1 and '"user:typing"' in received[0]
    assert len(calls) == 1
    for member in members:
        await member.ws.close()


class _Wire:
    """A WebSocket's transport as the session and the batcher see it."""

    def __init__(self) -> None:
        self.closing = False
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0


class _Marks:
    """The write batcher, recording which outboxes got their first frame."""

    compiled = False  # no compiled flush: no broadcast is written directly

    def __init__(self) -> None:
        self.marked: list[Any] = []

    def mark(self, box: Any) -> None:
        self.marked.append(box)


async def test_a_broadcast_goes_to_the_sessions_websocket_without_the_session() -> None:
    """The fan-out's write on a Socket.IO connection: the translated frame joins the
    session's own queue, in order with what the session writes itself; the connection is
    the batcher's outbox for it; a closing transport ends connection and session."""
    marks = _Marks()
    session = EngineSession(
        "s1",
        transport="polling",
        ping_interval=60,
        ping_timeout=60,
        send_buffer_limit=1 << 20,
        batcher=marks,  # type: ignore[arg-type]
        handshake_token=None,
        on_closed=lambda s: None,
    )
    translator = p.BroadcastTranslator()
    conn = SioConnection(
        "c1",
        Principal("u1", "U"),
        session,
        rate=TokenBucket(10, 10),
        errors=TokenBucket(10, 10),
        send_buffer_limit=1 << 20,
        batcher=marks,  # type: ignore[arg-type]
        translator=translator,
    )
    session.conn = conn
    first = event_frame("user:typing", {"userId": "a"})
    assert conn.send_frame(first)  # polling: queued for the next GET
    assert conn.wire is None and session.frames == [] and marks.marked == []
    wire = _Wire()
    session.upgraded(None, wire)  # type: ignore[arg-type]  # writes what was queued
    assert conn.wire is wire and marks.marked == [session]
    second = event_frame("user:typing", {"userId": "b"})
    assert conn.send_frame(second)
    ws_first, ws_second = (translator.translate(f)[1] for f in (first, second))
    assert session.frames == [ws_first, ws_second] and marks.marked == [session]
    write_out(marks.marked)
    assert wire.written == [ws_first + ws_second] and session.frames == []

    marks.marked.clear()
    assert conn.send_frame(second)  # first of this iteration: the connection is marked
    assert session.write(p.PING)  # the session's own packet follows it, unmarked
    assert marks.marked == [conn]
    write_out(marks.marked)
    assert wire.written[-1] == ws_second + text_frame(p.PING)

    assert conn.send_frame(second)
    wire.closing = True  # found at the flush: both end
    write_out([conn])
    assert conn.closed and session.closed and session.frames == []
    assert not conn.send_frame(second)
