"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01), sent to publishers so the browser's own estimator sizes its uplink.

A browser publishing to us stamps every packet of the connection (all SSRCs, audio too)
with a transport-wide sequence number. Each :data:`INTERVAL` the server tells it which of
them arrived and when (RTCP transport feedback); the browser's GoogCC turns that into a
delay- and loss-based estimate, probes upward and gives its simulcast layers the bitrate
they fit in. Without it (REMB only) Chrome climbs from 300 kbps by about 8 % a second and
takes half a minute to send a 720p layer; with it, a second or two.

:class:`FeedbackRecorder` keeps the arrivals; :func:`build_feedback` writes one feedback
packet: two-bit status vector chunks (seven packets each: not received, received with a
small delta, received with a large or negative one) followed by the receive deltas in
250 µs units, relative to a reference time in 64 ms units.
"""

from __future__ import annotations

import struct

URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
#: How often feedback goes out while packets arrive (libwebrtc's default is 100 ms).
INTERVAL = 0.05
#: At most this many sequence numbers per feedback packet (keeps one packet well under the MTU).
MAX_STATUS = 300

RTCP_RTPFB = 205
FMT_TRANSPORT_CC = 15
NOT_RECEIVED, SMALL, LARGE = 0, 1, 2
DELTA_UNIT_US = 250
REFERENCE_UNIT_US = 64_000


class FeedbackRecorder:
    """The arrivals of one transport's packets, by transport-wide sequence number, until
    they are reported."""

    __slots__ = ("_arrivals", "_base", "_count", "_highest")

    def __init__(self) -> None:
        self._arrivals: dict[int, int] = {}  # unwrapped sequence number -> arrival (µs)
        self._base: int | None = None  # first sequence number not reported yet
        self._highest: int | None = None  # highest unwrapped sequence number seen
        self._count = 0  # feedback packets sent (8-bit counter on the wire)

    def add(self, seq: int, arrival_us: int) -> None:
        unwrapped = self._unwrap(seq)
        if self._base is None:
            self._base = unwrapped
        if unwrapped < self._base:
            return  # reported as lost already; too late
        self._arrivals.setdefault(unwrapped, arrival_us)
        if self._highest is None or unwrapped > self._highest:
            self._highest = unwrapped

    def _unwrap(self, seq: int) -> int:
        if self._highest is None:
            return seq
        delta = (seq - self._highest + 0x8000) % 0x10000 - 0x8000
        return self._highest + delta

    @property
    def pending(self) -> bool:
        return bool(self._arrivals)

    def take(self, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """Feedback packets for everything that arrived since the last call."""
        packets = []
        while self._arrivals and self._base is not None and self._highest is not None:
            end = min(self._highest, self._base + MAX_STATUS - 1)
            arrivals = [self._arrivals.pop(s, None) for s in range(self._base, end + 1)]
            packets.append(
                build_feedback(
                    sender_ssrc, media_ssrc, self._base & 0xFFFF, arrivals, self._count & 0xFF
                )
            )
            self._count += 1
            self._base = end + 1
        return packets


def build_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    arrivals: list[int | None],
    feedback_count: int,
) -> bytes:
    """One transport feedback packet for ``arrivals`` (arrival time in µs, or ``None`` for
    a packet that did not arrive), the first of which is ``base_seq``. At least one must
    have arrived (the reference time is taken from the first that did)."""
    first = next(a for a in arrivals if a is not None)
    reference = first // REFERENCE_UNIT_US
    previous = reference * REFERENCE_UNIT_US
    symbols: list[int] = []
    deltas = bytearray()
    for arrival in arrivals:
        if arrival is None:
            symbols.append(NOT_RECEIVED)
            continue
        delta = round((arrival - previous) / DELTA_UNIT_US)
        previous += delta * DELTA_UNIT_US  # what the receiver will reconstruct
        if 0 <= delta <= 0xFF:
            symbols.append(SMALL)
            deltas.append(delta)
        else:
            symbols.append(LARGE)
            deltas += struct.pack("!h", max(-0x8000, min(0x7FFF, delta)))
    chunks = bytearray()
    for start in range(0, len(symbols), 7):
        group = symbols[start : start + 7]
        group += [NOT_RECEIVED] * (7 - len(group))
        chunk = 0xC000  # status vector chunk, two-bit symbols
        for i, symbol in enumerate(group):
            chunk |= symbol << (12 - 2 * i)
        chunks += struct.pack("!H", chunk)
    body = (
        struct.pack(
            "!IIHHI",
            sender_ssrc,
            media_ssrc,
            base_seq,
            len(arrivals),
            ((reference & 0xFFFFFF) << 8) | feedback_count,
        )
        + chunks
        + deltas
    )
    padding = -len(body) % 4
    if padding:
        body += bytes(padding - 1) + bytes([padding])
    words = (len(body) + 4) // 4 - 1
    first_byte = 0x80 | (0x20 if padding else 0) | FMT_TRANSPORT_CC
    return struct.pack("!BBH", first_byte, RTCP_RTPFB, words) + body


def split_feedback(data: bytes) -> tuple[list[bytes], bytes]:
    """The transport feedback packets of a compound RTCP packet, and the rest of it (what
    aiortc should parse: it would read a feedback as a NACK). A truncated packet ends the
    compound: what follows it is left to aiortc, which reports the error."""
    feedback: list[bytes] = []
    rest: list[bytes] = []
    pos, end = 0, len(data)
    while pos + 4 <= end:
        length = (int.from_bytes(data[pos + 2 : pos + 4], "big") + 1) * 4
        if pos + length > end:
            break
        packet = data[pos : pos + length]
        if data[pos + 1] == RTCP_RTPFB and data[pos] & 0x1F == FMT_TRANSPORT_CC:
            feedback.append(packet)
        else:
            rest.append(packet)
        pos += length
    if not feedback:
        return feedback, data
    return feedback, b"".join(rest) + data[pos:]


def parse_feedback(data: bytes) -> tuple[int, list[int | None]]:
    """The base sequence number and the arrival times (µs, ``None`` for lost) one feedback
    packet reports (a subscriber's, read by :mod:`media.send_side`; ours, in tests).
    Raises ``struct.error``, ``IndexError`` or ``ValueError`` when it is malformed."""
    words = struct.unpack_from("!H", data, 2)[0]
    end = (words + 1) * 4
    if data[0] & 0x20:
        end -= data[end - 1]
    base, count, ref_count = struct.unpack_from("!HHI", data, 12)
    reference = ref_count >> 8
    if reference & 0x800000:
        reference -= 1 << 24
    pos = 20
    symbols: list[int] = []
    while len(symbols) < count:
        (chunk,) = struct.unpack_from("!H", data, pos)
        pos += 2
        if not chunk & 0x8000:  # run length
            symbols += [(chunk >> 13) & 0x3] * (chunk & 0x1FFF)
        elif chunk & 0x4000:  # two-bit vector
            symbols += [(chunk >> (12 - 2 * i)) & 0x3 for i in range(7)]
        else:  # one-bit vector
            symbols += [(chunk >> (13 - i)) & 0x1 for i in range(14)]
    symbols = symbols[:count]
    time = reference * REFERENCE_UNIT_US
    arrivals: list[int | None] = []
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            arrivals.append(None)
            continue
        if symbol == SMALL:
            delta = data[pos]
            pos += 1
        else:
            (delta,) = struct.unpack_from("!h", data, pos)
            pos += 2
        time += delta * DELTA_UNIT_US
        arrivals.append(time)
    if pos > end:
        raise ValueError("transport feedback deltas overrun the packet")
    return base, arrivals
