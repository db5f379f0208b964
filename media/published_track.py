"""A published track: the receiving half of the SFU's per-packet path.

Per publisher packet, work done once: statistics, the NACK cache, the audio level, the
keyframe test (only while some subscriber waits for one); then each subscriber slot
(:mod:`media.send_slot`) that may take the packet rewrites and sends it. The track also
decides when to ask the publisher for a keyframe (throttled). Nothing is decoded or
re-encoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiortc import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from media import aiortc_hooks
from media.rtp import SEQ_MOD, PacketCache, keyframe_detector, seq_newer

if TYPE_CHECKING:
    from aiortc import RTCRtpCodecParameters

log = logging.getLogger("switchboard.sfu")


class Subscriber(Protocol):
    """A subscriber's slot as the track drives it (:class:`media.send_slot.SendSlot`)."""

    started: bool
    packets_out: int
    bytes_out: int

    def start(self, packet: RtpPacket) -> None:
        """Begin forwarding at ``packet`` (a keyframe, for video)."""

    def write(self, packet: RtpPacket) -> None:
        """Rewrite and send one packet, without waiting."""

    def suspend(self) -> None:
        """Stop forwarding until the next :meth:`start`."""


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
        self.slots: list[Subscriber] = []
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

    def on_packet(self, packet: RtpPacket) -> None:
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
            return
        keyframe: bool | None = None
        for slot in self.slots:
            if not slot.started:
                if self._is_keyframe is not None:
                    if keyframe is None:
                        keyframe = self._is_keyframe(payload)
                    if not keyframe:
                        continue
                slot.start(packet)
            # Never waits: a subscriber whose transport cannot take the packet now (a TURN
            # relay) queues it, bounded, so it cannot delay the others (see SendSlot.write).
            slot.write(packet)

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

    def attach(self, slot: Subscriber) -> None:
        self.slots.append(slot)
        self.request_keyframe()  # a no-op for codecs without keyframes (audio)

    def detach(self, slot: Subscriber) -> None:
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


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("keyframe request failed", exc_info=task.exception())
