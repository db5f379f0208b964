"""What a subscriber slot sends besides the forwarded stream: retransmissions answering
its NACKs, from the layers' caches through the slot's record of what it sent (as first
sent: same numbers, same VP8 renumbering), and padding for its estimator to see more
traffic (probing). Both go on the slot's RTX stream where negotiated (RFC 4588), and are
stamped like the rest of its video."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from media import vp8
from media.rtp import SEQ_MOD, TS_MOD, repeat

if TYPE_CHECKING:
    from media.published_track import PublishedTrack

#: Padding per probe packet (RFC 3550 padding, on the RTX stream): the most one byte says.
PADDING = 255


class Slot(Protocol):
    """What repairs use of a subscriber's slot (:class:`media.send_slot.SendSlot`)."""

    track: PublishedTrack | None
    sent: Any  # what was sent, by sequence number: get(seq) -> (layer seq, run) | None
    payload_type: int | None
    ssrc: int
    rtx_payload_type: int | None
    rtx_ssrc: int
    rtx_seq: int
    stamp: Callable[[int], bytes] | None
    last_ts_out: int
    last_sent_at: float
    retransmitted: int
    padding_bytes: int

    def write(self, data: bytes) -> None:
        """Send one whole RTP packet."""


def retransmit(slot: Slot, track: PublishedTrack, lost: list[int]) -> None:
    """Answer a subscriber's NACK from the layer's cache; never bother the publisher."""
    sent = slot.sent
    for seq in lost:
        found = sent.get(seq) if sent is not None else None
        original = found[1].layer.cache.get(found[0]) if found is not None else None
        if found is None or original is None:
            track.nacks_missed += 1
            continue
        run = found[1]
        payload = original[3]
        if run.numbers is not None:
            d = vp8.parse(payload)
            if d is not None:
                payload = vp8.renumber(payload, d, run.numbers)
        track.nacks_answered += 1
        slot.retransmitted += 1
        ts = (original[1] + run.ts_offset) % TS_MOD
        pt, out_seq, ssrc, body = slot.payload_type, seq, slot.ssrc, payload
        if slot.rtx_payload_type is not None:
            # RFC 4588: the original number leads the payload, on the RTX stream
            slot.rtx_seq = (slot.rtx_seq + 1) % SEQ_MOD
            pt, out_seq, ssrc = slot.rtx_payload_type, slot.rtx_seq, slot.rtx_ssrc
            body = struct.pack("!H", seq) + payload
        # stamped like the rest: it takes the link's room too, and the estimate must
        # see it arrive (or not)
        ext = slot.stamp(len(body)) if slot.stamp is not None else b""
        slot.write(repeat(original, pt, out_seq, ts, ssrc, body, ext))


def pad(slot: Slot, packets: int) -> int:
    """Send ``packets`` padding-only packets on the RTX stream (for the subscriber's
    estimator to see more traffic: probing); returns the bytes sent (0 without RTX)."""
    rtx_pt, track = slot.rtx_payload_type, slot.track
    if rtx_pt is None or track is None:
        return 0
    ts = slot.last_ts_out + int((time.monotonic() - slot.last_sent_at) * track.clock_rate)
    stamp = slot.stamp
    first = 0xB0 if stamp else 0xA0  # version 2, padding, extension
    body = bytes(PADDING - 1) + bytes([PADDING])
    for _ in range(packets):
        slot.rtx_seq = (slot.rtx_seq + 1) % SEQ_MOD
        header = struct.pack("!BBHII", first, rtx_pt, slot.rtx_seq, ts % TS_MOD, slot.rtx_ssrc)
        slot.write(header + (stamp(PADDING) if stamp else b"") + body)
    slot.padding_bytes += packets * PADDING
    return packets * PADDING
