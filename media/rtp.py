"""RTP-level helpers for forwarding: keyframe detection, header rewriting, a packet cache.

The SFU never decodes media. To start a subscriber on a decodable picture it only needs to
know where a keyframe begins, which the payload descriptor (VP8, RFC 7741) or the NAL unit
header (H.264, RFC 6184) tells without touching the bitstream. Each forwarded packet gets a
fresh 12-byte header (the subscriber's SSRC, payload type, sequence number and timestamp)
in front of the publisher's payload, which is shared, not copied per subscriber beyond the
one concatenation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from aiortc.rtp import RtpPacket

from media import vp8

HEADER = struct.Struct("!BBHII")
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
CACHE_SIZE = 1024  # packets kept per published track to answer NACKs (~3 s of 720p video)

H264_IDR = 5
H264_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28


def vp8_keyframe_start(payload: bytes) -> bool:
    """True if this VP8 RTP payload is the first packet of a keyframe."""
    d = vp8.parse(payload)
    return d is not None and vp8.is_keyframe(payload, d)


def h264_keyframe_start(payload: bytes) -> bool:
    """True if this H.264 RTP payload starts an IDR picture or carries its SPS."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (H264_IDR, H264_SPS):
        return True
    if nal_type == H264_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            if payload[pos + 2] & 0x1F in (H264_IDR, H264_SPS):
                return True
            pos += 2 + size
        return False
    if nal_type == H264_FU_A and len(payload) > 1:
        fu_header = payload[1]
        return bool(fu_header & 0x80) and fu_header & 0x1F == H264_IDR
    return False


def keyframe_detector(mime_type: str) -> Callable[[bytes], bool] | None:
    """The keyframe test for a codec, or None for codecs where every packet will do."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_keyframe_start
    if mime == "video/h264":
        return h264_keyframe_start
    return None


def repeat(
    cached: Cached, payload_type: int, seq: int, ts: int, ssrc: int, body: bytes, extension: bytes
) -> bytes:
    """A cached packet sent again (a retransmission): ``body`` under a new header, with
    ``extension`` (the subscriber's send time or transport-wide number) if any."""
    first = 0x90 if extension else 0x80
    return HEADER.pack(first, (cached[2] << 7) | payload_type, seq, ts, ssrc) + extension + body


def one_byte_extension(elements: list[tuple[int, bytes]]) -> bytes:
    """An RTP header extension block (RFC 8285 one-byte form) holding ``(id, value)``
    elements, padded to whole 32-bit words."""
    data = b"".join(bytes([(ext_id << 4) | (len(value) - 1)]) + value for ext_id, value in elements)
    data += bytes(-len(data) % 4)
    return struct.pack("!HH", 0xBEDE, len(data) // 4) + data


def seq_newer(a: int, b: int) -> bool:
    """RFC 3550 ordering: is sequence number ``a`` after ``b`` (modulo 2**16)?"""
    return a != b and ((a - b) % SEQ_MOD) < 0x8000


#: A cached packet: (sequence number, timestamp, marker, payload). A plain tuple of ints
#: and bytes, so the garbage collector stops tracking it at its first pass: a room of 50
#: keeps some 80,000 packets for NACKs, and as tracked objects (an RtpPacket is three)
#: they were promoted to the oldest generation by the thousand a second, making its full
#: collections pause the event loop for half a second.
Cached = tuple[int, int, bool, bytes]


class PacketCache:
    """The last :data:`CACHE_SIZE` packets of one published track, by sequence number."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: list[Cached | None] = [None] * CACHE_SIZE

    def put(self, packet: RtpPacket) -> None:
        seq = packet.sequence_number
        self._slots[seq % CACHE_SIZE] = (seq, packet.timestamp, packet.marker, packet.payload)

    def get(self, seq: int) -> Cached | None:
        cached = self._slots[seq % CACHE_SIZE]
        if cached is not None and cached[0] == seq:
            return cached
        return None
