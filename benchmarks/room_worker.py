"""One load process of the large-room benchmark (``benchmarks/room.py``): a slice of the
room's participants, each publishing a DTX microphone (and, for the first ten, a
three-layer simulcast camera) and subscribing to everyone else as a lean subscriber.

Driven by JSON lines on stdin, answering on stdout:
``{"cmd": "publish"}`` → ``{"event": "published", "feeds": {index: id}}``;
``{"cmd": "subscribe", "feeds": {...}, "speaker": id}`` → ``{"event": "flowing"}`` once
every subscriber receives every video; ``{"cmd": "mark"}`` starts the window;
``{"cmd": "report"}`` → the window's counts; ``{"cmd": "late", "count": n}`` → join
times of n more subscribe-only participants; ``{"cmd": "stop"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from benchmarks.common import SECRET
from benchmarks.janus import JanusSession
from benchmarks.lean import DtxMicrophone, LeanSubscriber, summary
from benchmarks.preencoded import opus_loop
from benchmarks.simulcast import SimulcastSender, load_loops, simulcast_offer
from media import aiortc_hooks, ice
from media.client import BUNDLED, SfuClient
from signaling.client import HubClient
from signaling.tokens import mint_token
from switchboard.cli import tune_gc

CAMERAS = 10
TALKERS = 5
JANUS_ROOM = 1234


def say(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


@dataclass
class Member:
    index: int
    mic: DtxMicrophone | None = None
    camera: SimulcastSender | None = None
    sub: LeanSubscriber = field(default_factory=LeanSubscriber)
    feed: Any = None  # Switchboard participant id, or Janus feed id
    sent: dict[int, float] = field(default_factory=dict)  # video frame ts -> send time
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    def on_sent(self, ts: int) -> None:
        self.sent[ts] = time.monotonic()


def publisher_pc(
    member: Member, layers: tuple[tuple[bytes, ...], ...], audio: tuple[bytes, ...]
) -> RTCPeerConnection:
    """A publish connection: a DTX microphone, and a simulcast camera for the first ten."""
    pc = RTCPeerConnection(BUNDLED)
    mic = pc.addTransceiver(aiortc_hooks.SilentTrack("audio"), direction="sendonly")
    member.mic = DtxMicrophone(mic, audio, talking=member.index < TALKERS)
    if member.index < CAMERAS:
        video = pc.addTransceiver(aiortc_hooks.SilentTrack("video"), direction="sendonly")
        member.camera = SimulcastSender(video, layers)
    member.closers.append(pc.close)
    return pc


def edit_offer(member: Member, sdp: str) -> str:
    return simulcast_offer(sdp, member.camera.video.mid or "") if member.camera else sdp


def start_sending(member: Member, answer: str) -> None:
    assert member.mic is not None
    member.mic.start(answer)
    member.closers.append(member.mic.stop)
    if member.camera is not None:
        member.camera.start(answer, member.on_sent)
        member.closers.append(member.camera.stop)


class Switchboard:
    def __init__(self, args: argparse.Namespace, layers: Any, audio: Any) -> None:
        self.url = args.base.replace("http", "ws") + "/ws"
        self.layers, self.audio = layers, audio
        self.clients: dict[int, SfuClient] = {}
        self.connects: list[float] = []  # late joiners' hub connections, ms

    async def _connect(self, member: Member, user: str) -> SfuClient:
        """``user`` connected to the hub, not yet in the room."""
        hub = await HubClient.connect(self.url, mint_token(SECRET, user))

        def lean(pc: RTCPeerConnection, sdp: str) -> None:
            member.sub.configure(sdp)
            member.sub.attach(pc)

        client = SfuClient(hub, "room50", decode=False, on_subscriber=lean)
        member.closers += [client.close, hub.close]
        return client

    async def _client(self, member: Member, user: str) -> SfuClient:
        client = await self._connect(member, user)
        await client.join()
        return client

    async def publish(self, member: Member) -> None:
        client = self.clients[member.index] = await self._client(member, f"p{member.index}")
        client.publisher = publisher_pc(member, self.layers, self.audio)
        ack = await client.renegotiate_publish(
            {}, timeout=60, edit_offer=lambda sdp: edit_offer(member, sdp)
        )
        start_sending(member, ack["sdp"])
        member.feed = client.participant_id

    async def subscribe(self, member: Member, feeds: dict[str, Any], speaker: Any) -> None:
        # everyone is subscribed to by itself; the speaker's camera large, others small
        client = self.clients[member.index]
        cameras = min(CAMERAS, len(feeds)) - (1 if member.index < CAMERAS else 0)
        await client.wait_for(
            lambda c: sum(1 for r in c.remote.values() if r.info["kind"] == "video") >= cameras,
            timeout=120,
        )
        wishes = [
            {
                "trackId": r.info["trackId"],
                "quality": "high" if r.info["participantId"] == speaker else "low",
            }
            for r in client.remote.values()
            if r.info["kind"] == "video"
        ]
        await client.hub.request("sfu:subscription", {"roomId": "room50", "tracks": wishes})

    async def late(self, member: Member) -> float:
        """The time of the join request (``sfu:join``), as Janus's is its attach and join
        on the session the load process holds."""
        connecting = time.monotonic()
        client = await self._connect(member, f"late{member.index}")
        started = time.monotonic()
        self.connects.append((started - connecting) * 1000)
        await client.join()
        return started


class Janus:
    def __init__(self, args: argparse.Namespace, layers: Any, audio: Any) -> None:
        self.base = args.base
        self.layers, self.audio = layers, audio
        self.http: aiohttp.ClientSession | None = None
        self.session: JanusSession | None = None
        self.connects: list[float] = []  # none: one session, made at the start

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        self.session = JanusSession(self.http, f"{self.base}/janus")
        await self.session.create()

    async def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(Exception):
                await self.session.destroy()
        if self.http is not None:
            await self.http.close()

    async def publish(self, member: Member) -> None:
        assert self.session is not None
        handle = await self.session.attach()
        joined = await self.session.message(
            handle,
            {
                "request": "join",
                "ptype": "publisher",
                "room": JANUS_ROOM,
                "display": f"p{member.index}",
            },
        )
        pc = publisher_pc(member, self.layers, self.audio)
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": edit_offer(member, pc.localDescription.sdp)}
        if member.camera is not None:
            offer["rid_order"] = "lmh"
        event = await self.session.message(
            handle, {"request": "publish", "audio": True, "video": member.camera is not None}, offer
        )
        await pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        start_sending(member, event["jsep"]["sdp"])
        member.feed = joined["plugindata"]["data"]["id"]
        # a feed can be subscribed to once its publisher's connection is up
        deadline = time.monotonic() + 30
        while pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise RuntimeError(f"publisher {member.index} did not connect to Janus")
            await asyncio.sleep(0.02)

    async def subscribe(self, member: Member, feeds: dict[str, Any], speaker: Any) -> None:
        streams: list[dict[str, Any]] = []
        for index, feed in sorted(feeds.items(), key=lambda kv: int(kv[0])):
            if int(index) == member.index:
                continue
            streams.append({"feed": feed, "mid": "0"})
            if int(index) < CAMERAS:
                streams.append({"feed": feed, "mid": "1", "substream": 2 if feed == speaker else 0})
        await self._subscriber(member, streams)

    async def _subscriber(self, member: Member, streams: list[dict[str, Any]]) -> None:
        assert self.session is not None
        handle = await self.session.attach()
        event = await self.session.message(
            handle,
            {"request": "join", "ptype": "subscriber", "room": JANUS_ROOM, "streams": streams},
        )
        pc = RTCPeerConnection(BUNDLED)
        member.closers.append(pc.close)
        await pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        member.sub.configure(event["jsep"]["sdp"])
        member.sub.attach(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = {"type": "answer", "sdp": pc.localDescription.sdp}
        await self.session.message(handle, {"request": "start"}, answer)

    async def late(self, member: Member, feeds: dict[str, Any], speaker: Any) -> float:
        started = time.monotonic()
        await self.subscribe(member, feeds, speaker)
        return started


async def until_flowing(members: list[Member], cameras: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        videos = [sum(1 for s in m.sub.streams.values() if s.video and s.packets) for m in members]
        want = [cameras - (1 if m.index < cameras else 0) for m in members]
        if all(v >= w for v, w in zip(videos, want, strict=True)):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every video flowing: {videos} of {want}")
        await asyncio.sleep(0.2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=["switchboard", "janus"], required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--layers", required=True)
    parser.add_argument("--listen-ip", default="127.0.0.1")
    parser.add_argument("--sample", type=int, default=1, help="subscribers keeping arrivals")
    args = parser.parse_args()
    # The collector policy of a served node, for the same reason: a load process holds a
    # dozen peer connections, and its full collections under Python's default took
    # 200-800 ms, stalling its publishers and the joins it times, whatever the server.
    tune_gc()
    ice.install()
    ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=(args.listen_ip,)))
    aiortc_hooks.extend_header_extensions()
    aiortc_hooks.gather_in_place()
    layers = load_loops(Path(args.layers))
    audio = opus_loop()
    system: Any = (
        Switchboard(args, layers, audio)
        if args.system == "switchboard"
        else Janus(args, layers, audio)
    )
    if isinstance(system, Janus):
        await system.start()
    members = [Member(i) for i in range(args.first, args.first + args.count)]
    for member in members[: args.sample]:
        member.sub.sample = True
    late: list[Member] = []
    loop = asyncio.get_running_loop()
    feeds: dict[str, Any] = {}
    speaker = None
    t0 = time.monotonic()
    cpu0 = time.process_time()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["cmd"] == "publish":
                for member in members:
                    await system.publish(member)
                say("published", feeds={m.index: m.feed for m in members})
            elif cmd["cmd"] == "subscribe":
                feeds, speaker = cmd["feeds"], cmd["speaker"]
                cameras = min(CAMERAS, len(feeds))
                await asyncio.gather(*(system.subscribe(m, feeds, speaker) for m in members))
                await until_flowing(members, cameras, 360)
                gc.collect()  # before the warm-up, not in the window
                gc.freeze()
                say("flowing")
            elif cmd["cmd"] == "mark":
                for member in members:
                    member.sub.reset()
                    member.sent.clear()
                t0, cpu0 = time.monotonic(), time.process_time()
                say("marked")
            elif cmd["cmd"] == "report":
                t1 = time.monotonic()
                say(
                    "report",
                    window=t1 - t0,
                    cpu=time.process_time() - cpu0,
                    since=t0,
                    **summary([m.sub for m in members]),
                    sent={m.index: m.sent for m in members if m.sent},
                    arrivals=[
                        s.arrivals
                        for m in members
                        if m.sub.sample
                        for s in m.sub.streams.values()
                        if s.arrivals
                    ],
                )
            elif cmd["cmd"] == "late":
                times = []
                for n in range(cmd["count"]):
                    member = Member(1000 + args.first + n)
                    late.append(member)
                    if isinstance(system, Janus):
                        started = await system.late(member, feeds, speaker)
                    else:
                        started = await system.late(member)
                    deadline = time.monotonic() + 20
                    while member.sub.first_video_at is None and time.monotonic() < deadline:  # noqa: ASYNC110 (set from a datagram callback)
                        await asyncio.sleep(0.005)
                    if member.sub.first_at is not None:
                        times.append((member.sub.first_at - started) * 1000)
                say("late", join_ms=times, connect_ms=system.connects)
            elif cmd["cmd"] == "stop":
                return
    finally:
        for member in members + late:
            for close in reversed(member.closers):
                try:
                    await asyncio.wait_for(close(), 5)
                except Exception:  # best effort on the way out
                    continue
        if isinstance(system, Janus):
            await system.close()


if __name__ == "__main__":
    asyncio.run(main())
