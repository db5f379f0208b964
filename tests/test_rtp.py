"""Unit tests of the per-packet helpers (media.rtp): keyframe detection on real encoder
output and hand-built payload descriptors, header rewriting, sequence order across the
16-bit wrap, and the NACK cache."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av import VideoFrame
from hypothesis import given
from hypothesis import strategies as st

from media.rtp import (
    CACHE_SIZE,
    PacketCache,
    h264_keyframe_start,
    keyframe_detector,
    one_byte_extension,
    seq_newer,
    vp8_keyframe_start,
)
from media.rtp_writer import Writer


def encoded(mime: str) -> tuple[list[bytes], list[bytes]]:
    """RTP payloads of one keyframe and of the frame after it, from aiortc's own encoder
    and packetizer (what an aiortc publisher sends)."""
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96))
    image = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    frame = VideoFrame.from_ndarray(image, format="rgb24")
    frame.time_base = fractions.Fraction(1, 90000)
    frame.pts = 0
    key, _ = encoder.encode(frame, force_keyframe=True)
    frame.pts = 3000
    delta, _ = encoder.encode(frame, force_keyframe=False)
    return key, delta


@pytest.fixture(scope="module")
def vp8_frames():
    return encoded("video/VP8")


@pytest.fixture(scope="module")
def h264_frames():
    return encoded("video/H264")


def test_vp8_keyframe_start_on_encoder_output(vp8_frames):
    key, delta = vp8_frames
    assert vp8_keyframe_start(key[0])
    # Only the first packet of the keyframe starts it; later packets and delta frames not.
    assert not any(vp8_keyframe_start(p) for p in key[1:])
    assert not any(vp8_keyframe_start(p) for p in delta)


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        (b"\x10", True),  # S=1, PID=0, no extension
        (b"\x00", False),  # not the start of a partition
        (b"\x11", False),  # start of partition 1, not 0
        (b"\x90\x80\x05", True),  # X, I with a 7-bit picture id
        (b"\x90\x80\x85\x10", True),  # X, I with a 15-bit picture id
        (b"\x90\xe0\x85\x10\x07\x40", True),  # X, I (15 bit), L (TL0PICIDX), T (TID)
        (b"\x90\x20\x40", True),  # X, K only (KEYIDX byte)
    ],
)
def test_vp8_payload_descriptors(descriptor, expected):
    keyframe_header = b"\x00\x00\x00"  # P bit clear
    interframe_header = b"\x01\x00\x00"  # P bit set
    assert vp8_keyframe_start(descriptor + keyframe_header) is expected
    assert vp8_keyframe_start(descriptor + interframe_header) is False


@pytest.mark.parametrize("truncated", [b"", b"\x90", b"\x90\x80", b"\x90\x80\x85\x10", b"\x10"])
def test_vp8_truncated_payloads_are_not_keyframes(truncated):
    assert vp8_keyframe_start(truncated) is False


def test_h264_keyframe_start_on_encoder_output(h264_frames):
    key, delta = h264_frames
    assert h264_keyframe_start(key[0])
    assert not any(h264_keyframe_start(p) for p in delta)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", False),
        (b"\x65\x88", True),  # single NAL: IDR slice
        (b"\x67\x42", True),  # single NAL: SPS
        (b"\x41\x9a", False),  # single NAL: non-IDR slice
        (b"\x78\x00\x02\x67\x42\x00\x02\x68\xce", True),  # STAP-A with SPS, PPS
        (b"\x78\x00\x02\x41\x9a\x00\x02\x41\x9b", False),  # STAP-A of non-IDR slices
        (b"\x78\x00\x09\x41", False),  # STAP-A whose length runs past the end
        (b"\x7c\x85\x88", True),  # FU-A, start bit, IDR
        (b"\x7c\x05\x88", False),  # FU-A continuation of an IDR
        (b"\x7c\x81\x9a", False),  # FU-A start of a non-IDR slice
        (b"\x7c", False),  # FU-A without its header
    ],
)
def test_h264_nal_unit_forms(payload, expected):
    assert h264_keyframe_start(payload) is expected


def test_keyframe_detector_by_codec():
    assert keyframe_detector("video/VP8") is vp8_keyframe_start
    assert keyframe_detector("VIDEO/h264") is h264_keyframe_start
    assert keyframe_detector("audio/opus") is None


def test_forward_builds_a_new_header_and_keeps_the_payload():
    sent: list[bytes] = []

    class Capture(Writer):
        def write(self, data: bytes) -> None:
            sent.append(data)

    Capture().forward(0x80 | 96, 65535, (1 << 32) - 1, 0xDEADBEEF, b"", b"opus-frame")
    parsed = RtpPacket.parse(sent[0])
    assert (parsed.payload_type, parsed.marker) == (96, 1)
    assert (parsed.sequence_number, parsed.timestamp, parsed.ssrc) == (
        65535,
        (1 << 32) - 1,
        0xDEADBEEF,
    )
    assert parsed.payload == b"opus-frame"
    assert sent[0][0] & 0x10 == 0 and len(sent[0]) == 12 + len(b"opus-frame")  # no extension
    extension = one_byte_extension([(3, b"\x01\x02\x03")])
    Capture().forward(96, 1, 2, 3, extension, b"vp8")
    assert sent[1][0] == 0x90 and sent[1][12:] == extension + b"vp8"
    assert RtpPacket.parse(sent[1]).marker == 0


def test_seq_newer_across_the_wrap():
    assert seq_newer(0, 65535) and seq_newer(100, 65500)
    assert not seq_newer(65535, 0) and not seq_newer(5, 5)
    assert seq_newer(0x7FFF, 0) and not seq_newer(0x8000, 0)


@given(st.integers(0, 65535), st.integers(1, 0x7FFF))
def test_seq_newer_is_antisymmetric(base, step):
    later = (base + step) % 65536
    assert seq_newer(later, base) and not seq_newer(base, later)


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, ssrc=5)
    p.payload = seq.to_bytes(2, "big")
    return p


def test_packet_cache_keeps_the_last_window_across_the_wrap():
    cache = PacketCache()
    sent = [(65000 + i) % 65536 for i in range(CACHE_SIZE + 500)]  # runs past 65535
    for seq in sent:
        cache.put(packet(seq))
    for seq in sent[-CACHE_SIZE:]:
        found = cache.get(seq)
        assert found is not None and found[0] == seq and found[3] == seq.to_bytes(2, "big")
    # Older packets were overwritten by ones sharing their slot: never the wrong packet.
    for seq in sent[:-CACHE_SIZE]:
        assert cache.get(seq) is None
    assert cache.get(12345) is None  # never sent


def test_packet_cache_answers_none_for_a_slot_holding_another_seq():
    cache = PacketCache()
    cache.put(packet(5))
    assert cache.get(5 + CACHE_SIZE) is None
    cache.put(packet(5 + CACHE_SIZE))
    assert cache.get(5) is None and cache.get(5 + CACHE_SIZE)[0] == 5 + CACHE_SIZE  # type: ignore[index]
