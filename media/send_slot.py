"""One subscriber's sending side of a forwarded track: switching layers, rewriting, sending.

A :class:`SendSlot` keeps what must differ per subscriber: its SSRC and payload type, its
:class:`~media.forwarder.Forwarder` (which layer it wants), and the numbering that keeps
its stream continuous across the layers and tracks it carries. A layer switch happens only
at a keyframe of the new layer; from there its sequence numbers continue the last one
sent, its timestamps continue by the capture time between the two pictures (lined up by
the publisher's sender reports, else by arrival time), and for VP8 its PictureID and
TL0PICIDX continue too (:mod:`media.vp8`). Pictures of temporal layers above the
subscriber's frame rate are not sent, and the numbers close over the gap.

NACKs are answered from the layer's cache through a small ring (:mod:`media.sent_ring`)
that remembers, for each sequence number sent, where the packet came from; the
retransmission goes on the slot's RTX stream if negotiated (RFC 4588), else on the media
SSRC. Writes never wait (see :mod:`media.relayed_writes`).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.clock import current_ntp_time
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)

from media import aiortc_hooks, repair, twcc, vp8
from media.forwarder import Forwarder, Preference
from media.numbering import Numbering, field, numbering
from media.relayed_writes import RelayedWrites
from media.rtp import SEQ_MOD, TS_MOD, seq_newer
from media.rtp_writer import Writer, rtp_writer
from media.sent_ring import Run, SentRing

if TYPE_CHECKING:
    from media.layer import Layer
    from media.published_track import Arrival, PublishedTrack

#: Longest gap between two layers' pictures the sender reports are trusted to measure.
MAX_ALIGNED_GAP = 5.0
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class SendSlot:
    """One sending transceiver of a subscriber's peer connection.

    A slot outlives the tracks it carries: when a track goes away the transceiver is set
    inactive and later reused for another track of the same kind, continuing its own
    sequence numbers and timestamps so the receiver sees one unbroken stream.
    """

    ssrc = field("ssrc", "the SSRC this slot sends with (its sender's)")
    payload_type = field("payload_type", "the negotiated payload type")
    level_id = field("level_id", "the audio-level extension's id, if negotiated")
    stamp = field("stamp", "the send time or sequence block for a packet of some size")
    last_seq_out = field("last_seq_out", "the last sequence number sent")
    last_ts_out = field("last_ts_out", "the last timestamp sent")
    last_sent_at = field("last_sent_at", "when the last packet left")
    _last_in_ts = field("last_in_ts", "the last packet's timestamp on arrival")
    seq_offset = field("seq_offset", "the run's sequence number offset")
    _run = field("run", "the run being sent")
    packets_out = field("packets_out", "packets sent for the track carried")
    bytes_out = field("bytes_out", "payload bytes sent for the track carried")

    @property
    def writer(self) -> Writer:
        """Protects and sends this slot's packets (the transport's, shared by its slots)."""
        return self.n.writer  # type: ignore[no-any-return]

    @writer.setter
    def writer(self, writer: Writer) -> None:
        self.n.writer = writer
        # the compiled step sends through the compiled writer's sender only
        self.n.sender = getattr(writer, "sender", None)

    def __init__(self, transceiver: RTCRtpTransceiver, compiled_writer: bool = True) -> None:
        self.transceiver = transceiver
        self.compiled_writer = compiled_writer
        #: the numbering, and with the compiled writer the steady step (media.numbering)
        self.n = numbering(compiled_writer)
        self._lane = None if isinstance(self.n, Numbering) else self.n
        self.sender: RTCRtpSender = transceiver.sender
        aiortc_hooks.quiet_sender_rtcp(self.sender)  # the participant reports for all slots
        self._reported = -1  # packets_out at the last sender report
        self.kind: str = transceiver.kind
        self.track: PublishedTrack | None = None
        self.forwarder: Forwarder | None = None
        self.ssrc = aiortc_hooks.sender_ssrc(self.sender)
        # retransmissions, where the subscriber negotiated RTX: their own SSRC and numbers
        self.rtx_payload_type: int | None = None
        self.rtx_ssrc = aiortc_hooks.sender_rtx_ssrc(self.sender)
        self.send_time_id: int | None = None  # abs-send-time's, for the subscriber's REMB
        self.transport_cc_id: int | None = None  # transport-cc's, for its feedback
        #: told each bandwidth estimate (REMB) the subscriber reports
        self.on_remb: Callable[[float], None] | None = None
        self.rtx_seq = random.randrange(1 << 15)
        # numbering (the rest starts at zero or None): the last packet sent
        self.last_seq_out = random.randrange(1 << 15)
        self.last_ts_out = random.randrange(TS_MOD)
        self.last_sent_at = time.monotonic()
        self._last_layer: Layer | None = None
        self._munger: vp8.Vp8Munger | None = None
        self.sent: Any = None  # what was sent, for NACKs (video): the lane's or a SentRing
        if self.kind == "video":
            if self._lane is not None:
                self._lane.remember = True
                self.sent = self._lane
            else:
                self.sent = SentRing()
        # statistics
        self.fraction_lost = 0
        self.layer_switches = 0
        self.pictures_dropped = 0
        self.retransmitted = 0
        self.padding_bytes = 0
        self._packets_before = 0  # sent for tracks this slot carried before
        self._relayed: RelayedWrites | None = None  # made on the first asynchronous write
        self.writer = rtp_writer(self.sender.transport, self.compiled_writer)
        self._rr_handler = aiortc_hooks.intercept_rtcp(self.sender, self._on_rtcp)

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def started(self) -> bool:
        return self.forwarder is not None and self.forwarder.current is not None

    def bind(self, track: PublishedTrack, preference: Preference | None = None) -> None:
        self.unbind()
        self.track = track
        self.forwarder = Forwarder(track, preference)
        self._munger = vp8.Vp8Munger(self.n) if track.vp8 else None
        self.n.vp8 = track.vp8
        self._packets_before += self.packets_out
        self.packets_out = self.bytes_out = 0  # per track carried
        self.sender.replaceTrack(aiortc_hooks.SilentTrack(self.kind, track.info.track_id))
        aiortc_hooks.set_stream_id(self.sender, track.info.participant_id)
        self.transceiver.direction = "sendonly"

    def activate(self) -> None:
        """Start forwarding once negotiation settled the payload type."""
        # after negotiation: aiortc moves every sender onto the bundle's transport then
        self.writer = rtp_writer(self.sender.transport, self.compiled_writer)
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
        # audio levels go on to subscribers that negotiated them, to draw levels with;
        # video carries what the bandwidth estimate is made from (media.downlink)
        ext_id = aiortc_hooks.negotiated_extension_id
        if self.kind == "audio":
            self.level_id = ext_id(self.transceiver, AUDIO_LEVEL)
        else:
            self.send_time_id = ext_id(self.transceiver, ABS_SEND_TIME)
            self.transport_cc_id = ext_id(self.transceiver, twcc.URI)
        self.rtx_payload_type = next(
            (
                c.payloadType
                for c in aiortc_hooks.negotiated_codecs(self.transceiver)
                if c.mimeType.lower() == f"{self.kind}/rtx"
                and str(c.parameters.get("apt")) == str(self.payload_type)
            ),
            None,
        )
        track.attach(self)
        self._want_keyframe()

    def prefer(self, preference: Preference) -> None:
        """The subscriber's wishes for this track changed (size, visibility, quality)."""
        forwarder = self.forwarder
        if forwarder is not None:
            before = forwarder.target
            forwarder.prefer(preference)
            self._retargeted(before)
            self._steady()  # the temporal layers sent may have changed

    def limit(self, index: int | None) -> None:
        """The subscriber's bandwidth allows layers up to ``index`` (of the track's layers
        from the smallest up); -1 pauses the video, ``None`` lifts the limit."""
        forwarder = self.forwarder
        if forwarder is not None and forwarder.limit != index:
            before = forwarder.target
            forwarder.limit = index
            forwarder.choose()
            self._retargeted(before)

    def _retargeted(self, before: Layer | None) -> None:
        forwarder, track = self.forwarder, self.track
        if forwarder is None or track is None:
            return
        if forwarder.target is None:
            forwarder.current = None  # hidden or paused: stop sending; a keyframe restarts it
            self._steady()
        if forwarder.target is not before:
            if self.payload_type is not None:
                self._want_keyframe()
            track.demand_changed()

    def _want_keyframe(self) -> None:
        forwarder, track = self.forwarder, self.track
        if forwarder is not None and track is not None and forwarder.switching:
            track.request_keyframe(forwarder.target)

    def suspend(self) -> None:
        """Stop sending; forwarding resumes at the next keyframe, numbered after the last
        packet sent."""
        if self.forwarder is not None:
            self.forwarder.current = None
            self._steady()
        if self.track is not None:
            self.track.reconsider()  # it listens to every layer again, for a keyframe

    def unbind(self) -> None:
        track = self.track
        if track is None:
            return
        self.suspend()
        track.detach(self)
        self.track = None
        self.forwarder = None
        self.payload_type = self.rtx_payload_type = None
        self.transceiver.direction = "inactive"
        track.demand_changed()

    # -- the hot path ----------------------------------------------------------------------

    def offer(self, arrival: Arrival) -> None:
        """Forward ``arrival`` if it belongs to this subscriber's stream (never waits)."""
        lane = self._lane
        if lane is not None:
            done = lane.offer(arrival.facts)  # the compiled steady step (media.numbering)
            if done is True:
                return
            if done is not False:
                self._relay(done)
                return
        forwarder = self.forwarder
        n = self.n
        if forwarder is None or n.payload_type is None:
            return
        layer = arrival.layer
        current = forwarder.current
        if layer is not current:
            if current is not None and current is forwarder.target and current.flowing(arrival.now):
                return  # steady on the layer it wants: other layers are not its business
            if not arrival.keyframe or not forwarder.acceptable(layer):
                return
            self._switch(arrival)
        packet = arrival.packet
        run = n.run
        assert run is not None
        in_seq = arrival.seq  # the track's numbering, with packets it left out closed up
        if (in_seq - run.first_in) % SEQ_MOD >= 0x8000:
            return  # reordered from before the keyframe this run starts at: not ours
        payload = None
        munger = self._munger
        seq = (in_seq + n.seq_offset) % SEQ_MOD
        newest = seq_newer(seq, n.last_seq_out)  # not a late or repaired packet
        if munger is not None:
            d = arrival.descriptor
            if d is not None:
                if forwarder.max_tid is not None and not newest:
                    return  # late, and pictures were left out since: its number is gone
                if not forwarder.keep_temporal(d.tid, d.sync):
                    self._drop(munger, d)
                    return
                payload = munger.rewrite(packet.payload, d, newest)
        ts = (packet.timestamp + run.ts_offset) % TS_MOD
        if newest:
            n.last_seq_out = seq
            n.last_ts_out = ts
            n.last_in_ts = packet.timestamp
            n.last_sent_at = arrival.now
        if self.sent is not None:
            self.sent.put(seq, packet.sequence_number, run)
        n.packets_out += 1
        n.bytes_out += len(packet.payload)
        if n.stamp is not None:
            extension = n.stamp(len(payload) if payload is not None else len(packet.payload))
        elif n.level_id:
            extension = arrival.level_extension(n.level_id)
        else:
            extension = b""
        pending = n.writer.forward(
            (packet.marker << 7) | n.payload_type,
            seq,
            ts,
            self.ssrc,
            extension,
            packet.payload if payload is None else payload,
        )
        if pending is not None:
            self._relay(pending)
        if lane is not None and lane.layer is not layer:
            self._steady()  # a switch, or the temporal layers' resumption, may have settled

    def _steady(self) -> None:
        """Let the compiled step take the current layer's packets when forwarding them is
        all there is to do: a layer being sent, a payload type negotiated, and for VP8 no
        temporal layer to leave out or resume (those take the Python step). Called where
        those change: a switch or resumption (the end of the Python step), a wish
        (``prefer``), and the current layer dropped (``_retargeted``, ``suspend``, which
        ``unbind`` and so ``bind`` go through; a slot is never sending before
        ``activate`` sets its payload type)."""
        n, forwarder = self.n, self.forwarder
        layer = None
        if forwarder is not None and n.payload_type is not None:
            current, run = forwarder.current, n.run
            if (
                current is not None
                and run is not None
                and run.layer is current
                and (
                    self._munger is None
                    or (forwarder.max_tid is None and not forwarder.upgrading_temporal)
                )
            ):
                layer = current
        n.layer = layer

    def _switch(self, arrival: Arrival) -> None:
        """Start sending ``arrival``'s layer from this keyframe on, numbered after the
        last packet sent."""
        track, forwarder = self.track, self.forwarder
        assert track is not None and forwarder is not None
        packet, layer = arrival.packet, arrival.layer
        gap = self._capture_gap(track, layer, packet.timestamp)
        if gap is None:
            gap = arrival.now - self.last_sent_at
        step = max(1, round(gap * track.clock_rate))
        ts_out = (self.last_ts_out + step) % TS_MOD
        self.seq_offset = (self.last_seq_out + 1 - arrival.seq) % SEQ_MOD
        numbers = None
        if self._munger is not None:
            d = arrival.descriptor
            if d is not None:
                self._munger.switch(d)
            numbers = self._munger.numbers
        self._run = Run(layer, arrival.seq, (ts_out - packet.timestamp) % TS_MOD, numbers)
        previous = forwarder.current
        forwarder.switched(layer)
        self._last_layer = layer
        if previous is not None and previous is not layer:
            self.layer_switches += 1
            track.demand_changed()  # the layer left may be wanted by nobody now

    def _capture_gap(self, track: PublishedTrack, layer: Layer, timestamp: int) -> float | None:
        """Seconds between the capture of the last picture sent and this one, from the
        publisher's sender reports (``None`` if they cannot tell: none yet, or the last
        picture came from another track, whose clock is another)."""
        last = self._last_layer
        if last is None or last not in track.layers:
            return None
        then = last.wallclock(self._last_in_ts, track.clock_rate)
        now = layer.wallclock(timestamp, track.clock_rate)
        if then is None or now is None or not 0 <= now - then < MAX_ALIGNED_GAP:
            return None
        return now - then

    def _drop(self, munger: vp8.Vp8Munger, d: vp8.Descriptor) -> None:
        """Leave out a packet of a picture above the subscriber's temporal layer: the
        following packets close up over it."""
        self.seq_offset = (self.seq_offset - 1) % SEQ_MOD
        if munger.drop(d):
            self.pictures_dropped += 1
            run = self._run
            assert run is not None
            self._run = Run(run.layer, run.first_in, run.ts_offset, munger.numbers)

    def write(self, data: bytes) -> None:
        pending = self.writer.write(data)
        if pending is not None:
            self._relay(pending)

    def _relay(self, pending: Awaitable[None]) -> None:
        """Queue a write the transport could not make at once (a TURN relay's)."""
        if self._relayed is None:
            self._relayed = RelayedWrites()
        self._relayed.put(pending)

    # -- feedback from the subscriber ----------------------------------------------------------

    async def _on_rtcp(self, packet: AnyRtcpPacket) -> None:
        track = self.track
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            if track is not None and self.payload_type is not None:
                self._retransmit(track, packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            wanted = self.forwarder.current or self.forwarder.target if self.forwarder else None
            if track is not None and wanted is not None:
                track.request_keyframe(wanted)
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.fraction_lost = report.fraction_lost
            await self._rr_handler(packet)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP and self.on_remb:
            with contextlib.suppress(ValueError):
                self.on_remb(unpack_remb_fci(packet.fci)[0])

    def _retransmit(self, track: PublishedTrack, lost: list[int]) -> None:
        """Answer a subscriber's NACK from the layer's cache; never bother the publisher."""
        repair.retransmit(self, track, lost)

    def pad(self, packets: int) -> int:
        """Send ``packets`` padding-only packets on the RTX stream (for the subscriber's
        estimator to see more traffic: probing); returns the bytes sent (0 without RTX)."""
        return repair.pad(self, packets)

    # -- reporting ------------------------------------------------------------------------------

    @property
    def packets_total(self) -> int:
        """Packets sent over the slot's life, whatever tracks it carried."""
        return self._packets_before + self.packets_out

    @property
    def packets_dropped(self) -> int:
        """Packets dropped because this subscriber's relayed transport fell behind."""
        return self._relayed.dropped if self._relayed is not None else 0

    def close(self) -> None:
        """The subscriber is gone: stop sending (queued relayed writes are dropped)."""
        self.unbind()
        if self._relayed is not None:
            self._relayed.close()

    def sender_report(self) -> RtcpSrPacket | None:
        """This slot's sender report (for the subscriber's A/V sync), if it sent anything
        since the last one: a silent microphone's slot reports nothing."""
        track = self.track
        if track is None or not self.started or self.packets_out == self._reported:
            return None
        self._reported = self.packets_out
        elapsed = time.monotonic() - self.last_sent_at
        return RtcpSrPacket(
            ssrc=self.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=current_ntp_time(),
                rtp_timestamp=(self.last_ts_out + int(elapsed * track.clock_rate)) % TS_MOD,
                packet_count=self.packets_out & 0xFFFFFFFF,
                octet_count=self.bytes_out & 0xFFFFFFFF,
            ),
        )

    def stats(self) -> dict[str, Any]:
        forwarder = self.forwarder
        stats: dict[str, Any] = {
            "mid": self.mid,
            "trackId": self.track.info.track_id if self.track else None,
            "packetsOut": self.packets_out,
            "bytesOut": self.bytes_out,
            "fractionLost": self.fraction_lost,
            "packetsDropped": self.packets_dropped,
            "packetsRetransmitted": self.retransmitted,
            "rtx": self.rtx_payload_type is not None,
        }
        if forwarder is not None and forwarder.track.simulcast:
            stats["layer"] = forwarder.current.rid if forwarder.current else None
            stats["targetLayer"] = forwarder.target.rid if forwarder.target else None
            stats["wantedLayer"] = forwarder.wanted.rid if forwarder.wanted else None
            stats["layerSwitches"] = self.layer_switches
        if forwarder is not None and forwarder.limit is not None:
            # the subscriber's bandwidth holds this video below what it wants, or pauses it
            stats["limitedByBandwidth"] = True
        if self.padding_bytes:
            stats["paddingBytes"] = self.padding_bytes
        if self.pictures_dropped:
            stats["picturesDropped"] = self.pictures_dropped
        return stats
