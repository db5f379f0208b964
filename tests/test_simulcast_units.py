"""Unit tests of simulcast's pure parts: the VP8 descriptor and its renumbering, the
forwarder's choice of layer, transport-cc feedback, the SDP an answer gains, and one
subscriber slot switching between layers of hand-made packets (its transport is a fake:
what it would send is collected)."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtcpRtpfbPacket, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from media import twcc, vp8
from media.answer_sdp import accept_layers, accept_transport_cc, offered_layers
from media.forwarder import Forwarder, Preference
from media.published_track import PublishedTrack, TrackInfo
from media.rtp import one_byte_extension
from media.rtp_writer import Writer
from media.send_slot import SendSlot

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def descriptor(pid: int, tl0: int, tid: int, sync: bool = False, start: bool = True) -> bytes:
    """A VP8 payload descriptor with a 15-bit PictureID, TL0PICIDX and TID."""
    first = 0x80 | (0x10 if start else 0)
    return bytes([first, 0xE0, 0x80 | pid >> 8, pid & 0xFF, tl0, tid << 6 | (0x20 if sync else 0)])


def keyframe_payload(pid: int, tl0: int, width: int = 320, height: int = 180) -> bytes:
    """The first packet of a VP8 keyframe: descriptor, frame tag (P clear), start code,
    size."""
    header = b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return descriptor(pid, tl0, 0, sync=True) + header


def delta_payload(pid: int, tl0: int, tid: int = 0, start: bool = True) -> bytes:
    return descriptor(pid, tl0, tid, start=start) + b"\x01\x00\x00" + b"x" * 20


# -- VP8 descriptor ---------------------------------------------------------------------


def test_descriptor_fields_and_keyframe_size():
    payload = keyframe_payload(0x1234, 77, 640, 360)
    d = vp8.parse(payload)
    assert d is not None
    assert (d.picture_id, d.pid_bits, d.tl0, d.tid, d.sync, d.size) == (0x1234, 15, 77, 0, True, 6)
    assert d.picture_start and vp8.is_keyframe(payload, d)
    assert vp8.keyframe_size(payload, d) == (640, 360)
    assert vp8.keyframe_size(delta_payload(1, 1), vp8.parse(delta_payload(1, 1))) is None


@pytest.mark.parametrize("payload", [b"", b"\x80", b"\x80\x80", b"\x80\xc0\x81", b"\x80\x20"])
def test_truncated_descriptors_are_refused(payload):
    assert vp8.parse(payload) is None


def test_munger_continues_numbers_across_a_switch_and_closes_dropped_pictures():
    munger = vp8.Vp8Munger()
    out = []

    def send(payload: bytes) -> None:
        d = vp8.parse(payload)
        assert d is not None
        rewritten = vp8.parse(munger.rewrite(payload, d))
        assert rewritten is not None
        out.append((rewritten.picture_id, rewritten.tl0))

    send(keyframe_payload(100, 10))
    send(delta_payload(101, 10, tid=2))
    # another encoder, unrelated numbers: continues at 102 / 11
    new_layer = keyframe_payload(30000, 200)
    d = vp8.parse(new_layer)
    assert d is not None
    munger.switch(d)
    send(new_layer)
    dropped = vp8.parse(delta_payload(30001, 200, tid=2))
    assert dropped is not None
    assert munger.drop(dropped) is True
    assert munger.drop(dropped) is False  # the same picture's next packet
    send(delta_payload(30002, 201, tid=0))
    assert out == [(100, 10), (101, 10), (102, 11), (103, 12)]


def test_a_late_packet_does_not_move_the_numbers_a_switch_continues_from():
    munger = vp8.Vp8Munger()
    for pid in (10, 11, 12):
        p = delta_payload(pid, 1)
        munger.rewrite(p, vp8.parse(p))  # type: ignore[arg-type]
    late = delta_payload(5, 1)
    munger.rewrite(late, vp8.parse(late), newest=False)  # type: ignore[arg-type]
    key = keyframe_payload(900, 50)
    munger.switch(vp8.parse(key))  # type: ignore[arg-type]
    assert vp8.parse(munger.rewrite(key, vp8.parse(key))).picture_id == 13  # type: ignore[arg-type, union-attr]


@given(st.integers(0, 0x7FFF), st.integers(0, 0x7FFF), st.integers(0, 255), st.integers(0, 255))
def test_renumbering_wraps_both_fields(pid, last_pid, tl0, last_tl0):
    munger = vp8.Vp8Munger()
    munger.store.last_pid, munger.store.last_tl0 = last_pid, last_tl0
    payload = keyframe_payload(pid, tl0)
    d = vp8.parse(payload)
    assert d is not None
    munger.switch(d)
    out = vp8.parse(munger.rewrite(payload, d))
    assert out is not None
    assert out.picture_id == (last_pid + 1) % (1 << 15)
    assert out.tl0 == (last_tl0 + 1) % 256


# -- the forwarder ------------------------------------------------------------------------


async def no_pli(ssrc: int) -> None:
    return None


def simulcast_track(sizes: tuple[tuple[int, int], ...] | None = None) -> PublishedTrack:
    info = TrackInfo("TR_v", "PA_p", "pub", "video", "camera", "video/VP8", ("q", "h", "f"))
    track = PublishedTrack(info, VP8, 0.0, no_pli)
    for layer, size in zip(track.layers, sizes or (), strict=False):
        layer.width, layer.height = size
    return track


def test_the_smallest_layer_at_least_as_big_as_the_tile():
    track = simulcast_track(((320, 180), (640, 360), (1280, 720)))
    choose = lambda **kw: Forwarder(track, Preference(**kw)).target.rid  # noqa: E731
    assert choose(width=160, height=90) == "q"
    assert choose(width=320, height=180) == "q"
    assert choose(width=321, height=100) == "h"
    assert choose(width=1280, height=720) == "f"
    assert choose(width=3840, height=2160) == "f"  # bigger than any: the largest
    assert choose() == "f"  # nothing said: the best there is
    assert choose(width=1920, quality="low") == "q"  # an explicit quality wins
    assert choose(quality="medium") == "h"
    assert Forwarder(track, Preference(width=640, visible=False)).target is None


def test_quality_follows_the_sizes_whatever_order_the_layers_were_offered_in():
    track = simulcast_track(((1280, 720), (640, 360), (320, 180)))  # high first
    assert Forwarder(track, Preference(quality="low")).target.rid == "f"
    assert Forwarder(track, Preference(quality="high")).target.rid == "q"
    assert Forwarder(track, Preference(width=600, height=300)).target.rid == "h"
    assert Forwarder(track, Preference(width=200, height=100)).target.rid == "f"


def test_before_any_keyframe_sizes_come_from_the_layer_order():
    track = simulcast_track()
    assert Forwarder(track, Preference(width=300, height=170)).target.rid == "q"
    assert Forwarder(track, Preference(width=600, height=340)).target.rid == "h"


def test_a_stand_in_layer_while_the_target_is_not_flowing():
    track = simulcast_track()
    q, h, f = track.layers
    forwarder = Forwarder(track, Preference(quality="high"))
    assert forwarder.target is f
    q.last_packet_at = h.last_packet_at = time.monotonic()
    assert forwarder.acceptable(h) and not forwarder.acceptable(q)  # nearest below
    f.last_packet_at = time.monotonic()
    assert forwarder.acceptable(f) and not forwarder.acceptable(h)


def test_temporal_layers_above_the_frame_rate_are_left_out_and_resume_at_a_sync_picture():
    forwarder = Forwarder(simulcast_track(), Preference(fps=8))
    assert forwarder.keep_temporal(0, False)
    assert not forwarder.keep_temporal(1, False) and not forwarder.keep_temporal(2, True)
    forwarder.prefer(Preference(fps=30))
    assert not forwarder.keep_temporal(2, False)  # depends on pictures not sent
    assert forwarder.keep_temporal(1, True)  # a layer-sync picture: from here on
    assert forwarder.keep_temporal(2, False)
    assert forwarder.keep_temporal(None, False)  # no temporal layers at all


# -- transport-cc feedback -------------------------------------------------------------------


@given(
    st.lists(
        st.one_of(st.none(), st.integers(-2_000_000, 2_000_000)), min_size=1, max_size=300
    ).filter(lambda xs: any(x is not None for x in xs)),
    st.integers(0, 0xFFFF),
)
def test_feedback_round_trips(offsets, base):
    start = 1_000_000_000
    arrivals = [None if x is None else start + x for x in offsets]
    data = twcc.build_feedback(1, 2, base, arrivals, 5)
    assert len(data) % 4 == 0
    got_base, got = twcc.parse_feedback(data)
    assert got_base == base and len(got) == len(arrivals)
    for sent, read in zip(arrivals, got, strict=True):
        assert (sent is None) == (read is None)
        if sent is not None:
            assert abs(read - sent) <= twcc.DELTA_UNIT_US  # type: ignore[operator]


def test_recorder_reports_each_packet_once_across_the_wrap_and_splits_long_runs():
    recorder = twcc.FeedbackRecorder()
    seqs = [(0xFFF0 + i) % 0x10000 for i in range(400) if i != 3]
    for i, seq in enumerate(seqs):
        recorder.add(seq, 1_000_000 + i * 1000)
    packets = recorder.take(1, 2)
    assert len(packets) == 2  # at most MAX_STATUS per packet
    reported = []
    for data in packets:
        base, arrivals = twcc.parse_feedback(data)
        reported += [(base + i) % 0x10000 for i, a in enumerate(arrivals) if a is not None]
        assert data[1] == twcc.RTCP_RTPFB and data[0] & 0x1F == twcc.FMT_TRANSPORT_CC
    assert reported == seqs
    assert recorder.take(1, 2) == [] and not recorder.pending
    recorder.add(seqs[-1], 5)  # a duplicate of something reported: nothing new
    recorder.add((0xFFF0 + 1) % 0x10000, 5)  # far too late
    assert recorder.take(1, 2) == []


# -- SDP -----------------------------------------------------------------------------------

OFFER = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=rtpmap:111 opus/48000/2\r
a=rtcp-fb:111 transport-cc\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
a=mid:1\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 goog-remb\r
a=rtcp-fb:96 transport-cc\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=rid:q send\r
a=rid:h send\r
a=rid:f send\r
a=simulcast:send q;~h,x;f\r
"""

ANSWER = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
a=mid:0\r
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=rtpmap:111 opus/48000/2\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
a=mid:1\r
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r
a=rtpmap:96 VP8/90000\r
a=rtcp-fb:96 goog-remb\r
a=rtpmap:97 rtx/90000\r
"""


def test_offered_layers_and_their_acceptance():
    layers = offered_layers(OFFER)
    assert layers == {"1": ["q", "h", "f"]}  # "~" (paused) and alternatives read too
    answer = accept_layers(ANSWER, layers)
    video = answer.split("m=video")[1]
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n" in video
    assert "a=rid" not in answer.split("m=video")[0]
    assert offered_layers(ANSWER) == {}


def test_transport_cc_replaces_remb_where_offered():
    answer = accept_transport_cc(OFFER, ANSWER)
    audio, video = answer.split("m=video")
    assert "a=rtcp-fb:111 transport-cc" in audio
    assert "a=rtcp-fb:96 transport-cc" in video and "a=rtcp-fb:97" not in video
    assert "goog-remb" not in video and "abs-send-time" not in video
    # An offer without it leaves the answer alone.
    plain = OFFER.replace("a=rtcp-fb:111 transport-cc\r\n", "").replace(
        "a=rtcp-fb:96 transport-cc\r\n", ""
    )
    assert accept_transport_cc(plain, ANSWER) == ANSWER


# -- one subscriber slot switching layers ------------------------------------------------------


class Capture(Writer):
    """Stands for the slot's transport writer: keeps what would be sent."""

    def __init__(self, sent: list[RtpPacket]) -> None:
        self.sent = sent

    def write(self, data: bytes) -> None:
        self.sent.append(RtpPacket.parse(data))


class LaneCapture(Capture):
    """The same, also standing for the transport's compiled sender, which the compiled
    steady step (``media/_lane.c``) sends through: on anything but a real ``Sender`` it
    calls ``send`` with the same arguments. Counts what came that way."""

    def __init__(self, sent: list[RtpPacket]) -> None:
        super().__init__(sent)
        self.sender = self
        self.steady = 0

    def send(self, second: int, seq: int, ts: int, ssrc: int, ext: bytes, body: bytes) -> int:
        self.steady += 1
        self.forward(second, seq, ts, ssrc, ext, body)
        return 0  # sent


@pytest.fixture(params=["compiled", "pure"])
async def slot(request) -> AsyncIterator[tuple[PublishedTrack, SendSlot, list[RtpPacket]]]:
    """A video slot with the compiled steady step (its sender a stand-in), or without."""
    pc = RTCPeerConnection()
    track = simulcast_track(((320, 180), (640, 360), (1280, 720)))
    sent: list[RtpPacket] = []
    compiled = request.param == "compiled"
    slot = SendSlot(pc.addTransceiver("video", direction="sendonly"), compiled_writer=compiled)
    assert (slot._lane is not None) == compiled
    slot.bind(track, Preference(width=160, height=90))
    slot.payload_type = 96
    track.attach(slot)
    slot.writer = (LaneCapture if compiled else Capture)(sent)  # type: ignore[assignment]
    try:
        yield track, slot, sent
    finally:
        slot.close()
        await pc.close()


class Publisher:
    """Three layers' packets, each layer its own SSRC, sequence and numbering."""

    def __init__(self, track: PublishedTrack) -> None:
        self.track = track
        self.seq = {layer.rid: 1000 * (i + 1) for i, layer in enumerate(track.layers)}
        self.pid = {layer.rid: 5000 * (i + 1) for i, layer in enumerate(track.layers)}
        self.ts = 90000

    def frame(self, keyframe: bool = False, tid: int = 0, packets: int = 2) -> None:
        """One captured frame, encoded by every layer (as a browser does)."""
        self.ts += 3000
        for layer in self.track.layers:
            rid = layer.rid
            self.pid[rid] += 1
            for i in range(packets):
                if i == 0 and keyframe:
                    payload = keyframe_payload(self.pid[rid], 1)
                else:
                    payload = delta_payload(self.pid[rid], 1, tid, start=i == 0)
                self.send(layer, payload)

    def send(self, layer, payload: bytes, seq: int | None = None) -> None:
        packet = RtpPacket(payload_type=96, timestamp=self.ts, ssrc=layer.index + 1)
        if seq is None:
            seq = self.seq[layer.rid] = (self.seq[layer.rid] + 1) % 65536
        packet.sequence_number = seq
        packet.payload = payload
        self.track.on_layer_packet(layer, packet)


async def test_the_slot_starts_at_a_keyframe_and_switches_only_at_one(slot):
    track, sub, sent = slot
    publisher = Publisher(track)
    publisher.frame()
    assert sent == []  # no keyframe yet
    publisher.frame(keyframe=True)
    publisher.frame()
    assert len(sent) == 4 and all(p.ssrc == sub.ssrc for p in sent)  # q only, 2 frames
    sub.prefer(Preference(width=1280, height=720))
    publisher.frame()  # still q, until f's keyframe
    publisher.frame(keyframe=True)
    publisher.frame()
    assert sub.forwarder.current.rid == "f"
    seqs = [p.sequence_number for p in sent]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    timestamps = [p.timestamp for p in sent]
    assert all((b - a) % (1 << 32) < 1 << 31 for a, b in itertools.pairwise(timestamps))
    pids = [vp8.parse(p.payload).picture_id for p in sent if p.payload[0] & 0x10]  # type: ignore[union-attr]
    assert all((b - a) % (1 << 15) == 1 for a, b in itertools.pairwise(pids))
    assert sub.stats()["layer"] == "f" and sub.stats()["layerSwitches"] == 1


async def test_a_slot_rebound_to_another_track_continues_its_numbers(slot):
    """A subscriber's slot reused for another publisher's track (one left, another took
    its place) is one stream to the receiver: it starts at the new track's keyframe and
    continues sequence numbers, timestamps and PictureIDs where the last track left them."""
    track, sub, sent = slot
    first = Publisher(track)
    first.frame(keyframe=True)
    first.frame()
    before = len(sent)
    other = simulcast_track(((320, 180), (640, 360), (1280, 720)))
    sub.bind(other, Preference(width=160, height=90))
    sub.payload_type = 96  # negotiated again for the new track (activate)
    other.attach(sub)
    publisher = Publisher(other)
    publisher.pid = {rid: 20000 + pid for rid, pid in publisher.pid.items()}  # its own
    publisher.frame()  # not from a keyframe: nothing
    assert len(sent) == before
    publisher.frame(keyframe=True)
    publisher.frame()
    assert len(sent) == before + 4 and {p.ssrc for p in sent} == {sub.ssrc}
    opening = sent[before].payload
    assert vp8.is_keyframe(opening, vp8.parse(opening))  # type: ignore[arg-type]
    seqs = [p.sequence_number for p in sent]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    timestamps = [p.timestamp for p in sent]
    assert all(0 <= (b - a) % (1 << 32) < 1 << 31 for a, b in itertools.pairwise(timestamps))
    pids = [vp8.parse(p.payload).picture_id for p in sent if p.payload[0] & 0x10]  # type: ignore[union-attr]
    assert all((b - a) % (1 << 15) == 1 for a, b in itertools.pairwise(pids))


async def test_a_packet_from_before_the_keyframe_is_not_sent(slot):
    track, _, sent = slot
    publisher = Publisher(track)
    publisher.frame(keyframe=True)
    q = track.layers[0]
    before = len(sent)
    publisher.send(q, delta_payload(4000, 1), seq=publisher.seq["q"] - 5)
    assert len(sent) == before


async def test_nacks_are_answered_with_the_packet_as_first_sent(slot):
    track, sub, sent = slot
    publisher = Publisher(track)
    publisher.frame(keyframe=True)
    sub.prefer(Preference(quality="high"))
    publisher.frame(keyframe=True)  # switched: renumbered payloads from here
    publisher.frame()
    first = {p.sequence_number: p for p in sent}
    nack = RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=sub.ssrc)
    lost = [*sorted(first)[1:4], (max(first) + 50) % 65536]  # three known, one never sent
    nack.lost = lost
    sent.clear()
    await sub._on_rtcp(nack)
    assert [p.sequence_number for p in sent] == lost[:3]
    for p in sent:
        assert (p.timestamp, p.payload) == (
            first[p.sequence_number].timestamp,
            first[p.sequence_number].payload,
        )
    assert (track.nacks_answered, track.nacks_missed) == (3, 1)


async def test_retransmissions_go_on_the_rtx_stream_where_negotiated_and_are_stamped(slot):
    track, sub, sent = slot
    sub.rtx_payload_type = 97
    publisher = Publisher(track)
    publisher.frame(keyframe=True)
    first = {p.sequence_number: p for p in sent}
    nack = RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=sub.ssrc)
    nack.lost = sorted(first)[:2]
    sent.clear()
    stamped: list[int] = []  # retransmissions carry the estimate's stamp, as all video

    def stamp(size: int) -> bytes:
        stamped.append(size)
        return one_byte_extension([(5, len(stamped).to_bytes(2, "big"))])

    sub.stamp = stamp
    await sub._on_rtcp(nack)
    assert [(p.ssrc, p.payload_type) for p in sent] == [(sub.rtx_ssrc, 97)] * 2
    assert stamped == [len(p.payload) for p in sent]
    assert (sent[1].sequence_number - sent[0].sequence_number) % 65536 == 1
    for p, seq in zip(sent, nack.lost, strict=True):
        assert p.payload == struct.pack("!H", seq) + first[seq].payload  # RFC 4588
        assert p.timestamp == first[seq].timestamp


async def test_a_steady_slot_is_offered_only_its_layers_packets_until_its_wish_changes(slot):
    track, sub, sent = slot
    publisher = Publisher(track)
    offered: list[str | None] = []
    offer = sub.offer

    def spy(arrival) -> None:
        offered.append(arrival.layer.rid)
        offer(arrival)

    sub.offer = spy  # type: ignore[method-assign]
    publisher.frame(keyframe=True)  # starts on q, the layer it wants
    await asyncio.sleep(0.06)  # the audiences are worked out again by the next packet
    offered.clear()
    publisher.frame()
    assert offered == ["q", "q"]  # h's and f's packets were not even offered
    assert len(sent) == 4
    sub.prefer(Preference(width=1280, height=720))  # now it looks for f's keyframe
    offered.clear()
    publisher.frame(keyframe=True)
    assert offered == ["q", "q", "h", "h", "f", "f"]
    assert sent[-1].ssrc == sub.ssrc and len(sent) == 8  # q's frame, then f's from its keyframe


async def test_the_compiled_steady_step_sends_what_the_python_step_sends():
    """Two slots on the same track, one with the compiled steady step and one without,
    given the same packets and wishes (switches, a lower frame rate and back, a late
    packet, one from before a keyframe, a NACK) send the same packets, and the compiled
    one sent the steady ones through its steady step."""
    pcs = [RTCPeerConnection(), RTCPeerConnection()]
    track = simulcast_track(((320, 180), (640, 360), (1280, 720)))
    sent: dict[str, list[RtpPacket]] = {"compiled": [], "pure": []}
    slots = {}
    started = time.monotonic()
    for pc, (mode, out) in zip(pcs, sent.items(), strict=True):
        s = SendSlot(pc.addTransceiver("video", direction="sendonly"), mode == "compiled")
        s.bind(track, Preference(width=160, height=90))
        s.payload_type = 96
        s.last_seq_out, s.last_ts_out, s.rtx_seq = 65530, (1 << 32) - 9000, 77  # wraps
        s.last_sent_at = started  # the first switch's timestamp step is the time since
        track.attach(s)
        s.writer = (LaneCapture if mode == "compiled" else Capture)(out)  # type: ignore[assignment]
        s.stamp = lambda size: one_byte_extension([(3, size.to_bytes(3, "big"))])
        slots[mode] = s
    publisher = Publisher(track)
    try:
        publisher.frame(keyframe=True)
        for _ in range(3):
            publisher.frame(tid=1)
        # steady on q: after the keyframe's first packet (the switch, in Python), all of it
        assert slots["compiled"].writer.steady == len(sent["pure"]) - 1 == 7  # type: ignore[attr-defined]
        for s in slots.values():
            s.prefer(Preference(width=1280, height=720, fps=15))  # f, base layer only
        for tid in (0, 1, 0, 1):
            publisher.frame(keyframe=tid == 0 and publisher.ts < 110000, tid=tid)
        for s in slots.values():
            s.prefer(Preference(width=1280, height=720))  # all layers again, at a sync
        for tid in (1, 0, 1, 0):
            publisher.frame(tid=tid)
        f = track.layers[2]
        publisher.send(f, delta_payload(publisher.pid["f"], 1), seq=publisher.seq["f"] - 1)
        publisher.send(f, delta_payload(4000, 1), seq=publisher.seq["f"] - 3000)  # too old
        for s in slots.values():
            s.prefer(Preference(width=160, height=90))  # back down to q
        publisher.frame(keyframe=True)
        publisher.frame()
        for mode, s in slots.items():
            nack = RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=s.ssrc)
            nack.lost = [p.sequence_number for p in sent[mode][2:6]]
            await s._on_rtcp(nack)

        def seen(packets: list[RtpPacket]) -> list[tuple]:
            return [
                (p.sequence_number, p.timestamp, p.marker, p.payload_type, p.payload, p.extensions)
                for p in packets
            ]

        assert len(sent["pure"]) > 30
        assert seen(sent["compiled"]) == seen(sent["pure"])
        assert {p.ssrc for p in sent["compiled"]} == {slots["compiled"].ssrc}
        assert slots["compiled"].stats() | {"mid": None} == slots["pure"].stats() | {"mid": None}
        # On f the Python step kept them: first the frame rate's limit, then, once lifted,
        # the wait for a layer-sync picture (none comes). Back on q, all but the switch.
        assert slots["compiled"].writer.steady == 7 + 3  # type: ignore[attr-defined]
    finally:
        for s in slots.values():
            s.close()
        for pc in pcs:
            await pc.close()
