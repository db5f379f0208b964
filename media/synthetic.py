"""Synthetic media for tests and benchmarks: a tone and a moving test pattern.

A silent track and a black picture would make active-speaker detection and video
checks meaningless, so the tone has a real level and the pattern changes every frame.
"""

from __future__ import annotations

import fractions
import math

import numpy as np
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame


class ToneTrack(AudioStreamTrack):
    """A sine tone (``amplitude`` 0 gives digital silence), paced in real time."""

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._phase = 0

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # paces and stamps pts; its samples are silence
        n = frame.samples
        if self.amplitude > 0:
            t = (np.arange(n) + self._phase) / frame.sample_rate
            wave = self.amplitude * 32767 * np.sin(2 * math.pi * self.frequency * t)
            frame.planes[0].update(wave.astype(np.int16).tobytes())
        self._phase += n
        return frame


class PatternTrack(VideoStreamTrack):
    """A moving colour-bar pattern; cheap to make, not trivially compressible."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        x = np.arange(width, dtype=np.int32)
        y = np.arange(height, dtype=np.int32)
        self._base = (x[None, :] + y[:, None]) % 256
        self._count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        shift = self._count * 4
        self._count += 1
        plane = ((self._base + shift) % 256).astype(np.uint8)
        rgb = np.stack([plane, np.roll(plane, 40, axis=1), 255 - plane], axis=2)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base if time_base else fractions.Fraction(1, 90000)
        return frame
