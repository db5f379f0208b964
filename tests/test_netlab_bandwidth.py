"""Subscribers' bandwidth in the network lab: a Chromium subscriber behind a 600 kbps link
in a room of four simulcast cameras keeps decoding on low layers while an unconstrained
subscriber gets the high ones, and climbs back once the cap is lifted; a jittery path is
not taken for a congested one; a lossy link keeps video decoding (NACK, RTX) without
flooding the publisher with keyframe requests.

The cameras are lab agents replaying three pre-encoded VP8 layers the way a browser sends
them (``benchmarks/simulcast.py``); the layers are encoded once per session, here.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from benchmarks.simulcast import layer_loops, save_loops
from tests.netlab.clients import Agent, group_call
from tests.netlab.topology import Internet, Placement, running_internet, token

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CAMERAS = 4


@pytest.fixture(scope="module")
def internet(tmp_path_factory: pytest.TempPathFactory):
    with running_internet(tmp_path_factory.mktemp("netlab-bw")) as net:
        yield net


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_loops(layer_loops(2.0), tmp_path_factory.mktemp("layers") / "layers.bin")


async def start_cameras(internet: Internet, room: str, layers: Path) -> list[Agent]:
    placed = internet.placements["direct"]
    agents = []
    for i in range(CAMERAS):
        agents.append(
            await Agent.start(
                internet,
                placed,
                "cameras",
                "--url",
                placed.ws_url,
                "--token",
                token(f"cam{i}-{secrets.token_hex(2)}"),
                "--room",
                room,
                "--layers",
                str(layers),
            )
        )
    for agent in agents:
        await agent.event("report", 60)
    return agents


def set_rate(internet: Internet, placement: Placement, rate: str) -> None:
    """Change the cap on a shaped placement's downlink (its router's tbf)."""
    router = f"{internet.lab.tag}-r-{placement.name}"
    internet.lab.tc(router, "qdisc", "change", "dev", "lan", "root", "tbf",
                    "rate", rate, "burst", "16kbit", "latency", "300ms")  # fmt: skip


async def videos(page: Page) -> dict[str, dict[str, Any]]:
    stats = await page.evaluate("window.call.inboundStats()")
    return {k: v for k, v in stats.items() if v["kind"] == "video"}


async def watch(page: Page, seconds: float) -> dict[str, Any]:
    """Per video: the longest stretch without a newly decoded frame once it decoded one
    (a video resumed during the watch counts from then; one paused during it, from its
    last frame to the end), and loss."""
    first = await videos(page)
    last_change: dict[str, float | None] = dict.fromkeys(first)
    frames = {k: v["framesDecoded"] for k, v in first.items()}
    longest = dict.fromkeys(first, 0.0)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(0.25)
        now = time.monotonic()
        for key, stat in (await videos(page)).items():
            if key not in frames:
                continue
            if stat["framesDecoded"] > frames[key]:
                frames[key] = stat["framesDecoded"]
                last_change[key] = now
            since = last_change[key]
            if since is not None:
                longest[key] = max(longest[key], now - since)
    end = await videos(page)
    out = {}
    for key in first:
        got = end[key]["packetsReceived"] - first[key]["packetsReceived"]
        lost = end[key]["packetsLost"] - first[key]["packetsLost"]
        out[key] = {
            "longestFreeze": round(longest[key], 2),
            "frames": end[key]["framesDecoded"] - first[key]["framesDecoded"],
            "loss": lost / (got + lost) if got + lost else 0.0,
            "width": end[key]["frameWidth"],
        }
    return out


async def layers_sent(page: Page) -> list[str | None]:
    stats = await page.evaluate("window.call.serverStats()")
    return [s.get("layer") for s in stats["subscriptions"] if s.get("layer") is not None]


async def open_viewer(pw: Any, internet: Internet, placement: Placement, room: str) -> Page:
    """A Chromium in ``placement``'s namespace joined to ``room``, subscribing only,
    each remote video in a 640x360 tile (the SDK's adaptive attach asks for ``h``)."""
    wrapper = internet.workdir / f"chromium-{placement.name}"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {placement.ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    browser = await pw.chromium.launch(
        executable_path=str(wrapper),
        args=[
            "--use-fake-ui-for-media-stream",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--autoplay-policy=no-user-gesture-required",
            "--no-sandbox",
            f"--unsafely-treat-insecure-origin-as-secure={placement.http_base}",
        ],
    )
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    await page.goto(f"{placement.http_base}/health")
    await page.evaluate(
        """async ([token, room]) => {
            const { Switchboard } = await import('/sdk/switchboard.js');
            const sb = await Switchboard.connect(`ws://${location.host}/ws`, token);
            const call = await sb.joinGroupCall(room);
            window.call = call;
            call.addEventListener('track', (e) => {
                if (e.detail.info.kind !== 'video') return;
                const v = document.createElement('video');
                v.autoplay = v.muted = v.playsInline = true;
                v.style.cssText = 'width:640px;height:360px;display:inline-block';
                document.body.append(v);
                call.attach(e.detail.info.trackId, v);
            });
        }""",
        [token(f"viewer-{placement.name}"), room],
    )
    await page.wait_for_function(
        f"window.call && window.call.remote.size === {CAMERAS}", timeout=30000
    )
    return page


async def until_layers(page: Page, ok: Any, seconds: float) -> float:
    """Wait until the layers the server sends ``page`` satisfy ``ok``; the time taken."""
    started = time.monotonic()
    while not ok(await layers_sent(page)):
        assert time.monotonic() - started < seconds, await page.evaluate(
            "window.call.serverStats()"
        )
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def test_a_subscriber_behind_600_kbps_decodes_low_layers_then_climbs_back(
    internet: Internet, layers: Path
) -> None:
    room = internet.room()
    cameras = await start_cameras(internet, room, layers)
    capped = internet.shaped(rate="600kbit")
    try:
        async with async_playwright() as pw:
            free = await open_viewer(pw, internet, internet.placements["direct-b"], room)
            page = await open_viewer(pw, internet, capped, room)
            await asyncio.sleep(8)  # the estimate settles under the cap
            seen = await watch(page, 10)
            server = await page.evaluate("window.call.serverStats()")
            report = {"browser": seen, "server": server}
            print(json.dumps(report, indent=1))
            decoding = [v for v in seen.values() if v["frames"] > 0]
            # What does not fit is paused, least important first; the most important
            # always has a layer and decodes without a freeze. Where the estimate sits
            # behind the cap (room for one or two low layers) varies from run to run, and
            # a video at the edge may be paused and resumed within the window.
            steady = [v for v in decoding if v["longestFreeze"] < 2.0 and v["loss"] < 0.05]
            assert steady, report
            for video in decoding:
                assert video["width"] <= 320, report
            assert set(await layers_sent(page)) <= {"q"}, report
            metrics = await page.evaluate("fetch('/metrics').then((r) => r.text())")

            # every video held below what it wants shows in the node's metrics: lowered
            # or paused (whether the four low layers fit under the cap, or one is paused,
            # depends on where the estimate settles)
            def metric(line: str) -> float:
                return float(metrics.split(line)[1].split()[0])

            node_paused = metric('switchboard_sfu_bandwidth_limited_videos{state="paused"} ')
            node_lowered = metric('switchboard_sfu_bandwidth_limited_videos{state="lowered"} ')
            assert node_paused >= server["bandwidth"]["paused"], report
            assert node_paused + node_lowered >= server["bandwidth"]["limited"] > 0, report
            assert 'switchboard_sfu_downlink_estimate_bps{stat="min"}' in metrics
            # both Chromium viewers' estimates are the server's
            assert metric('switchboard_sfu_downlink_estimators{estimator="transport-cc"} ') >= 2
            # meanwhile the unconstrained subscriber gets the layer its tiles want
            await until_layers(free, lambda sent: sent.count("h") == CAMERAS, 10)
            # the cap lifted: the server's probes find the room (Chromium sends
            # transport-cc feedback), so every video is back and most at the layer their
            # tile wants within 20 s (alone it takes 3-9 s; a loaded full run took past 10)
            set_rate(internet, capped, "100mbit")
            took = await until_layers(
                page,
                lambda sent: len(sent) == CAMERAS and sent.count("h") >= CAMERAS - 1,
                20,
            )
            assert server["bandwidth"]["estimator"] == "transport-cc", server["bandwidth"]
            print("climbed back in", round(took, 1), "s")
    finally:
        await asyncio.gather(*(camera.stop() for camera in cameras))


async def test_a_jittery_path_does_not_pass_for_congestion(
    internet: Internet, layers: Path
) -> None:
    """75 ms +- 15 ms, packets overtaking each other (a mobile path): the server's own
    estimate must not read the jitter as a queue, nor the reordering as loss."""
    room = internet.room()
    cameras = await start_cameras(internet, room, layers)
    jittery = internet.shaped(delay_ms=75, jitter_ms=15)
    try:
        async with async_playwright() as pw:
            page = await open_viewer(pw, internet, jittery, room)
            # How long the climb to the top layers takes depends on the machine's load
            # (over 15 s once): the claim is that it gets there, not how fast.
            await until_layers(page, lambda sent: sent.count("h") == CAMERAS, 25)
            seen = await watch(page, 8)
            server = await page.evaluate("window.call.serverStats()")
            report = {"browser": seen, "bandwidth": server["bandwidth"]}
            print(json.dumps(report, indent=1))
            assert server["bandwidth"]["estimator"] == "transport-cc", report
            assert server["bandwidth"]["sendSide"]["loss"] < 0.02, report
            for video in seen.values():
                assert video["frames"] > 100 and video["longestFreeze"] < 1.0, report
    finally:
        await asyncio.gather(*(camera.stop() for camera in cameras))


async def test_three_percent_loss_keeps_video_decoding_without_a_keyframe_storm(
    internet: Internet,
) -> None:
    lossy = internet.shaped(loss=3.0)
    reports = await group_call(
        internet, [internet.placements["direct-b"], lossy], 90.0, "--watch", "20"
    )
    watched = reports[1]["watch"]
    print(json.dumps({"watch": watched, "publisher": reports[0]}))
    # A packet whose NACK or retransmission is lost too waits for the receiver's next
    # NACK (aiortc sends one when a new gap opens: a few hundred ms at 3 % loss), so a
    # gap near the 0.5 s that counts as a freeze comes now and then; one every 5 s at
    # most, judged over 20 s (10 s and 2 allowed failed 1 run in 10 on a loaded machine).
    assert watched["videoFrames"] > 200 and watched["freezes"] <= 4, watched
    # the publisher (the reference client) was asked for at most one keyframe a second
    publisher = reports[0]
    assert publisher["keyframeRequests"] <= publisher["secondsPublishing"] + 1, publisher
