"""Recordings on a media node: started and stopped through the room API (relayed here
from whichever node the chat backend called), one directory per recording with one file
per track and a ``manifest.json`` that lines the tracks up.

A room recording takes every recordable track (VP8, Opus) published while it runs; a
track recording takes one. Names on disk come from ids the server made (the recording's
random id, the track ids), never from request input. A recording ends when it is
stopped, when its room's group call ends (the last participant left, or the node moved
it), or, for a track recording, when the track goes away; ``recording_finished`` then
tells the chat backend what was written.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from media.recording.track_recorder import RECORDABLE, TrackRecorder
from signaling.protocol import ErrorCode, HubError

if TYPE_CHECKING:
    from collections.abc import Callable

    from media.published_track import PublishedTrack
    from media.recording.upload import S3Uploader
    from signaling.state.models import RoomInfo
    from signaling.state.room_records import RoomRecords
    from signaling.webhooks.outbox import WebhookOutbox

log = logging.getLogger("switchboard.recording")

#: Finished recordings this node still lists (the oldest are forgotten first).
KEEP_FINISHED = 200
#: Why a room recording ends here but goes on where the room's group call goes next.
MOVING = frozenset({"room_moved", "node_stopping"})


class GroupCall(Protocol):
    """What recordings need of a group call (:class:`media.group_call.GroupCall`)."""

    id: str
    recordings: list[Recording]

    def tracks(self) -> list[PublishedTrack]: ...


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:80] or "track"


class Recording:
    def __init__(
        self,
        room_id: str,
        track_id: str | None,
        base: Path,
        queue_size: int,
        on_damaged: Callable[[Recording, TrackRecorder], None] | None = None,
        continues: str | None = None,
    ) -> None:
        self.id = "rec_" + secrets.token_hex(8)
        #: The recording this one carries on (its room moved to this node).
        self.continues = continues
        self.room_id = room_id
        self.track_id = track_id
        self.directory = base / self.id
        self.queue_size = queue_size
        self.state = "recording"
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.recorders: dict[str, TrackRecorder] = {}
        self._done: list[TrackRecorder] = []
        self._stopping: asyncio.Future[None] | None = None
        self._on_damaged = on_damaged
        self.manifest_failed: str | None = None
        #: Where the files went besides this node (S3-compatible upload), if anywhere.
        self.storage: dict[str, Any] | None = None

    def wants(self, track: PublishedTrack) -> bool:
        if self.state != "recording" or track.info.codec.lower() not in RECORDABLE:
            return False
        return self.track_id is None or track.info.track_id == self.track_id

    def add(self, track: PublishedTrack) -> bool:
        if not self.wants(track) or track.info.track_id in self.recorders:
            return False
        path = self.directory / safe_name(track.info.track_id)
        recorder = TrackRecorder(track, path, queue_size=self.queue_size)
        if self._on_damaged is not None:
            on_damaged = self._on_damaged
            recorder.on_damaged = lambda r: on_damaged(self, r)
        self.recorders[track.info.track_id] = recorder
        recorder.start()
        return True

    def remove(self, track_id: str) -> bool:
        """The track went away; ``True`` if that ends this recording (a track recording)."""
        recorder = self.recorders.pop(track_id, None)
        if recorder is not None:
            recorder.stop()
            self._done.append(recorder)
        return self.track_id == track_id

    async def stop(self, reason: str) -> None:
        """Finish every file (their threads write what is queued) and the manifest."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(reason))
        await asyncio.shield(self._stopping)

    async def _stop(self, reason: str) -> None:
        self.state = "stopping"
        self.end_reason = reason
        for track_id in list(self.recorders):
            self.remove(track_id)
        for recorder in self._done:
            await asyncio.to_thread(recorder.file.join)
        self.ended_at = time.time()
        self.state = "finished"
        if self._done:
            try:
                await asyncio.to_thread(self._write_manifest)
            except OSError as exc:
                self.manifest_failed = f"manifest_not_written: {exc}"[:200]
                log.warning("recording manifest not written", extra={"recording": self.id})

    @property
    def has_files(self) -> bool:
        return bool(self._done or self.recorders)

    def tracks(self) -> list[dict[str, Any]]:
        """Each file, with its offset: when its first frame was captured, from the
        earliest first frame of the recording (the sender reports' clock)."""
        recorders = [*self._done, *self.recorders.values()]
        starts = [r.first_capture for r in recorders if r.first_capture is not None]
        origin = min(starts) if starts else 0.0
        out = []
        for recorder in recorders:
            entry = recorder.info_out()
            if recorder.first_capture is not None:
                entry["offset"] = round(recorder.first_capture - origin, 3)
            out.append(entry)
        return out

    def _write_manifest(self) -> None:
        manifest = {k: v for k, v in self.to_wire().items() if k != "state"}
        (self.directory / "manifest.json").write_bytes(
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        )

    def to_wire(self) -> dict[str, Any]:
        tracks = self.tracks()
        ends = [t.get("offset", 0.0) + t["duration"] for t in tracks]
        damaged = sorted({t["damaged"] for t in tracks if t["damaged"]})
        if self.manifest_failed:
            damaged.append(self.manifest_failed)
        return {
            "recordingId": self.id,
            "roomId": self.room_id,
            "trackId": self.track_id,
            "continues": self.continues,
            "state": self.state,
            "startedAt": int(self.started_at * 1000),
            "endedAt": int(self.ended_at * 1000) if self.ended_at else None,
            "endReason": self.end_reason,
            "directory": str(self.directory),
            "manifest": "manifest.json"
            if self.state == "finished" and tracks and not self.manifest_failed
            else None,
            "files": tracks,
            "duration": round(max(ends), 3) if ends else 0.0,
            "size": sum(t["size"] for t in tracks),
            "damaged": ", ".join(damaged) or None,
            "storage": self.storage,
        }


class Recordings:
    """This media node's recordings, by id; the relayed operations the room API uses."""

    def __init__(
        self,
        *,
        directory: Path,
        queue_size: int,
        webhooks: WebhookOutbox,
        room: Callable[[str], GroupCall | None],
        uploader: S3Uploader | None = None,
        records: RoomRecords | None = None,
    ) -> None:
        self.records = records
        self.uploader = uploader
        self._uploads: set[asyncio.Task[None]] = set()
        self.directory = directory
        self.queue_size = queue_size
        self.webhooks = webhooks
        self._room = room
        self.active: dict[str, Recording] = {}
        self.finished: OrderedDict[str, Recording] = OrderedDict()

    def _group_call(self, room_id: str) -> GroupCall:
        room = self._room(room_id)
        if room is None:
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"room '{room_id}' has no group call")
        return room

    async def start(self, body: dict[str, Any], *, continues: str | None = None) -> dict[str, Any]:
        room = self._group_call(body["room"])
        track_id = body.get("trackId")
        recording = Recording(
            room.id,
            track_id,
            self.directory,
            self.queue_size,
            on_damaged=self._damaged,
            continues=continues,
        )
        tracks = room.tracks()
        if track_id is not None:
            track = next((t for t in tracks if t.info.track_id == track_id), None)
            if track is None or track.info.codec.lower() not in RECORDABLE:
                raise HubError(
                    ErrorCode.TRACK_NOT_FOUND,
                    f"room '{room.id}' has no recordable track '{track_id}' (VP8 or Opus)",
                )
        for track in tracks:
            recording.add(track)
        room.recordings.append(recording)
        self.active[recording.id] = recording
        if track_id is None:  # a room recording follows the room (track ids do not)
            await self._remember(room.id, add=recording.id, drop=continues)
        log.info("recording started", extra={"room": room.id, "recording": recording.id})
        wire = recording.to_wire()
        self.webhooks.emit("recording_started", room.id, wire)
        return wire

    async def carry_on(self, room_id: str, ids: list[str]) -> None:
        """The room's group call starts here and had room recordings running where it was:
        go on recording it (each a new recording naming the one it continues)."""
        for old in ids:
            if any(r.continues == old or r.id == old for r in self.active.values()):
                continue
            try:
                await self.start({"room": room_id}, continues=old)
            except HubError as exc:
                log.warning("recording not carried on", extra={"room": room_id, "code": exc.code})

    async def _remember(
        self, room_id: str, *, add: str | None = None, drop: str | None = None
    ) -> None:
        """Keep the room's running room recordings in its record, for the next media node."""
        if self.records is None:
            return

        def mutate(info: RoomInfo) -> None:
            ids = [i for i in info.recordings if i != drop]
            if add is not None and add not in ids:
                ids.append(add)
            info.recordings = ids

        try:
            await self.records.update(room_id, mutate)
        except (KeyError, HubError):  # no record (the room is gone), or the state is away
            log.warning("room recordings not recorded", extra={"room": room_id})

    def _damaged(self, recording: Recording, recorder: TrackRecorder) -> None:
        """A file started missing frames: the chat backend hears at once (the call goes on)."""
        data = {
            "recordingId": recording.id,
            "roomId": recording.room_id,
            "trackId": recorder.info.track_id,
            "damaged": recorder.file.damaged,
        }
        log.warning("recording damaged", extra=data)
        self.webhooks.emit("recording_damaged", recording.room_id, data)

    async def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        recording = self.active.get(body["recordingId"])
        if recording is None or recording.room_id != body["room"]:
            found = self.finished.get(body["recordingId"])
            if found is not None and found.room_id == body["room"]:
                return found.to_wire()  # stopped already: the same answer again
            raise HubError(ErrorCode.ROOM_NOT_FOUND, f"no recording '{body['recordingId']}'")
        await self.end(recording, "stopped")
        return recording.to_wire()

    async def list(self, body: dict[str, Any]) -> dict[str, Any]:
        room_id = body["room"]
        found = [*self.active.values(), *reversed(self.finished.values())]
        return {"recordings": [r.to_wire() for r in found if r.room_id == room_id]}

    async def end(self, recording: Recording, reason: str) -> None:
        room = self._room(recording.room_id)
        if room is not None and recording in room.recordings:
            room.recordings.remove(recording)
        await recording.stop(reason)
        if self.active.pop(recording.id, None) is None:
            return
        if recording.track_id is None and reason not in MOVING:
            await self._remember(recording.room_id, drop=recording.id)
        self.finished[recording.id] = recording
        while len(self.finished) > KEEP_FINISHED:
            self.finished.popitem(last=False)
        log.info(
            "recording finished",
            extra={"room": recording.room_id, "recording": recording.id, "reason": reason},
        )
        if self.uploader is None or not recording.has_files:
            self.webhooks.emit("recording_finished", recording.room_id, recording.to_wire())
            return
        # recording_finished once the files are in the bucket (or failed to get there).
        recording.storage = {"bucket": self.uploader.target.bucket, "state": "uploading"}
        task = asyncio.ensure_future(self._upload(recording))
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def _upload(self, recording: Recording) -> None:
        assert self.uploader is not None
        done = await self.uploader.upload(recording.directory, recording.id)
        state = "failed" if "error" in done else "uploaded"
        recording.storage = {**done, "state": state}
        self.webhooks.emit("recording_finished", recording.room_id, recording.to_wire())
