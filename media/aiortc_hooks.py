"""The few places where the SFU reaches into aiortc, kept together so upgrades are checked here.

aiortc is a full WebRTC endpoint: its receivers reassemble frames and decode them, its
senders encode frames. An SFU wants neither. These hooks keep everything else aiortc does
(ICE, DTLS, SRTP, RTX unwrapping, NACKs and receiver reports towards the publisher) and cut
the media path at the RTP level:

* :func:`tap_receiver` replaces the receiver's jitter buffer with a :class:`_Tap`, so no
  frame is ever assembled and no decoder is built (the idle decoder thread is ended as soon
  as aiortc starts it); each RTP packet goes to a callback instead.
* :class:`SilentTrack` is attached to senders so their encode loop waits forever and never
  builds an encoder; the SFU writes rewritten RTP straight through
  :class:`media.rtp_writer.RtpWriter`.
* :func:`intercept_rtcp` routes a sender's RTCP feedback (NACK, PLI, FIR) to the SFU.
* :func:`negotiated_codecs`, :func:`negotiated_extension_id`, :func:`sender_ssrc`,
  :func:`sender_rtx_ssrc`, :func:`set_stream_id` read and set what
  aiortc keeps private about transceivers and senders.
* :func:`use_ice_connection`, :func:`add_host_protocol`, :func:`nominated_components`,
  :func:`check_list` and :func:`datagrams_waiting` let :mod:`media.ice` gather the
  server's host candidates by its own rules (port range, announced address), hold
  relayed pairs back while a direct path may win, and take turns receiving.
* :func:`lazy_receive_estimators` spares the receivers of sending slots aiortc's
  bitrate estimator (a thousand objects each) until a packet arrives, which never does.
* :func:`one_fingerprint` makes each certificate state its SHA-256 fingerprint once,
  computed once, where aiortc computes three (SHA-256, -384, -512) for every m-section of
  every description it writes.
* :func:`extend_header_extensions`, :func:`route_rtp_first`, :func:`route_rtcp_of`,
  :func:`send_rtcp` and :func:`send_rtcp_bytes` let :mod:`media.ingest` receive simulcast
  sections, which aiortc's receiver cannot, and send publishers congestion feedback;
  :func:`tap_transport_feedback` hands :mod:`media.send_side` what subscribers send back.

* :func:`connected_route`, :func:`srtp_handles` and :func:`srtp_stream_list` give
  :mod:`media.rtp_writer` (the per-packet sending edge) a connected transport's pair and
  SRTP session, and what it calls libsrtp with, past pylibsrtp's checks.

Nothing outside this module touches a private attribute of aiortc, aioice or pylibsrtp.

The pinned aiortc version (1.16.x) is the one these name-mangled attributes were read from.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
import aiortc.rtcicetransport
import pylibsrtp._binding as _srtp_binding
from aioice.ice import StunProtocol
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import AnyRtcpPacket, RtpPacket
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from media import twcc

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
    park_receiver(receiver)


def cap_receiver_estimate(receiver: RTCRtpReceiver, cap: Callable[[], int]) -> None:
    """Clamp the REMB aiortc's receiver sends its publisher (from its own estimator) to
    ``cap()`` bits/s when that is not 0, so a publisher cap is not undone by it."""
    estimator = getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", None)
    if estimator is None:
        return
    original = estimator.add

    def add(*args: Any, **kwargs: Any) -> Any:
        remb = original(*args, **kwargs)
        limit = cap()
        if remb is not None and limit and remb[0] > limit:
            return limit, remb[1]
        return remb

    estimator.add = add


def park_receiver(receiver: RTCRtpReceiver) -> None:
    """End the decoder thread aiortc starts when ``receiver`` starts receiving: it will
    never get a frame (a tapped receiver, or one whose packets :mod:`media.ingest` takes),
    so it must hold no thread (nor keep the process alive)."""
    original_receive = receiver.receive

    async def receive(parameters: Any) -> None:
        await original_receive(parameters)
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


def quiet_sender_rtcp(sender: RTCRtpSender) -> None:
    """Replace aiortc's RTCP loop of ``sender`` (a sender report and SDES per sender every
    second, each its own SRTCP packet: a tenth of the server's CPU in a room of 50) by
    nothing: the SFU sends one compound report per subscriber connection instead
    (:func:`send_rtcp_bytes`). Must be called before the sender starts."""

    async def run_rtcp() -> None:
        sender._RTCRtpSender__rtcp_started.set()  # type: ignore[attr-defined]
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass
        sender._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]

    sender._run_rtcp = run_rtcp  # type: ignore[method-assign]


def sender_cname(sender: RTCRtpSender) -> str | None:
    return sender._RTCRtpSender__cname  # type: ignore[attr-defined]


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send a PLI for ``media_ssrc`` to the publisher through its receiver's RTCP."""
    await receiver._send_rtcp_pli(media_ssrc)


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiation settled for a transceiver (empty before it did)."""
    return list(transceiver._codecs)


def negotiated_extension_id(transceiver: RTCRtpTransceiver, uri: str) -> int | None:
    """The id negotiation gave a header extension on a transceiver (``None``: not agreed)."""
    return next((ext.id for ext in transceiver._headerExtensions if ext.uri == uri), None)


def sender_ssrc(sender: RTCRtpSender) -> int:
    return sender._ssrc


def sender_rtx_ssrc(sender: RTCRtpSender) -> int:
    """The SSRC aiortc announces for the sender's retransmissions (``ssrc-group:FID``)."""
    return sender._rtx_ssrc


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The ``msid`` stream the subscriber sees the track in (the publisher's participant)."""
    sender._stream_id = stream_id


def use_ice_connection(cls: type[aioice.ice.Connection]) -> None:
    """Make aiortc build ``cls`` for every ICE transport (idempotent)."""
    aiortc.rtcicetransport.Connection = cls  # type: ignore[misc]


def add_host_protocol(connection: aioice.ice.Connection, protocol: StunProtocol) -> None:
    """Register a socket bound by the caller as one of the connection's host sockets."""
    connection._protocols.append(protocol)


def datagrams_waiting(connection: aioice.ice.Connection) -> int:
    """How many received datagrams wait in an ICE connection's queue for its reader."""
    return connection._queue.qsize()


def nominated_components(connection: aioice.ice.Connection) -> set[int]:
    """The components an ICE connection has nominated a pair for."""
    return set(connection._nominated)


def check_list(connection: aioice.ice.Connection) -> list[aioice.ice.CandidatePair]:
    """An ICE connection's candidate pairs, best first."""
    return list(connection._check_list)


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


def gather_in_place() -> None:
    """Gather a bundled connection's candidates in the negotiating task itself.

    aiortc's ``setLocalDescription`` gathers through ``asyncio.gather``, and aioice's
    gathering through another: each wraps a coroutine in a task, and each task costs
    about three event-loop turns (its first step, its done callback, the waiter's wake-up)
    even when nothing is waited for: 8 turns per offer with the policy's binding, 2 of
    them the binding's own. On a busy media node a turn carries milliseconds of packet
    work, and a join's offer took 30-110 ms (traced in the room benchmark). With one ICE
    transport (the SFU bundles everything on one) the gatherer is awaited directly;
    several keep aiortc's concurrent gathering. Idempotent."""
    from aiortc import RTCPeerConnection

    concurrent = RTCPeerConnection._RTCPeerConnection__gather  # type: ignore[attr-defined]
    if getattr(concurrent, "_switchboard", False):
        return

    async def gather(pc: RTCPeerConnection) -> None:
        transports = pc._RTCPeerConnection__iceTransports  # type: ignore[attr-defined]
        if len(transports) == 1:
            await next(iter(transports)).iceGatherer.gather()
        else:
            await concurrent(pc)

    gather._switchboard = True  # type: ignore[attr-defined]
    RTCPeerConnection._RTCPeerConnection__gather = gather  # type: ignore[attr-defined]


async def gather_components(connection: aioice.ice.Connection) -> None:
    """aioice's ``gather_candidates`` for a connection whose
    ``get_component_candidates`` picks its own addresses: each component in turn, in
    this task (see :func:`gather_in_place`), and without listing the host's
    interfaces."""
    if connection._local_candidates_start:
        return
    connection._local_candidates_start = True
    for component in connection._components:
        connection._local_candidates += await connection.get_component_candidates(
            component=component, addresses=[]
        )
    connection._local_candidates_end = True


def one_fingerprint() -> None:
    """A description of 50 participants' tracks has about 60 m-sections, each with the
    certificate's fingerprints: aiortc computed three hashes per section, twice per
    negotiation (7 ms of the event loop on a busy node), and they were 20 kB of a 70 kB
    offer that every client then parses. One fingerprint is what browsers write; it must be
    one of the certificate's signature algorithm, which is SHA-256 for aiortc's ECDSA
    certificates. Idempotent."""
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, certificate_digest

    def fingerprints(certificate: RTCCertificate) -> list[RTCDtlsFingerprint]:
        cached: RTCDtlsFingerprint | None = getattr(certificate, "_switchboard_fingerprint", None)
        if cached is None:
            cached = RTCDtlsFingerprint("sha-256", certificate_digest(certificate._cert, "sha-256"))
            certificate._switchboard_fingerprint = cached  # type: ignore[attr-defined]
        return [cached]

    RTCCertificate.getFingerprints = fingerprints  # type: ignore[method-assign]


class _LazyEstimator:
    """Stands for a video receiver's ``RemoteBitrateEstimator`` until it gets a packet.

    aiortc gives every video receiver an estimator holding a thousand one-millisecond
    rate buckets, each an object. A subscriber's sending slots are transceivers too, whose
    receivers never receive: in a room of 50 that was half a million objects the garbage
    collector walked for nothing, and ten thousand more allocated by each join, setting
    off collections of 10-100 ms in the middle of it. Only ``add`` is used by aiortc
    (and wrapped by :func:`cap_receiver_estimate`)."""

    def __init__(self) -> None:
        self._real: Any = None

    def add(self, *args: Any, **kwargs: Any) -> Any:
        real = self._real
        if real is None:
            from aiortc.rate import RemoteBitrateEstimator

            real = self._real = RemoteBitrateEstimator()
        return real.add(*args, **kwargs)


def lazy_receive_estimators() -> None:
    """Make aiortc's video receivers build their bitrate estimator on their first packet
    (see :class:`_LazyEstimator`). Idempotent."""
    import aiortc.rtcrtpreceiver

    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _LazyEstimator  # type: ignore[misc,assignment]


RID_EXTENSIONS = (
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
)


def extend_header_extensions() -> None:
    """Let aiortc negotiate what it parses but never offers or accepts: the rid and
    repaired-rid extensions for video (simulcast layers are told apart by them) and the
    transport-wide sequence number for both kinds (congestion feedback to publishers).
    Idempotent."""
    from aiortc.codecs import HEADER_EXTENSIONS
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

    wanted = {"video": (*RID_EXTENSIONS, twcc.URI), "audio": (twcc.URI,)}
    # One id per URI over both kinds: bundled sections must not map an id two ways.
    ids = {ext.uri: ext.id for exts in HEADER_EXTENSIONS.values() for ext in exts}
    for kind, uris in wanted.items():
        extensions = HEADER_EXTENSIONS[kind]
        for uri in uris:
            if uri not in {ext.uri for ext in extensions}:
                if uri not in ids:
                    ids[uri] = max(ids.values()) + 1
                extensions.append(RTCRtpHeaderExtensionParameters(id=ids[uri], uri=uri))


def route_rtp_first(transport: RTCDtlsTransport, route: Callable[[RtpPacket], Any]) -> None:
    """Ask ``route(packet)`` for each RTP packet before aiortc's router does; a result of
    ``None`` leaves the packet to aiortc. The result gets ``_handle_rtp_packet``."""
    router = transport._rtp_router
    original = router.route_rtp

    def route_rtp(packet: RtpPacket) -> Any:
        target = route(packet)
        return target if target is not None else original(packet)

    router.route_rtp = route_rtp  # type: ignore[method-assign]


def tap_transport_feedback(transport: RTCDtlsTransport, handler: Callable[[bytes], None]) -> None:
    """Hand ``handler`` each transport feedback packet (RTPFB, format 15) the peer sends on
    ``transport``, whole; aiortc gets the rest of the compound (it would parse a feedback
    as a NACK and route it by whatever SSRC it names). The last handler set wins."""
    first = not hasattr(transport, "_switchboard_feedback")
    transport._switchboard_feedback = handler  # type: ignore[attr-defined]
    if not first:
        return
    original = transport._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        feedback, rest = twcc.split_feedback(data)
        for packet in feedback:
            transport._switchboard_feedback(packet)  # type: ignore[attr-defined]
        if rest:
            await original(rest)

    transport._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]


def route_rtcp_of(transport: RTCDtlsTransport, ssrc: int, receiver: Any) -> None:
    """RTCP about ``ssrc`` (its sender reports) goes to ``receiver._handle_rtcp_packet``."""
    transport._rtp_router.ssrc_table[ssrc] = receiver


async def send_rtcp(transport: RTCDtlsTransport, packet: AnyRtcpPacket) -> None:
    """Send an RTCP packet on a transport; nothing if it is not connected (any more)."""
    await send_rtcp_bytes(transport, bytes(packet))


async def send_rtcp_bytes(transport: RTCDtlsTransport, data: bytes) -> bool:
    """Send serialized RTCP; ``False`` if the transport is closed (nothing is sent before
    it connects, nor after it closed)."""
    if transport._state is State.CLOSED or transport._state is State.FAILED:
        return False
    try:
        await transport._send_rtp(data)
    except ConnectionError:
        pass
    return True


# -- the RTP writer's view of a transport and of libsrtp (media.rtp_writer) ------------------

#: libsrtp's ``srtp_protect``, called with a session's own buffer (see :func:`srtp_handles`).
srtp_protect = _srtp_lib.srtp_protect


def connected_route(transport: RTCDtlsTransport) -> tuple[aioice.ice.CandidatePair, Any] | None:
    """A DTLS transport's nominated pair (component 1) and the SRTP session it sends
    with, or ``None`` while it is not connected."""
    if transport._state is not State.CONNECTED:
        return None
    pair = transport.transport._connection._nominated.get(1)
    return None if pair is None else (pair, transport._tx_srtp)


def srtp_handles(session: Any) -> tuple[Any, Any, Any]:
    """What :data:`srtp_protect` takes of a pylibsrtp session: its context, and its
    1,500-byte buffer as cffi sees it and as Python slices it."""
    return session._srtp[0], session._cdata, session._buffer


def srtp_length_cell() -> Any:
    """A cell for :data:`srtp_protect`'s in-out length."""
    return _srtp_ffi.new("int *")


def srtp_addresses(session: Any) -> tuple[int, int]:
    """For compiled callers: the address of ``srtp_protect`` in the libsrtp that made
    ``session``, and the address of ``session``'s context."""
    return _srtp_address("srtp_protect"), int(_srtp_ffi.cast("uintptr_t", session._srtp[0]))


@functools.cache
def srtp_stream_list() -> tuple[int, int, int] | None:
    """Addresses of libsrtp's stream-list functions (get, remove, insert), for the
    compiled sender's move-to-front (``reorder`` in ``media/_rtpsend.c``), or ``None``
    where this libsrtp has none or its session does not start with the list, as libsrtp
    2.5 to 2.7 do (checked on a session of our own: the list must find the stream
    libsrtp finds)."""
    try:
        get, remove, insert, get_stream = (
            _srtp_address(name)
            for name in (
                "srtp_stream_list_get",
                "srtp_stream_list_remove",
                "srtp_stream_list_insert",
                "srtp_get_stream",
            )
        )
    except AttributeError:
        return None
    lookup = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)
    session = Session(Policy(key=bytes(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    session.protect(struct.pack("!BBHII", 0x80, 0, 1, 0, 0x5B5B5B5B) + bytes(8))
    context = srtp_addresses(session)[1]
    first = ctypes.c_void_p.from_address(context).value
    ssrc, other = socket.htonl(0x5B5B5B5B), socket.htonl(0x12345678)
    found = lookup(get_stream)(context, ssrc)
    if found is None or lookup(get)(first, ssrc) != found or lookup(get)(first, other) is not None:
        return None
    return get, remove, insert


@functools.cache
def _srtp_address(name: str) -> int:
    """The address of an exported function of the libsrtp pylibsrtp loaded."""
    function = getattr(ctypes.CDLL(_srtp_binding.__file__), name)
    return ctypes.cast(function, ctypes.c_void_p).value  # type: ignore[return-value]
