"""Group call media: R rooms of P publishers and S subscribers, Switchboard's SFU side by
side with Janus's VideoRoom and with aiortc's decode-and-re-encode ``MediaRelay``.

The three servers run in turn, in the same invocation, each a separate process pinned to
CPU 0; the clients share one process pinned to the other CPU. Publishers are aiortc peers
replaying pre-encoded VP8 (``--video-kbps``, ``--keyframe-interval``) and Opus packets
(``benchmarks/preencoded.py``), so the client spends no CPU encoding. Subscribers are light
clients: they count RTP packets, bytes and sequence gaps, and note each frame's first
packet's arrival; they never decode.

Reported per system, over a fixed window after every subscriber receives media:
- packets and bits per second delivered to subscribers, and packets per server CPU-second;
- loss (sequence gaps over packets expected) and video frames delivered per frame sent;
- added delay per video frame: first packet's arrival at a subscriber minus the
  publisher's send time of that frame (one clock; frames are matched by RTP timestamp,
  which every server carries over with a constant offset);
- join time: a subscriber's join request to its first media packet;
- server CPU (cores busy) and RSS, and the client process's own CPU (saturation check).
Results: JSON on stdout and in ``--out``, and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport

from benchmarks import recording
from benchmarks.common import (
    SECRET,
    cpu_seconds,
    emit_report,
    free_port,
    pct,
    peak_rss_bytes,
    rss_bytes,
    start_pinned,
    stop,
)
from benchmarks.janus import JanusSession, local_ipv4, start_janus
from benchmarks.preencoded import PreEncodedAudio, PreEncodedVideo, loop_kbps, opus_loop, vp8_loop
from benchmarks.simulcast import SimulcastSender, layer_loops, simulcast_offer
from media import aiortc_hooks, ice
from media.client import BUNDLED, RtpCounter, SfuClient
from signaling.client import HubClient
from signaling.tokens import mint_token

LOOPBACK = ice.IcePolicy(listen_ips=("127.0.0.1",))
TS_MOD = 1 << 32
#: With simulcast, what a subscriber asks for a publisher's video: (thumbnail, speaker).
PREFERENCE = ("low", "high")
JANUS_SUBSTREAM = (0, 2)


def log(msg: str) -> None:
    print(f"media: {msg}", file=sys.stderr, flush=True)


@dataclass
class Load:
    rooms: int
    publishers: int
    subscribers: int
    video: tuple[bytes, ...]
    audio: tuple[bytes, ...]
    ice: ice.IcePolicy = LOOPBACK  # where the clients' media sockets listen
    #: the three simulcast layers' loops, when publishers send simulcast
    layers: tuple[tuple[bytes, ...], ...] | None = None


@dataclass
class Publisher:
    """Records when each video frame (RTP timestamp) first left the publisher."""

    room: int
    pc: RTCPeerConnection
    video_ssrc: int
    sent: dict[int, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    layers: SimulcastSender | None = None  # writes the video when it is simulcast
    participant: str | None = None  # its participant id (Switchboard)

    def record(self, ts: int) -> None:
        if ts not in self.sent:
            self.sent[ts] = time.perf_counter()
            self.order.append(ts)

    def watch(self, transport: RTCDtlsTransport) -> None:
        original = transport._send_rtp

        async def send(data: bytes) -> None:
            if len(data) >= 12 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                ssrc = int.from_bytes(data[8:12], "big")
                if ssrc == self.video_ssrc:
                    self.record(int.from_bytes(data[4:8], "big"))
            await original(data)

        transport._send_rtp = send  # type: ignore[method-assign]

    def offer(self, sdp: str) -> str:
        """The offer as sent: with the simulcast layers listed, for a simulcast publisher."""
        if self.layers is None:
            return sdp
        return simulcast_offer(sdp, self.layers.video.mid or "")

    def answered(self, sdp: str) -> None:
        if self.layers is not None:
            self.layers.start(sdp, self.record)


@dataclass
class Subscriber:
    room: int
    join_requested: float
    counters: list[RtpCounter] = field(default_factory=list)

    def join_time_ms(self) -> float | None:
        firsts = [min(c.arrivals.values()) for c in self.counters if c.arrivals]
        return (min(firsts) - self.join_requested) * 1000 if firsts else None


@dataclass
class Setup:
    pubs: list[Publisher] = field(default_factory=list)
    subs: list[Subscriber] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    #: Extra fields for the system's result (filled by its closers).
    report: dict[str, Any] = field(default_factory=dict)


def new_publisher(room: int, load: Load) -> Publisher:
    ice.ICE_POLICY.set(load.ice)
    pc = RTCPeerConnection(BUNDLED)
    pc.addTransceiver(PreEncodedAudio(load.audio), direction="sendonly")
    if load.layers is not None:
        video = pc.addTransceiver(aiortc_hooks.SilentTrack("video"), direction="sendonly")
        return Publisher(room, pc, 0, layers=SimulcastSender(video, load.layers))
    video = pc.addTransceiver(PreEncodedVideo(load.video), direction="sendonly")
    pub = Publisher(room, pc, video.sender._ssrc)
    pub.watch(video.sender.transport)
    return pub


def tap_all(pc: RTCPeerConnection, sub: Subscriber) -> None:
    for transceiver in pc.getTransceivers():
        counter = RtpCounter(keep_arrivals=True)
        aiortc_hooks.tap_receiver(transceiver.receiver, counter.on_packet)
        sub.counters.append(counter)


async def wait_connected(pcs: list[RTCPeerConnection], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pc.connectionState != "connected" for pc in pcs):
        if time.monotonic() > deadline:
            raise RuntimeError("a publisher did not connect")
        await asyncio.sleep(0.05)


# -- the three systems ----------------------------------------------------------------------


async def sfu_clients(base: str, load: Load) -> Setup:
    url = base.replace("http", "ws") + "/ws"
    setup = Setup()
    clients: list[tuple[SfuClient, Subscriber]] = []
    for room in range(load.rooms):
        for i in range(load.publishers):
            hub = await HubClient.connect(url, mint_token(SECRET, f"pub{room}-{i}"))
            client = SfuClient(hub, f"bench{room}", decode=False)
            await client.join()
            pub = new_publisher(room, load)
            client.publisher = pub.pc
            ack = await client.renegotiate_publish({}, timeout=20, edit_offer=pub.offer)
            pub.answered(ack["sdp"])
            pub.participant = client.participant_id
            setup.pubs.append(pub)
            setup.closers += [client.close, hub.close]
            if pub.layers is not None:
                setup.closers.append(pub.layers.stop)
        for i in range(load.subscribers):
            hub = await HubClient.connect(url, mint_token(SECRET, f"sub{room}-{i}"))
            client = SfuClient(hub, f"bench{room}", decode=False, keep_arrivals=True)
            sub = Subscriber(room, time.perf_counter())
            await client.join()
            clients.append((client, sub))
            setup.subs.append(sub)
            setup.closers += [client.close, hub.close]
    for client, sub in clients:
        await client.wait_for(lambda c: len(c.remote) == 2 * load.publishers, timeout=60)
        sub.counters = [r.counter for r in client.remote.values() if r.counter is not None]
        if load.layers is not None:
            # The room's first publisher is the speaker, shown large; the others are
            # thumbnails.
            speaker = next(p.participant for p in setup.pubs if p.room == sub.room)
            wishes = [
                {
                    "trackId": r.info["trackId"],
                    "quality": PREFERENCE[r.info["participantId"] == speaker],
                }
                for r in client.remote.values()
                if r.info["kind"] == "video"
            ]
            await client.hub.request(
                "sfu:subscription", {"roomId": client.room_id, "tracks": wishes}
            )
    return setup


async def janus_clients(base: str, load: Load) -> Setup:
    setup = Setup()
    http = aiohttp.ClientSession()
    session = JanusSession(http, f"{base}/janus")
    await session.create()
    setup.closers += [session.destroy, http.close]
    admin = await session.attach()
    for room in range(load.rooms):
        room_id = 1000 + room
        await session.request(
            admin,
            {
                "request": "create",
                "room": room_id,
                "publishers": load.publishers,
                "videocodec": "vp8",
                "audiocodec": "opus",
            },
        )
        feeds = []
        for i in range(load.publishers):
            handle = await session.attach()
            joined = await session.message(
                handle,
                {"request": "join", "ptype": "publisher", "room": room_id, "display": f"p{i}"},
            )
            pub = new_publisher(room, load)
            await pub.pc.setLocalDescription(await pub.pc.createOffer())
            offer = {"type": "offer", "sdp": pub.offer(pub.pc.localDescription.sdp)}
            if pub.layers is not None:
                offer["rid_order"] = "lmh"  # our layers are listed lowest first
            event = await session.message(
                handle, {"request": "publish", "audio": True, "video": True}, offer
            )
            await pub.pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
            pub.answered(event["jsep"]["sdp"])
            feeds.append(joined["plugindata"]["data"]["id"])
            setup.pubs.append(pub)
            setup.closers.append(pub.pc.close)
            if pub.layers is not None:
                setup.closers.append(pub.layers.stop)
        # A feed can be subscribed to once its publisher's PeerConnection is up.
        await wait_connected([p.pc for p in setup.pubs if p.room == room])
        for _ in range(load.subscribers):
            handle = await session.attach()
            sub = Subscriber(room, time.perf_counter())
            event = await session.message(
                handle,
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": room_id,
                    "streams": janus_streams(feeds, load.layers is not None),
                },
            )
            ice.ICE_POLICY.set(load.ice)
            pc = RTCPeerConnection(BUNDLED)
            await pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
            tap_all(pc, sub)
            await pc.setLocalDescription(await pc.createAnswer())
            answer = {"type": "answer", "sdp": pc.localDescription.sdp}
            await session.message(handle, {"request": "start"}, answer)
            setup.subs.append(sub)
            setup.closers.append(pc.close)
    return setup


def janus_streams(feeds: list[int], simulcast: bool) -> list[dict[str, Any]]:
    """A Janus subscription to every feed; with simulcast, the first feed (the speaker)
    in its highest substream and the others in their lowest, as in Switchboard's run."""
    if not simulcast:
        return [{"feed": feed} for feed in feeds]
    streams: list[dict[str, Any]] = []
    for i, feed in enumerate(feeds):
        streams.append({"feed": feed, "mid": "0"})
        streams.append({"feed": feed, "mid": "1", "substream": JANUS_SUBSTREAM[i == 0]})
    return streams


async def relay_clients(base: str, load: Load) -> Setup:
    setup = Setup()
    async with aiohttp.ClientSession() as http:
        for room in range(load.rooms):
            for _ in range(load.publishers):
                pub = new_publisher(room, load)
                await pub.pc.setLocalDescription(await pub.pc.createOffer())
                body = {"sdp": pub.pc.localDescription.sdp, "room": room}
                async with http.post(f"{base}/publish", json=body) as r:
                    answer = (await r.json())["sdp"]
                await pub.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                setup.pubs.append(pub)
                setup.closers.append(pub.pc.close)
            for _ in range(60):  # the server registers tracks once their connection is up
                async with http.get(f"{base}/published", params={"room": room}) as r:
                    if (await r.json())["published"] >= 2 * load.publishers:
                        break
                await asyncio.sleep(0.25)
            for _ in range(load.subscribers):
                ice.ICE_POLICY.set(LOOPBACK)
                pc = RTCPeerConnection(BUNDLED)
                sub = Subscriber(room, time.perf_counter())
                for _ in range(load.publishers):
                    for kind in ("audio", "video"):
                        pc.addTransceiver(kind, direction="recvonly")
                tap_all(pc, sub)
                await pc.setLocalDescription(await pc.createOffer())
                body = {"sdp": pc.localDescription.sdp, "room": room}
                async with http.post(f"{base}/subscribe", json=body) as r:
                    answer = (await r.json())["sdp"]
                await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                setup.subs.append(sub)
                setup.closers.append(pc.close)
    return setup


# -- measuring ------------------------------------------------------------------------------


def match_latencies(
    pubs: list[Publisher], counter: RtpCounter, since: float, until: float
) -> tuple[list[float], int, int]:
    """Align a subscriber stream with its publisher by timestamp pattern; latency per frame.

    Returns (latencies in ms, frames received in the window, frames sent in the window).
    Audio streams (no match) give nothing.
    """
    aligned = align(counter.arrivals, [(pub.sent, pub.order) for pub in pubs], since)
    if aligned is None:
        return [], 0, 0
    sent, offset = aligned
    # frames sent in [since, cutoff] and whether (and when) each reached this subscriber
    cutoff = until - 0.5
    latencies = []
    for ts, arrived in counter.arrivals.items():
        sent_at = sent.get((ts - offset) % TS_MOD)
        if sent_at is not None and since <= sent_at <= cutoff:
            latencies.append((arrived - sent_at) * 1000)
    sent_in_window = sum(1 for t in sent.values() if since <= t <= cutoff)
    return latencies, len(latencies), sent_in_window


def align(
    arrivals: dict[int, float],
    publishers: list[tuple[dict[int, float], list[int]]],
    since: float,
    candidates: int = 600,
) -> tuple[dict[int, float], int] | None:
    """Which publisher a received video stream is, and the server's timestamp offset:
    the pair under which most of the stream's first frames in the window match frames
    the publisher sent (``publishers``: each one's send times by RTP timestamp, and those
    timestamps in order). Probing with frames from the window: a server that switched
    simulcast layers before it (or started on a stand-in layer) changed its offset then.
    ``None`` if nothing matches half of them."""
    probe = [ts for ts, at in sorted(arrivals.items(), key=lambda kv: kv[1]) if at >= since]
    probe = probe[:40]
    if len(probe) < 10:
        return None
    best: tuple[int, dict[int, float] | None, int] = (0, None, 0)
    for sent, order in publishers:
        for candidate in order[:candidates]:
            offset = (probe[0] - candidate) % TS_MOD
            score = sum(1 for ts in probe if (ts - offset) % TS_MOD in sent)
            if score > best[0]:
                best = (score, sent, offset)
    score, sent, offset = best
    if sent is None or score < len(probe) // 2:
        return None
    return sent, offset


async def measure(
    name: str,
    server: subprocess.Popen[bytes],
    clients: Callable[[str, Load], Awaitable[Setup]],
    base: str,
    load: Load,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    log(
        f"{name}: {load.rooms} room(s) of {load.publishers} publishers and "
        f"{load.subscribers} subscribers ..."
    )
    rss_idle = rss_bytes(server.pid)
    setup = await clients(base, load)
    counters = [c for sub in setup.subs for c in sub.counters]
    try:
        deadline = time.monotonic() + 30
        while not counters or not all(c.packets > 0 for c in counters):
            if time.monotonic() > deadline:
                silent = sum(1 for c in counters if not c.packets)
                raise RuntimeError(f"{name}: {silent} of {len(counters)} streams got no media")
            await asyncio.sleep(0.2)
        await asyncio.sleep(warmup)
        log(f"{name}: all {len(counters)} streams flowing; measuring {duration:.0f} s ...")
        packets0 = sum(c.packets for c in counters)
        bytes0 = sum(c.bytes for c in counters)
        gaps0 = sum(c.gaps for c in counters)
        cpu0, own0, t0 = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
        for second in range(int(duration)):
            await asyncio.sleep(1)
            if second % 5 == 4:
                log(f"{name}:   {second + 1} s")
        await asyncio.sleep(duration - int(duration))
        cpu1, own1, t1 = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
        rss = rss_bytes(server.pid)
        packets = sum(c.packets for c in counters) - packets0
        payload = sum(c.bytes for c in counters) - bytes0
        gaps = sum(c.gaps for c in counters) - gaps0
        latencies: list[float] = []
        received = sent = 0
        for sub in setup.subs:
            pubs = [p for p in setup.pubs if p.room == sub.room]
            for counter in sub.counters:
                lat, got, out = match_latencies(pubs, counter, t0, t1)
                latencies += lat
                received += got
                sent += out
        joins = [j for j in (sub.join_time_ms() for sub in setup.subs) if j is not None]
    finally:
        for close in setup.closers:
            with contextlib.suppress(Exception):
                await close()
    cpu, window = cpu1 - cpu0, t1 - t0
    return {
        **setup.report,
        "system": name,
        "window_s": round(window, 2),
        "streams": len(counters),
        "packets_delivered": packets,
        "packets_per_s": round(packets / window),
        "payload_mbit_per_s": round(payload * 8 / window / 1e6, 3),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_share": round(cpu / window, 3),
        "packets_per_server_cpu_s": round(packets / cpu) if cpu > 0 else None,
        "mbit_per_server_cpu_s": round(payload * 8 / cpu / 1e6, 2) if cpu > 0 else None,
        "server_rss_bytes": rss,
        "server_rss_added_bytes": rss - rss_idle,
        "server_peak_rss_bytes": peak_rss_bytes(server.pid),
        "client_cpu_share": round((own1 - own0) / window, 3),
        "loss": round(gaps / (packets + gaps), 5) if packets + gaps else None,
        "video_frames_delivered_ratio": round(received / sent, 3) if sent else None,
        "added_latency_ms": {
            "frames": len(latencies),
            "p50": round(pct(latencies, 0.5), 1),
            "p95": round(pct(latencies, 0.95), 1),
            "p99": round(pct(latencies, 0.99), 1),
        },
        "join_ms": {
            "subscribers": len(joins),
            "p50": round(pct(joins, 0.5), 1),
            "max": round(max(joins, default=0.0), 1),
        },
    }


SWITCHBOARD_ENV = {
    "SWITCHBOARD_JWT_SECRET": SECRET,
    "SWITCHBOARD_SFU_LISTEN_IPS": "127.0.0.1",
    "SWITCHBOARD_LOG_LEVEL": "WARNING",
    "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "1000",
    "SWITCHBOARD_RATE_LIMIT_BURST": "1000",
    "SWITCHBOARD_SFU_ICE_TIMEOUT": "60",
    "SWITCHBOARD_SFU_ROOM_CAPACITY": "500",
    # Forwarding cost is measured, every subscriber getting what it asks for as Janus's
    # do: aiortc's receive-side estimator, starved of CPU by the load itself, reports a
    # fraction of what loopback carries and would have videos paused.
    "SWITCHBOARD_SFU_BANDWIDTH_ESTIMATION": "false",
}


def start_system(
    name: str, port: int, janus_media_ip: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start one server; returns it and its clean-up."""
    if name.startswith("janus-"):
        server, folder = start_janus(port, janus_media_ip)
        return server, lambda: shutil.rmtree(folder, ignore_errors=True)
    if name == recording.SYSTEM:
        env_extra, cleanup = recording.server_env()
        server, _ = start_system(
            "switchboard-sfu", port, janus_media_ip, {**env_extra, **(extra_env or {})}
        )
        return server, cleanup
    if name.startswith("switchboard-"):
        cmd = [sys.executable, "-m", "switchboard", "serve", "--port", str(port)]
        env = {**os.environ, **SWITCHBOARD_ENV, **(extra_env or {})}
    else:
        cmd = [sys.executable, "-m", "benchmarks.relay_baseline", "--port", str(port)]
        env = dict(os.environ)
    return start_pinned(cmd, env, port), lambda: None


async def recording_clients(base: str, load: Load) -> Setup:
    """The SFU's clients, and every room recorded from before the measurement to after."""
    setup = await sfu_clients(base, load)
    rooms = [f"bench{room}" for room in range(load.rooms)]
    setup.closers.insert(0, await recording.record_rooms(base, rooms, setup.report))
    return setup


CLIENTS = {
    "switchboard-sfu": sfu_clients,
    recording.SYSTEM: recording_clients,
    "switchboard-simulcast": sfu_clients,
    "janus-videoroom": janus_clients,
    "janus-simulcast": janus_clients,
    "aiortc-mediarelay": relay_clients,
}


async def run(args: argparse.Namespace, load: Load) -> list[dict[str, Any]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))
    ice.install()
    aiortc_hooks.extend_header_extensions()  # publishers offer the rid extension
    results = []
    for name in args.systems.split(","):
        port = free_port()
        janus_ip = local_ipv4() if name.startswith("janus-") else ""
        server, cleanup = start_system(name, port, janus_ip)
        policy = ice.IcePolicy(listen_ips=(janus_ip,)) if janus_ip else LOOPBACK
        layers = layer_loops(args.keyframe_interval) if name.endswith("-simulcast") else None
        try:
            result = await measure(
                name,
                server,
                CLIENTS[name],
                f"http://127.0.0.1:{port}",
                dataclasses.replace(load, ice=policy, layers=layers),
                args.duration,
                args.warmup,
            )
        finally:
            stop(server)
            cleanup()
        lat = result["added_latency_ms"]
        log(
            f"{name}: {result['packets_per_server_cpu_s']} packets per server CPU-s, "
            f"loss {result['loss']}, delay p50 {lat['p50']} p99 {lat['p99']} ms, "
            f"join p50 {result['join_ms']['p50']} ms"
        )
        results.append(result)
    return results


def ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Switchboard's SFU over each other system, per metric."""
    ours = next((r for r in results if r["system"] == "switchboard-sfu"), None)
    if any(r["system"] == "switchboard-simulcast" for r in results):
        ours = next(r for r in results if r["system"] == "switchboard-simulcast")
    out: dict[str, dict[str, float]] = {}
    if ours is None:
        return out
    for other in results:
        if other is ours:
            continue
        entry = {}
        for key in ("packets_per_s", "packets_per_server_cpu_s", "server_cpu_share", "loss"):
            if ours.get(key) is not None and other.get(key):
                entry[key] = round(ours[key] / other[key], 3)
        for group in ("added_latency_ms", "join_ms"):
            if other[group]["p50"]:
                entry[f"{group}_p50"] = round(ours[group]["p50"] / other[group]["p50"], 3)
        out[other["system"]] = entry
    return out


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["system"] for r in results]
    colors = [f"C{i}" for i in range(len(results))]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    axes[0].bar(names, [r["packets_per_server_cpu_s"] or 0 for r in results], color=colors)
    axes[0].set_title("packets delivered per server CPU-s")
    width = 0.25
    for i, key in enumerate(("p50", "p95", "p99")):
        xs = [j + (i - 1) * width for j in range(len(results))]
        axes[1].bar(xs, [r["added_latency_ms"][key] for r in results], width, label=key)
    axes[1].set_xticks(range(len(results)), names)
    axes[1].set_title("added delay per video frame (ms)")
    axes[1].legend()
    axes[2].bar(names, [r["server_cpu_share"] for r in results], color=colors)
    axes[2].set_title("server CPU (cores busy)")
    axes[3].bar(names, [r["join_ms"]["p50"] for r in results], color=colors)
    axes[3].set_title("join to first media packet, p50 (ms)")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


DEFAULT_SYSTEMS = "switchboard-sfu,janus-videoroom,aiortc-mediarelay"
SIMULCAST_SYSTEMS = "switchboard-sfu,switchboard-simulcast,janus-simulcast"
DEFAULT_OUT = Path("benchmarks/results/media.json")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks media", description=__doc__)
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2, help="per room")
    parser.add_argument("--subscribers", type=int, default=5, help="per room")
    parser.add_argument("--video-kbps", type=int, default=500)
    parser.add_argument("--keyframe-interval", type=float, default=2.0, help="seconds")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--systems", default=DEFAULT_SYSTEMS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="publishers send 720p (plain) or three layers (the -simulcast systems); "
        "subscribers want the room's first publisher high and the others low",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="the same load forwarded, then forwarded and recorded (every room, every "
        "track): what recording costs",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run (< 60 s) for CI")
    args = parser.parse_args(argv)
    if args.record:
        if args.systems == DEFAULT_SYSTEMS:
            args.systems = f"switchboard-sfu,{recording.SYSTEM}"
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.with_name("media-record.json")
    if args.simulcast:
        if args.systems == DEFAULT_SYSTEMS:
            args.systems = SIMULCAST_SYSTEMS
        args.video_kbps = 1500
        if args.out == DEFAULT_OUT:
            args.out = DEFAULT_OUT.with_name("media-simulcast.json")
    if args.quick:
        args.rooms, args.publishers, args.subscribers = 1, 2 if args.simulcast else 1, 2
        args.duration, args.warmup, args.keyframe_interval = 3.0, 0.5, 1.0
    unknown = set(args.systems.split(",")) - set(CLIENTS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    log("pre-encoding the media loops ...")
    size = (1280, 720) if args.simulcast else (640, 360)
    video = vp8_loop(args.video_kbps, args.keyframe_interval, *size)
    load = Load(args.rooms, args.publishers, args.subscribers, video, opus_loop())
    results = asyncio.run(run(args, load))
    report = {
        "benchmark": "media",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "parameters": {
            "rooms": args.rooms,
            "publishers_per_room": args.publishers,
            "subscribers_per_room": args.subscribers,
            "video_kbps_target": args.video_kbps,
            "video_kbps_real": round(loop_kbps(video), 1),
            "keyframe_interval_s": args.keyframe_interval,
            "duration_s": args.duration,
            "simulcast": args.simulcast,
        },
        "results": results,
        "ratios_switchboard_over": ratios(results),
    }
    if args.record:
        report["recording_cost"] = recording.cost(results)
    title = (
        f"{args.rooms} room(s) x {args.publishers} publishers x {args.subscribers} subscribers, "
        f"{args.video_kbps} kbps VP8; each server on one core"
    )
    emit_report(report, args.out, lambda png: plot(results, png, title))
    return 0
