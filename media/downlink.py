"""What goes down a subscriber's connection besides the media: its share of the downlink
estimate per video (:mod:`media.bandwidth`), the padding that probes for more, the send
times its estimator reads, and the sender reports.

One per participant; the participant hands it its slots, so it holds no slot itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiortc.rtp import RtcpSdesPacket, RtcpSourceInfo

from media import aiortc_hooks
from media.bandwidth import Allocator, SendClock
from media.send_slot import PADDING, SendSlot

log = logging.getLogger("switchboard.sfu")

#: Sender reports per compound RTCP packet (each SR 28 bytes, its SDES chunk ~30: the
#: packet stays well under the MTU).
REPORTS_PER_PACKET = 16
#: Probing pads in steps of this many seconds, at most this many packets a step.
PROBE_STEP = 0.05
PROBE_MAX_PACKETS = 20


class Downlink:
    def __init__(self, start_bitrate: int, estimation: bool) -> None:
        #: the estimate the subscriber reports, and each video's share of it
        self.allocator = Allocator(start=start_bitrate, enabled=estimation)
        self._clocks: dict[int, SendClock] = {}  # one pacing clock per extension id
        self._prober: asyncio.Task[None] | None = None
        self._probe_credit = 0.0  # bytes of padding owed (probing sends whole packets)
        self.speakers: set[str] = set()  # the room's active speakers, last told

    def adopt(self, slot: SendSlot) -> None:
        """A new slot: its REMB feeds the estimate."""
        slot.on_remb = self.allocator.on_remb

    def activated(self, slot: SendSlot) -> None:
        """A slot negotiated: its video carries send times from the shared clock."""
        if slot.send_time_id and slot.stamp is None:
            clock = self._clocks.get(slot.send_time_id)
            if clock is None:
                clock = self._clocks[slot.send_time_id] = SendClock(
                    self.allocator, slot.send_time_id
                )
            slot.stamp = clock.stamp

    def share(self, slots: list[SendSlot], speakers: set[str] | None = None) -> None:
        """Share the estimate among the videos (screen shares first, then the active
        speakers, then videos asked for in high quality, then the rest), and probe for
        more while some video gets less than it wants."""
        if speakers is not None:
            self.speakers = speakers
        videos = []
        for order, slot in enumerate(slots):
            track = slot.track
            if track is None or track.kind != "video" or slot.forwarder is None:
                continue
            if track.info.source == "screen":
                rank = 0
            elif track.info.participant_id in self.speakers:
                rank = 1
            elif slot.forwarder.preference.quality == "high":
                rank = 2
            else:
                rank = 3
            videos.append((slot, rank * 1000 + order))
        audio = sum(1 for s in slots if s.track is not None and s.track.kind == "audio")
        # limits apply only to a subscriber that can report its estimate (abs-send-time
        # negotiated for its videos, so REMB follows)
        estimating = any(slot.send_time_id for slot, _ in videos)
        self.allocator.allocate(videos, audio, estimating)
        if self.allocator.probe_target() > 0 and (self._prober is None or self._prober.done()):
            self._prober = asyncio.ensure_future(self._probe(slots))
            self._prober.add_done_callback(_log_failure)

    async def _probe(self, slots: list[SendSlot]) -> None:
        """Pad the RTX stream of one video (the first that has one) at the probe rate, in
        small steps, while the allocation says probing is worth it."""
        while True:
            target = self.allocator.probe_target()
            if target <= 0:
                return
            self._probe_credit += target * PROBE_STEP / 8  # bytes this step
            packets = min(PROBE_MAX_PACKETS, int(self._probe_credit // PADDING))
            self._probe_credit -= packets * PADDING
            if packets and not any(slot.pad(packets) for slot in slots):
                return  # nobody negotiated RTX: no way to probe
            await asyncio.sleep(PROBE_STEP)

    async def send_reports(self, slots: list[SendSlot]) -> None:
        """Sender reports of every slot that sent something since the last (about once a
        second), a few to a compound SRTCP packet with their CNAME, instead of one packet
        per slot (aiortc's way, :func:`aiortc_hooks.quiet_sender_rtcp`)."""
        reports = [(slot, sr) for slot in slots if (sr := slot.sender_report()) is not None]
        for start in range(0, len(reports), REPORTS_PER_PACKET):
            chunk = reports[start : start + REPORTS_PER_PACKET]
            cname = aiortc_hooks.sender_cname(chunk[0][0].sender) or "switchboard"
            sdes = RtcpSdesPacket(
                chunks=[
                    RtcpSourceInfo(ssrc=sr.ssrc, items=[(1, cname.encode())]) for _, sr in chunk
                ]
            )
            data = b"".join(bytes(sr) for _, sr in chunk) + bytes(sdes)
            if not await aiortc_hooks.send_rtcp_bytes(chunk[0][0].sender.transport, data):
                return

    def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sfu probing failed", exc_info=task.exception())
