"""What a video subscriber was sent, for answering its NACKs.

A NACK names the subscriber's own sequence numbers; answering it means finding the layer
packet each one was made from, and how it was rewritten then (the run of one layer it
belonged to, with that run's offsets and VP8 renumbering). :class:`SentRing` keeps that
for the last :data:`RING` packets in three compact arrays, so nothing is allocated per
packet sent.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media import vp8
    from media.layer import Layer

#: Sequence numbers remembered per video subscriber to answer its NACKs (about 1.5 s of
#: 720p video; a NACK comes within a round trip or two).
RING = 512


class Run:
    """How packets of one uninterrupted run of one layer are rewritten for a subscriber:
    from the keyframe at ``first_in`` (that layer's sequence number) on."""

    __slots__ = ("first_in", "layer", "numbers", "ts_offset")

    def __init__(
        self, layer: Layer, first_in: int, ts_offset: int, numbers: vp8.Renumbering | None
    ) -> None:
        self.layer = layer
        self.first_in = first_in
        self.ts_offset = ts_offset
        self.numbers = numbers


class SentRing:
    """For each sequence number sent recently: which layer packet it was, and how it was
    rewritten (three compact arrays: nothing allocated per packet)."""

    __slots__ = ("inbound", "outbound", "runs")

    def __init__(self) -> None:
        self.outbound = array("i", [-1]) * RING
        self.inbound = array("H", [0]) * RING
        self.runs: list[Run | None] = [None] * RING

    def put(self, out_seq: int, in_seq: int, run: Run) -> None:
        i = out_seq % RING
        self.outbound[i] = out_seq
        self.inbound[i] = in_seq
        self.runs[i] = run

    def get(self, out_seq: int) -> tuple[int, Run] | None:
        i = out_seq % RING
        run = self.runs[i]
        if self.outbound[i] != out_seq or run is None:
            return None
        return self.inbound[i], run
