"""Pre-encoded media for the media benchmark: VP8 and Opus packets encoded once, replayed.

A load generator that encodes video spends its CPU on libvpx, not on load; these tracks
hand aiortc ready ``av.Packet`` objects (aiortc then only packetizes them), so one client
process can drive many publishers. The VP8 loop starts on a keyframe and its length is a
whole number of keyframe intervals, so replaying it stays a valid stream (the
decode-and-re-encode baseline decodes it).

Video frame times are jittered (28..38 ms around 30 fps) and stamped from the clock, so
each publisher's RTP timestamps form a pattern that identifies it at the subscribers.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import random
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

VIDEO_RATE = 90000
AUDIO_RATE = 48000
FPS = 30


@functools.cache
def vp8_loop(
    kbps: int, keyframe_interval: float, width: int = 640, height: int = 360
) -> tuple[bytes, ...]:
    """Encode a moving pattern once: a loop of whole keyframe intervals (at least 4 s)."""
    gop = max(1, round(keyframe_interval * FPS))
    frames = gop * max(1, -(-4 * FPS // gop))
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, FPS)
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.bit_rate = kbps * 1000
    codec.gop_size = 10**6  # keyframes only where forced below
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    x = np.arange(width, dtype=np.int32)
    y = np.arange(height, dtype=np.int32)
    base = (x[None, :] + y[:, None]) % 256
    rng = np.random.default_rng(7)
    out: list[bytes] = []
    for i in range(frames):
        plane = ((base + 4 * i) % 256).astype(np.uint8)
        noise = rng.integers(0, 24, plane.shape, dtype=np.uint8)
        rgb = np.stack([plane, np.roll(plane, 40, axis=1), 255 - plane + noise], axis=2)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.pict_type = av.video.frame.PictureType.I if i % gop == 0 else 0
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return tuple(out)


@functools.cache
def opus_loop(kbps: int = 32) -> tuple[bytes, ...]:
    """One second of a 440 Hz tone as 20 ms Opus packets."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = kbps * 1000
    out: list[bytes] = []
    samples = 960
    for i in range(50):
        t = (np.arange(samples) + i * samples) / AUDIO_RATE
        wave = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(wave, 2)[None, :], format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * samples
        out += [bytes(p) for p in codec.encode(frame)]
    return tuple(out)


def _packet(payload: bytes, pts: int, rate: int) -> av.Packet:
    packet = av.Packet(payload)
    packet.pts = pts
    packet.time_base = fractions.Fraction(1, rate)
    return packet


class PreEncodedVideo(MediaStreamTrack):
    """Replays ``vp8_loop`` at ~30 fps with jittered frame times."""

    kind = "video"

    def __init__(self, frames: tuple[bytes, ...]) -> None:
        super().__init__()
        self._frames = frames
        self._index = 0
        self._t0 = time.monotonic()
        self._next = self._t0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        self._next += random.uniform(0.028, 0.038)
        await asyncio.sleep(max(0.0, self._next - time.monotonic()))
        payload = self._frames[self._index % len(self._frames)]
        self._index += 1
        return _packet(payload, int((time.monotonic() - self._t0) * VIDEO_RATE), VIDEO_RATE)


class PreEncodedAudio(MediaStreamTrack):
    """Replays ``opus_loop`` every 20 ms."""

    kind = "audio"

    def __init__(self, packets: tuple[bytes, ...]) -> None:
        super().__init__()
        self._packets = packets
        self._index = 0
        self._t0 = time.monotonic()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        due = self._t0 + self._index * 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        payload = self._packets[self._index % len(self._packets)]
        pts = self._index * 960
        self._index += 1
        return _packet(payload, pts, AUDIO_RATE)


def loop_kbps(frames: tuple[bytes, ...]) -> float:
    """The real average bitrate of a VP8 loop at 30 fps."""
    return sum(len(f) for f in frames) * 8 * FPS / len(frames) / 1000
