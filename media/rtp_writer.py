"""The RTP writer: the SFU's per-packet sending edge, into aiortc's DTLS transport (its SRTP
session and its nominated candidate pair, reached through :mod:`media.aiortc_hooks`) and
libsrtp, past pylibsrtp's checks; in pure Python, or with a forwarded packet's header,
protection and ``send`` in one call into the compiled sender (``media/_rtpsend.c``), which
also keeps libsrtp's list of a session's streams in the order they are used."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from aioice.ice import StunProtocol
from aiortc.rtcdtlstransport import RTCDtlsTransport
from pylibsrtp import SRTP_MAX_TRAILER_LEN

from media import aiortc_hooks

try:
    from media import _rtpsend
except ImportError:  # built without a C compiler: the pure-Python writer only
    _rtpsend = None  # type: ignore[assignment]

#: Whether the compiled sending edge (``media/_rtpsend.c``) was built with this install.
COMPILED_WRITER = _rtpsend is not None
#: The first byte of a forwarded packet's header, without and with an extension block.
_PLAIN, _EXTENDED = 0x80, 0x90
_HEADER = struct.Struct("!BBHII")
#: pylibsrtp's buffer is 1,500 bytes; a packet must leave room for the SRTP trailer.
_MAX_PROTECTED = 1500 - SRTP_MAX_TRAILER_LEN


class Writer(ABC):
    """What sends a subscriber's RTP: synchronously (``None``), or an awaitable to queue
    when the transport is asynchronous (a TURN relay). A writer need only :meth:`write`
    whole packets; :meth:`forward` builds one and writes it unless the writer does both
    at once (the compiled writer)."""

    __slots__ = ()

    @abstractmethod
    def write(self, data: bytes) -> Awaitable[None] | None:
        """Send one whole RTP packet."""

    def forward(
        self, second: int, seq: int, ts: int, ssrc: int, extension: bytes, body: bytes
    ) -> Awaitable[None] | None:
        """Send a forwarded packet: ``body`` under a new header whose second byte is
        ``second`` (marker and payload type), with ``extension`` (a whole extension block,
        or ``b""``). The publisher's header and extensions are not carried."""
        header = _HEADER.pack(_EXTENDED if extension else _PLAIN, second, seq, ts, ssrc)
        return self.write(header + extension + body if extension else header + body)


def rtp_writer(transport: RTCDtlsTransport, compiled: bool = True) -> RtpWriter:
    """The one :class:`RtpWriter` of ``transport`` (every sender bundled on it shares it):
    with the compiled sending edge if ``compiled`` and it was built (the first caller
    decides, and a media node's slots all ask the same)."""
    writer: RtpWriter | None = getattr(transport, "_switchboard_writer", None)
    if writer is None:
        writer = (CompiledRtpWriter if compiled and COMPILED_WRITER else RtpWriter)(transport)
        transport._switchboard_writer = writer  # type: ignore[attr-defined]
    return writer


class RtpWriter(Writer):
    """Protects and sends RTP on one DTLS transport's selected candidate pair.

    A subscriber's transport carries every packet forwarded to it, some 600 a second in a
    room of 50. What a write needs (the SRTP context, the socket's ``sendto``, the peer's
    address) is looked up once the transport is connected, not per packet, and forgotten
    when its state changes (closed or failed). Once connected, aioice never changes the
    nominated pair. Protection calls libsrtp directly with a length cell allocated once,
    where pylibsrtp's ``protect`` allocates one and re-checks its argument per packet.

    Packets leave through a second handle on the pair's socket, connected to the peer and
    written with ``send``: the kernel then skips the route lookup of an addressed
    ``sendto``, and uvloop's checks of each call are skipped too (4.65 -> 4.0 us per
    datagram on loopback). Connecting makes the socket take datagrams from that peer only,
    which is all a nominated pair receives, and report ICMP errors from it, which uvloop
    hands to aioice's ``error_received`` (a debug log). A full socket buffer hands the
    packet to uvloop, which queues it as before.
    """

    __slots__ = (
        "_addr",
        "_buffer",
        "_cdata",
        "_length",
        "_send",
        "_sendto",
        "_socket",
        "_srtp",
        "_transport",
    )

    def __init__(self, transport: RTCDtlsTransport) -> None:
        self._transport = transport
        self._send: Callable[[bytes], int] | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._socket: socket.socket | None = None
        self._addr: Any = None
        self._srtp: Any = None
        self._cdata: Any = None
        self._buffer: Any = None
        self._length = aiortc_hooks.srtp_length_cell()
        transport.on("statechange", self._forget)

    def _forget(self) -> None:
        self._send = self._sendto = None
        if self._socket is not None:
            self._socket.close()  # our handle only: aioice closes the socket itself
            self._socket = None

    def write(self, data: bytes) -> Awaitable[None] | None:
        """Send one whole RTP packet (protected here)."""
        send = self._send
        if send is not None:
            length = self._length
            size = length[0] = len(data)
            if size <= _MAX_PROTECTED:
                self._buffer[0:size] = data
                if not aiortc_hooks.srtp_protect(self._srtp, self._cdata, length):
                    protected = self._buffer[0 : length[0]]
                    try:
                        send(protected)
                    except BlockingIOError:
                        self._sendto(protected, self._addr)  # type: ignore[misc]
                    except OSError:
                        pass  # the peer's port is gone (ICMP): lost, as a datagram may be
                    return None
        return self._write_slowly(data)

    def _write_slowly(self, data: bytes) -> Awaitable[None] | None:
        """The checks of every write, and what lets the next ones skip them. A packet
        the fast path refused (too big for the buffer) keeps the handle it has."""
        route = aiortc_hooks.connected_route(self._transport)
        if route is None:
            self._forget()
            return None
        pair, session = route
        protected = session.protect(data)  # raises what libsrtp reports
        protocol = pair.protocol
        if type(protocol) is not StunProtocol:
            return protocol.send_data(protected, pair.remote_addr)
        protocol.transport.sendto(protected, pair.remote_addr)
        if self._socket is not None:
            return None
        sock = _connected_handle(protocol.transport, pair.remote_addr)
        if sock is None:
            return None
        self._srtp, self._cdata, self._buffer = aiortc_hooks.srtp_handles(session)
        self._addr = pair.remote_addr
        self._sendto = protocol.transport.sendto
        self._socket = sock
        self._send = sock.send
        self._connected(session)
        return None

    def _connected(self, session: Any) -> None:
        """The fast path is set up (``session`` is the transport's SRTP session)."""


class CompiledRtpWriter(RtpWriter):
    """The writer with the compiled sending edge (``media/_rtpsend.c``): a forwarded
    packet's header, protection and ``send`` are one C call, where the pure-Python
    :meth:`RtpWriter.forward` spends about as much in the interpreter as in the system
    call. What the C call leaves (a packet too big or refused by libsrtp, a full socket
    buffer, a writer not yet connected) goes the pure-Python way, so both writers behave
    alike; ``tests/test_rtp_writer.py`` runs on both.

    The C sender holds the socket's descriptor and the SRTP context as plain numbers, so
    it is closed before either can go: when the transport's state changes, as the
    connected handle is. It is one object for the writer's life, open while connected,
    so that the slots' compiled steady steps (:mod:`media.numbering`) can hold it."""

    __slots__ = ("_session", "sender")

    def __init__(self, transport: RTCDtlsTransport) -> None:
        assert _rtpsend is not None
        #: sends while the transport is connected (every send is refused before and after)
        self.sender: Any = _rtpsend.Sender()
        self._session: Any = None  # keeps the context the sender protects with alive
        super().__init__(transport)

    def forward(
        self, second: int, seq: int, ts: int, ssrc: int, extension: bytes, body: bytes
    ) -> Awaitable[None] | None:
        done = self.sender.send(second, seq, ts, ssrc, extension, body)
        if done == 0:
            return None
        if done == 2:
            return self.send_pending()
        return RtpWriter.forward(self, second, seq, ts, ssrc, extension, body)

    def send_pending(self) -> None:
        """Hand the datagram the sender could not send (its socket was full) to the event
        loop's queue."""
        self._sendto(self.sender.pending(), self._addr)  # type: ignore[misc]

    def _connected(self, session: Any) -> None:
        assert self._socket is not None
        self._session = session
        protect, context = aiortc_hooks.srtp_addresses(session)
        self.sender.open(
            self._socket.fileno(),
            protect,
            context,
            _MAX_PROTECTED,
            aiortc_hooks.srtp_stream_list(),
        )

    def _forget(self) -> None:
        self.sender.close()  # before the descriptor it writes to is closed
        self._session = None
        super()._forget()


def _connected_handle(transport: asyncio.DatagramTransport, addr: Any) -> socket.socket | None:
    """A handle of our own on ``transport``'s socket, connected to ``addr`` (``None`` if
    the socket cannot be had or connected: the writer then keeps the addressed path)."""
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        sock.setblocking(False)
        sock.connect(addr[:2])
    except OSError:
        sock.close()
        return None
    return sock
