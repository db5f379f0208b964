"""A published track and the subscriber slots it forwards to: the SFU's per-packet path.

Per publisher packet, work done once: statistics, the NACK cache, the audio level, the
keyframe test (only while some subscriber waits for one). Per subscriber, only what must
differ: a 12-byte header (SSRC, payload type, sequence number, timestamp), SRTP
protection and the socket write. Nothing is decoded or re-encoded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.clock import current_ntp_time
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
)

from media import aiortc_hooks
from media.rtp import SEQ_MOD, TS_MOD, PacketCache, keyframe_detector, rewrite, seq_newer

if TYPE_CHECKING:
    from aiortc import RTCRtpCodecParameters

log = logging.getLogger("switchboard.sfu")


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What subscribers are told about a track."""

    track_id: str
    participant_id: str
    user_id: str
    kind: str
    source: str
    codec: str

    def to_wire(self, muted: bool) -> dict[str, Any]:
        return {
            "trackId": self.track_id,
            "participantId": self.participant_id,
            "userId": self.user_id,
            "kind": self.kind,
            "source": self.source,
            "codec": self.codec,
            "muted": muted,
        }


class PublishedTrack:
    """One incoming track; fans its RTP packets out to the subscriber slots bound to it."""

    def __init__(
        self,
        info: TrackInfo,
        receiver: RTCRtpReceiver,
        codec: RTCRtpCodecParameters,
        keyframe_min_interval: float,
    ) -> None:
        self.info = info
        self.receiver = receiver
        self.codec = codec
        self.clock_rate = codec.clockRate
        self.muted = False
        # Set by the server (room API mute, publish permission revoked): packets are not
        # forwarded, and only the server may lift it.
        self.blocked = False
        self.slots: list[SendSlot] = []
        self.cache = PacketCache()
        self._is_keyframe = keyframe_detector(codec.mimeType)
        self._keyframe_min_interval = keyframe_min_interval
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        self.media_ssrc: int | None = None
        # statistics
        self.packets_in = 0
        self.bytes_in = 0
        self.first_seq: int | None = None
        self.highest_seq = 0
        self.seq_cycles = 0
        self.highest_ts = 0
        self.keyframes_requested = 0
        self.plis_sent = 0
        self.nacks_answered = 0
        self.nacks_missed = 0
        self._bitrate_mark = 0  # bytes_in at the last tick
        self._bitrate_since = time.monotonic()
        self.bitrate_in = 0.0
        # audio levels (RFC 6464: 0 loudest .. 127 silence) over the current speaker window
        self.level_sum = 0
        self.level_count = 0

    @property
    def kind(self) -> str:
        return self.info.kind

    # -- the hot path ------------------------------------------------------------------------

    def on_packet(self, packet: RtpPacket) -> Awaitable[None] | None:
        payload = packet.payload
        self.packets_in += 1
        self.bytes_in += len(payload)
        seq = packet.sequence_number
        if self.first_seq is None:
            self.first_seq = self.highest_seq = seq
            self.media_ssrc = packet.ssrc
            self.highest_ts = packet.timestamp
        elif seq_newer(seq, self.highest_seq):
            if seq < self.highest_seq:
                self.seq_cycles += 1
            self.highest_seq = seq
            self.highest_ts = packet.timestamp
        self.cache.put(packet)
        level = packet.extensions.audio_level
        if level is not None:
            self.level_sum += level[1]
            self.level_count += 1
        if self.blocked:
            return None
        keyframe: bool | None = None
        waits: list[Awaitable[None]] | None = None
        for slot in self.slots:
            if not slot.started:
                if self._is_keyframe is not None:
                    if keyframe is None:
                        keyframe = self._is_keyframe(payload)
                    if not keyframe:
                        continue
                slot.start(packet)
            pending = slot.write(packet)
            if pending is not None:
                (waits := waits or []).append(pending)
        if waits:
            return asyncio.gather(*waits, return_exceptions=True)
        return None

    def block(self, blocked: bool) -> None:
        """Stop or resume forwarding. Subscribers resume at a keyframe, their sequence
        numbers continuing where they stopped."""
        if blocked == self.blocked:
            return
        self.blocked = blocked
        if blocked:
            for slot in self.slots:
                slot.suspend()
        elif self.slots:
            self.request_keyframe()

    # -- keyframes ------------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per ``keyframe_min_interval``.

        A request inside the window is not lost: one PLI goes out when the window ends,
        however many subscribers asked meanwhile (50 joiners cause one or two PLIs).
        """
        if self._is_keyframe is None:
            return
        self.keyframes_requested += 1
        if self._pli_timer is not None:
            return
        wait = self._last_pli + self._keyframe_min_interval - time.monotonic()
        if wait <= 0:
            self._send_pli()
        else:
            self._pli_timer = asyncio.get_running_loop().call_later(wait, self._send_pli)

    def _send_pli(self) -> None:
        self._pli_timer = None
        if self.media_ssrc is None:
            return  # nothing received yet: the encoder's first frame is a keyframe anyway
        self._last_pli = time.monotonic()
        self.plis_sent += 1
        task = asyncio.ensure_future(aiortc_hooks.request_keyframe(self.receiver, self.media_ssrc))
        task.add_done_callback(_ignore_result)

    # -- subscribers ------------------------------------------------------------------------------

    def attach(self, slot: SendSlot) -> None:
        self.slots.append(slot)
        self.request_keyframe()  # a no-op for codecs without keyframes (audio)

    def detach(self, slot: SendSlot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)

    def close(self) -> None:
        """Stop forwarding now; each subscriber frees its slot at its next renegotiation."""
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        self.slots.clear()

    # -- statistics --------------------------------------------------------------------------------

    def packets_lost(self) -> int:
        if self.first_seq is None:
            return 0
        expected = self.seq_cycles * SEQ_MOD + self.highest_seq - self.first_seq + 1
        return max(0, expected - self.packets_in)

    def tick(self) -> None:
        """Roll the bitrate window (called about once a second)."""
        now = time.monotonic()
        elapsed = now - self._bitrate_since
        if elapsed > 0:
            self.bitrate_in = (self.bytes_in - self._bitrate_mark) * 8 / elapsed
        self._bitrate_mark = self.bytes_in
        self._bitrate_since = now

    def take_level(self) -> float | None:
        """Mean RFC 6464 level since the last call (lower is louder), None if no samples."""
        if not self.level_count:
            return None
        mean = self.level_sum / self.level_count
        self.level_sum = self.level_count = 0
        return mean

    def stats(self) -> dict[str, Any]:
        return {
            **self.info.to_wire(self.muted),
            "packetsIn": self.packets_in,
            "bytesIn": self.bytes_in,
            "packetsLost": self.packets_lost(),
            "bitrateIn": round(self.bitrate_in),
            "packetsOut": sum(s.packets_out for s in self.slots),
            "bytesOut": sum(s.bytes_out for s in self.slots),
            "subscribers": len(self.slots),
            "keyframesRequested": self.keyframes_requested,
            "plisSent": self.plis_sent,
            "nacksAnswered": self.nacks_answered,
            "nacksMissed": self.nacks_missed,
        }


class SendSlot:
    """One sending transceiver of a subscriber's peer connection.

    A slot outlives the tracks it carries: when a track goes away the transceiver is set
    inactive and later reused for another track of the same kind, continuing its own
    sequence numbers and timestamps so the receiver sees one unbroken stream.
    """

    def __init__(self, transceiver: RTCRtpTransceiver) -> None:
        self.transceiver = transceiver
        self.sender: RTCRtpSender = transceiver.sender
        self.kind: str = transceiver.kind
        self.track: PublishedTrack | None = None
        self.payload_type: int | None = None
        self.started = False
        self.seq_offset = 0
        self.ts_offset = 0
        self.next_seq = random.randrange(1 << 15)
        self.next_ts = random.randrange(TS_MOD)
        self._idle_since = time.monotonic()
        self.packets_out = 0
        self.bytes_out = 0
        self.fraction_lost = 0
        self._rr_handler = aiortc_hooks.intercept_rtcp(self.sender, self._on_rtcp)

    @property
    def ssrc(self) -> int:
        return self.sender._ssrc

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    def bind(self, track: PublishedTrack) -> None:
        self.unbind()
        self.track = track
        self.packets_out = self.bytes_out = 0
        self.sender.replaceTrack(aiortc_hooks.SilentTrack(self.kind, track.info.track_id))
        self.sender._stream_id = track.info.participant_id
        self.transceiver.direction = "sendonly"

    def activate(self) -> None:
        """Start forwarding once negotiation settled the payload type."""
        track = self.track
        if track is None or self.payload_type is not None:
            return
        codecs = [c for c in self.transceiver._codecs if c.mimeType.lower() != f"{self.kind}/rtx"]
        if not codecs:
            return
        self.payload_type = codecs[0].payloadType
        track.attach(self)

    def suspend(self) -> None:
        """Stop sending; the next :meth:`start` continues after the last packet sent."""
        track = self.track
        if track is None:
            return
        if self.started:
            # Continue after the last packet sent; start() adds the time spent idle.
            self.next_seq = (track.highest_seq + self.seq_offset + 1) % SEQ_MOD
            self.next_ts = (track.highest_ts + self.ts_offset) % TS_MOD
            self.started = False
        self._idle_since = time.monotonic()

    def unbind(self) -> None:
        track = self.track
        if track is None:
            return
        self.suspend()
        track.detach(self)
        self.track = None
        self.payload_type = None
        self.transceiver.direction = "inactive"

    def start(self, packet: RtpPacket) -> None:
        track = self.track
        assert track is not None
        idle = time.monotonic() - self._idle_since
        next_ts = (self.next_ts + int(idle * track.clock_rate)) % TS_MOD
        self.seq_offset = (self.next_seq - packet.sequence_number) % SEQ_MOD
        self.ts_offset = (next_ts - packet.timestamp) % TS_MOD
        self.started = True

    def write(self, packet: RtpPacket) -> Awaitable[None] | None:
        data = rewrite(
            packet,
            self.payload_type,  # type: ignore[arg-type]
            (packet.sequence_number + self.seq_offset) % SEQ_MOD,
            (packet.timestamp + self.ts_offset) % TS_MOD,
            self.sender._ssrc,
        )
        self.packets_out += 1
        self.bytes_out += len(packet.payload)
        return aiortc_hooks.send_rtp(self.sender.transport, data)

    def sync_sender_report(self) -> None:
        """Give aiortc's SR loop this slot's counters, for the subscriber's RTT and A/V sync."""
        track = self.track
        if track is None or not self.started:
            return
        aiortc_hooks.set_sender_report(
            self.sender,
            current_ntp_time(),
            (track.highest_ts + self.ts_offset) % TS_MOD,
            self.packets_out & 0xFFFFFFFF,
            self.bytes_out & 0xFFFFFFFF,
        )

    async def _on_rtcp(self, packet: AnyRtcpPacket) -> None:
        track = self.track
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            if track is not None and self.started:
                await self._retransmit(track, packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            if track is not None:
                track.request_keyframe()
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.fraction_lost = report.fraction_lost
            await self._rr_handler(packet)

    async def _retransmit(self, track: PublishedTrack, lost: list[int]) -> None:
        """Answer a subscriber's NACK from the track's cache; never bother the publisher."""
        for seq in lost:
            original = track.cache.get((seq - self.seq_offset) % SEQ_MOD)
            if original is None:
                track.nacks_missed += 1
                continue
            track.nacks_answered += 1
            pending = self.write(original)
            if pending is not None:
                await pending

    def stats(self) -> dict[str, Any]:
        return {
            "mid": self.mid,
            "trackId": self.track.info.track_id if self.track else None,
            "packetsOut": self.packets_out,
            "bytesOut": self.bytes_out,
            "fractionLost": self.fraction_lost,
        }


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("keyframe request failed", exc_info=task.exception())
