"""Receiving a simulcast video section: its layers' packets, RTX, and the feedback the
publisher's encoder needs (receiver reports, NACKs, keyframe requests, REMB).

aiortc's receiver handles one stream per section: one NACK generator for whatever SSRCs
arrive, RTX only for SSRCs the SDP paired (browsers sending simulcast pair none), and its
router discards packets of unknown SSRCs as soon as two sections share a payload type. A
:class:`SimulcastIngest` takes over the section instead (:class:`SimulcastRouting` puts it
in front of aiortc's router for the publisher's transport): the first packets of each
layer carry the section's mid and the layer's rid (RTX packets the repaired rid), which
map their SSRC to the layer for good (browsers stop sending the ids once acknowledged).
Each layer gets its own statistics, NACK generator and sender report; everything received
goes to the :class:`~media.published_track.PublishedTrack` as ``(layer, packet)``.
:class:`PublisherRouting` also sends every publisher transport-wide congestion feedback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

from media import aiortc_hooks, twcc

if TYPE_CHECKING:
    from aiortc import RTCRtpCodecParameters
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    from media.layer import Layer
    from media.published_track import PublishedTrack

log = logging.getLogger("switchboard.sfu")

#: Unix time of the NTP epoch offset (RFC 3550 timestamps count from 1900).
NTP_UNIX_OFFSET = 2_208_988_800
#: How often a publish cap is repeated as REMB (seconds).
CAP_INTERVAL = 1.0


class _Stream:
    """One SSRC of the section: a layer's media, or its retransmissions."""

    __slots__ = ("layer", "lsr", "lsr_at", "nacks", "rtx", "stats")

    def __init__(self, layer: Layer, rtx: bool, clock_rate: int) -> None:
        self.layer = layer
        self.rtx = rtx
        self.stats = StreamStatistics(clock_rate)
        self.nacks = NackGenerator() if not rtx else None
        self.lsr = 0
        self.lsr_at = 0.0


class SimulcastIngest:
    def __init__(
        self,
        transport: RTCDtlsTransport,
        track: PublishedTrack,
        codecs: list[RTCRtpCodecParameters],
        cap: Callable[[], int] = lambda: 0,
    ) -> None:
        self.transport = transport
        self.track = track
        #: the publish cap in force (bits/s, 0: none): our own REMB never asks for more
        self.cap = cap
        self.rtcp_ssrc = random.randrange(1, 1 << 32)
        self.streams: dict[int, _Stream] = {}
        #: RTX payload type -> the payload type it repairs
        self._apt = {
            c.payloadType: int(c.parameters["apt"])
            for c in codecs
            if c.mimeType.lower().endswith("/rtx") and "apt" in c.parameters
        }
        self._payload_types = {c.payloadType for c in codecs}
        self._estimator = RemoteBitrateEstimator()
        self._rtcp_task: asyncio.Task[None] | None = None

    # -- learning the SSRCs ----------------------------------------------------------------

    def learn(self, packet: RtpPacket) -> bool:
        """Map a new SSRC to its layer from the ids in its header; ``False`` if it names
        none of this section's layers."""
        ext = packet.extensions
        rtx = ext.repaired_rtp_stream_id is not None or packet.payload_type in self._apt
        rid = ext.repaired_rtp_stream_id or ext.rtp_stream_id
        layer = self.track.layer_for_rid(rid) if rid else None
        if layer is None:
            return False
        self.streams[packet.ssrc] = _Stream(layer, rtx, self.track.clock_rate)
        if not rtx:
            layer.ssrc = packet.ssrc
        aiortc_hooks.route_rtcp_of(self.transport, packet.ssrc, self)
        if self._rtcp_task is None:
            self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
        log.info(
            "simulcast layer",
            extra={"track": self.track.info.track_id, "rid": rid, "ssrc": packet.ssrc, "rtx": rtx},
        )
        return True

    # -- what aiortc's transport hands over --------------------------------------------------

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        stream = self.streams.get(packet.ssrc)
        if stream is None or packet.payload_type not in self._payload_types:
            return
        if packet.extensions.abs_send_time is not None:
            remb = self._estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None:
                bitrate, ssrcs = remb
                cap = self.cap()
                await self._send(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP,
                        ssrc=self.rtcp_ssrc,
                        media_ssrc=0,
                        fci=pack_remb_fci(min(bitrate, cap) if cap else bitrate, ssrcs),
                    )
                )
        stream.stats.add(packet)
        layer = stream.layer
        if stream.rtx:
            apt = self._apt.get(packet.payload_type)
            if len(packet.payload) < 2 or layer.ssrc is None or apt is None:
                return  # padding (bandwidth probing), or a repair of nothing known yet
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=layer.ssrc)
            media = self.streams.get(layer.ssrc)
            if media is not None and media.nacks is not None:
                media.nacks.add(packet)
        elif stream.nacks is not None and stream.nacks.add(packet):
            await self.send_nack(packet.ssrc, sorted(stream.nacks.missing))
        self.track.on_layer_packet(layer, packet)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            stream = self.streams.get(packet.ssrc)
            if stream is None:
                return
            info = packet.sender_info
            stream.lsr = (info.ntp_timestamp >> 16) & 0xFFFFFFFF
            stream.lsr_at = time.time()
            if not stream.rtx:
                seconds = (info.ntp_timestamp >> 32) + (info.ntp_timestamp & 0xFFFFFFFF) / (1 << 32)
                stream.layer.sender_report(seconds - NTP_UNIX_OFFSET, info.rtp_timestamp)

    # -- feedback to the publisher --------------------------------------------------------------

    async def send_pli(self, ssrc: int) -> None:
        await self._send(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=ssrc))

    async def send_nack(self, ssrc: int, lost: list[int]) -> None:
        packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self.rtcp_ssrc, media_ssrc=ssrc)
        packet.lost = lost
        await self._send(packet)

    async def _send(self, packet: AnyRtcpPacket) -> None:
        await aiortc_hooks.send_rtcp(self.transport, packet)

    async def _run_rtcp(self) -> None:
        """Receiver reports for every layer about once a second (RFC 3550 spacing)."""
        while True:
            await asyncio.sleep(0.5 + random.random())
            reports = []
            now = time.time()
            for ssrc, stream in self.streams.items():
                delay = now - stream.lsr_at
                reports.append(
                    RtcpReceiverInfo(
                        ssrc=ssrc,
                        fraction_lost=stream.stats.fraction_lost,
                        packets_lost=stream.stats.packets_lost,
                        highest_sequence=stream.stats.max_seq,
                        jitter=stream.stats.jitter,
                        lsr=stream.lsr,
                        dlsr=int(delay * 65536) if stream.lsr and 0 < delay < 65536 else 0,
                    )
                )
            if reports:
                with contextlib.suppress(Exception):
                    await self._send(RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=reports))

    def close(self) -> None:
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            self._rtcp_task = None


class PublisherRouting:
    """Everything a publisher's connection receives passes here first, before aiortc's
    router: its transport-wide sequence number is recorded for congestion feedback
    (:mod:`media.twcc`), and packets of simulcast layers (known SSRCs, or new SSRCs naming a
    simulcast section's mid) go to that section's ingest; everything else to aiortc.

    A publish cap (:attr:`cap`, bits/s) is sent as REMB every :data:`CAP_INTERVAL`:
    browsers take a REMB as the ceiling of their own estimate even when they estimate
    with transport-cc (as Janus's VideoRoom ``bitrate`` works), aiortc sets its encoder's
    target from it, and a simulcast browser fits its layers under it (the top ones pause).
    """

    def __init__(self, transport: RTCDtlsTransport) -> None:
        self.transport = transport
        self.by_mid: dict[str, SimulcastIngest] = {}
        self.by_ssrc: dict[int, SimulcastIngest] = {}
        self.feedback = twcc.FeedbackRecorder()
        self._feedback_ssrc = random.randrange(1, 1 << 32)
        self._media_ssrc = 0
        self._feedback_task: asyncio.Task[None] | None = None
        #: bits/s the publisher may send, all tracks together (0: no cap)
        self.cap = 0
        self._ssrcs: set[int] = set()  # what a cap's REMB names
        self._cap_task: asyncio.Task[None] | None = None
        aiortc_hooks.route_rtp_first(transport, self.route)

    def set_cap(self, bitrate: int) -> None:
        """Cap the publisher's uplink (0 lifts the cap: REMB stops, its estimator rules)."""
        self.cap = bitrate
        if bitrate and self._cap_task is None:
            self._cap_task = asyncio.ensure_future(self._send_cap())
        elif not bitrate and self._cap_task is not None:
            self._cap_task.cancel()
            self._cap_task = None

    def add(self, mid: str, ingest: SimulcastIngest) -> None:
        self.by_mid[mid] = ingest

    def remove(self, mid: str) -> None:
        ingest = self.by_mid.pop(mid, None)
        if ingest is not None:
            ingest.close()
            for ssrc in [s for s, i in self.by_ssrc.items() if i is ingest]:
                del self.by_ssrc[ssrc]

    def route(self, packet: RtpPacket) -> Any:
        if self.cap:
            self._ssrcs.add(packet.ssrc)
        seq = packet.extensions.transport_sequence_number
        if seq is not None:
            self.feedback.add(seq, time.monotonic_ns() // 1000)
            self._media_ssrc = packet.ssrc
            if self._feedback_task is None:
                self._feedback_task = asyncio.ensure_future(self._send_feedback())
        ingest = self.by_ssrc.get(packet.ssrc)
        if ingest is not None:
            return ingest
        mid = packet.extensions.mid
        ingest = self.by_mid.get(mid) if mid is not None else None
        if ingest is not None and ingest.learn(packet):
            self.by_ssrc[packet.ssrc] = ingest
            return ingest
        return None

    async def _send_feedback(self) -> None:
        while True:
            await asyncio.sleep(twcc.INTERVAL)
            for data in self.feedback.take(self._feedback_ssrc, self._media_ssrc):
                if not await aiortc_hooks.send_rtcp_bytes(self.transport, data):
                    return  # the transport is gone

    async def _send_cap(self) -> None:
        while self.cap:
            if self._ssrcs:
                packet = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=self._feedback_ssrc,
                    media_ssrc=0,
                    fci=pack_remb_fci(self.cap, sorted(self._ssrcs)[:255]),
                )
                if not await aiortc_hooks.send_rtcp_bytes(self.transport, bytes(packet)):
                    return  # the transport is gone
            await asyncio.sleep(CAP_INTERVAL)

    def close(self) -> None:
        self.set_cap(0)
        if self._feedback_task is not None:
            self._feedback_task.cancel()
            self._feedback_task = None
        for mid in list(self.by_mid):
            self.remove(mid)
