"""Recording without transcoding: an aiortc publisher (synthetic VP8 camera at 30 fps and
Opus microphone) recorded through the room API for 10 s; the files open with PyAV with
the right duration, frame count, size and sample rate, and the manifest lines audio and
video up. Also: the room ending stops a recording, a track recording, and bad requests.
The per-packet parts (reordering, VP8 depacketizing) are unit-tested first."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import av
import orjson
import pytest

from media.recording.frames import TimestampUnwrapper, Vp8Assembler
from media.recording.reorder import ReorderBuffer
from tests.sfu_helpers import SFU, participant, wait_until
from tests.webhook_receiver import Receiver

STATE_KINDS = ("memory",)


# -- units ------------------------------------------------------------------------------------


def test_reorder_buffer_puts_packets_back_in_order_and_gives_up_on_lost_ones() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(depth=3)
    assert buf.push(65534, "a") == [(65534, "a", False)]
    assert buf.push(0, "c") == []  # 65535 is missing: wait
    assert buf.push(65535, "b") == [(65535, "b", False), (0, "c", False)]  # wrapped
    assert buf.push(65535, "b") == [] and buf.late == 1  # a duplicate
    for seq in (2, 3, 4):  # 1 never comes: given up once 3 are held
        out = buf.push(seq, str(seq))
    assert out == [(2, "2", True), (3, "3", False), (4, "4", False)] and buf.lost == 1


def test_timestamps_unwrap_past_32_bits() -> None:
    unwrap = TimestampUnwrapper()
    assert unwrap.unwrap(2**32 - 3000) == 2**32 - 3000
    assert unwrap.unwrap(0) == 2**32
    assert unwrap.unwrap(2**32 - 10) == 2**32 - 10  # late, from before the wrap
    assert unwrap.unwrap(3000) == 2**32 + 3000


def vp8_packet(start: bool, keyframe: bool, body: bytes) -> bytes:
    descriptor = bytes([0x10 if start else 0x00])
    if not start:
        return descriptor + body
    # a keyframe's header: P bit clear, start code, 320x240
    header = bytes([0x00 if keyframe else 0x01, 0, 0, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00])
    return descriptor + header + body


def test_vp8_frames_are_assembled_and_a_broken_one_waits_for_a_keyframe() -> None:
    frames = Vp8Assembler()
    assert frames.push(100, False, vp8_packet(True, False, b"x"), False) is None  # no key yet
    assert frames.push(200, False, vp8_packet(True, True, b"a"), False) is None
    frame = frames.push(200, True, vp8_packet(False, True, b"b"), False)
    assert frame is not None and frame.keyframe and frame.size == (320, 240)
    assert frame.data.endswith(b"ab")
    # A packet of the next picture is lost: the picture is dropped, then delta frames too.
    assert frames.push(300, False, vp8_packet(True, False, b"c"), False) is None
    assert frames.push(300, True, vp8_packet(False, False, b"d"), True) is None
    assert frames.needs_keyframe and frames.dropped == 1
    assert frames.push(400, True, vp8_packet(True, False, b"e"), False) is None
    assert frames.push(500, True, vp8_packet(True, True, b"f"), False) is not None


# -- through the room API ----------------------------------------------------------------------


async def record(hub: Any, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record the room ``rec-room`` for ``seconds`` through the room API: what starting
    and stopping answered."""
    async with aiohttp.ClientSession() as http:
        api = hub.api(http)
        status, started = await api.post("/rooms/rec-room/recordings")
        assert status == 201, started
        await asyncio.sleep(seconds)
        status, done = await api.delete(f"/rooms/rec-room/recordings/{started['recordingId']}")
        assert status == 200, done
    return started, done


def exists(path: str) -> bool:
    return Path(path).exists()


def listing(path: str) -> list[str]:
    return [p.name for p in Path(path).iterdir()]


def probe(path: Path) -> dict[str, Any]:
    """What PyAV reads back: the stream's parameters, its packets and their span."""
    with av.open(str(path)) as container:
        stream = container.streams[0]
        packets = [p for p in container.demux(stream) if p.size]
        span = float((packets[-1].pts - packets[0].pts) * stream.time_base)
        out: dict[str, Any] = {"codec": stream.codec_context.name, "packets": len(packets)}
        out["span"] = span
        if stream.type == "video":
            out["size"] = (stream.codec_context.width, stream.codec_context.height)
        else:
            out["rate"] = stream.codec_context.sample_rate
            out["head"] = bytes(stream.codec_context.extradata or b"")[:8]
    with av.open(str(path)) as container:  # and it plays: every frame decodes
        out["decoded"] = sum(1 for _ in container.decode(container.streams[0]))
    return out


async def test_a_ten_second_call_is_recorded_as_it_was_sent(
    hub_factory: Any, tmp_path: Path
) -> None:
    receiver = await Receiver().start()
    hub = await hub_factory(
        **SFU,
        recording_dir=tmp_path / "rec",
        webhook_urls=[receiver.url],
        webhook_events=["recording_started", "recording_finished"],
    )
    bot, _ = await participant(hub, "bot", "rec-room")
    started, done = await record(hub, 10.0)
    await bot.close()
    assert started["state"] == "recording" and started["recordingId"].startswith("rec_")
    assert done["state"] == "finished" and done["endReason"] == "stopped"
    assert done["damaged"] is None
    files = {f["kind"]: f for f in done["files"]}
    directory = Path(done["directory"])
    assert directory.parent == tmp_path / "rec"

    video = probe(directory / files["video"]["file"])
    assert video["codec"] == "vp8" and video["size"] == (320, 240)
    assert video["decoded"] == video["packets"]
    assert abs(video["span"] - 10.0) <= 0.5, video
    assert abs(video["packets"] - video["span"] * 30) <= 0.05 * video["span"] * 30 + 1, video
    audio = probe(directory / files["audio"]["file"])
    assert audio["codec"] == "opus" and audio["rate"] == 48_000 and audio["head"] == b"OpusHead"
    assert abs(audio["span"] - 10.0) <= 0.5, audio
    assert audio["decoded"] >= audio["packets"] - 2  # the decoder may hold the last back
    assert abs(audio["packets"] - audio["span"] * 50) <= 0.05 * audio["span"] * 50 + 1, audio

    manifest = orjson.loads((directory / "manifest.json").read_bytes())
    offsets = {t["kind"]: t["offset"] for t in manifest["files"]}
    assert abs(offsets["audio"] - offsets["video"]) <= 0.1, manifest
    assert abs(manifest["duration"] - 10.0) <= 0.5

    # The chat backend heard of both ends, with what was written.
    delivered = await receiver.wait_for(lambda d: len(d) >= 2)
    await receiver.close()
    assert [e["type"] for e in delivered] == ["recording_started", "recording_finished"]
    finished = delivered[1]
    assert finished["recordingId"] == started["recordingId"]
    assert finished["size"] == done["size"] > 0 and finished["damaged"] is None
    assert len(finished["files"]) == 2 and abs(finished["duration"] - done["duration"]) < 1e-6


async def test_recordings_end_with_the_room_and_refuse_what_does_not_exist(
    hub_factory: Any, tmp_path: Path
) -> None:
    hub = await hub_factory(**SFU, recording_dir=tmp_path / "rec")
    bot, _ = await participant(hub, "bot", "rec-room")
    async with aiohttp.ClientSession() as http:
        api = hub.api(http)
        status, _ = await api.post("/rooms/rec-room/recordings", {"trackId": "nope"})
        assert status == 404
        status, _ = await api.post("/rooms/rec-room/recordings", {"trackId": "x", "extra": 1})
        assert status == 400
        await wait_until(lambda: len(bot.published) == 2, 10)
        track_id = next(t["trackId"] for t in bot.published if t["kind"] == "audio")
        status, one = await api.post("/rooms/rec-room/recordings", {"trackId": track_id})
        assert status == 201 and one["trackId"] == track_id
        status, whole = await api.post("/rooms/rec-room/recordings")
        assert status == 201
        await asyncio.sleep(1.5)
        await bot.close()  # the last participant leaves: the group call ends

        async def listed() -> dict[str, Any]:
            return (await api.get("/rooms/rec-room/recordings"))[1]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while any(r["state"] != "finished" for r in (await listed())["recordings"]):
            assert loop.time() < deadline
            await asyncio.sleep(0.2)
        found = {r["recordingId"]: r for r in (await listed())["recordings"]}
        assert found[one["recordingId"]]["endReason"] == "track_unpublished"
        assert [f["kind"] for f in found[one["recordingId"]]["files"]] == ["audio"]
        assert found[whole["recordingId"]]["endReason"] == "room_ended"
        assert {f["kind"] for f in found[whole["recordingId"]]["files"]} == {"audio", "video"}
        # Stopping a finished recording answers what it became; a made-up one is 404.
        status, again = await api.delete(f"/rooms/rec-room/recordings/{whole['recordingId']}")
        assert status == 200 and again["state"] == "finished"
        status, _ = await api.delete("/rooms/rec-room/recordings/rec_0000000000000000")
        assert status == 404
        status, _ = await api.delete("/rooms/rec-room/recordings/..%2Fetc")
        assert status in (400, 404)
        # No group call: nothing to record.
        status, _ = await api.post("/rooms/rec-room/recordings")
        assert status == 404


@pytest.mark.parametrize("name", ["../../x", "a/b", ""])
def test_file_names_cannot_be_steered(name: str) -> None:
    from media.recording.recordings import safe_name

    assert "/" not in safe_name(name) and ".." not in safe_name(name) and safe_name(name)


def test_ogg_opus_gaps_are_filled_so_audio_keeps_time(tmp_path: Path) -> None:
    from media.recording.ogg import SILENCE, OggOpusWriter, ogg_crc, packet_samples

    assert ogg_crc(b"123456789") == 0x89A1897F  # poly 0x04C11DB7, not zlib's reflected CRC
    assert packet_samples(SILENCE) == 960 and packet_samples(b"\x10") == 1920  # SILK 40 ms
    assert packet_samples(b"\xfb\x03") == 2880  # code 3: three 20 ms frames
    path = tmp_path / "a.ogg"
    with path.open("wb") as out:
        writer = OggOpusWriter(out)
        for ts in (0, 960, 1920, 9600, 10560):  # 8 frames missing (lost, or DTX)
            writer.write(ts, SILENCE)
        writer.write(10560, SILENCE)  # a repeat: ignored
        writer.close()
    assert writer.samples == 11520
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == 48_000
        decoded = sum(frame.samples for frame in container.decode(stream))
    assert decoded == 11520 - 312  # the pre-skip is dropped by the decoder


async def test_a_failing_disk_damages_the_recording_not_the_call(
    hub_factory: Any, tmp_path: Path
) -> None:
    from tests.sfu_helpers import FrameCounter, count_remote

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the recordings should go")
    receiver = await Receiver().start()
    hub = await hub_factory(
        **SFU,
        recording_dir=blocked,
        webhook_urls=[receiver.url],
        webhook_events=["recording_damaged", "recording_finished"],
    )
    bot, _ = await participant(hub, "bot", "rec-room")
    viewer, _ = await participant(hub, "viewer", "rec-room", audio=False, video=False)
    async with aiohttp.ClientSession() as http:
        api = hub.api(http)
        status, started = await api.post("/rooms/rec-room/recordings")
        assert status == 201
        delivered = await receiver.wait_for(lambda d: len(d) >= 2)
        assert {e["type"] for e in delivered} == {"recording_damaged"}
        assert all(e["damaged"].startswith("write_failed") for e in delivered)
        # The call goes on: the viewer keeps decoding the bot's video and audio.
        await viewer.wait_for(lambda c: len(c.remote) == 2, timeout=15)
        counters: dict[str, FrameCounter] = {}
        count_remote(viewer, counters)
        await wait_until(lambda: all(fc.video + fc.audio >= 20 for fc in counters.values()), 15)
        for fc in counters.values():
            fc.stop()
        status, done = await api.delete(f"/rooms/rec-room/recordings/{started['recordingId']}")
        assert status == 200 and done["damaged"].startswith("write_failed")
    await receiver.wait_for(lambda d: any(e["type"] == "recording_finished" for e in d))
    await receiver.close()
    await viewer.close()
    await bot.close()


async def test_a_participant_leaving_mid_recording_leaves_complete_files(
    hub_factory: Any, tmp_path: Path
) -> None:
    hub = await hub_factory(**SFU, recording_dir=tmp_path / "rec")
    stays, _ = await participant(hub, "stays", "rec-room")
    leaves, _ = await participant(hub, "leaves", "rec-room")
    async with aiohttp.ClientSession() as http:
        api = hub.api(http)
        status, started = await api.post("/rooms/rec-room/recordings")
        assert status == 201
        await asyncio.sleep(2.5)
        await leaves.close()
        await asyncio.sleep(2.5)
        status, done = await api.delete(f"/rooms/rec-room/recordings/{started['recordingId']}")
    await stays.close()
    assert status == 200 and done["endReason"] == "stopped" and done["damaged"] is None
    by_user: dict[str, dict[str, float]] = {}
    for entry in done["files"]:
        by_user.setdefault(entry["userId"], {})[entry["kind"]] = entry["duration"]
        probe(Path(done["directory"]) / entry["file"])  # every file opens and decodes
    assert set(by_user) == {"stays", "leaves"}
    assert all(3.5 < d < 6.0 for d in by_user["stays"].values()), by_user
    assert all(1.0 < d < 3.5 for d in by_user["leaves"].values()), by_user


@pytest.fixture
def s3_server(tmp_path: Path) -> Any:
    """A real S3-compatible HTTP server on loopback (moto's, from PyPI), with a bucket."""
    import shutil
    import subprocess
    import time as _time

    import boto3

    from tests.cluster import free_port

    port = free_port()
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    log = (tmp_path / "moto.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="rec-key",
        aws_secret_access_key="rec-secret",
    )
    deadline = _time.monotonic() + 20
    while True:
        try:
            client.create_bucket(Bucket="calls")
            break
        except Exception:
            assert _time.monotonic() < deadline, (tmp_path / "moto.log").read_text()
            _time.sleep(0.2)
    yield endpoint, client
    proc.terminate()
    proc.wait(10)


async def test_finished_recordings_go_to_s3_compatible_storage(
    hub_factory: Any, tmp_path: Path, s3_server: Any
) -> None:
    endpoint, client = s3_server
    receiver = await Receiver().start()
    hub = await hub_factory(
        **SFU,
        recording_dir=tmp_path / "rec",
        recording_s3_bucket="calls",
        recording_s3_prefix="switchboard/",
        recording_s3_endpoint=endpoint,
        recording_s3_access_key="rec-key",
        recording_s3_secret_key="rec-secret",
        recording_s3_keep_local=False,
        webhook_urls=[receiver.url],
        webhook_events=["recording_finished"],
    )
    bot, _ = await participant(hub, "bot", "rec-room")
    started, done = await record(hub, 2.0)
    assert done["storage"]["state"] in ("uploading", "uploaded")
    await bot.close()
    (finished,) = await receiver.wait_for(lambda d: len(d) >= 1, timeout=20)
    await receiver.close()
    storage = finished["storage"]
    assert storage["state"] == "uploaded" and storage["bucket"] == "calls", storage
    prefix = f"switchboard/{started['recordingId']}/"
    listed = client.list_objects_v2(Bucket="calls", Prefix=prefix)
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert keys == sorted(storage["keys"]) and len(keys) == 3  # two files and the manifest
    video = next(k for k in keys if k.endswith(".webm"))
    copy = tmp_path / "copy.webm"
    client.download_file("calls", video, str(copy))
    assert probe(copy)["size"] == (320, 240)
    assert not exists(done["directory"])  # keep_local off: uploaded, then removed


async def test_an_unreachable_bucket_keeps_the_files_here(hub_factory: Any, tmp_path: Path) -> None:
    from tests.redis_server import free_port

    receiver = await Receiver().start()
    hub = await hub_factory(
        **SFU,
        recording_dir=tmp_path / "rec",
        recording_s3_bucket="calls",
        recording_s3_endpoint=f"http://127.0.0.1:{free_port()}",  # nobody listens
        recording_s3_access_key="k",
        recording_s3_secret_key="s",
        recording_s3_keep_local=False,
        webhook_urls=[receiver.url],
        webhook_events=["recording_finished"],
    )
    bot, _ = await participant(hub, "bot", "rec-room")
    _, done = await record(hub, 1.5)
    await bot.close()
    (finished,) = await receiver.wait_for(lambda d: len(d) >= 1, timeout=60)
    await receiver.close()
    assert finished["storage"]["state"] == "failed" and finished["storage"]["error"]
    assert sorted(listing(done["directory"]))[-1] == "manifest.json"
    assert len(listing(done["directory"])) == 3
