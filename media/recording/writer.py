"""One track's file, written on a thread of its own: frames go in through a bounded
queue that never blocks the event loop, and are written as they are (no codec is
created, nothing is decoded or encoded).

VP8 goes to WebM, muxed by PyAV into a stream without a codec context; Opus goes to Ogg,
written by :mod:`media.recording.ogg` with the ``OpusHead`` its header needs. A file
starts at the track's first keyframe; timestamps count from there in the track's own RTP
clock. A full queue (the disk cannot keep up) or a write error (a full disk) marks the
file damaged; what was written stays playable.
"""

from __future__ import annotations

import logging
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from media.recording.frames import Frame
from media.recording.ogg import OggOpusWriter

log = logging.getLogger("switchboard.recording")

#: (file suffix, RTP clock rate) per track kind.
FORMATS = {"video": (".webm", 90_000), "audio": (".ogg", 48_000)}


class TrackFile:
    def __init__(self, path: Path, kind: str, *, queue_size: int) -> None:
        self.kind = kind
        suffix, self.clock_rate = FORMATS[kind]
        self.path = path.with_suffix(suffix)
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=queue_size)
        self.damaged: str | None = None  # why, if the file misses frames
        self.frames = 0
        self.dropped = 0
        self.first_timestamp: int | None = None
        self.last_timestamp: int | None = None
        self.size: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._run, name=f"record {path.name}", daemon=True)
        self._thread.start()

    def put(self, frame: Frame) -> bool:
        """Queue a frame (never waits); ``False`` if it had to be dropped."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1
            if self.damaged is None:
                self.damaged = "queue_overflow"
                log.warning("recording queue full: dropping frames", extra={"file": str(self.path)})
            return False
        return True

    def close(self) -> None:
        """No more frames: the thread writes what is queued and finishes the file."""
        while True:
            try:
                self._queue.put(None, timeout=1.0)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def duration(self) -> float:
        if self.first_timestamp is None or self.last_timestamp is None:
            return 0.0
        return (self.last_timestamp - self.first_timestamp) / self.clock_rate

    def info(self) -> dict[str, Any]:
        exists = self.path.exists()
        return {
            "file": self.path.name,
            "kind": self.kind,
            "frames": self.frames,
            "duration": round(self.duration, 3),
            "size": self.path.stat().st_size if exists else 0,
            "damaged": self.damaged,
            **({"width": self.size[0], "height": self.size[1]} if self.size else {}),
        }

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        container: _OggFile | _WebmFile | None = None
        try:
            while (frame := self._queue.get()) is not None:
                if container is None:
                    if self.kind == "video" and (not frame.keyframe or frame.size is None):
                        continue
                    container = self._open(frame)
                    self.first_timestamp = frame.timestamp
                assert self.first_timestamp is not None
                if self.last_timestamp is not None and frame.timestamp <= self.last_timestamp:
                    continue  # a repeat: timestamps must grow
                container.put(frame.timestamp - self.first_timestamp, frame)
                self.frames += 1
                self.last_timestamp = frame.timestamp
        except (OSError, av.FFmpegError) as exc:
            self.damaged = f"write_failed: {exc}"[:200]
            log.warning("recording write failed", extra={"file": str(self.path), "error": str(exc)})
            while self._queue.get() is not None:  # let close() finish
                pass
        finally:
            if container is not None:
                try:
                    container.close()
                except (OSError, av.FFmpegError) as exc:
                    self.damaged = self.damaged or f"write_failed: {exc}"[:200]

    def _open(self, first: Frame) -> _OggFile | _WebmFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "audio":
            return _OggFile(self.path)
        assert first.size is not None
        self.size = first.size
        return _WebmFile(self.path, first.size, self.clock_rate)


class _WebmFile:
    """VP8 frames muxed by PyAV into a stream without a codec context."""

    def __init__(self, path: Path, size: tuple[int, int], clock_rate: int) -> None:
        self.time_base = Fraction(1, clock_rate)
        self.container: Any = av.open(str(path), "w", format="webm")
        self.stream = self.container.add_mux_stream("vp8", width=size[0], height=size[1])
        self.stream.time_base = self.time_base

    def put(self, pts: int, frame: Frame) -> None:
        packet = av.Packet(frame.data)
        packet.stream = self.stream
        packet.pts = packet.dts = pts
        packet.time_base = self.time_base
        packet.is_keyframe = frame.keyframe
        self.container.mux(packet)

    def close(self) -> None:
        self.container.close()


class _OggFile(OggOpusWriter):
    """An Ogg Opus writer that owns its file."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.open("wb"))

    def put(self, pts: int, frame: Frame) -> None:
        self.write(pts, frame.data)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.out.close()
