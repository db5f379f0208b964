"""Simulcast: headless Chromium publishes its camera in three layers (q, h, f) and each
subscriber gets the one that fits what it asked for, switched at keyframes only, as one
continuous RTP stream; publishers pause what nobody watches (dynacast).

The publisher is Chromium with a 1280x720 fake camera (a Y4M clip, so Chrome really sends
three layers); subscribers are Chromium pages showing the remote video in a <video> they
resize or hide (the SDK tells the server), and aiortc clients whose raw RTP is checked.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from playwright.async_api import Page, async_playwright

from media import vp8
from media.client import SfuClient
from tests.fake_camera import write_y4m
from tests.sfu_helpers import SFU, FrameCounter, count_remote, sfu_of, wait_until

STATE_KINDS = ("memory",)  # the SFU is node-local
pytestmark = pytest.mark.usefixtures("served_collector")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOM = "sim-room"


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m")


@pytest.fixture
async def chromium(camera: Path) -> AsyncIterator[Any]:
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def open_call(browser: Any, hub: Any, user: str, publish: bool) -> Page:
    """A page on the server's origin in ROOM through the served SDK (``window.call``);
    a subscriber page shows each remote video in a <video id="v"> it attaches."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{hub.base}/health")
    await page.evaluate(
        """async ([token, room, publish]) => {
            document.body.innerHTML = '<video id="v" autoplay muted playsinline ' +
                'style="width:160px;height:90px;display:block"></video>';
            const { Switchboard } = await import('/sdk/switchboard.js');
            const sb = await Switchboard.connect(`ws://${location.host}/ws`, token);
            const call = await sb.joinGroupCall(room);
            window.call = call;
            call.addEventListener('track', (e) => {
                if (e.detail.info.kind === 'video') {
                    call.attach(e.detail.info.trackId, document.getElementById('v'));
                }
            });
            if (publish) await call.publish({ audio: false, video: true });
        }""",
        [hub.token(user), ROOM, publish],
    )
    return page


async def resize(page: Page, width: int, height: int) -> None:
    await page.evaluate(
        "([w, h]) => { const v = document.getElementById('v');"
        " v.style.width = w + 'px'; v.style.height = h + 'px'; }",
        [width, height],
    )


async def video_in(page: Page) -> dict[str, Any]:
    stats = await page.evaluate("window.call.inboundStats()")
    videos = [s for s in stats.values() if s["kind"] == "video"]
    return videos[0] if videos else {}


async def video_freezes(page: Page) -> list[dict[str, Any]]:
    """What Chromium says of its video's freezes and drops, for a failure's message."""
    return await page.evaluate(
        """async () => {
            const out = [];
            (await window.call.subscriber.getStats()).forEach((s) => {
                if (s.type === "inbound-rtp" && s.kind === "video") out.push({
                    freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
                    framesReceived: s.framesReceived, framesDropped: s.framesDropped,
                    keyFramesDecoded: s.keyFramesDecoded, packetsLost: s.packetsLost,
                    jitterBufferDelay: s.jitterBufferDelay, nackCount: s.nackCount});
            });
            return out;
        }"""
    )


class LoopStalls:
    """Records how late this event loop (the hub's too) wakes up from 10 ms sleeps: a
    stall of the SFU shows here, a stall of the browser does not. Each stall also says
    how much of it was this process's garbage collector: its heap is the whole suite's,
    far larger than a served node's, so its full collections are not the hub's doing."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, int, int]] = []
        self._gc_ms = 0.0
        self._gc_started: float | None = None
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._watch())

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.monotonic()
        elif self._gc_started is not None:
            self._gc_ms += (time.monotonic() - self._gc_started) * 1000
            self._gc_started = None

    async def _watch(self) -> None:
        while True:
            before, gc_before = time.monotonic(), self._gc_ms
            await asyncio.sleep(0.01)
            late = time.monotonic() - before - 0.01
            if late > 0.03:
                in_gc = self._gc_ms - gc_before
                self.stalls.append((round(before, 3), round(late * 1000), round(in_gc)))

    def stop(self) -> list[tuple[float, int, int]]:
        self._task.cancel()
        gc.callbacks.remove(self._on_gc)
        return self.stalls


async def sent_by_rid(page: Page) -> dict[str, dict[str, Any]]:
    return await page.evaluate("window.call.outboundStats()")


async def until(probe: Any, check: Any, timeout: float, what: str) -> Any:
    """Poll ``await probe()`` until ``check(value)``; fail with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"{what}: {value}"
        await asyncio.sleep(0.25)


def server_video(hub: Any) -> Any:
    room = sfu_of(hub).rooms[ROOM]
    (track,) = [t for t in room.tracks() if t.kind == "video"]
    return track


async def published(hub: Any) -> Any:
    sfu = sfu_of(hub)
    await wait_until(
        lambda: ROOM in sfu.rooms and any(t.kind == "video" for t in sfu.rooms[ROOM].tracks()),
        15,
    )
    return server_video(hub)


async def test_each_browser_gets_the_layer_its_tile_needs_and_switches_without_freezing(
    hub_factory, chromium
):
    hub = await hub_factory(**SFU)
    publisher = await open_call(chromium, hub, "pub", publish=True)
    track = await published(hub)
    assert track.info.rids == ("q", "h", "f")
    small = await open_call(chromium, hub, "small", publish=False)
    large = await open_call(chromium, hub, "large", publish=False)
    await resize(large, 1280, 720)

    # The 160x90 tile decodes the low layer, the 1280x720 one the high layer.
    await until(
        lambda: video_in(small),
        lambda s: s.get("framesDecoded", 0) > 20 and 0 < s["frameWidth"] <= 320,
        20,
        "small tile on the low layer",
    )
    await until(
        lambda: video_in(large),
        lambda s: s.get("framesDecoded", 0) > 20 and s["frameWidth"] >= 960,
        20,
        "large tile on the high layer",
    )

    # Enlarging the small tile switches it up within 3 s, decoding all along.
    stalls = LoopStalls()
    before = await video_in(small)
    (freezes_before,) = await video_freezes(small)
    await resize(small, 1280, 720)
    started = time.monotonic()
    samples = [(started, before["framesDecoded"])]
    while time.monotonic() - started < 4.0:
        await asyncio.sleep(0.2)
        now = await video_in(small)
        samples.append((time.monotonic(), now["framesDecoded"]))
        if now["frameWidth"] >= 960 and "switched" not in locals():
            switched = time.monotonic() - started
    assert "switched" in locals(), await video_in(small)
    assert switched < 3.0
    frozen = max(
        (b[0] - a[0] for a, b in itertools.pairwise(samples) if b[1] <= a[1]),
        default=0.0,
    )
    assert frozen < 1.0, samples
    after = await video_in(small)
    assert after["pliCount"] - before["pliCount"] <= 1  # no decode errors to recover from
    loop_stalls = stalls.stop()
    (freezes_after,) = await video_freezes(small)
    if freezes_after["freezeCount"] != freezes_before["freezeCount"]:  # shown on a failure
        print("framesDecoded samples (monotonic time, frames):", samples)
        print("Chromium before and after:", freezes_before, freezes_after)
        print("loop stalls (monotonic time, ms late, ms of it in gc):", loop_stalls)
    # Chromium counts a gap of about 180 ms between frames (at 30 fps) as a freeze. The
    # hub must not make one: its loop never stalls that long (a full garbage collection
    # of the test process's heap once did, inside the switch). The browser may make a
    # short one of its own on a loaded machine (decoding the first 1280x720 keyframe
    # beside two other Chromiums: seen in a full run with the hub's loop never late by
    # 30 ms); the issue's bound is no freeze over 1 s. A full run late in the suite also
    # saw this process's loop 227 ms late at the switch's start, the cause not recorded
    # then: the time its own collector took is now recorded and not counted.
    assert max((late - in_gc for _, late, in_gc in loop_stalls), default=0) < 150, loop_stalls
    frozen_for = freezes_after["totalFreezesDuration"] - freezes_before["totalFreezesDuration"]
    assert frozen_for < 0.5, (freezes_before, freezes_after)

    # A hidden tile receives nothing of that video.
    await small.evaluate("document.getElementById('v').style.display = 'none'")
    await asyncio.sleep(1.0)  # what was under way
    hidden_from = (await video_in(small))["packetsReceived"]
    await asyncio.sleep(1.5)
    assert (await video_in(small))["packetsReceived"] == hidden_from

    # Nobody wants the high layer any more: the publisher stops sending it (dynacast)...
    await resize(large, 160, 90)
    sent = await until(
        lambda: sent_by_rid(publisher),
        lambda s: not s["f"]["active"] and not s["h"]["active"],
        5,
        "dynacast pauses h and f",
    )
    await asyncio.sleep(0.5)
    assert (await sent_by_rid(publisher))["f"]["bytesSent"] == sent["f"]["bytesSent"]
    await until(lambda: video_in(large), lambda s: 0 < s["frameWidth"] <= 320, 5, "large tile down")
    # ... and sends it again when someone does.
    await resize(large, 1280, 720)
    await until(
        lambda: sent_by_rid(publisher),
        lambda s: s["f"]["active"] and s["f"]["bytesSent"] > sent["f"]["bytesSent"],
        5,
        "dynacast resumes f",
    )
    await until(lambda: video_in(large), lambda s: s["frameWidth"] >= 960, 8, "large tile up")
    stats = track.stats()
    assert [layer["rid"] for layer in stats["layers"]] == ["q", "h", "f"]
    # the receiver aiortc made for the simulcast section holds no (idle) decoder thread
    assert not [t.name for t in threading.enumerate() if t.name.endswith("decoder")]


def assert_numbering_continues(pics: list[Picture]) -> int:
    """PictureIDs and TL0PICIDX of a subscriber's stream go on as one encoder's would:
    exactly one more at a layer switch (a keyframe of another size), and forward by a
    few elsewhere, keyframes the encoder made included (an encoder skips numbers of
    frames it drops, as a busy one does; a broken switch would jump back or thousands
    ahead)."""
    size, switches = None, 0
    for before, after in itertools.pairwise(pics):
        a, b = before.d, after.d
        assert a.picture_id is not None and b.picture_id is not None
        assert a.tl0 is not None and b.tl0 is not None
        pid_step = (b.picture_id - a.picture_id) % (1 << 15)
        tl0_step = (b.tl0 - a.tl0) % 256
        switched = after.keyframe and size is not None and after.size != size
        if after.keyframe:
            size = after.size
        if switched:
            assert (pid_step, tl0_step) == (1, 1), (before, after)
            switches += 1
        else:
            assert 1 <= pid_step <= 8 and tl0_step <= 4, (before, after)
    return switches


class Picture(NamedTuple):
    seq: int
    keyframe: bool
    d: vp8.Descriptor
    size: tuple[int, int] | None  # a keyframe's


def pictures(kept: list[tuple[int, int, bytes]]) -> list[Picture]:
    """The first packet of each picture a subscriber received."""
    out = []
    for seq, _, payload in kept:
        d = vp8.parse(payload)
        assert d is not None
        if d.picture_start:
            keyframe = vp8.is_keyframe(payload, d)
            size = vp8.keyframe_size(payload, d) if keyframe else None
            out.append(Picture(seq, keyframe, d, size))
    return out


async def test_layer_switches_keep_the_rtp_stream_continuous(hub_factory, chromium):
    """Captured RTP of a subscriber switched q -> f -> h -> q, then to a lower frame rate:
    sequence numbers step by one, timestamps never go back, VP8 PictureIDs and TL0PICIDX
    continue; a decoding subscriber sees every size."""
    hub = await hub_factory(**SFU)
    await open_call(chromium, hub, "pub", publish=True)
    track = await published(hub)
    raw = SfuClient(await hub.connect("raw"), ROOM, decode=False, keep_packets=True)
    seer = SfuClient(await hub.connect("seer"), ROOM)
    try:
        for client in (raw, seer):
            await client.join()
            await client.wait_for(lambda c: len(c.remote) == 1, timeout=15)
        counters: dict[str, FrameCounter] = {}
        count_remote(seer, counters)
        (frames,) = counters.values()
        track_id = track.info.track_id
        switches = [
            ("q", {"width": 160, "height": 90}),
            ("f", {"quality": "high"}),
            ("h", {"width": 640, "height": 360}),
            ("q", {"quality": "low"}),
        ]
        for rid, wish in switches:
            for client in (raw, seer):
                ack = await client.hub.request(
                    "sfu:subscription", {"roomId": ROOM, "tracks": [{"trackId": track_id, **wish}]}
                )
                assert ack == {"applied": [track_id], "unknown": []}
            await wait_until(
                lambda rid=rid: all(
                    s.forwarder.current is not None and s.forwarder.current.rid == rid
                    for s in track.slots
                ),
                6,
            )
            await asyncio.sleep(1.0)
        (counter,) = [r.counter for r in raw.remote.values()]
        assert counter is not None
        kept = list(counter.kept)
        assert len(kept) > 100
        seqs = [seq for seq, _, _ in kept]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
        assert counter.timestamps_backwards == 0
        assert all((b[1] - a[1]) % (1 << 32) < 1 << 31 for a, b in itertools.pairwise(kept))
        pics = pictures(kept)
        assert assert_numbering_continues(pics) >= 3  # q -> f -> h -> q
        for slot in track.slots:  # both subscribers'
            stats = slot.stats()
            assert stats["layer"] == stats["targetLayer"] == "q"
            assert stats["layerSwitches"] >= 3  # q -> f -> h -> q (the first is a start)
        sizes = {w for w, _ in frames.sizes}
        assert min(sizes) <= 320 and max(sizes) >= 960, frames.sizes

        # A lower frame rate: whole pictures of higher temporal layers are left out, and
        # the numbering closes over them.
        if any(p.d.tid not in (None, 0) for p in pics):
            mark = len(counter.kept)
            await raw.hub.request(
                "sfu:subscription",
                {"roomId": ROOM, "tracks": [{"trackId": track_id, "quality": "low", "fps": 8}]},
            )
            await asyncio.sleep(2.0)
            later = pictures(counter.kept[mark:])[10:]
            assert later and all(p.d.tid == 0 for p in later)
            assert_numbering_continues(later)
            steps = [(b.d.tl0 - a.d.tl0) % 256 for a, b in itertools.pairwise(later)]  # type: ignore[operator]
            assert steps.count(1) >= len(steps) - 2  # base-layer pictures only, numbered on
            assert any(s.pictures_dropped for s in track.slots)
        else:
            pytest.fail("Chromium sent no temporal layers (scalabilityMode L1T3)")
        frames.stop()
    finally:
        await raw.close()
        await seer.close()


async def test_a_publish_cap_keeps_a_simulcast_browser_under_it(hub_factory, chromium):
    """The cap reaches Chromium as REMB while it estimates with transport-cc: it keeps
    what it sends under it, and a subscriber keeps decoding."""
    hub = await hub_factory(**SFU, sfu_max_publish_bitrate=400_000)
    await open_call(chromium, hub, "pub", publish=True)
    track = await published(hub)
    viewer = await open_call(chromium, hub, "large", publish=False)
    await resize(viewer, 1280, 720)
    await asyncio.sleep(6)  # the browser's estimator takes the cap in
    samples = []
    for _ in range(4):
        await asyncio.sleep(1)
        samples.append(track.bitrate_in)
    assert max(samples) < 400_000 * 1.15, samples
    # (uncapped, its 720p layer alone runs at some 1.5 Mbit/s: test above; here the only
    # layer watched gets the whole cap, dynacast having paused the others)
    before = (await video_in(viewer))["framesDecoded"]
    await asyncio.sleep(2)
    assert (await video_in(viewer))["framesDecoded"] > before + 20
