"""One subscriber slot's numbering: the state a forwarded packet's step reads and moves.

A slot (:class:`media.send_slot.SendSlot`) rewrites every packet it forwards: sequence
number and timestamp shifted by the run's offsets, VP8 PictureID and TL0PICIDX by its
renumbering, the last numbers sent kept for the next layer switch, what was sent kept for
NACKs, its counters. That state lives in one object, so that the step can run in Python or
compiled on the same numbers:

- :class:`Numbering` (pure Python) holds the fields; the slot's Python step does the work.
- ``media._rtpsend.Lane`` (``media/_lane.c``, with the compiled writer) holds the same
  fields in a C struct and has ``offer(facts)``: the whole step for a packet of the
  layer the slot is steady on, ending in the transport's compiled ``Sender``, stamped
  through the subscriber's compiled pacing clock (:func:`media.bandwidth.pace_clock`). The slot
  sets ``layer`` only when nothing but that step is to be done (see
  :meth:`media.send_slot.SendSlot._steady`); switches, pictures dropped for a lower frame
  rate, retransmissions, padding and reports stay in Python, on the same fields.

In a room of 50 the steady step is the per-subscriber work of almost every packet: in
Python it was about a quarter of a media node's CPU.
"""

from __future__ import annotations

from typing import Any

from media.rtp_writer import COMPILED_WRITER

try:
    from media._rtpsend import Lane
except ImportError:  # built without a C compiler: Numbering only
    Lane = None  # type: ignore[assignment,misc]

#: Whether the compiled steady step was built with this install (with the compiled writer).
COMPILED_LANE = COMPILED_WRITER and Lane is not None


class Numbering:
    """The fields of ``media._rtpsend.Lane``, without its compiled step."""

    __slots__ = (
        "bytes_out",
        "last_in_ts",
        "last_pid",
        "last_sent_at",
        "last_seq_out",
        "last_tl0",
        "last_ts_out",
        "layer",
        "level_id",
        "packets_out",
        "payload_type",
        "run",
        "sender",
        "seq_offset",
        "ssrc",
        "stamp",
        "vp8",
        "writer",
    )

    def __init__(self) -> None:
        self.layer: Any = None  # the layer a compiled step would forward (unused here)
        self.run: Any = None  # the run being sent (media.sent_ring.Run)
        self.seq_offset = 0
        self.last_seq_out = 0
        self.last_ts_out = 0
        self.last_in_ts = 0  # the timestamp the last packet sent had when it arrived
        self.last_sent_at = 0.0
        self.packets_out = 0
        self.bytes_out = 0
        self.payload_type: int | None = None
        self.ssrc = 0
        self.last_pid: int | None = None  # VP8: the last PictureID and TL0PICIDX sent
        self.last_tl0: int | None = None
        self.level_id: int | None = None
        self.vp8 = False
        self.stamp: Any = None
        self.sender: Any = None
        self.writer: Any = None


def field(name: str, doc: str) -> Any:
    """An attribute of a slot that is its numbering's field ``name`` (the slot's ``n``)."""
    return property(
        lambda self: getattr(self.n, name),
        lambda self, value: setattr(self.n, name, value),
        doc=doc,
    )


def numbering(compiled: bool) -> Any:
    """A slot's numbering: the compiled lane if ``compiled`` and it was built, else
    :class:`Numbering`."""
    if compiled and COMPILED_LANE:
        return Lane()
    return Numbering()
