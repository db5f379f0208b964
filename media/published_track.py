"""A published track and its layers: the receiving half of the SFU's per-packet path.

A track has one layer per encoding the publisher sends: three for a simulcast camera
(rids such as ``q``, ``h``, ``f``, lowest first), one for a plain track. Per received
packet, work done once: the layer's statistics, its NACK cache, the audio level, and what
the subscribers may need of the payload (the VP8 descriptor, whether it starts a keyframe,
the picture size a keyframe carries), computed at most once and only if asked. Then each
subscriber slot (:mod:`media.send_slot`) takes the packet or not, as its forwarder
(:mod:`media.forwarder`) decides. Nothing is decoded or re-encoded.

Keyframe requests go to one layer's SSRC, at most once per ``keyframe_min_interval`` per
layer however many subscribers ask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiortc.rtp import RtpPacket

from media import vp8
from media.layer import Layer
from media.rtp import (
    SEQ_MOD,
    keyframe_detector,
    one_byte_extension,
)

if TYPE_CHECKING:
    from aiortc import RTCRtpCodecParameters

log = logging.getLogger("switchboard.sfu")

#: Keyframe requests for one layer: a PLI to its SSRC.
RequestPli = Callable[[int], Awaitable[None]]
#: RFC 6464 level of digital silence (-127 dBov), and how many silent packets in a row
#: are still forwarded (the decoder's comfort noise starts from them) before the rest of
#: the silence is left out.
SILENCE = 127
SILENT_KEPT = 3
#: How stale (seconds) the slots a simulcast layer's packets are offered to may get
#: before they are worked out again (:meth:`PublishedTrack._find_audiences`).
AUDIENCE_TTL = 0.05


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What subscribers are told about a track."""

    track_id: str
    participant_id: str
    user_id: str
    kind: str
    source: str
    codec: str
    #: the simulcast layers' rids, lowest quality first ([] for a plain track)
    rids: tuple[str, ...] = ()

    def to_wire(self, muted: bool) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "trackId": self.track_id,
            "participantId": self.participant_id,
            "userId": self.user_id,
            "kind": self.kind,
            "source": self.source,
            "codec": self.codec,
            "muted": muted,
        }
        if self.rids:
            wire["simulcast"] = list(self.rids)
        return wire


class Arrival:
    """One received packet as the subscribers see it; what they ask of its payload is
    worked out once, the first time one asks."""

    __slots__ = (
        "_descriptor",
        "_extension",
        "_facts",
        "_keyframe",
        "layer",
        "now",
        "packet",
        "seq",
        "track",
    )

    def __init__(
        self, track: PublishedTrack, layer: Layer, packet: RtpPacket, now: float, seq: int
    ) -> None:
        self.track = track
        self.layer = layer
        self.packet = packet
        self.now = now
        #: the sequence number subscribers continue from: the packet's own, less the
        #: packets the track left out before it (silence, an unheard microphone)
        self.seq = seq
        self._descriptor: vp8.Descriptor | bool | None = False
        self._keyframe: bool | None = None
        self._extension: tuple[int, bytes] | None = None
        self._facts: tuple[Any, ...] | None = None

    def level_extension(self, ext_id: int) -> bytes:
        """The packet's audio level as a header extension block for ``ext_id`` (made once
        for all subscribers using that id; empty when the packet carries no level)."""
        cached = self._extension
        if cached is not None and cached[0] == ext_id:
            return cached[1]
        level = self.packet.extensions.audio_level
        block = b""
        if level is not None:
            block = one_byte_extension([(ext_id, bytes([(0x80 if level[0] else 0) | level[1]]))])
        self._extension = (ext_id, block)
        return block

    @property
    def facts(self) -> tuple[Any, ...]:
        """What a slot's compiled steady step reads (``media/_lane.c``, in this order):
        layer, seq, the packet's own sequence number, timestamp, marker, payload, now, the
        audio level byte (-1: none), then for a VP8 descriptor: present, PictureID (-1:
        none), its bits and offset, TL0PICIDX (-1: none) and its offset. Made once, for
        every slot."""
        facts = self._facts
        if facts is None:
            p = self.packet
            level = p.extensions.audio_level
            byte = -1 if level is None else (0x80 if level[0] else 0) | level[1]
            head = (self.layer, self.seq, p.sequence_number, p.timestamp, p.marker, p.payload)
            d = self.descriptor if self.track.vp8 else None
            if d is None:
                facts = (*head, self.now, byte, 0, -1, 0, 0, -1, 0)
            else:
                pid = -1 if d.picture_id is None else d.picture_id
                tl0 = -1 if d.tl0 is None else d.tl0
                facts = (*head, self.now, byte, 1, pid, d.pid_bits, d.pid_offset, tl0, d.tl0_offset)
            self._facts = facts
        return facts

    @property
    def descriptor(self) -> vp8.Descriptor | None:
        """The VP8 payload descriptor (``None`` for other codecs or a bad payload)."""
        if self._descriptor is False:
            self._descriptor = vp8.parse(self.packet.payload) if self.track.vp8 else None
        return self._descriptor  # type: ignore[return-value]

    @property
    def keyframe(self) -> bool:
        if self._keyframe is None:
            track, payload = self.track, self.packet.payload
            if track.vp8:
                d = self.descriptor
                self._keyframe = d is not None and vp8.is_keyframe(payload, d)
            else:
                detect = track.keyframe_detector
                self._keyframe = detect is None or detect(payload)
        return self._keyframe


class LayerChoice(Protocol):
    """Which layer a subscriber wants and gets (:class:`media.forwarder.Forwarder`)."""

    target: Layer | None
    current: Layer | None


class Subscriber(Protocol):
    """A subscriber's slot as the track drives it (:class:`media.send_slot.SendSlot`)."""

    packets_out: int
    bytes_out: int
    forwarder: LayerChoice | None

    def offer(self, arrival: Arrival) -> None:
        """Forward the packet if this subscriber takes its layer (never waits)."""

    def suspend(self) -> None:
        """Stop forwarding until the next keyframe."""


class PublishedTrack:
    """One incoming track; fans its RTP packets out to the subscriber slots bound to it."""

    def __init__(
        self,
        info: TrackInfo,
        codec: RTCRtpCodecParameters,
        keyframe_min_interval: float,
        request_pli: RequestPli,
    ) -> None:
        self.info = info
        self.codec = codec
        self.clock_rate = codec.clockRate
        self.vp8 = codec.mimeType.lower() == "video/vp8"
        self.keyframe_detector = keyframe_detector(codec.mimeType)
        self.layers = [Layer(rid, i) for i, rid in enumerate(info.rids)] or [Layer(None, 0)]
        self.muted = False
        # Set by the server (room API mute, publish permission revoked): packets are not
        # forwarded, and only the server may lift it.
        self.blocked = False
        self.slots: list[Subscriber] = []
        self._request_pli = request_pli
        #: called when the set of layers subscribers want may have changed (dynacast)
        self.on_demand: Callable[[PublishedTrack], None] | None = None
        self._keyframe_min_interval = keyframe_min_interval
        # statistics
        self.keyframes_requested = 0
        self.nacks_answered = 0
        self.nacks_missed = 0
        # audio levels (RFC 6464: 0 loudest .. 127 silence) over the current speaker window
        self.level_sum = 0
        self.level_count = 0
        # audio left out (silence, or not among the loudest in a large room)
        self.seq_shift = 0
        self.audio_left_out = 0
        self._silent_run = 0
        #: set by the room when only its loudest microphones are heard: this one is sent
        #: until ``audible_until`` (monotonic seconds)
        self.gated = False
        self.audible_until = 0.0
        self._audience_at = -1e9  # when the layers' audiences were last worked out

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def simulcast(self) -> bool:
        return len(self.layers) > 1

    def layer_for_rid(self, rid: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.rid == rid), None)

    # -- the hot path ------------------------------------------------------------------------

    def on_packet(self, packet: RtpPacket) -> None:
        """A packet of a plain track (aiortc's receiver, tapped)."""
        self.on_layer_packet(self.layers[0], packet)

    def on_layer_packet(self, layer: Layer, packet: RtpPacket) -> None:
        now = time.monotonic()
        layer.account(packet, now)
        level = packet.extensions.audio_level
        if level is not None:
            self.level_sum += level[1]
            self.level_count += 1
            if self._leave_out(level[1], now):
                # Not sent to anyone: the subscribers' numbering closes over it.
                self.seq_shift = (self.seq_shift + 1) % SEQ_MOD
                return
        arrival = Arrival(
            self, layer, packet, now, (packet.sequence_number - self.seq_shift) % SEQ_MOD
        )
        if self.vp8 and (layer.width is None or self.simulcast) and arrival.keyframe:
            self._keyframe(layer, arrival)
        if self.blocked:
            return
        slots = self.slots
        if len(self.layers) > 1:
            if now - self._audience_at > AUDIENCE_TTL:
                self._find_audiences(now)
            slots = layer.audience
        for slot in slots:
            # Never waits: a subscriber whose transport cannot take the packet now (a
            # TURN relay) queues it, bounded, so it cannot delay the others.
            slot.offer(arrival)

    def _find_audiences(self, now: float) -> None:
        """Which slots each simulcast layer's packets go to.

        A slot steady on a flowing layer it wants ignores the other layers' packets
        (:meth:`media.send_slot.SendSlot.offer` returns at once). In a room of 50 with
        three layers per camera that was four offers in five, so a layer's packets go only
        to its own steady slots and to the slots still looking for a layer. This is worked
        out again at most :data:`AUDIENCE_TTL` later (a layer may stop flowing), and at
        once when a slot's wishes, layer or binding change (:meth:`reconsider`)."""
        for layer in self.layers:
            layer.audience = []
        for slot in self.slots:
            forwarder = slot.forwarder
            current = forwarder.current if forwarder is not None else None
            if (
                forwarder is not None
                and current is not None
                and current is forwarder.target
                and current.flowing(now)
            ):
                current.audience.append(slot)
            else:
                for layer in self.layers:
                    layer.audience.append(slot)
        self._audience_at = now

    def reconsider(self) -> None:
        """A slot's wishes, layer or binding changed: work the audiences out again before
        the next packet."""
        self._audience_at = -1e9

    def _leave_out(self, level: int, now: float) -> bool:
        """Whether an audio packet with this RFC 6464 level goes to nobody: silence after
        :data:`SILENT_KEPT` silent packets in a row (what Opus DTX leaves of a silence:
        a packet every 400 ms), or any packet of a microphone the room does not let
        through now (only its loudest are heard in a large room)."""
        if level >= SILENCE:
            self._silent_run += 1
        else:
            self._silent_run = 0
        if self.gated and now > self.audible_until:
            self.audio_left_out += 1
            return True
        if self._silent_run > SILENT_KEPT:
            self.audio_left_out += 1
            return True
        return False

    def _keyframe(self, layer: Layer, arrival: Arrival) -> None:
        layer.keyframes += 1
        d = arrival.descriptor
        size = vp8.keyframe_size(arrival.packet.payload, d) if d is not None else None
        if size is not None:
            layer.width, layer.height = size

    def block(self, blocked: bool) -> None:
        """Stop or resume forwarding. Subscribers resume at a keyframe, their sequence
        numbers continuing where they stopped."""
        if blocked == self.blocked:
            return
        self.blocked = blocked
        if blocked:
            for slot in self.slots:
                slot.suspend()
        else:
            for layer in self.demand():
                self.request_keyframe(layer)

    # -- keyframes ------------------------------------------------------------------------------

    def request_keyframe(self, layer: Layer | None = None) -> None:
        """Ask the publisher for a keyframe on ``layer`` (default: the plain track's one),
        at most once per ``keyframe_min_interval`` per layer.

        A request inside the window is not lost: one PLI goes out when the window ends,
        however many subscribers asked meanwhile (50 joiners cause one or two PLIs).
        """
        if self.keyframe_detector is None:
            return
        layer = layer or self.layers[0]
        self.keyframes_requested += 1
        if layer._pli_timer is not None:
            return
        wait = layer._last_pli + self._keyframe_min_interval - time.monotonic()
        if wait <= 0:
            self._send_pli(layer)
        else:
            layer._pli_timer = asyncio.get_running_loop().call_later(wait, self._send_pli, layer)

    def _send_pli(self, layer: Layer) -> None:
        layer._pli_timer = None
        if layer.ssrc is None:
            return  # nothing received yet: the encoder's first frame is a keyframe anyway
        layer._last_pli = time.monotonic()
        layer.plis_sent += 1
        task = asyncio.ensure_future(self._request_pli(layer.ssrc))
        task.add_done_callback(_ignore_result)

    # -- subscribers ------------------------------------------------------------------------------

    def attach(self, slot: Subscriber) -> None:
        self.slots.append(slot)
        self.demand_changed()

    def detach(self, slot: Subscriber) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
        self.reconsider()

    def demand(self) -> list[Layer]:
        """The layers some subscriber wants or is being sent, lowest first."""
        wanted: set[int] = set()
        for slot in self.slots:
            forwarder = slot.forwarder
            if forwarder is not None:
                for layer in (forwarder.target, forwarder.current):
                    if layer is not None:
                        wanted.add(layer.index)
        return [layer for layer in self.layers if layer.index in wanted]

    def demand_changed(self) -> None:
        self.reconsider()
        if self.on_demand is not None:
            self.on_demand(self)

    def close(self) -> None:
        """Stop forwarding now; each subscriber frees its slot at its next renegotiation."""
        for layer in self.layers:
            if layer._pli_timer is not None:
                layer._pli_timer.cancel()
                layer._pli_timer = None
        self.slots.clear()

    # -- statistics --------------------------------------------------------------------------------

    @property
    def packets_in(self) -> int:
        return sum(layer.packets_in for layer in self.layers)

    @property
    def bytes_in(self) -> int:
        return sum(layer.bytes_in for layer in self.layers)

    @property
    def bitrate_in(self) -> float:
        return sum(layer.bitrate for layer in self.layers)

    @property
    def plis_sent(self) -> int:
        return sum(layer.plis_sent for layer in self.layers)

    def packets_lost(self) -> int:
        return sum(layer.packets_lost() for layer in self.layers)

    def tick(self) -> None:
        """Roll the bitrate windows (called about once a second)."""
        now = time.monotonic()
        for layer in self.layers:
            layer.tick(now)

    def take_level(self) -> float | None:
        """Mean RFC 6464 level since the last call (lower is louder), None if no samples."""
        if not self.level_count:
            return None
        mean = self.level_sum / self.level_count
        self.level_sum = self.level_count = 0
        return mean

    def stats(self) -> dict[str, Any]:
        stats = {
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
        if self.kind == "audio":
            stats["audioLeftOut"] = self.audio_left_out
            stats["heard"] = not self.gated or time.monotonic() <= self.audible_until
        if self.simulcast:
            now = time.monotonic()
            sent: dict[int, int] = {}  # subscribers by the layer they are sent
            for slot in self.slots:
                current = slot.forwarder.current if slot.forwarder is not None else None
                if current is not None:
                    sent[current.index] = sent.get(current.index, 0) + 1
            stats["layers"] = [
                {**layer.stats(now), "subscribers": sent.get(layer.index, 0)}
                for layer in self.layers
            ]
        return stats


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("keyframe request failed", exc_info=task.exception())
