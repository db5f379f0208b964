"""Recording in a cluster: the room API call reaches a node without media, the recording
runs on the media node hosting the room, and when that node drains the recording ends
there with complete, playable files while the room's call moves to the other media node,
where a new recording carries on (naming the one it continues) until it is stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import orjson

from tests.cluster import Cluster
from tests.test_cluster_media import api, cluster, member, publish_audio, start
from tests.webhook_receiver import Receiver

__all__ = ["cluster"]  # the fixture, used by name


async def test_recording_runs_where_the_room_is_and_ends_cleanly_when_it_drains(
    cluster: Cluster, tmp_path: Path
) -> None:
    receiver = await Receiver().start()
    hooks = {
        "SWITCHBOARD_WEBHOOK_URLS": receiver.url,
        "SWITCHBOARD_WEBHOOK_EVENTS": "recording_started,recording_finished",
    }
    dirs = {name: tmp_path / f"rec-{name}" for name in ("m1", "m2")}
    a, *_ = await asyncio.gather(
        start(cluster, "a", media=False, **hooks),
        *(
            start(cluster, name, SWITCHBOARD_RECORDING_DIR=str(path), **hooks)
            for name, path in dirs.items()
        ),
    )
    bot = await member(a, "bot", "rec")
    await publish_audio(bot, video=True)
    status, media = await api(a, "GET", "/rooms/rec/media")
    host = media["mediaNode"]
    assert status == 200 and host in dirs

    status, started = await api(a, "POST", "/rooms/rec/recordings")  # asked of node a
    assert status == 201, started
    assert Path(started["directory"]).parent == dirs[host]
    await asyncio.sleep(3.0)
    status, listed = await api(a, "GET", "/rooms/rec/recordings")
    (running,) = listed["recordings"]
    assert running["state"] == "recording" and {f["kind"] for f in running["files"]} == {
        "audio",
        "video",
    }

    status, _ = await api(a, "POST", f"/nodes/{host}/drain", {"deadline": 0})
    assert status == 202
    delivered = await receiver.wait_for(
        lambda d: (
            any(e["type"] == "recording_finished" for e in d)
            and sum(e["type"] == "recording_started" for e in d) >= 2
        ),
        timeout=30,
    )
    finished = next(e for e in delivered if e["type"] == "recording_finished")
    assert finished["recordingId"] == started["recordingId"]
    assert finished["endReason"] == "room_moved" and finished["damaged"] is None
    assert finished["node"] == host
    playable(Path(finished["directory"]), min_duration=2.0)

    # The call moved to the other media node, and the recording with it.
    carried = [e for e in delivered if e["type"] == "recording_started"][-1]
    other = next(name for name in dirs if name != host)
    assert carried["continues"] == started["recordingId"] and carried["node"] == other
    await asyncio.sleep(3.0)
    status, done = await api(a, "DELETE", f"/rooms/rec/recordings/{carried['recordingId']}")
    assert status == 200, done
    assert done["endReason"] == "stopped" and Path(done["directory"]).parent == dirs[other]
    playable(Path(done["directory"]), min_duration=1.5)
    status, listed = await api(a, "GET", "/rooms/rec/recordings")
    assert [r["recordingId"] for r in listed["recordings"]] == [carried["recordingId"]]
    await receiver.close()
    await bot.close()


def playable(directory: Path, *, min_duration: float) -> None:
    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    assert {f["kind"] for f in manifest["files"]} == {"audio", "video"}
    for entry in manifest["files"]:
        assert entry["duration"] >= min_duration, entry
        with av.open(str(directory / entry["file"])) as container:
            frames = sum(1 for _ in container.decode(container.streams[0]))
        assert frames >= entry["frames"] - 2
