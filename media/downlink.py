"""What goes down a subscriber's connection besides the media: its share of the downlink
estimate per video (:mod:`media.bandwidth`), the padding that probes for more, the send
times or sequence numbers its estimate is made from, and the sender reports.

The estimate comes from one of two places, whichever the subscriber's answer took:

* **transport-cc** (browsers): every video and padding packet carries a transport-wide
  sequence number, the subscriber reports when each arrived, and the server makes the
  estimate (:mod:`media.send_side`). Probing sends short clusters of padding at twice the
  estimate: a link that carries them raises the estimate at once;
* **REMB** (aiortc and other clients without it): video carries abs-send-time, the
  subscriber's receive-side estimator reports its estimate, and probing pads the RTX
  stream steadily by what the next layer would add, for that estimate to grow into.

One per participant; the participant hands it its slots, so it holds no slot itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from aiortc.rtp import RtcpSdesPacket, RtcpSourceInfo

from media import aiortc_hooks
from media.answer_sdp import answered_transport_cc, offer_transport_cc
from media.bandwidth import CLUSTER_GAIN, Allocator, pace_clock
from media.repair import PADDING
from media.send_side import PROBE_DURATION, PROBE_MIN_PACKETS, SendSideEstimator, TransportClock
from media.send_slot import SendSlot

log = logging.getLogger("switchboard.sfu")

#: Sender reports per compound RTCP packet (each SR 28 bytes, its SDES chunk ~30: the
#: packet stays well under the MTU).
REPORTS_PER_PACKET = 16
#: Probing pads in steps of this many seconds, at most this many packets a step.
PROBE_STEP = 0.05
PROBE_MAX_PACKETS = 20
#: A probe cluster has at most this many packets (a 20 ms cluster at 8 Mbit/s)...
CLUSTER_MAX_PACKETS = 80
#: ... and its result is read this long after it is sent (feedback comes every 50-100 ms).
CLUSTER_WAIT = 0.3


class Downlink:
    def __init__(self, start_bitrate: int, estimation: bool) -> None:
        #: the estimate, and each video's share of it
        self.allocator = Allocator(start=start_bitrate, enabled=estimation)
        self._clocks: dict[int, Any] = {}  # one pacing clock (SendClock) per extension id
        #: the subscriber's answer took transport-cc feedback: the server estimates
        self.transport_cc = False
        self.estimator: SendSideEstimator | None = None
        self._transport_clock: TransportClock | None = None
        self.malformed_feedback = 0
        self._prober: asyncio.Task[None] | None = None
        self._probe_credit = 0.0  # bytes of padding owed (probing sends whole packets)
        self.speakers: set[str] = set()  # the room's active speakers, last told

    def adopt(self, slot: SendSlot) -> None:
        """A new slot: its REMB feeds the estimate."""
        slot.on_remb = self.allocator.on_remb

    def offer(self, sdp: str) -> str:
        """The server's offer to the subscriber, asking for transport-cc feedback."""
        return offer_transport_cc(sdp) if self.allocator.enabled else sdp

    def answered(self, sdp: str) -> None:
        """The subscriber's answer: whether it takes transport-cc feedback."""
        self.transport_cc = answered_transport_cc(sdp)

    def activated(self, slot: SendSlot) -> None:
        """A slot negotiated: its video carries transport-wide sequence numbers (with
        transport-cc) or send times from the shared pacing clock (for REMB)."""
        if slot.stamp is not None:
            return
        if self.transport_cc and slot.transport_cc_id and self.allocator.enabled:
            clock = self._transport_clock
            if clock is None:
                self.estimator = SendSideEstimator(self.allocator.start)
                self.allocator.send_side()
                clock = self._transport_clock = TransportClock(self.estimator, slot.transport_cc_id)
            aiortc_hooks.tap_transport_feedback(slot.sender.transport, self._on_feedback)
            slot.stamp = clock.stamp
        elif slot.send_time_id:
            clock = self._clocks.get(slot.send_time_id)
            if clock is None:  # compiled as the slot's step is (a node's slots all are alike)
                clock = self._clocks[slot.send_time_id] = pace_clock(
                    self.allocator, slot.send_time_id, slot.compiled_writer
                )
            slot.stamp = clock.stamp

    def _on_feedback(self, packet: bytes) -> None:
        estimator = self.estimator
        if estimator is None:
            return
        try:
            estimator.on_feedback(packet)
        except ValueError:
            self.malformed_feedback += 1
            return
        except Exception:  # a fault of ours must not end the subscriber's transport
            self.malformed_feedback += 1
            log.exception("sfu transport feedback failed")
            return
        self.allocator.on_estimate(estimator.estimate)

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
        # limits apply only where an estimate can be made (transport-cc or abs-send-time
        # negotiated for the videos, so feedback or REMB follows)
        estimating = any(slot.stamp is not None for slot, _ in videos)
        self.allocator.allocate(videos, audio, estimating)
        if self.allocator.probe_target() > 0 and (self._prober is None or self._prober.done()):
            self._prober = asyncio.ensure_future(self._probe(slots))
            self._prober.add_done_callback(_log_failure)

    async def _probe(self, slots: list[SendSlot]) -> None:
        """Pad the RTX stream of one video (the first that has one) at the probe rate, in
        small steps, while the allocation says probing is worth it."""
        if self.estimator is not None:
            await self._probe_clusters(slots)
            return
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

    async def _probe_clusters(self, slots: list[SendSlot]) -> None:
        """Send probe clusters while the allocation wants more: each a burst of padding
        paced (in its stamped send times) at :meth:`Allocator.cluster_rate`, read back
        from the feedback a moment later."""
        clock, estimator = self._transport_clock, self.estimator
        assert clock is not None and estimator is not None
        while (rate := self.allocator.cluster_rate()) > 0:
            size = PADDING + 16  # with the RTP header and extension
            packets = math.ceil(rate * PROBE_DURATION / 8 / size)
            packets = max(PROBE_MIN_PACKETS, min(CLUSTER_MAX_PACKETS, packets))
            before = estimator.estimate
            clock.cluster = estimator.start_cluster(time.monotonic())
            clock.probe_rate = rate
            try:
                if not any(slot.pad(packets) for slot in slots):
                    return  # nobody negotiated RTX: no way to probe
            finally:
                clock.cluster, clock.probe_rate = 0, 0.0
            await asyncio.sleep(CLUSTER_WAIT)
            self.allocator.link_open = estimator.link_open
            if estimator.estimate < before * CLUSTER_GAIN:
                self.allocator.probe_failed(time.monotonic())

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

    def stats(self) -> dict[str, Any]:
        stats = self.allocator.stats()
        if self.estimator is not None:
            stats["sendSide"] = self.estimator.stats()
            stats["sendSide"]["malformedFeedback"] = self.malformed_feedback
        return stats

    def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sfu probing failed", exc_info=task.exception())
