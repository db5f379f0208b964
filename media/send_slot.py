"""One subscriber's sending side of a forwarded track: rewriting and sending.

A :class:`SendSlot` keeps what must differ per subscriber (its SSRC, payload type and the
sequence number and timestamp offsets that keep its stream continuous across the tracks
it carries), answers the subscriber's NACKs from the track's cache and passes its
keyframe requests on. Writes never wait: on a host socket they are synchronous; on a TURN
relay (where aioice's send is a coroutine) they go through a bounded per-subscriber
:class:`RelayedWrites` queue, so one subscriber behind a slow relay delays nobody else and
loses only its own packets (counted) when it cannot keep up.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpSender, RTCRtpTransceiver
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
from media.rtp import SEQ_MOD, TS_MOD, rewrite

if TYPE_CHECKING:
    from media.published_track import PublishedTrack

log = logging.getLogger("switchboard.sfu")

#: Packets waiting for one subscriber's relayed transport before new ones are dropped:
#: about half a second of 720p video.
RELAY_QUEUE_LIMIT = 150


class RelayedWrites:
    """Sends one subscriber's packets through an asynchronous transport, in order, from
    its own task; at most ``limit`` wait, further ones are dropped and counted."""

    def __init__(self, limit: int = RELAY_QUEUE_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self._queue: deque[Awaitable[None]] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, pending: Awaitable[None]) -> None:
        if len(self._queue) >= self.limit:
            self.dropped += 1
            _discard(pending)
            return
        self._queue.append(pending)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._queue:
            pending = self._queue.popleft()
            try:
                await pending
            except Exception as exc:  # the relay failed: ICE notices; later packets try again
                log.debug("relayed RTP write failed: %s", exc)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        while self._queue:
            _discard(self._queue.popleft())


def _discard(pending: Awaitable[None]) -> None:
    """Drop a write that will never run (a coroutine must be closed, not forgotten)."""
    if isinstance(pending, Coroutine):
        pending.close()


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
        self.ssrc = aiortc_hooks.sender_ssrc(self.sender)
        self._relayed: RelayedWrites | None = None  # made on the first asynchronous write
        self._rr_handler = aiortc_hooks.intercept_rtcp(self.sender, self._on_rtcp)

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    def bind(self, track: PublishedTrack) -> None:
        self.unbind()
        self.track = track
        self.packets_out = self.bytes_out = 0
        self.sender.replaceTrack(aiortc_hooks.SilentTrack(self.kind, track.info.track_id))
        aiortc_hooks.set_stream_id(self.sender, track.info.participant_id)
        self.transceiver.direction = "sendonly"

    def activate(self) -> None:
        """Start forwarding once negotiation settled the payload type."""
        track = self.track
        if track is None or self.payload_type is not None:
            return
        codecs = [
            c
            for c in aiortc_hooks.negotiated_codecs(self.transceiver)
            if c.mimeType.lower() != f"{self.kind}/rtx"
        ]
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

    def write(self, packet: RtpPacket) -> None:
        """Rewrite the header for this subscriber and send, without waiting."""
        data = rewrite(
            packet,
            self.payload_type,  # type: ignore[arg-type]
            (packet.sequence_number + self.seq_offset) % SEQ_MOD,
            (packet.timestamp + self.ts_offset) % TS_MOD,
            self.ssrc,
        )
        self.packets_out += 1
        self.bytes_out += len(packet.payload)
        pending = aiortc_hooks.send_rtp(self.sender.transport, data)
        if pending is not None:
            if self._relayed is None:
                self._relayed = RelayedWrites()
            self._relayed.put(pending)

    @property
    def packets_dropped(self) -> int:
        """Packets dropped because this subscriber's relayed transport fell behind."""
        return self._relayed.dropped if self._relayed is not None else 0

    def close(self) -> None:
        """The subscriber is gone: stop sending (queued relayed writes are dropped)."""
        self.unbind()
        if self._relayed is not None:
            self._relayed.close()

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
                self._retransmit(track, packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            if track is not None:
                track.request_keyframe()
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.fraction_lost = report.fraction_lost
            await self._rr_handler(packet)

    def _retransmit(self, track: PublishedTrack, lost: list[int]) -> None:
        """Answer a subscriber's NACK from the track's cache; never bother the publisher."""
        for seq in lost:
            original = track.cache.get((seq - self.seq_offset) % SEQ_MOD)
            if original is None:
                track.nacks_missed += 1
                continue
            track.nacks_answered += 1
            self.write(original)

    def stats(self) -> dict[str, Any]:
        return {
            "mid": self.mid,
            "trackId": self.track.info.track_id if self.track else None,
            "packetsOut": self.packets_out,
            "bytesOut": self.bytes_out,
            "fractionLost": self.fraction_lost,
            "packetsDropped": self.packets_dropped,
        }
