"""The few places where the SFU reaches into aiortc, kept together so upgrades are checked here.

aiortc is a full WebRTC endpoint: its receivers reassemble frames and decode them, its
senders encode frames. An SFU wants neither. These hooks keep everything else aiortc does
(ICE, DTLS, SRTP, RTX unwrapping, NACKs and receiver reports towards the publisher) and cut
the media path at the RTP level:

* :func:`tap_receiver` replaces the receiver's jitter buffer with a :class:`_Tap`, so no
  frame is ever assembled and no decoder is built (the idle decoder thread is ended as soon
  as aiortc starts it); each RTP packet goes to a callback instead.
* :class:`SilentTrack` is attached to senders so their encode loop waits forever and never
  builds an encoder; the SFU writes rewritten RTP straight through :func:`send_rtp`.
* :func:`intercept_rtcp` routes a sender's RTCP feedback (NACK, PLI, FIR) to the SFU.
* :func:`send_rtp` writes a rewritten packet straight to a transport's selected pair;
  :func:`negotiated_codecs`, :func:`sender_ssrc`, :func:`set_stream_id` read and set what
  aiortc keeps private about transceivers and senders.
* :func:`use_ice_connection` and :func:`add_host_protocol` let :mod:`media.ice` gather the
  server's host candidates by its own rules (port range, announced address).

Nothing outside this module touches a private attribute of aiortc or aioice.

The pinned aiortc version (1.16.x) is the one these name-mangled attributes were read from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc.rtcicetransport
from aioice.ice import StunProtocol
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import AnyRtcpPacket, RtpPacket

PacketHandler = Callable[[RtpPacket], None]
RtcpHandler = Callable[[AnyRtcpPacket], Awaitable[None]]


class _Tap:
    """Stands where the receiver's JitterBuffer was: collects packets, never frames."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[RtpPacket] = []

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.pending.append(packet)
        return False, None


def tap_receiver(receiver: RTCRtpReceiver, on_packet: PacketHandler) -> None:
    """Send every RTP packet ``receiver`` accepts to ``on_packet`` instead of a decoder."""
    tap = _Tap()
    receiver._RTCRtpReceiver__jitter_buffer = tap  # type: ignore[attr-defined]
    original = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        await original(packet, arrival_time_ms)
        if tap.pending:
            packets, tap.pending = tap.pending, []
            for item in packets:
                on_packet(item)

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]
    original_receive = receiver.receive

    async def receive(parameters: Any) -> None:
        await original_receive(parameters)
        # The decoder thread aiortc just started will never get a frame: end it now, so
        # a tapped receiver holds no thread (and nothing can keep the process alive).
        stop_decoder(receiver)

    receiver.receive = receive  # type: ignore[method-assign]


def stop_decoder(receiver: RTCRtpReceiver) -> None:
    """End a receiver's decoder thread (idempotent)."""
    receiver._RTCRtpReceiver__stop_decoder()  # type: ignore[attr-defined]


class SilentTrack(MediaStreamTrack):
    """A track that never yields: keeps an aiortc sender's encode loop parked forever."""

    def __init__(self, kind: str, track_id: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        if track_id is not None:
            self._id = track_id

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


def intercept_rtcp(sender: RTCRtpSender, handler: RtcpHandler) -> RtcpHandler:
    """Route ``sender``'s RTCP to ``handler``; returns aiortc's own handler (for RR stats)."""
    original = sender._handle_rtcp_packet
    sender._handle_rtcp_packet = handler  # type: ignore[method-assign]
    return original


def send_rtp(transport: RTCDtlsTransport, data: bytes) -> Awaitable[None] | None:
    """Protect and send one RTP packet; synchronous on a host socket, as most are.

    Returns an awaitable only when the selected pair is relayed through TURN (aioice's TURN
    send is a coroutine). Packets for a transport that is not connected yet are dropped,
    as a real network would.
    """
    if transport._state is not State.CONNECTED:
        return None
    pair = transport.transport._connection._nominated.get(1)
    if pair is None:
        return None
    protected = transport._tx_srtp.protect(data)
    protocol = pair.protocol
    if type(protocol) is StunProtocol:
        protocol.transport.sendto(protected, pair.remote_addr)
        return None
    return protocol.send_data(protected, pair.remote_addr)


def set_sender_report(
    sender: RTCRtpSender, ntp: int, rtp_ts: int, packets: int, octets: int
) -> None:
    """Feed the sender's RTCP SR loop with what the SFU actually sent on its SSRC."""
    sender._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_ts  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for ``media_ssrc`` to the publisher through its receiver's RTCP."""
    await receiver._send_rtcp_pli(media_ssrc)


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiation settled for a transceiver (empty before it did)."""
    return list(transceiver._codecs)


def sender_ssrc(sender: RTCRtpSender) -> int:
    return sender._ssrc


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The ``msid`` stream the subscriber sees the track in (the publisher's participant)."""
    sender._stream_id = stream_id


def use_ice_connection(cls: type[aioice.ice.Connection]) -> None:
    """Make aiortc build ``cls`` for every ICE transport (idempotent)."""
    aiortc.rtcicetransport.Connection = cls  # type: ignore[misc]


def add_host_protocol(connection: aioice.ice.Connection, protocol: StunProtocol) -> None:
    """Register a socket bound by the caller as one of the connection's host sockets."""
    connection._protocols.append(protocol)


def nominated_pair(pc: Any) -> tuple[aioice.ice.Connection, aioice.ice.CandidatePair] | None:
    """The ICE connection under a peer connection and the pair it nominated (component 1),
    or ``None`` before ICE completes."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None:
            continue
        connection = dtls.transport._connection
        pair = connection._nominated.get(1)
        if pair is not None:
            return connection, pair
    return None
