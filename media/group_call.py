"""A group call hosted on this node: participants, their tracks, active speakers,
statistics.

Media state is node-local by nature (the packets arrive at this process); the call's
events go out through the fan-out, so they reach every participant's WebSocket, on
whichever node it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from media.participant import Participant
from media.published_track import PublishedTrack

if TYPE_CHECKING:
    from config.sfu import SfuSettings
    from media.recording.recordings import Recording
    from signaling.state.delivery import Fanout
    from signaling.webhooks.outbox import WebhookOutbox

log = logging.getLogger("switchboard.sfu")

#: Wishes collected this long before a publisher is told which layers to send: a grid
#: resizing sends many sfu:subscription updates, the publisher hears one change.
DYNACAST_DELAY = 0.3


class GroupCall:
    """One room's group call on its media node (the room keeps its id)."""

    def __init__(
        self,
        room_id: str,
        *,
        settings: SfuSettings,
        fanout: Fanout,
        webhooks: WebhookOutbox,
        on_empty: Callable[[GroupCall], None],
    ) -> None:
        self.id = room_id
        self.settings = settings
        self.fanout = fanout
        self.webhooks = webhooks
        self.participants: dict[str, Participant] = {}
        self.created_at = time.time()
        self._on_empty = on_empty
        self._speakers: list[str] = []
        # dynacast: the simulcast layers each publisher was last told to send
        self._layers_sent: dict[str, tuple[str, ...]] = {}
        self._demand_dirty: dict[str, PublishedTrack] = {}
        self._demand_timer: asyncio.TimerHandle | None = None
        self._ticker = asyncio.ensure_future(self._tick())
        #: Recordings taking this call's tracks, and how one ends (the media host's).
        self.recordings: list[Recording] = []
        self.end_recording: Callable[[Recording, str], Awaitable[None]] | None = None

    # -- membership and tracks --------------------------------------------------------------

    def tracks(self) -> list[PublishedTrack]:
        return [t for p in self.participants.values() for t in p.tracks.values()]

    def tracks_for(self, participant: Participant) -> Iterable[PublishedTrack]:
        if not participant.can_subscribe:
            return
        for other in self.participants.values():
            if other is not participant:
                yield from other.tracks.values()

    async def send(self, participants: Iterable[Participant], type_: str, data: Any) -> None:
        """Encode once, queue for each participant's WebSocket, on whichever node it is
        (detached participants miss it; they learn the room's state when resuming)."""
        conns = [p.conn_id for p in participants if p.conn_id is not None]
        if conns:
            await self.fanout.to_conns(conns, type_, data)

    async def broadcast(self, type_: str, data: Any, exclude: str | None = None) -> None:
        await self.send([p for p in self.participants.values() if p.id != exclude], type_, data)

    def resubscribe_all(self, exclude: str | None = None) -> None:
        for participant in self.participants.values():
            if participant.id != exclude:
                participant.resubscribe()

    async def announce_published(self, tracks: Iterable[PublishedTrack], exclude: str) -> None:
        for track in tracks:
            wire = {"roomId": self.id, "track": track.info.to_wire(track.muted)}
            for recording in self.recordings:
                recording.add(track)
            self.webhooks.emit("track_published", self.id, wire)
            await self.broadcast("sfu:track-published", wire, exclude)

    async def announce_unpublished(
        self, tracks: Iterable[PublishedTrack], exclude: str | None = None
    ) -> None:
        for track in tracks:
            self._layers_sent.pop(track.info.track_id, None)
            self._demand_dirty.pop(track.info.track_id, None)
            for participant in self.participants.values():
                participant.forget_track(track.info.track_id)
            for recording in list(self.recordings):
                if recording.remove(track.info.track_id):
                    await self._end_recording(recording, "track_unpublished")
            self.webhooks.emit(
                "track_unpublished",
                self.id,
                {"roomId": self.id, "track": track.info.to_wire(track.muted)},
            )
            await self.broadcast(
                "sfu:track-unpublished",
                {
                    "roomId": self.id,
                    "trackId": track.info.track_id,
                    "participantId": track.info.participant_id,
                },
                exclude,
            )

    async def remove(self, participant: Participant, reason: str) -> None:
        if self.participants.get(participant.id) is not participant:
            return
        del self.participants[participant.id]
        await self.announce_unpublished(participant.stop_media())
        await self.broadcast(
            "sfu:participant-left", {"roomId": self.id, **participant.to_wire(), "reason": reason}
        )
        self.resubscribe_all()
        await participant.close()
        if not self.participants:
            await self.end_recordings("room_ended")
            await self.close()
            self._on_empty(self)

    async def _end_recording(self, recording: Recording, reason: str) -> None:
        if self.end_recording is not None:
            await self.end_recording(recording, reason)
        else:
            await recording.stop(reason)

    async def end_recordings(self, reason: str) -> None:
        for recording in list(self.recordings):
            await self._end_recording(recording, reason)

    async def close(self, reason: str = "room_closed") -> None:
        """End the call here; ``reason`` (``room_moved``, ``node_stopping``) tells its
        recordings whether they go on where the room goes."""
        await self.end_recordings(reason)
        if self._demand_timer is not None:
            self._demand_timer.cancel()
            self._demand_timer = None
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        for participant in list(self.participants.values()):
            await participant.close()
        self.participants.clear()

    # -- dynacast: publishers send only the layers someone watches ----------------------------

    def demand_changed(self, track: PublishedTrack) -> None:
        """Subscribers' wishes for ``track`` changed; its publisher hears which simulcast
        layers are wanted shortly after (changes within the window are coalesced)."""
        if not track.simulcast or not self.settings.sfu_dynacast:
            return
        self._demand_dirty[track.info.track_id] = track
        if self._demand_timer is None:
            self._demand_timer = asyncio.get_running_loop().call_later(
                DYNACAST_DELAY, self._flush_demand
            )

    def _flush_demand(self) -> None:
        self._demand_timer = None
        dirty, self._demand_dirty = self._demand_dirty, {}
        for track_id, track in dirty.items():
            publisher = self.participants.get(track.info.participant_id)
            if publisher is None or publisher.closed:
                continue
            active = tuple(layer.rid for layer in track.demand() if layer.rid is not None)
            if self._layers_sent.get(track_id) == active:
                continue
            self._layers_sent[track_id] = active
            data = {"roomId": self.id, "trackId": track_id, "active": list(active)}
            task = asyncio.ensure_future(self.send([publisher], "sfu:layers", data))
            task.add_done_callback(_log_failure)

    # -- periodic work: active speakers, bitrates, sender reports, stats logs ----------------

    async def _tick(self) -> None:
        interval = self.settings.sfu_speaker_interval
        last_second = last_log = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                last_second, last_log = await self._tick_once(last_second, last_log)
            except Exception:
                log.exception("sfu room tick failed", extra={"room": self.id})

    async def _tick_once(self, last_second: float, last_log: float) -> tuple[float, float]:
        await self._update_speakers()
        now = time.monotonic()
        if now - last_second >= 1.0:
            last_second = now
            for participant in list(self.participants.values()):
                for track in participant.tracks.values():
                    track.tick()
                await participant.downlink.send_reports(participant.slots)
        log_every = self.settings.sfu_stats_log_interval
        if log_every and now - last_log >= log_every:
            last_log = now
            log.info("sfu room stats", extra={"room": self.id, "stats": self.stats()})
        return last_second, last_log

    async def _update_speakers(self) -> None:
        threshold = self.settings.sfu_speaker_threshold_dbov
        levels: list[tuple[float, PublishedTrack]] = []
        for track in self.tracks():
            if track.kind != "audio":
                continue
            level = track.take_level()
            if level is not None and level < threshold and not track.muted:
                levels.append((level, track))
        levels.sort(key=lambda item: item[0])
        self._gate_audio([t for _, t in levels])
        speaking = {t.info.participant_id for _, t in levels[: self.settings.sfu_audio_loudest]}
        for participant in self.participants.values():
            participant.downlink.share(participant.slots, speaking)
        speakers = [t.info.participant_id for _, t in levels]
        if speakers == self._speakers:
            return
        self._speakers = speakers
        await self.broadcast(
            "sfu:active-speakers",
            {
                "roomId": self.id,
                "speakers": [
                    {
                        "participantId": t.info.participant_id,
                        "userId": t.info.user_id,
                        "trackId": t.info.track_id,
                        "level": round(-level, 1),
                    }
                    for level, t in levels
                ],
            },
        )

    def _gate_audio(self, loudest_first: list[PublishedTrack]) -> None:
        """In a large room only the loudest microphones are forwarded (each for a while
        after it stops being among them, so words are not clipped): 50 open microphones
        would otherwise send 49 copies of 50 streams of mostly silence."""
        s = self.settings
        gated = 0 < s.sfu_audio_loudest_above < len(self.participants)
        until = time.monotonic() + s.sfu_audio_hangover
        for track in loudest_first[: s.sfu_audio_loudest]:
            track.audible_until = until
        for track in self.tracks():
            if track.kind == "audio":
                track.gated = gated

    def stats(self) -> dict[str, Any]:
        return {
            "roomId": self.id,
            "participants": len(self.participants),
            "tracks": [t.stats() for t in self.tracks()],
        }


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sfu task failed", exc_info=task.exception())
