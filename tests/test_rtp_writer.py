"""The SFU's sending and receiving edges on real aiortc peer connections over loopback:
the per-transport RTP writer (SRTP and a connected handle of the socket set up once per
connection), one certificate fingerprint in descriptions, and a receive loop that takes
turns with the rest of the event loop."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from media import aiortc_hooks, ice
from media.client import BUNDLED


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


async def test_the_writer_sends_protected_packets_in_order_then_nothing_once_closed(pair):
    a, b, sending = pair
    got: list[RtpPacket] = []
    aiortc_hooks.tap_receiver(b.getTransceivers()[0].receiver, got.append)
    writer = aiortc_hooks.rtp_writer(sending.sender.transport)
    assert writer is aiortc_hooks.rtp_writer(sending.sender.transport)  # one per transport
    for seq in range(1, 101):
        assert writer.write(rtp(sending, seq, bytes([seq]) * 100)) is None
    deadline = time.monotonic() + 5
    while len(got) < 100 and time.monotonic() < deadline:  # noqa: ASYNC110 (a receive callback)
        await asyncio.sleep(0.01)
    assert [p.sequence_number for p in got] == list(range(1, 101))
    assert all(p.payload == bytes([p.sequence_number]) * 100 for p in got)
    # They left through a handle of the pair's socket connected to the peer.
    pair = sending.sender.transport.transport._connection._nominated[1]
    handle = writer._socket
    assert handle is not None and handle.getpeername() == pair.remote_addr[:2]
    assert handle.getsockname() == pair.protocol.transport.get_extra_info("sockname")
    # Too big for libsrtp's buffer: refused as pylibsrtp refuses it, nothing sent.
    with pytest.raises(ValueError):
        writer.write(rtp(sending, 101, bytes(1500)))
    await a.close()
    # Closed: the writer forgot the socket and closed its handle; a write is dropped, as
    # before connecting.
    assert writer._socket is None and handle.fileno() == -1
    assert writer.write(rtp(sending, 102, b"late")) is None
    await asyncio.sleep(0.1)
    assert len(got) == 100


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
    writer = aiortc_hooks.rtp_writer(sending.sender.transport)
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
