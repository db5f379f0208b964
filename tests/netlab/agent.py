"""One test client, run inside a lab namespace with ``ip netns exec``: a group call
participant, either end of a 1:1 call, or an HTTP check. It speaks JSON lines on stdout
(``{"event": ...}``) and, once it has reported, stays in the call until a line (or EOF)
arrives on stdin, so both ends of a call are checked while the call is up.

The ICE servers come from the server (``session:ready``, the call and join answers), and
every TURN URL among them is tried (media.ice.IcePolicy), as a browser would.

    python -m tests.netlab.agent group --url ws://... --token ... --room r --peers 1
    python -m tests.netlab.agent callee --url ws://... --token ...
    python -m tests.netlab.agent caller --url ws://... --token ... --callee bob
    python -m tests.netlab.agent http --url http://.../health
    python -m tests.netlab.agent cameras --url ws://... --token ... --room r --layers file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame, VideoFrame

from media import ice
from media.client import SfuClient, configuration
from media.synthetic import PatternTrack, ToneTrack
from signaling.client import HubClient

WANT_VIDEO, WANT_AUDIO = 15, 25


def say(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


class Decoded:
    """Counts frames decoded from remote tracks (aiortc's receive pipeline)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.video = self.audio = 0
        self.video_times: list[float] = []
        self.first_media_ms: float | None = None
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def follow(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.ensure_future(self._count(track)))

    async def _count(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    self.video += 1
                    self.video_times.append(time.perf_counter())
                elif isinstance(frame, AudioFrame):
                    self.audio += 1
                if self.first_media_ms is None:
                    self.first_media_ms = round((time.perf_counter() - self.started) * 1000, 1)
                self.changed.set()

    async def wait(self, video: int, audio: int, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while self.video < video or self.audio < audio:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"decoded {self.video} video, {self.audio} audio frames")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


FREEZE_GAP = 0.5  # seconds between two decoded frames of one video that count as a freeze


async def watch(seconds: float, decoded: Decoded, pc: RTCPeerConnection | None) -> dict[str, Any]:
    """Media over ``seconds``: frames decoded, freezes (gaps over 0.5 s), the longest gap,
    and the receiver's packet loss (RTCP-style counts from aiortc's statistics)."""
    video0, audio0, times0 = decoded.video, decoded.audio, len(decoded.video_times)
    lost0, received0 = await _inbound(pc)
    await asyncio.sleep(seconds)
    times = decoded.video_times[max(0, times0 - 1) :]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    lost, received = await _inbound(pc)
    lost, received = lost - lost0, received - received0
    return {
        "seconds": seconds,
        "videoFrames": decoded.video - video0,
        "audioFrames": decoded.audio - audio0,
        "videoFps": round((decoded.video - video0) / seconds, 1),
        "freezes": sum(1 for g in gaps if g > FREEZE_GAP),
        "longestGapMs": round(max(gaps, default=seconds) * 1000),
        "packetsReceived": received,
        "packetsLost": lost,
        "lossPercent": round(100 * lost / (lost + received), 2) if lost + received else None,
    }


async def _inbound(pc: RTCPeerConnection | None) -> tuple[int, int]:
    if pc is None:
        return 0, 0
    lost = received = 0
    for stats in (await pc.getStats()).values():
        if getattr(stats, "type", None) == "inbound-rtp":
            lost += max(0, stats.packetsLost)
            received += stats.packetsReceived
    return lost, received


async def until_stopped() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def signaled_candidates(pc: RTCPeerConnection | None) -> list[str]:
    """The candidates a connection's local description carries, as ``type address:port``."""
    if pc is None or pc.localDescription is None:
        return []
    out = []
    for line in pc.localDescription.sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            out.append(f"{fields[7]} {fields[4]}:{fields[5]}")
    return out


def media(started: float, decoded: Decoded) -> dict[str, Any]:
    return {
        "video": decoded.video,
        "audio": decoded.audio,
        "firstMediaMs": decoded.first_media_ms,
        "connectMs": round((time.perf_counter() - started) * 1000, 1),
    }


async def connect(args: argparse.Namespace) -> HubClient:
    """The signaling connection; a lossy link may lose the first attempt's packets (ARP,
    SYN), so a refused or unreachable connect is tried again a few times."""
    for attempt in range(5):
        try:
            return await HubClient.connect(args.url, args.token)
        except OSError:
            if attempt == 4:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def group(args: argparse.Namespace) -> None:
    hub = await connect(args)
    started = time.perf_counter()
    client = SfuClient(hub, args.room, policy=ice.IcePolicy())
    decoded = Decoded(started)
    try:
        await client.join()
        await client.publish([(ToneTrack(), "microphone"), (PatternTrack(320, 240), "camera")])
        published_at = time.perf_counter()
        await client.wait_for(lambda c: len(c.remote) >= 2 * args.peers, timeout=args.timeout)
        for remote in client.remote.values():
            assert remote.track is not None
            decoded.follow(remote.track)
        await decoded.wait(WANT_VIDEO, WANT_AUDIO, args.timeout)
        first = media(started, decoded)
        watched = await watch(args.watch, decoded, client.subscriber) if args.watch else None
        # A saturated link delays signaling too (its TCP shares the queue): measure it,
        # and on a shaped link report a stalled answer rather than fail the media check.
        asked = time.perf_counter()
        stats: dict[str, Any] = {}
        try:
            stats = await hub.request("sfu:stats", {"roomId": args.room}, timeout=args.timeout)
        except TimeoutError:
            if watched is None:
                raise
        if watched is not None:
            took = time.perf_counter() - asked
            watched["signalingRoundTripMs"] = round(took * 1000) if stats else None
        say(
            "report",
            **first,
            watch=watched,
            publisher=ice.selected_pair(client.publisher),
            subscriber=ice.selected_pair(client.subscriber),
            server=stats.get("connection"),
            # what each connection offered or answered: explains a pair the server learned
            # as peer-reflexive instead of the signaled candidate
            signaled={
                "publisher": signaled_candidates(client.publisher),
                "subscriber": signaled_candidates(client.subscriber),
            },
            participantId=client.participant_id,
            # keyframe requests the server sent this client (its publisher) so far
            keyframeRequests=sum(
                t["plisSent"]
                for t in stats.get("tracks", [])
                if t["participantId"] == client.participant_id
            ),
            secondsPublishing=round(time.perf_counter() - published_at, 1),
        )
        await until_stopped()
    finally:
        decoded.stop()
        await client.close()
        await hub.close()


def one_to_one(ice_servers: list[dict[str, Any]], decoded: Decoded) -> RTCPeerConnection:
    ice.install()
    ice.ICE_POLICY.set(ice.IcePolicy(turn_servers=ice.turn_servers(ice_servers)))
    pc = RTCPeerConnection(configuration(ice_servers))
    pc.addTrack(ToneTrack())
    pc.addTrack(PatternTrack(320, 240))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        decoded.follow(track)

    return pc


async def finish_call(pc: RTCPeerConnection, decoded: Decoded, args: argparse.Namespace) -> None:
    await decoded.wait(WANT_VIDEO, WANT_AUDIO, args.timeout)
    say("report", **media(decoded.started, decoded), pair=ice.selected_pair(pc))
    await until_stopped()


async def callee(args: argparse.Namespace) -> None:
    hub = await HubClient.connect(args.url, args.token)
    say("ready")
    incoming = await hub.expect("call:incoming", timeout=args.timeout)
    started = time.perf_counter()
    decoded = Decoded(started)
    accepted = await hub.request("call:accept", {"callId": incoming["callId"]})
    offer = await hub.expect("call:offer", timeout=args.timeout)
    pc = one_to_one(accepted["iceServers"], decoded)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(**offer["sdp"]))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = {"type": "answer", "sdp": pc.localDescription.sdp}
        await hub.request(
            "call:answer", {"callId": incoming["callId"], "to": offer["from"], "sdp": answer}
        )
        await finish_call(pc, decoded, args)
    finally:
        decoded.stop()
        await pc.close()
        await hub.close()


async def caller(args: argparse.Namespace) -> None:
    hub = await HubClient.connect(args.url, args.token)
    started = time.perf_counter()
    decoded = Decoded(started)
    ack = await hub.request("call:initiate", {"participants": [args.callee], "callType": "video"})
    await hub.expect("call:accepted", timeout=args.timeout)
    pc = one_to_one(ack["iceServers"], decoded)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}
        await hub.request("call:offer", {"callId": ack["callId"], "to": args.callee, "sdp": offer})
        answer = await hub.expect("call:answer", timeout=args.timeout)
        await pc.setRemoteDescription(RTCSessionDescription(**answer["sdp"]))
        await finish_call(pc, decoded, args)
    finally:
        decoded.stop()
        await pc.close()
        await hub.close()


async def cameras(args: argparse.Namespace) -> None:
    """A camera publisher sending three simulcast layers replayed from ``--layers`` (a
    file of pre-encoded VP8, ``benchmarks.simulcast.save_loops``), the way a browser sends
    them; no microphone."""
    from benchmarks.simulcast import SimulcastSender, load_loops, simulcast_offer
    from media import aiortc_hooks

    aiortc_hooks.extend_header_extensions()
    hub = await HubClient.connect(args.url, args.token)
    client = SfuClient(hub, args.room, policy=ice.IcePolicy(), decode=False)
    try:
        await client.join()
        ice.ICE_POLICY.set(client.policy)
        pc = client.publisher = RTCPeerConnection(client.config)
        video = pc.addTransceiver(aiortc_hooks.SilentTrack("video"), direction="sendonly")
        sender = SimulcastSender(video, load_loops(Path(args.layers)))
        ack = await client.renegotiate_publish(
            {}, timeout=args.timeout, edit_offer=lambda sdp: simulcast_offer(sdp, video.mid or "")
        )
        sender.start(ack["sdp"], lambda ts: None)
        say("report", participantId=client.participant_id, tracks=ack["tracks"])
        await until_stopped()
        await sender.stop()
    finally:
        await client.close()
        await hub.close()


async def http(args: argparse.Namespace) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    body = json.loads(args.body) if args.body else None
    async with (
        aiohttp.ClientSession() as session,
        session.request(args.method, args.url, json=body, headers=headers) as response,
    ):
        say("report", status=response.status, body=await response.json())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["group", "caller", "callee", "http", "cameras"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--room", default="lab")
    parser.add_argument("--peers", type=int, default=1, help="others publishing in the room")
    parser.add_argument("--callee", default="")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--watch", type=float, default=0.0, help="then watch media this long")
    parser.add_argument("--layers", default="", help="pre-encoded simulcast layers (cameras)")
    parser.add_argument("--method", default="GET", help="http: the request's method")
    parser.add_argument("--body", default="", help="http: a JSON body")
    args = parser.parse_args()
    run = {
        "group": group,
        "caller": caller,
        "callee": callee,
        "http": http,
        "cameras": cameras,
    }[args.mode]
    try:
        await run(args)
    except Exception as exc:
        traceback.print_exc()
        say("error", error=f"{type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc


if __name__ == "__main__":
    asyncio.run(main())
