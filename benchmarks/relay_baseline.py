"""The anchor the SFU benchmark compares with: aiortc's ``MediaRelay``, as its examples use it.

A publisher's track is received (and so decoded) once; ``MediaRelay`` hands the decoded
frames to one proxy track per subscriber, and each subscriber's sender encodes them again.
That is the decode-and-re-encode relay a Python team would write without an SFU. Signaling
is plain HTTP (full SDP, no trickle): ``POST /publish`` and ``POST /subscribe`` with
``{"sdp", "room"}``, answered with ``{"sdp"}``.

Run: ``python -m benchmarks.relay_baseline --port N`` (the benchmark starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.rtcconfiguration import RTCBundlePolicy

from media import ice

BUNDLED = RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def make_app() -> web.Application:
    relay = MediaRelay()
    published: dict[int, list[MediaStreamTrack]] = {}  # by room
    pcs: set[RTCPeerConnection] = set()
    ice.install()
    ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",)))

    async def publish(request: web.Request) -> web.Response:
        ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",)))
        body = await request.json()
        pc = RTCPeerConnection(BUNDLED)
        pcs.add(pc)
        tracks = published.setdefault(int(body.get("room", 0)), [])

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            tracks.append(track)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def subscribe(request: web.Request) -> web.Response:
        ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",)))
        body = await request.json()
        pc = RTCPeerConnection(BUNDLED)
        pcs.add(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        pending = list(published.get(int(body.get("room", 0)), []))
        for transceiver in pc.getTransceivers():
            match = next((t for t in pending if t.kind == transceiver.kind), None)
            if match is not None:
                pending.remove(match)
                transceiver.sender.replaceTrack(relay.subscribe(match, buffered=False))
                transceiver.direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp})

    async def count(request: web.Request) -> web.Response:
        room = int(request.query.get("room", 0))
        return web.json_response({"published": len(published.get(room, []))})

    async def close_all(_: web.Application) -> None:
        for pc in list(pcs):
            with contextlib.suppress(Exception):
                await pc.close()

    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_post("/subscribe", subscribe)
    app.router.add_get("/published", count)
    app.on_shutdown.append(close_all)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    async def run() -> None:
        runner = web.AppRunner(make_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        await asyncio.Event().wait()

    uvloop.run(run())


if __name__ == "__main__":
    main()
