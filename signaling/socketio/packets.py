"""Engine.IO v4 and Socket.IO v5 packets: parsing what clients send, building what the
server sends, and turning a hub broadcast frame into its Socket.IO form once.

Engine.IO frames one packet per WebSocket message (or per ``\\x1e``-separated record of a
polling body): a type digit (0 open, 1 close, 2 ping, 3 pong, 4 message, 5 upgrade,
6 noop) and a payload. A Socket.IO packet rides in a ``4`` message: its type digit,
an attachment count for binary packets (``<n>-``), an optional namespace (``/ns,``), an
optional ack id (digits) and a JSON payload.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from signaling.protocol import text_frame
from signaling.state.history import EPOCH_LENGTH, OFFSET_WIDTH

#: The record separator between packets in a polling body.
SEPARATOR = b"\x1e"
#: Ack ids are JavaScript integers; longer digit runs are refused rather than parsed.
MAX_ACK_DIGITS = 15
MAX_ATTACHMENTS = 10


class EngineType(IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SioType(IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_ENGINE_TYPES = tuple(EngineType)
_SIO_TYPES = tuple(SioType)


class PacketError(ValueError):
    """A packet that does not parse; ``code`` is the hub error code reported for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SioPacket:
    type: SioType
    namespace: str
    ack_id: int | None
    data: Any
    attachments: int = 0


def parse_engine(raw: str) -> tuple[EngineType, str]:
    """Split a text Engine.IO packet into its type and payload."""
    if not raw or not raw[0].isdigit() or int(raw[0]) > EngineType.NOOP:
        raise PacketError("invalid_envelope", f"unknown Engine.IO packet type {raw[:1]!r}")
    return _ENGINE_TYPES[int(raw[0])], raw[1:]


def parse_socketio(raw: str) -> SioPacket:
    """Parse the payload of an Engine.IO ``message`` as a Socket.IO packet."""
    if not raw or not raw[0].isdigit() or int(raw[0]) > SioType.BINARY_ACK:
        raise PacketError("invalid_envelope", f"unknown Socket.IO packet type {raw[:1]!r}")
    type_ = _SIO_TYPES[int(raw[0])]
    i, n = 1, len(raw)
    attachments = 0
    if type_ in (SioType.BINARY_EVENT, SioType.BINARY_ACK):
        dash = raw.find("-", 1, 1 + 4)
        if dash < 0 or not raw[1:dash].isdigit():
            raise PacketError("invalid_envelope", "binary packet without an attachment count")
        attachments = int(raw[1:dash])
        if attachments > MAX_ATTACHMENTS:
            raise PacketError("invalid_envelope", f"more than {MAX_ATTACHMENTS} binary attachments")
        i = dash + 1
    namespace = "/"
    if i < n and raw[i] == "/":
        comma = raw.find(",", i)
        end = n if comma < 0 else comma
        namespace = raw[i:end]
        i = end + 1
    start = i
    while i < n and raw[i].isdigit():
        i += 1
    ack_id = None
    if i > start:
        if i - start > MAX_ACK_DIGITS:
            raise PacketError("invalid_envelope", "ack id is too long")
        ack_id = int(raw[start:i])
    data: Any = None
    if i < n:
        try:
            data = orjson.loads(raw[i:])
        except orjson.JSONDecodeError as exc:
            raise PacketError("invalid_json", f"packet payload is not valid JSON: {exc}") from None
    return SioPacket(type_, namespace, ack_id, data, attachments)


def plain_event(raw: str) -> SioPacket | None:
    """The packet nearly every client event is, ``42[...]`` (an Engine.IO message with an
    EVENT in the default namespace and no ack id), parsed in one step; ``None`` for any
    other packet, or if its JSON does not parse (the general path reports that)."""
    if not raw.startswith("42["):
        return None
    try:
        data = orjson.loads(raw[2:])
    except orjson.JSONDecodeError:
        return None
    return SioPacket(SioType.EVENT, "/", None, data)


def parse_polling_body(body: bytes) -> list[str | bytes]:
    """The packets of a POST body: text packets as ``str``, ``b``-prefixed base64 ones as
    decoded ``bytes`` (binary attachments)."""
    packets: list[str | bytes] = []
    for record in body.split(SEPARATOR):
        if record[:1] == b"b":
            try:
                packets.append(base64.b64decode(record[1:], validate=True))
            except binascii.Error:
                raise PacketError("invalid_envelope", "binary packet is not base64") from None
        else:
            try:
                packets.append(record.decode())
            except UnicodeDecodeError:
                raise PacketError("invalid_envelope", "packet is not UTF-8") from None
    return packets


# -- what the server sends ---------------------------------------------------------------------


def open_packet(
    sid: str, upgrades: list[str], ping_ms: int, timeout_ms: int, max_payload: int
) -> bytes:
    body = {
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_ms,
        "pingTimeout": timeout_ms,
        "maxPayload": max_payload,
    }
    return b"0" + orjson.dumps(body)


def connect_packet(sid: str, pid: str | None = None) -> bytes:
    """``40{"sid"}``, with ``pid`` when the session can be recovered."""
    return b"40" + orjson.dumps({"sid": sid} if pid is None else {"sid": sid, "pid": pid})


def connect_error_packet(namespace: str, message: str, data: Any = None) -> bytes:
    prefix = b"44" if namespace == "/" else b"44" + namespace.encode() + b","
    body: dict[str, Any] = {"message": message}
    if data is not None:
        body["data"] = data
    return prefix + orjson.dumps(body)


def event_packet(type_: str, data: Any) -> bytes:
    """``42["type",data]``: a server event in the default namespace."""
    return b"42" + orjson.dumps([type_, data])


def ack_packet(ack_id: int, data: Any) -> bytes:
    return b"43" + str(ack_id).encode() + orjson.dumps([data])


DISCONNECT = b"41"
PING = b"2"
NOOP = b"6"
CLOSE = b"1"


def engine_error(code: int, message: str) -> bytes:
    """The JSON body Engine.IO servers answer a refused HTTP request with."""
    return orjson.dumps({"code": code, "message": message})


# -- a hub broadcast, translated once -----------------------------------------------------------

_EVENT_PREFIX = b'{"type":'
_DATA_KEY = b',"data":'
#: The end of a recorded event (see :class:`signaling.state.history.Template`).
_OFFSET_KEY = b'","offset":'
_EPOCH_KEY = b',"epoch":"'
_ROOM_KEY = b'"position":{"room":'
_OFFSET_END = 3 + OFFSET_WIDTH  # the offset, then "}}}"
_EPOCH_END = _OFFSET_END + len(_OFFSET_KEY) + EPOCH_LENGTH

#: A recorded event as connection-state recovery sees it: its Socket.IO offset (the last
#: argument of its packet), room, epoch and offset in the room.
Mark = tuple[str, str, str, int]


def packet_of_envelope(envelope: bytes, mark: Mark | None = None) -> bytes:
    """Rewrite a hub envelope ``{"type":"x","data":...}`` (as
    :func:`signaling.protocol.encode` writes it) into the Socket.IO packet ``42["x",...]``
    by slicing: the data is never decoded. With ``mark``, its offset string is the last
    argument (Socket.IO's connection-state recovery)."""
    if envelope[:8] != _EVENT_PREFIX:
        raise ValueError("not a hub event")
    end_of_type = envelope.index(b'"', 9) + 1
    if envelope[end_of_type : end_of_type + 8] != _DATA_KEY:
        raise ValueError("not a hub event")
    tail = b"]" if mark is None else b"," + orjson.dumps(mark[0]) + b"]"
    return b"42[" + envelope[8:end_of_type] + b"," + envelope[end_of_type + 8 : -1] + tail


def mark_of(envelope: bytes) -> Mark | None:
    """The position of a recorded event, read from the fixed-width end its template gives
    it (an offset right-aligned in 20 places, which plain JSON never writes), or ``None``."""
    n = len(envelope)
    if n < _EPOCH_END + len(_EPOCH_KEY) or envelope[n - 3 :] != b"}}}":
        return None
    offset_at = n - _OFFSET_END
    epoch_at = n - _EPOCH_END
    if (
        envelope[offset_at - len(_OFFSET_KEY) : offset_at] != _OFFSET_KEY
        or envelope[offset_at] != 0x20
        or envelope[epoch_at - len(_EPOCH_KEY) : epoch_at] != _EPOCH_KEY
    ):
        return None
    room_end = epoch_at - len(_EPOCH_KEY)
    room_at = envelope.rfind(_ROOM_KEY, 0, room_end)
    if room_at < 0:
        return None
    try:
        room = orjson.loads(envelope[room_at + len(_ROOM_KEY) : room_end])
        epoch = envelope[epoch_at : epoch_at + EPOCH_LENGTH].decode()
        offset = int(envelope[offset_at : n - 3])
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(room, str):
        return None
    return f"{epoch}:{offset}", room, epoch, offset


def _payload(frame: bytes) -> bytes:
    """The payload of an unmasked WebSocket text frame."""
    length = frame[1] & 0x7F
    return frame[2 if length < 126 else 4 if length == 126 else 10 :]


class BroadcastTranslator:
    """Remembers the last broadcast it translated: the hub writes one frame object to
    every recipient in a row, so a room of Socket.IO clients costs one translation (and one
    WebSocket frame) per broadcast, not one per recipient. With ``recovery``, recorded
    events carry their offset string and their :data:`Mark`."""

    __slots__ = ("_frame", "_mark", "_packet", "_ws_frame", "recovery")

    def __init__(self, *, recovery: bool = False) -> None:
        self.recovery = recovery
        self._frame: bytes | None = None
        self._packet = b""
        self._ws_frame = b""
        self._mark: Mark | None = None

    def translate(self, frame: bytes) -> tuple[bytes, bytes, Mark | None]:
        """``(packet, websocket frame of the packet, mark)`` for a hub event frame."""
        if frame is not self._frame:
            envelope = _payload(frame)
            mark = mark_of(envelope) if self.recovery else None
            packet = packet_of_envelope(envelope, mark)
            self._frame, self._packet, self._ws_frame = frame, packet, text_frame(packet)
            self._mark = mark
        return self._packet, self._ws_frame, self._mark

    def ws_frame(self, frame: bytes) -> bytes:
        """The WebSocket frame of a hub event frame's packet (without recovery's mark)."""
        if frame is not self._frame:
            self.translate(frame)
        return self._ws_frame

    def translate_envelope(self, envelope: bytes) -> tuple[bytes, Mark | None]:
        """A recorded event read back from history (not a broadcast: not remembered)."""
        mark = mark_of(envelope) if self.recovery else None
        return packet_of_envelope(envelope, mark), mark
