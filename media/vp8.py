"""The VP8 RTP payload descriptor (RFC 7741), read and rewritten without decoding.

A subscriber switched between simulcast layers receives pictures from independent encoders:
each numbers its pictures (PictureID) and its base-layer pictures (TL0PICIDX) its own way.
The receiver's decoder uses those numbers to spot lost pictures, so they must stay
continuous across a switch, and across pictures of higher temporal layers dropped for a
lower frame rate: :class:`Vp8Munger` keeps one offset per field, per subscriber, and writes
each forwarded packet's descriptor with them. The descriptor's layout::

     0 1 2 3 4 5 6 7
    |X|R|N|S|R| PID |   X: extension byte follows, S: start of a partition
    |I|L|T|K| RSV   |   (if X) I: PictureID, L: TL0PICIDX, T: TID, K: KEYIDX
    |M| PictureID   |   (if I) M: 15-bit PictureID (one more byte)
    |  TL0PICIDX    |   (if L)
    |TID|Y| KEYIDX  |   (if T or K) TID: temporal layer, Y: layer sync
"""

from __future__ import annotations

from dataclasses import dataclass

PID_MOD_15 = 1 << 15
PID_MOD_7 = 1 << 7
TL0_MOD = 1 << 8


@dataclass(slots=True)
class Descriptor:
    size: int  # bytes of descriptor before the VP8 payload
    start: bool  # S: first packet of a partition
    partition: int
    picture_id: int | None = None
    pid_offset: int = 0
    pid_bits: int = 0
    tl0: int | None = None
    tl0_offset: int = 0
    tid: int | None = None
    sync: bool = False  # Y: the picture depends only on the base layer

    @property
    def picture_start(self) -> bool:
        """First packet of a picture (start of partition 0)."""
        return self.start and self.partition == 0


def parse(payload: bytes) -> Descriptor | None:
    """The descriptor, or ``None`` for a truncated payload."""
    if not payload:
        return None
    first = payload[0]
    d = Descriptor(size=1, start=bool(first & 0x10), partition=first & 0x07)
    if not first & 0x80:
        return d
    if len(payload) < 2:
        return None
    ext = payload[1]
    pos = 2
    if ext & 0x80:  # I
        if len(payload) <= pos:
            return None
        d.pid_offset = pos
        if payload[pos] & 0x80:  # M: 15 bits
            if len(payload) <= pos + 1:
                return None
            d.picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
            d.pid_bits = 15
            pos += 2
        else:
            d.picture_id = payload[pos] & 0x7F
            d.pid_bits = 7
            pos += 1
    if ext & 0x40:  # L
        if len(payload) <= pos:
            return None
        d.tl0_offset = pos
        d.tl0 = payload[pos]
        pos += 1
    if ext & 0x30:  # T or K
        if len(payload) <= pos:
            return None
        if ext & 0x20:
            d.tid = payload[pos] >> 6
            d.sync = bool(payload[pos] & 0x20)
        pos += 1
    d.size = pos
    return d


def is_keyframe(payload: bytes, d: Descriptor) -> bool:
    """First packet of a keyframe: start of partition 0 and the P bit clear."""
    return d.picture_start and len(payload) > d.size and not payload[d.size] & 0x01


def keyframe_size(payload: bytes, d: Descriptor) -> tuple[int, int] | None:
    """The picture's width and height, which a keyframe's header carries after the
    3-byte frame tag and the start code 9d 01 2a (RFC 6386 section 9.1)."""
    if not is_keyframe(payload, d):
        return None
    header = payload[d.size : d.size + 10]
    if len(header) < 10 or header[3:6] != b"\x9d\x01\x2a":
        return None
    width = (header[6] | header[7] << 8) & 0x3FFF
    height = (header[8] | header[9] << 8) & 0x3FFF
    return width, height


#: A subscriber's renumbering: (PictureID delta, TL0PICIDX delta, PictureID modulus).
Renumbering = tuple[int, int, int]
UNCHANGED: Renumbering = (0, 0, PID_MOD_15)


def renumber(payload: bytes, d: Descriptor, numbers: Renumbering) -> bytes:
    """The payload with its PictureID and TL0PICIDX shifted by ``numbers``: the original
    (shared, not copied) when nothing shifts, else a copy."""
    pid_delta, tl0_delta, pid_mod = numbers
    if pid_delta == 0 and tl0_delta == 0:
        return payload
    out = bytearray(payload)
    if d.picture_id is not None:
        pid = (d.picture_id + pid_delta) % pid_mod
        if d.pid_bits == 15:
            out[d.pid_offset] = 0x80 | (pid >> 8)
            out[d.pid_offset + 1] = pid & 0xFF
        else:
            out[d.pid_offset] = pid & 0x7F
    if d.tl0 is not None:
        out[d.tl0_offset] = (d.tl0 + tl0_delta) % TL0_MOD
    return bytes(out)


class LastNumbers:
    """The last PictureID and TL0PICIDX sent to a subscriber (``None``: none yet). A
    munger keeps them here unless given a store: a slot's numbering holds them
    (:mod:`media.numbering`), so its compiled steady step moves them too."""

    __slots__ = ("last_pid", "last_tl0")

    def __init__(self) -> None:
        self.last_pid: int | None = None
        self.last_tl0: int | None = None


class Vp8Munger:
    """One subscriber's continuous PictureID and TL0PICIDX over layer switches and
    dropped pictures."""

    __slots__ = ("_dropped", "numbers", "store")

    def __init__(self, store: LastNumbers | None = None) -> None:
        self.numbers: Renumbering = UNCHANGED
        self.store = store if store is not None else LastNumbers()
        self._dropped: int | None = None  # PictureID of the picture being dropped

    def switch(self, d: Descriptor) -> None:
        """A new layer starts at ``d`` (a keyframe): its numbers continue ours."""
        pid_delta, tl0_delta, pid_mod = self.numbers
        store = self.store
        if d.picture_id is not None:
            pid_mod = PID_MOD_15 if d.pid_bits == 15 else PID_MOD_7
            if store.last_pid is not None:
                pid_delta = (store.last_pid + 1 - d.picture_id) % pid_mod
        if d.tl0 is not None and store.last_tl0 is not None:
            tl0_delta = (store.last_tl0 + 1 - d.tl0) % TL0_MOD
        self.numbers = (pid_delta, tl0_delta, pid_mod)

    def drop(self, d: Descriptor) -> bool:
        """A packet of a picture that is not sent (its temporal layer is above the
        subscriber's): the next picture takes its PictureID. ``True`` when this shifted
        the numbers (the first packet seen of that picture)."""
        if d.picture_id is None or d.picture_id == self._dropped:
            return False
        self._dropped = d.picture_id
        pid_delta, tl0_delta, pid_mod = self.numbers
        self.numbers = ((pid_delta - 1) % pid_mod, tl0_delta, pid_mod)
        return True

    def rewrite(self, payload: bytes, d: Descriptor, newest: bool = True) -> bytes:
        """The payload with this subscriber's numbers (see :func:`renumber`). ``newest``
        is false for a packet that arrived late (reordered, or repaired by RTX): it must
        not move the numbers the next switch continues from."""
        pid_delta, tl0_delta, pid_mod = self.numbers
        if newest:
            store = self.store
            if d.picture_id is not None:
                store.last_pid = (d.picture_id + pid_delta) % pid_mod
            if d.tl0 is not None:
                store.last_tl0 = (d.tl0 + tl0_delta) % TL0_MOD
        return renumber(payload, d, self.numbers)
