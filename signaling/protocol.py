"""Wire format: the JSON envelope, error codes, close codes and pre-built WebSocket frames.

Outbound frames are encoded once (orjson) and wrapped in a complete, unmasked RFC 6455
text frame so that fan-out writes the same ``bytes`` object to every recipient's transport
instead of re-encoding per recipient.
"""

from __future__ import annotations

import struct
from enum import IntEnum, StrEnum
from typing import Any

import orjson


class ErrorCode(StrEnum):
    """Codes carried in ``error`` frames. Keep docs/protocol.md in step."""

    INVALID_JSON = "invalid_json"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_PAYLOAD = "invalid_payload"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_FRAME = "unsupported_frame"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    NOT_IN_ROOM = "not_in_room"
    TOO_MANY_ROOMS = "too_many_rooms"
    CALL_NOT_FOUND = "call_not_found"
    NOT_IN_CALL = "not_in_call"
    INVALID_STATE = "invalid_state"
    TOO_MANY_PARTICIPANTS = "too_many_participants"
    PEER_UNAVAILABLE = "peer_unavailable"
    ROOM_FULL = "room_full"
    ROOM_NOT_FOUND = "room_not_found"
    TRACK_NOT_FOUND = "track_not_found"
    INVALID_SDP = "invalid_sdp"
    UNSUPPORTED_CODEC = "unsupported_codec"
    NO_CAPACITY = "no_capacity"
    RESUME_FAILED = "resume_failed"
    TOKEN_INVALID = "token_invalid"
    MESSAGES_DISABLED = "messages_disabled"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4008


class HubError(Exception):
    """An error a handler reports to the client as an ``error`` frame."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(type_: str, data: Any, id_: str | int | None = None) -> bytes:
    """Encode one envelope as JSON bytes."""
    if id_ is None:
        return orjson.dumps({"type": type_, "data": data})
    return orjson.dumps({"type": type_, "id": id_, "data": data})


def text_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in a final, unmasked WebSocket text frame (server to client)."""
    return text_frame_header(len(payload)) + payload


def text_frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame of ``length`` payload bytes."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


def event_frame(type_: str, data: Any) -> bytes:
    """A ready-to-write frame for a server event (no id)."""
    return text_frame(encode(type_, data))


def close_frame(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut to fit the 123-byte limit of control frames."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return struct.pack("!BB", 0x88, len(body)) + body
