"""Unit tests of the sending side (media.send_slot): a subscriber whose transport is
asynchronous (a TURN relay) gets a bounded queue of its own, so a stalled or slow relay
delays neither the publisher's receive loop nor any other subscriber.

The transports are fakes (the socket write is replaced); the slots, the published track
and the aiortc peer connections they belong to are real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from media.published_track import PublishedTrack, TrackInfo
from media.relayed_writes import RELAY_QUEUE_LIMIT
from media.rtp_writer import Writer
from media.send_slot import SendSlot

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


async def no_pli(ssrc: int) -> None:
    raise AssertionError("audio needs no keyframe")


@pytest.fixture
async def subscribers() -> AsyncIterator[tuple[PublishedTrack, SendSlot, SendSlot]]:
    """One published audio track and two subscribers, each on its own peer connection."""
    pcs = [RTCPeerConnection(), RTCPeerConnection()]
    track = PublishedTrack(
        TrackInfo("TR_a", "PA_p", "pub", "audio", "microphone", OPUS.mimeType),
        OPUS,
        1.0,
        no_pli,
    )
    slots = []
    for pc in pcs:
        slot = SendSlot(pc.addTransceiver("audio", direction="sendonly"))
        slot.bind(track)
        slot.payload_type = OPUS.payloadType
        track.attach(slot)
        slots.append(slot)
    yield track, slots[0], slots[1]
    for slot in slots:
        slot.close()
    for pc in pcs:
        await pc.close()


class FakeWriter(Writer):
    """Stands for a slot's transport writer: ``send_rtp(transport, data)`` decides."""

    def __init__(self, slot: SendSlot, send_rtp: Callable[[object, bytes], object]) -> None:
        self.transport = slot.sender.transport
        self.send_rtp = send_rtp

    def write(self, data: bytes) -> object:
        return self.send_rtp(self.transport, data)


def fake_writes(slots: tuple[SendSlot, ...], send_rtp: Callable[[object, bytes], object]) -> None:
    for slot in slots:
        slot.writer = FakeWriter(slot, send_rtp)  # type: ignore[assignment]


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960, ssrc=7)
    p.payload = b"\xfc" + seq.to_bytes(2, "big")
    return p


async def test_a_stalled_relay_delays_nobody_and_drops_only_its_own(subscribers):
    track, direct, relayed = subscribers
    stalled = asyncio.Event()  # never set until the end: the relay does not move
    written: list[bytes] = []
    attempts: list[int] = []

    def send_rtp(transport, data):
        if transport is relayed.sender.transport:

            async def relay() -> None:
                attempts.append(RtpPacket.parse(data).sequence_number)
                await stalled.wait()

            return relay()
        written.append(data)
        return None

    fake_writes((direct, relayed), send_rtp)
    for seq in range(1000):
        assert track.on_packet(packet(seq)) is None  # the receive loop never waits
    # The direct subscriber got every packet at once, in order.
    assert [RtpPacket.parse(d).sequence_number - direct.seq_offset for d in written] == list(
        range(1000)
    )
    # The relayed one holds a bounded backlog; what did not fit is dropped and counted.
    await asyncio.sleep(0.01)
    assert len(attempts) == 1  # its first write is stuck in the relay
    assert len(relayed._relayed) == RELAY_QUEUE_LIMIT - 1
    assert relayed.packets_dropped == 1000 - RELAY_QUEUE_LIMIT
    assert relayed.stats()["packetsDropped"] == relayed.packets_dropped
    stalled.set()
    await asyncio.sleep(0.05)
    # Once the relay moves, the kept packets go out in order: the oldest ones.
    first = attempts[0]
    assert attempts == list(range(first, first + RELAY_QUEUE_LIMIT))


async def test_a_slow_relay_gets_everything_in_order(subscribers):
    track, direct, relayed = subscribers
    relayed_out: list[int] = []

    def send_rtp(transport, data):
        if transport is relayed.sender.transport:

            async def relay() -> None:
                await asyncio.sleep(0.001)
                relayed_out.append(RtpPacket.parse(data).sequence_number)

            return relay()
        return None

    fake_writes((direct, relayed), send_rtp)
    for seq in range(50):
        track.on_packet(packet(seq))
        await asyncio.sleep(0.002)  # a publisher's pace, slower than the relay
    await asyncio.sleep(0.05)
    offset = relayed.seq_offset
    assert [(s - offset) % 65536 for s in relayed_out] == list(range(50))
    assert relayed.packets_dropped == 0


async def test_a_failing_relay_write_does_not_stop_the_queue(subscribers):
    track, direct, relayed = subscribers
    done: list[int] = []
    tried: list[int] = []

    def send_rtp(transport, data):
        if transport is relayed.sender.transport:
            seq = RtpPacket.parse(data).sequence_number

            async def relay() -> None:
                tried.append(seq)
                if len(tried) == 2:
                    raise OSError("relay refused")
                done.append(seq)

            return relay()
        return None

    fake_writes((direct, relayed), send_rtp)
    for seq in range(5):
        track.on_packet(packet(seq))
    await asyncio.sleep(0.02)
    assert len(done) == 4  # the failed one is lost, the others went out
