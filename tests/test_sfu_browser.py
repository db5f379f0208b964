"""Two headless Chromium pages (fake camera and microphone) and one aiortc client in a group call.

Chromium is Debian's (``/usr/bin/chromium``, installed by the test command), driven by
playwright. Each page uses the served SDK through ``/demo`` and must decode video from
both others (``framesDecoded`` rising) and receive their audio packets.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

import pytest
from playwright.async_api import async_playwright

from media.client import SfuClient
from media.synthetic import PatternTrack, ToneTrack
from tests.cluster import Cluster, token
from tests.sfu_helpers import SFU, FrameCounter, count_remote, participant, wait_until

STATE_KINDS = ("memory",)  # the SFU is node-local
pytestmark = pytest.mark.usefixtures("served_collector")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
]


async def inbound(page) -> dict:
    return await page.evaluate("window.call ? window.call.inboundStats() : {}")


async def test_two_browsers_and_an_aiortc_client_see_and_hear_each_other(hub_factory):
    hub = await hub_factory(**SFU)
    bot, _ = await participant(hub, "bot", "demo-room")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            pages = []
            for user in ("ada", "bea"):
                page = await browser.new_page()
                url = f"{hub.base}/demo?room=demo-room&token={hub.token(user)}"
                await page.goto(url)
                await page.wait_for_function("window.callReady === true", timeout=20000)
                pages.append(page)
            await bot.wait_for(lambda c: len(c.remote) == 4, timeout=20)

            async def stats_ok(page) -> dict | None:
                stats = await inbound(page)
                videos = [s for s in stats.values() if s["kind"] == "video"]
                audios = [s for s in stats.values() if s["kind"] == "audio"]
                if len(videos) == 2 and len(audios) == 2:
                    if all(v["framesDecoded"] > 10 for v in videos) and all(
                        a["packetsReceived"] > 10 for a in audios
                    ):
                        return stats
                return None

            deadline = asyncio.get_running_loop().time() + 30
            first: list[dict] = []
            for page in pages:
                while (found := await stats_ok(page)) is None:
                    assert asyncio.get_running_loop().time() < deadline, await inbound(page)
                    await asyncio.sleep(0.5)
                first.append(found)
            await asyncio.sleep(1.0)
            for page, before in zip(pages, first, strict=True):
                after = await inbound(page)
                owners = {s["participantId"] for s in after.values()}
                assert bot.participant_id in owners and len(owners) == 2
                for track_id, stat in after.items():
                    if stat["kind"] == "video":
                        assert stat["framesDecoded"] > before[track_id]["framesDecoded"]
                    else:
                        assert stat["packetsReceived"] > before[track_id]["packetsReceived"]
            # the aiortc client decodes both browsers' audio and video
            kinds = sorted(r.info["kind"] for r in bot.remote.values())
            assert kinds == ["audio", "audio", "video", "video"]
            counters: dict[str, FrameCounter] = {}
            count_remote(bot, counters)
            await wait_until(lambda: all(fc.video + fc.audio >= 10 for fc in counters.values()), 15)
            for fc in counters.values():
                fc.stop()
        finally:
            await browser.close()
            await bot.close()


async def video_frames(page, participant_id: str | None) -> int:
    stats = await inbound(page)
    return sum(
        s["framesDecoded"]
        for s in stats.values()
        if s["kind"] == "video" and s["participantId"] == participant_id
    )


async def test_browser_follows_its_room_when_the_media_node_dies(tmp_path, redis_server):
    """Three nodes (a: WebSockets only, m1 and m2: media): the media node dies, and the
    page's SDK re-joins on the survivor and publishes its camera again by itself."""
    cluster = Cluster(tmp_path, redis_server.url)
    try:
        a, _, _ = await asyncio.gather(
            cluster.start_media("a", media=False),
            cluster.start_media("m1"),
            cluster.start_media("m2"),
        )
        bot = SfuClient(await a.connect("bot", "bridge"), "bridge", decode=False)
        await bot.join()
        await bot.publish([(ToneTrack(), "microphone"), (PatternTrack(160, 120), "camera")])
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page()
                await page.goto(f"{a.base}/demo?room=bridge&token={token('ada')}")
                await page.wait_for_function("window.callReady === true", timeout=20000)
                ada = await page.evaluate("window.call.participantId")

                async def both_ways() -> None:
                    await bot.wait_for(lambda c: len(c.remote_of(ada)) == 2, timeout=20)
                    await wait_until(
                        lambda: all(r.counter.packets > 5 for r in bot.remote_of(ada)), 20
                    )
                    for _ in range(60):
                        if await video_frames(page, bot.participant_id) > 5:
                            return
                        await asyncio.sleep(0.5)
                    raise AssertionError(await inbound(page))

                await both_ways()
                host = bot.media_node
                assert host in ("m1", "m2")
                killed_at = time.perf_counter()
                next(n for n in cluster.nodes if n.name == host).signal(signal.SIGKILL)
                await page.wait_for_function("window.reconnects.length === 1", timeout=20000)
                moved = await page.evaluate("window.reconnects[0]")
                assert moved == {"resumed": False, "mediaNode": "m2" if host == "m1" else "m1"}
                ada = await page.evaluate("window.call.participantId")
                await bot.wait_for(lambda c: bool(c.rejoins), timeout=20)
                await both_ways()
                print(
                    f"\nbrowser: media node killed -> both ways again in "
                    f"{time.perf_counter() - killed_at:.2f} s"
                )
            finally:
                await browser.close()
        await bot.close()
    finally:
        await cluster.close()
