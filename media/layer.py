"""One encoding of a published track as the server receives it: its SSRC, sequence
numbers, statistics, bitrate, the size its keyframes show, its sender reports, and the
cache that answers subscribers' NACKs (:mod:`media.published_track` has the track)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc.rtp import RtpPacket

from media.rtp import SEQ_MOD, PacketCache, seq_newer

#: A layer that sent nothing for this long is not flowing (paused by the publisher, or
#: its bandwidth ran out): subscribers are not moved onto it.
FLOWING_FOR = 1.0
#: The weight of each second's bitrate in a layer's steady bitrate (a moving average over
#: about 1 / STEADY_WEIGHT seconds).
STEADY_WEIGHT = 0.2


class Layer:
    """One encoding of a published track: what arrived on its SSRC."""

    __slots__ = (
        "_bitrate_mark",
        "_bitrate_since",
        "_last_pli",
        "_pli_timer",
        "audience",
        "bitrate",
        "bytes_in",
        "cache",
        "first_seq",
        "height",
        "highest_seq",
        "highest_ts",
        "index",
        "keyframes",
        "last_packet_at",
        "packets_in",
        "plis_sent",
        "rid",
        "seq_cycles",
        "sr",
        "ssrc",
        "steady_bitrate",
        "width",
    )

    def __init__(self, rid: str | None, index: int) -> None:
        self.rid = rid
        self.index = index
        self.ssrc: int | None = None
        self.cache = PacketCache()
        self.packets_in = self.bytes_in = 0
        self.first_seq: int | None = None
        self.highest_seq = self.seq_cycles = self.highest_ts = 0
        self.width: int | None = None
        self.height: int | None = None
        self.keyframes = 0
        self.last_packet_at = -1e9
        #: the publisher's last sender report: (unix seconds, RTP timestamp)
        self.sr: tuple[float, int] | None = None
        self.bitrate = 0.0
        #: the bitrate averaged over some seconds (what a subscriber's share is measured
        #: in: a keyframe's second must not look like the layer's cost)
        self.steady_bitrate = 0.0
        self._bitrate_mark = 0
        self._bitrate_since = time.monotonic()
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        self.plis_sent = 0
        #: the subscriber slots this layer's packets are offered to (see
        #: :meth:`media.published_track.PublishedTrack.on_layer_packet`)
        self.audience: list[Any] = []

    def account(self, packet: RtpPacket, now: float) -> None:
        self.packets_in += 1
        self.bytes_in += len(packet.payload)
        self.last_packet_at = now
        seq = packet.sequence_number
        if self.first_seq is None:
            self.first_seq = self.highest_seq = seq
            self.highest_ts = packet.timestamp
            if self.ssrc is None:
                self.ssrc = packet.ssrc
        elif seq_newer(seq, self.highest_seq):
            if seq < self.highest_seq:
                self.seq_cycles += 1
            self.highest_seq = seq
            self.highest_ts = packet.timestamp
        self.cache.put(packet)

    def sender_report(self, unix_seconds: float, rtp_timestamp: int) -> None:
        self.sr = (unix_seconds, rtp_timestamp)

    def wallclock(self, timestamp: int, clock_rate: int) -> float | None:
        """When the picture stamped ``timestamp`` was captured, in the publisher's clock
        (from its last sender report; ``None`` before one arrived). Layers of one track
        share that clock, so this lines up their timestamps."""
        if self.sr is None:
            return None
        unix, rtp = self.sr
        delta = (timestamp - rtp + (1 << 31)) % (1 << 32) - (1 << 31)
        return unix + delta / clock_rate

    def flowing(self, now: float) -> bool:
        return now - self.last_packet_at < FLOWING_FOR

    def packets_lost(self) -> int:
        if self.first_seq is None:
            return 0
        expected = self.seq_cycles * SEQ_MOD + self.highest_seq - self.first_seq + 1
        return max(0, expected - self.packets_in)

    def tick(self, now: float) -> None:
        elapsed = now - self._bitrate_since
        if elapsed > 0:
            self.bitrate = (self.bytes_in - self._bitrate_mark) * 8 / elapsed
            steady = self.steady_bitrate
            self.steady_bitrate = (
                self.bitrate if not steady else steady + STEADY_WEIGHT * (self.bitrate - steady)
            )
        self._bitrate_mark = self.bytes_in
        self._bitrate_since = now

    def stats(self, now: float) -> dict[str, Any]:
        return {
            "rid": self.rid,
            "ssrc": self.ssrc,
            "width": self.width,
            "height": self.height,
            "bitrate": round(self.bitrate),
            "packetsIn": self.packets_in,
            "packetsLost": self.packets_lost(),
            "flowing": self.flowing(now),
        }
