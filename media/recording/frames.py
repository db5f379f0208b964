"""Whole frames from in-order RTP packets: VP8 depacketized (RFC 7741), Opus as it is
(RFC 7587: one packet, one frame), with RTP timestamps unwrapped past 2^32."""

from __future__ import annotations

from dataclasses import dataclass

from media import vp8

TS_MOD = 1 << 32


class TimestampUnwrapper:
    """32-bit RTP timestamps as a monotonic-ish 64-bit count (wraps every 13 h at 90 kHz)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._cycles = 0

    def unwrap(self, ts: int) -> int:
        last = self._last
        if last is not None:
            if ts < last and last - ts > TS_MOD // 2:
                self._cycles += 1
            elif ts > last and ts - last > TS_MOD // 2 and self._cycles:
                return (self._cycles - 1) * TS_MOD + ts  # a late packet from before the wrap
        self._last = ts
        return self._cycles * TS_MOD + ts


@dataclass(slots=True)
class Frame:
    timestamp: int  # unwrapped RTP timestamp
    data: bytes
    keyframe: bool
    size: tuple[int, int] | None = None  # a VP8 keyframe's width and height


class Vp8Assembler:
    """Collects a picture's packets (same timestamp, from the start of partition 0 to the
    marker bit). A picture with a packet missing is dropped, and so is everything until
    the next keyframe (``needs_keyframe`` tells the recorder to ask for one)."""

    def __init__(self) -> None:
        self._unwrap = TimestampUnwrapper()
        self._parts: list[bytes] = []
        self._timestamp: int | None = None
        self._keyframe = False
        self._size: tuple[int, int] | None = None
        self.needs_keyframe = True
        self.dropped = 0

    def push(self, timestamp: int, marker: bool, payload: bytes, after_gap: bool) -> Frame | None:
        if after_gap:
            self._abandon()
        d = vp8.parse(payload)
        if d is None:
            self._abandon()
            return None
        if d.picture_start:
            if self._parts:
                self._abandon()  # the previous picture never got its marker
            keyframe = vp8.is_keyframe(payload, d)
            if self.needs_keyframe and not keyframe:
                return None
            self._timestamp, self._keyframe = timestamp, keyframe
            self._size = vp8.keyframe_size(payload, d) if keyframe else None
            self._parts = [payload[d.size :]]
        elif self._parts and timestamp == self._timestamp:
            self._parts.append(payload[d.size :])
        else:
            if self._parts:
                self._abandon()
            return None
        if not marker:
            return None
        frame = Frame(
            self._unwrap.unwrap(timestamp), b"".join(self._parts), self._keyframe, self._size
        )
        self._parts = []
        if frame.keyframe:
            self.needs_keyframe = False
        return frame

    def _abandon(self) -> None:
        if self._parts:
            self.dropped += 1
            self._parts = []
        self.needs_keyframe = True


class OpusFrames:
    def __init__(self) -> None:
        self._unwrap = TimestampUnwrapper()

    def push(self, timestamp: int, marker: bool, payload: bytes, after_gap: bool) -> Frame | None:
        if not payload:
            return None
        return Frame(self._unwrap.unwrap(timestamp), payload, True)
