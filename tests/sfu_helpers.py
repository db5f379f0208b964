"""Helpers for group-call tests: aiortc participants and frame counters on remote tracks."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiortc import MediaStreamTrack
from av import AudioFrame, VideoFrame

from media.client import RemoteTrack, SfuClient
from media.published_track import PublishedTrack
from media.signaling import SfuSignaling
from media.synthetic import PatternTrack, ToneTrack
from switchboard.app import NODE_KEY

SFU = {
    "sfu_listen_ips": ["127.0.0.1"],
    "sfu_ice_timeout": 3.0,
    "sfu_stats_log_interval": 0,
    # Every video as asked: these tests are about routing, layers and signaling; sharing
    # a downlink estimate is tested in the network lab (test_netlab_bandwidth.py), where
    # links have limits (on loopback, aiortc's estimator reports what the CPU allows).
    "sfu_bandwidth_estimation": False,
}


@dataclass
class FrameCounter:
    """Decodes a remote track in the background and counts frames of the right kind."""

    remote: RemoteTrack
    video: int = 0
    audio: int = 0
    first_video_at: float | None = None
    task: asyncio.Task[None] | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)

    def start(self) -> FrameCounter:
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        track = self.remote.track
        assert track is not None
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    self.video += 1
                    self.sizes.add((frame.width, frame.height))
                    if self.first_video_at is None:
                        self.first_video_at = asyncio.get_running_loop().time()
                elif isinstance(frame, AudioFrame):
                    self.audio += 1

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def participant(
    hub: Any, user: str, room: str, *, audio: bool = True, video: bool = True, **kw: Any
) -> tuple[SfuClient, list[MediaStreamTrack]]:
    """Connect, join ``room`` and publish synthetic audio/video."""
    client = SfuClient(await hub.connect(user), room, **kw)
    await client.join()
    tracks: list[tuple[MediaStreamTrack, str]] = []
    if audio:
        tracks.append((ToneTrack(), "microphone"))
    if video:
        tracks.append((PatternTrack(), "camera"))
    if tracks:
        await client.publish(tracks)
    return client, [t for t, _ in tracks]


def count_remote(client: SfuClient, counters: dict[str, FrameCounter]) -> None:
    """Start a counter for every remote track not yet counted."""
    for track_id, remote in client.remote.items():
        if track_id not in counters and remote.track is not None:
            counters[track_id] = FrameCounter(remote).start()


async def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(step)


def sfu_of(hub: Any) -> SfuSignaling:
    return hub.server.app[NODE_KEY].sfu


def only_track(hub: Any, room: str) -> PublishedTrack:
    """The single published track of a room with one publisher."""
    (publisher,) = [p for p in sfu_of(hub).rooms[room].participants.values() if p.tracks]
    (track,) = publisher.tracks.values()
    return track
