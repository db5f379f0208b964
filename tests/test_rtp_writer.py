"""The SFU's sending and receiving edges on real aiortc peer connections over loopback:
the per-transport RTP writer (SRTP and a connected handle of the socket set up once per
connection), one certificate fingerprint in descriptions, and a receive loop that takes
turns with the rest of the event loop."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from media import aiortc_hooks, ice
from media import rtp_writer as rtp_writer_module
from media.client import BUNDLED
from media.rtp import one_byte_extension
from media.rtp_writer import CompiledRtpWriter, RtpWriter, rtp_writer


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection, RTCRtpTransceiver]]:
    """``a`` sends one audio track to ``b``; both connected, both under an ICE policy
    (as the SFU's connections are)."""
    ice.install()
    aiortc_hooks.one_fingerprint()
    ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",)))
    a, b = RTCPeerConnection(BUNDLED), RTCPeerConnection(BUNDLED)
    sending = a.addTransceiver(aiortc_hooks.SilentTrack("audio"), direction="sendonly")
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    deadline = time.monotonic() + 10
    while not a.connectionState == b.connectionState == "connected":
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert a.connectionState == b.connectionState == "connected"
    yield a, b, sending
    await a.close()
    await b.close()


def rtp(sending: RTCRtpTransceiver, seq: int, payload: bytes) -> bytes:
    pt = aiortc_hooks.negotiated_codecs(sending)[0].payloadType
    ssrc = aiortc_hooks.sender_ssrc(sending.sender)
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, ssrc) + payload


async def test_descriptions_carry_one_sha256_fingerprint_and_still_connect(pair):
    a, b, _ = pair  # connected: DTLS checked the peer's certificate against it
    for description in (a.localDescription.sdp, b.localDescription.sdp):
        sections = description.count("\r\nm=")
        fingerprints = [
            line for line in description.splitlines() if line.startswith("a=fingerprint:")
        ]
        assert len(fingerprints) == sections
        assert all(line.startswith("a=fingerprint:sha-256 ") for line in fingerprints)


def test_the_compiled_writer_is_built_by_the_install():
    """``make test`` installs a C compiler first, so the suite always has both writers."""
    assert rtp_writer_module.COMPILED_WRITER


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
async def test_the_writer_sends_protected_packets_in_order_then_nothing_once_closed(pair, compiled):
    a, b, sending = pair
    got: list[RtpPacket] = []
    aiortc_hooks.tap_receiver(b.getTransceivers()[0].receiver, got.append)
    transport = sending.sender.transport
    writer = rtp_writer(transport, compiled)
    assert type(writer) is (CompiledRtpWriter if compiled else RtpWriter)
    assert writer is rtp_writer(transport, compiled)  # one per transport
    pt = aiortc_hooks.negotiated_codecs(sending)[0].payloadType
    ssrc = aiortc_hooks.sender_ssrc(sending.sender)
    extension = one_byte_extension([(1, b"\x0a")])  # an audio level, as forwarded
    for seq in range(1, 101):
        if seq % 2:
            assert writer.write(rtp(sending, seq, bytes([seq]) * 100)) is None
        else:  # forwarded: a new header over the payload, marked every tenth
            marker = int(seq % 10 == 0)
            body = bytes([seq]) * 100
            assert writer.forward(marker << 7 | pt, seq, seq * 960, ssrc, extension, body) is None
    deadline = time.monotonic() + 5
    while len(got) < 100 and time.monotonic() < deadline:  # noqa: ASYNC110 (a receive callback)
        await asyncio.sleep(0.01)
    assert [p.sequence_number for p in got] == list(range(1, 101))
    assert all(p.payload == bytes([p.sequence_number]) * 100 for p in got)
    assert [p.timestamp for p in got] == [seq * 960 for seq in range(1, 101)]
    assert [p.sequence_number for p in got if p.marker] == list(range(10, 101, 10))
    # They left through a handle of the pair's socket connected to the peer.
    pair = transport.transport._connection._nominated[1]
    handle = writer._socket
    assert handle is not None and handle.getpeername() == pair.remote_addr[:2]
    assert handle.getsockname() == pair.protocol.transport.get_extra_info("sockname")
    # Too big for libsrtp's buffer: refused as pylibsrtp refuses it, nothing sent.
    with pytest.raises(ValueError):
        writer.write(rtp(sending, 101, bytes(1500)))
    with pytest.raises(ValueError):
        writer.forward(pt, 101, 0, ssrc, b"", bytes(1500))
    await a.close()
    # Closed: the writer forgot the socket and closed its handle; a write is dropped, as
    # before connecting.
    assert writer._socket is None and handle.fileno() == -1
    if compiled:
        assert writer.sender.closed
    assert writer.write(rtp(sending, 102, b"late")) is None
    assert writer.forward(pt, 103, 0, ssrc, b"", b"late") is None
    await asyncio.sleep(0.1)
    assert len(got) == 100


async def test_a_full_socket_queues_the_compiled_writers_packet_on_the_loop(pair):
    """When the kernel takes no more, the compiled sender hands the protected datagram
    to the event loop's queue (uvloop's ``sendto``): late, not lost. A datagram socket
    pair stands for the pair's socket here: on loopback UDP the kernel never refuses a
    send (the receiver drops instead)."""
    _, _, sending = pair
    writer = rtp_writer(sending.sender.transport)
    assert writer.write(rtp(sending, 1, b"first")) is None  # connects the fast path
    queued: list[tuple[bytes, object]] = []
    writer._sendto = lambda data, addr: queued.append((data, addr))
    full, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with full, peer:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        real = writer.sender
        writer.sender = type(real)(full.fileno(), *_sender_arguments(writer))
        seq = 2
        while not queued:
            assert writer.forward(96, seq, 0, 7, b"", b"z" * 1000) is None
            seq += 1
            assert seq < 10_000
        writer.sender = real
    ((datagram, addr),) = queued
    assert addr == writer._addr and len(datagram) > 1000  # protected: the trailer is on
    assert writer.sender.pending() is None


def test_moving_streams_to_the_front_keeps_every_stream_decryptable():
    """With libsrtp's stream list reordered on each send (the stream used brought to the
    front), every stream keeps its own numbering: packets of 40 SSRCs interleaved, each
    crossing the 16-bit sequence wrap (the rollover counter), all decrypt in order."""
    from pylibsrtp import Policy, Session

    from media import _rtpsend

    streams = aiortc_hooks.srtp_stream_list()
    assert streams is not None  # this libsrtp's list is found and checked
    key = bytes(range(30))
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    protect, context = aiortc_hooks.srtp_addresses(tx)
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sender = _rtpsend.Sender(a.fileno(), protect, context, 1400, streams)
        ssrcs = [0x1000 + 17 * i for i in range(40)]
        order = [(ssrc, seq) for seq in range(65530, 65546) for ssrc in ssrcs[:: 1 + seq % 3]]
        for ssrc, seq in order:
            body = ssrc.to_bytes(4, "big") + seq.to_bytes(4, "big")
            assert sender.send(96, seq % 65536, seq, ssrc, b"", body) == 0
            clear = RtpPacket.parse(rx.unprotect(b.recv(2048)))
            assert (clear.ssrc, clear.sequence_number) == (ssrc, seq % 65536)
            assert clear.payload == body
        with pytest.raises(TypeError):
            _rtpsend.Sender(a.fileno(), protect, context, 1400, (1, 2))


def _sender_arguments(writer: CompiledRtpWriter) -> tuple[int, int, int]:
    """The compiled sender's libsrtp function, context and size limit of ``writer``."""
    return (*aiortc_hooks.srtp_addresses(writer._session), rtp_writer_module._MAX_PROTECTED)


async def test_an_install_without_the_compiled_module_forwards_with_the_pure_writer(
    pair, monkeypatch, caplog
):
    """Built without a C compiler, the setting's default still works: the pure-Python
    writer, and a warning when a media node starts."""
    from config.sfu import SfuSettings
    from media import host

    _, _, sending = pair
    monkeypatch.setattr(rtp_writer_module, "COMPILED_WRITER", False)
    assert type(rtp_writer(sending.sender.transport)) is RtpWriter
    with caplog.at_level("WARNING", logger="switchboard.sfu"):
        host.warn_without_compiled_writer(SfuSettings(sfu_compiled_writer=False))
        assert not caplog.records  # asked for the pure writer: nothing to say
        host.warn_without_compiled_writer(SfuSettings())
    assert "compiled RTP writer was not built" in caplog.text


def test_the_compiled_sender_reports_what_python_must_do():
    """The C sender on its own: a datagram per packet, protected by libsrtp; too big,
    refused or closed leave it to the checked path."""
    from pylibsrtp import Policy, Session

    from media import _rtpsend

    key = bytes(range(30))
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    protect, context = aiortc_hooks.srtp_addresses(tx)
    with a, b:
        sender = _rtpsend.Sender(a.fileno(), protect, context, 1400)
        extension = one_byte_extension([(3, b"\x00\x01\x02")])
        assert sender.send(0x80 | 100, 65535, (1 << 32) - 1, 0xCAFE, extension, b"x" * 50) == 0
        clear = rx.unprotect(b.recv(2048))
        assert clear[0] == 0x90 and clear[12 : 12 + len(extension)] == extension
        packet = RtpPacket.parse(clear)
        assert (packet.payload_type, packet.marker, packet.ssrc) == (100, 1, 0xCAFE)
        assert (packet.sequence_number, packet.timestamp) == (65535, (1 << 32) - 1)
        assert packet.payload == b"x" * 50
        assert sender.pending() is None
        assert sender.send(100, 1, 2, 0xCAFE, b"", b"y" * (1400 - 12 + 1)) == 1  # too big
        assert sender.send(100, 1, 2, 0xCAFE, b"", b"y" * (1400 - 12)) == 0
        assert len(rx.unprotect(b.recv(2048))) == 1400
        # A full socket: PENDING, and the protected datagram is handed over once.
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        seq, results = 2, []
        while (done := sender.send(100, seq, 0, 0xCAFE, b"", b"z" * 1000)) == 0:
            seq += 1
            assert seq < 10_000
        assert done == 2
        datagram = sender.pending()
        assert sender.pending() is None
        while True:  # what the kernel took, then the pending one
            try:
                results.append(RtpPacket.parse(rx.unprotect(b.recv(2048, socket.MSG_DONTWAIT))))
            except BlockingIOError:
                break
        assert [p.sequence_number for p in results] == list(range(2, seq))
        assert RtpPacket.parse(rx.unprotect(datagram)).sequence_number == seq
        # Wrong types are refused with an error, not sent.
        with pytest.raises(TypeError):
            sender.send(100, 1, 2, 3, b"", bytearray(b"body"))
        with pytest.raises(TypeError):
            sender.send(100, 1, 2)
        # Closed: nothing is sent, every packet goes to the checked path.
        sender.close()
        assert sender.closed and sender.send(100, 1, 2, 0xCAFE, b"", b"q") == 1
    with pytest.raises(ValueError):
        _rtpsend.Sender(-1, protect, context, 1400)
    with pytest.raises(ValueError):
        _rtpsend.Sender(3, protect, context, 4000)


async def test_a_burst_of_costly_datagrams_takes_turns_with_other_tasks(pair):
    """Each packet costs 1 ms to handle (as a video packet forwarded to 50 does); 100 of
    them arrive at once. Without turns, one task step would handle them all and nothing
    else would run for 100 ms; with them, other tasks run every couple of milliseconds."""
    _, b, sending = pair
    handled: list[int] = []

    def costly(packet: RtpPacket) -> None:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        handled.append(packet.sequence_number)

    aiortc_hooks.tap_receiver(b.getTransceivers()[0].receiver, costly)
    writer = rtp_writer(sending.sender.transport)
    turns_during_burst = 0

    async def other_task() -> None:
        nonlocal turns_during_burst
        while len(handled) < 100:
            if handled:
                turns_during_burst += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_task())
    for seq in range(1, 101):
        writer.write(rtp(sending, seq, bytes(200)))
    await asyncio.wait_for(other, 10)
    assert handled == list(range(1, 101))
    assert turns_during_burst >= 20


async def test_sending_slots_carry_no_bitrate_estimator_until_a_packet_arrives():
    """aiortc's video receivers each held a thousand rate-bucket objects; the receivers
    of sending-only transceivers never receive, so theirs is built only on a packet."""
    import gc

    import aiortc.rate
    import aiortc.rtcrtpreceiver

    aiortc_hooks.lazy_receive_estimators()
    pc = RTCPeerConnection(BUNDLED)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(10):
        pc.addTransceiver("video", direction="sendonly")
    assert len(gc.get_objects()) - before < 3000  # was over 10,000 (1,000 buckets each)
    # A receiver that does receive gets aiortc's estimator with its first packet.
    estimator = aiortc.rtcrtpreceiver.RemoteBitrateEstimator()
    assert estimator._real is None
    estimator.add(0, 0, 1200, 1234)
    assert isinstance(estimator._real, aiortc.rate.RemoteBitrateEstimator)
    assert estimator._real.ssrcs  # the packet went to it
    await pc.close()


def test_the_compiled_steady_step_renumbers_in_the_senders_buffer():
    """A slot's compiled steady step (``media/_lane.c``) on a real sender: the header from
    the run's offsets, the VP8 PictureID and TL0PICIDX rewritten in the sender's buffer
    (the shared payload untouched), what was sent remembered for NACKs; an audio level
    written as a header extension; packets of another layer, or for a closed sender,
    left to the Python step; a packet too big handed to the writer's checked path."""
    from pylibsrtp import Policy, Session

    from media import _rtpsend
    from media.bandwidth import Allocator
    from media.sent_ring import Run

    key = bytes(range(30))
    tx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    protect, context = aiortc_hooks.srtp_addresses(tx)

    class Writer:
        def __init__(self) -> None:
            self.forwarded: list[tuple] = []

        def forward(self, *args: object) -> str:
            self.forwarded.append(args)
            return "queued"  # stands for an awaitable the slot would queue

    with a, b:
        sender = _rtpsend.Sender(a.fileno(), protect, context, 1400)
        layer, other = object(), object()
        run = Run(layer, 100, 1000, (5, 3, 1 << 15))  # type: ignore[arg-type]
        lane = _rtpsend.Lane()
        lane.run, lane.layer, lane.payload_type, lane.ssrc = run, layer, 96, 0xCAFE
        lane.vp8, lane.remember, lane.sender, lane.writer = True, True, sender, Writer()
        lane.seq_offset, lane.last_seq_out = 10, 109
        payload = bytes([0x90, 0xE0, 0x80 | 0x7F, 0xFF, 254, 0x00]) + b"picture"  # 32767, 254
        facts = (layer, 100, 555, (1 << 32) - 500, True, payload, 2.5, -1, 1, 32767, 15, 2, 254, 4)
        assert lane.offer(facts) is True
        clear = RtpPacket.parse(rx.unprotect(b.recv(2048)))
        assert (clear.sequence_number, clear.timestamp, clear.marker) == (110, 500, 1)
        assert (clear.ssrc, clear.payload_type) == (0xCAFE, 96)
        assert clear.payload == bytes([0x90, 0xE0, 0x80, 4, 1, 0x00]) + b"picture"  # wrapped
        assert payload[2:5] == bytes([0xFF, 0xFF, 254])  # the shared payload is untouched
        assert (lane.last_seq_out, lane.last_ts_out, lane.last_in_ts) == (110, 500, (1 << 32) - 500)
        assert (lane.last_pid, lane.last_tl0, lane.last_sent_at) == (4, 1, 2.5)
        assert (lane.packets_out, lane.bytes_out) == (1, len(payload))
        assert lane.get(110) == (555, run) and lane.get(111) is None
        # Another layer's packet, or a sender closed: the Python step's, nothing moved.
        assert lane.offer((other, *facts[1:])) is False
        sender.close()
        assert lane.offer(facts) is False
        assert lane.packets_out == 1
        # Too big for the sender: the writer's checked path gets it, renumbered.
        sender.open(a.fileno(), protect, context, 1400)
        big = payload + bytes(1400)
        too_big = (layer, 101, 556, 0, False, big, 2.6, -1, 1, 32767, 15, 2, 254, 4)
        assert lane.offer(too_big) == "queued"
        ((second, seq, ts, ssrc, ext, body),) = lane.writer.forwarded
        assert (second, seq, ts, ssrc, ext) == (96, 111, 1000, 0xCAFE, b"")
        assert body[:6] == bytes([0x90, 0xE0, 0x80, 4, 1, 0x00]) and len(body) == len(big)
        # Audio: the level goes on as a one-byte header extension.
        audio = _rtpsend.Lane()
        audio.run = Run(layer, 0, 0, None)  # type: ignore[arg-type]
        audio.layer, audio.payload_type, audio.ssrc = layer, 111, 7
        audio.level_id, audio.sender, audio.writer = 4, sender, Writer()
        voiced = (layer, 1, 1, 960, False, b"opus", 3.0, 0x85, 0, -1, 0, 0, -1, 0)
        assert audio.offer(voiced) is True
        clear = rx.unprotect(b.recv(2048))
        assert clear[0] == 0x90 and clear[12:20] == bytes([0xBE, 0xDE, 0, 1, 4 << 4, 0x85, 0, 0])
        assert RtpPacket.parse(clear).payload == b"opus"
        # Video stamped by the compiled pacing clock: its send time, written in C.
        lane.stamp = _rtpsend.PaceClock(Allocator(start=1_000_000), 2, 2.5).stamp
        before = time.time()
        assert lane.offer((layer, 102, 557, 0, False, payload, 2.7, -1, 1, 5, 15, 2, 7, 4)) is True
        clear = rx.unprotect(b.recv(2048))
        assert clear[0] == 0x90 and clear[12:17] == bytes([0xBE, 0xDE, 0, 1, 2 << 4 | 2])
        sent_at = int.from_bytes(clear[17:20], "big") / (1 << 18)
        assert abs((sent_at - before + 32) % 64 - 32) < 0.01  # 6.18 fixed point: 64 s wrap
        assert RtpPacket.parse(clear).payload[6:] == b"picture"
