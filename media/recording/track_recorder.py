"""Recording one track: a subscriber slot of the track like any other (it sees every
packet the track forwards, at the same point), that puts packets back in order, makes
them into frames and queues those for its file. Everything here is cheap and never
waits; the file is written on its own thread (:mod:`media.recording.writer`).

For a simulcast camera it records the top layer (and so keeps that layer wanted: the
publisher keeps sending it while the recording runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.recording.frames import OpusFrames, Vp8Assembler
from media.recording.reorder import ReorderBuffer
from media.recording.writer import TrackFile

if TYPE_CHECKING:
    from collections.abc import Callable

    from media.layer import Layer
    from media.published_track import Arrival, PublishedTrack

#: Packets held waiting for a missing one (video: a retransmission may take a round trip).
DEPTH = {"video": 64, "audio": 8}
#: Recordable codecs, by MIME type.
RECORDABLE = {"video/vp8", "audio/opus"}


@dataclass(slots=True)
class _TopLayer:
    """What this slot wants of the track (a forwarder's layer choice, fixed)."""

    target: Layer | None
    current: Layer | None


class TrackRecorder:
    def __init__(self, track: PublishedTrack, path: Path, *, queue_size: int) -> None:
        self.track = track
        self.info = track.info
        kind = track.info.kind
        top = track.layers[-1]
        self.layer = top
        self.forwarder = _TopLayer(top, top)
        self.packets_out = 0
        self.bytes_out = 0
        self._reorder: ReorderBuffer[tuple[int, bool, bytes]] = ReorderBuffer(DEPTH[kind])
        self._frames = Vp8Assembler() if kind == "video" else OpusFrames()
        self.file = TrackFile(path, kind, queue_size=queue_size)
        #: When the file's first frame was captured, in the publisher's clock (its sender
        #: reports), else when it arrived here: the manifest aligns tracks with it.
        self.first_capture: float | None = None
        self.closed = False
        #: Told once when the file starts missing frames (the recording's webhook).
        self.on_damaged: Callable[[TrackRecorder], None] | None = None
        self._damage_told = False

    # -- the track drives it (media.published_track.Subscriber) ------------------------------

    def offer(self, arrival: Arrival) -> None:
        if self.closed or arrival.layer is not self.layer:
            return
        packet = arrival.packet
        self.packets_out += 1
        self.bytes_out += len(packet.payload)
        for _, (timestamp, marker, payload), gap in self._reorder.push(
            arrival.seq, (packet.timestamp, packet.marker, packet.payload)
        ):
            self._frame(timestamp, marker, payload, gap)

    def suspend(self) -> None:
        """The track stopped forwarding (muted, blocked): the next frame must be a keyframe."""
        if isinstance(self._frames, Vp8Assembler):
            self._frames.needs_keyframe = True

    # -- frames -----------------------------------------------------------------------------

    def _frame(self, timestamp: int, marker: bool, payload: bytes, gap: bool) -> None:
        frames = self._frames
        frame = frames.push(timestamp, marker, payload, gap)
        if frame is None:
            if isinstance(frames, Vp8Assembler) and frames.needs_keyframe:
                self.track.request_keyframe(self.layer)  # at most one PLI per interval
            return
        if self.first_capture is None:
            if self.info.kind == "video" and not frame.keyframe:
                return
            rate = self.file.clock_rate
            captured = self.layer.wallclock(timestamp, rate)
            self.first_capture = captured if captured is not None else time.time()
        self.file.put(frame)
        if self.file.damaged and not self._damage_told:
            self._damage_told = True
            if self.on_damaged is not None:
                self.on_damaged(self)

    def start(self) -> None:
        self.track.attach(self)  # type: ignore[arg-type]
        self.track.request_keyframe(self.layer)

    def stop(self) -> None:
        """Detach from the track and let the file finish (the thread writes what is left)."""
        if self.closed:
            return
        self.closed = True
        self.track.detach(self)  # type: ignore[arg-type]
        for _, (timestamp, marker, payload), gap in self._reorder.flush():
            self._frame(timestamp, marker, payload, gap)
        self.file.close()

    def info_out(self) -> dict[str, Any]:
        return {
            "trackId": self.info.track_id,
            "participantId": self.info.participant_id,
            "userId": self.info.user_id,
            "source": self.info.source,
            **self.file.info(),
        }
