"""Group call media: P publishers, S subscribers, the SFU against aiortc's MediaRelay.

Both servers run in turn, in the same run, as separate processes pinned to CPU 0; the
clients share one process pinned to the other CPU. Publishers are aiortc peers sending a
synthetic camera (VP8, 320x240, frame times jittered so each stream's RTP timestamps form a
unique pattern) and a tone (Opus). Subscribers are light clients: they count RTP packets,
sequence gaps and the arrival time of each frame's first packet, and never decode.

Reported per system, over a fixed window after every subscriber receives media:
- packets delivered to subscribers per CPU-second of the server process;
- loss (sequence gaps over packets expected) and frames delivered per frame sent;
- added latency per video frame: first packet's arrival at a subscriber minus the
  publisher's send time of that frame (one clock; frames are matched by RTP timestamp,
  which both servers carry over with a constant offset).
Results: JSON on stdout and in ``--out``, and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport

from benchmarks.common import SECRET, cpu_seconds, free_port, pct, start_pinned, stop
from media import aiortc_hooks, ice
from media.client import BUNDLED, RtpCounter, SfuClient
from media.synthetic import PatternTrack, ToneTrack
from signaling.client import HubClient
from signaling.tokens import mint_token

LOOPBACK = ice.IcePolicy(listen_ips=("127.0.0.1",))
TS_MOD = 1 << 32


def log(msg: str) -> None:
    print(f"sfu-bench: {msg}", file=sys.stderr, flush=True)


class JitteredPattern(PatternTrack):
    """30 fps on average, each frame interval drawn from 28..38 ms, pts from the clock."""

    def __init__(self) -> None:
        super().__init__()
        self._t0 = time.monotonic()
        self._next = self._t0

    async def next_timestamp(self) -> tuple[int, Any]:
        self._next += random.uniform(0.028, 0.038)
        await asyncio.sleep(max(0.0, self._next - time.monotonic()))
        return int((time.monotonic() - self._t0) * 90000), fractions.Fraction(1, 90000)


@dataclass
class Publisher:
    """Records when each video frame (RTP timestamp) first left the publisher."""

    pc: RTCPeerConnection
    video_ssrc: int
    sent: dict[int, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)

    def watch(self, transport: RTCDtlsTransport) -> None:
        original = transport._send_rtp

        async def send(data: bytes) -> None:
            if len(data) >= 12 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                ssrc = int.from_bytes(data[8:12], "big")
                if ssrc == self.video_ssrc:
                    ts = int.from_bytes(data[4:8], "big")
                    if ts not in self.sent:
                        self.sent[ts] = time.perf_counter()
                        self.order.append(ts)
            await original(data)

        transport._send_rtp = send  # type: ignore[method-assign]


def new_publisher_pc() -> tuple[RTCPeerConnection, int]:
    ice.ICE_POLICY.set(LOOPBACK)
    pc = RTCPeerConnection(BUNDLED)
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    video = pc.addTransceiver(JitteredPattern(), direction="sendonly")
    return pc, video.sender._ssrc


# -- the two systems ------------------------------------------------------------------------


async def sfu_clients(
    base: str, publishers: int, subscribers: int
) -> tuple[list[Publisher], list[RtpCounter], list[Any]]:
    url = base.replace("http", "ws") + "/ws"
    pubs: list[Publisher] = []
    closers: list[Any] = []
    for i in range(publishers):
        hub = await HubClient.connect(url, mint_token(SECRET, f"pub{i}"))
        client = SfuClient(hub, "bench", decode=False)
        await client.join()
        pc, ssrc = new_publisher_pc()
        client.publisher = pc
        pub = Publisher(pc, ssrc)
        pub.watch(pc.getTransceivers()[0].sender.transport)
        await client.renegotiate_publish({}, timeout=20)
        pubs.append(pub)
        closers += [client.close, hub.close]
    subs: list[SfuClient] = []
    for i in range(subscribers):
        hub = await HubClient.connect(url, mint_token(SECRET, f"sub{i}"))
        client = SfuClient(hub, "bench", decode=False, keep_arrivals=True)
        await client.join()
        subs.append(client)
        closers += [client.close, hub.close]
    for client in subs:
        await client.wait_for(lambda c: len(c.remote) == 2 * publishers, timeout=60)
    counters = [r.counter for c in subs for r in c.remote.values() if r.counter is not None]
    return pubs, counters, closers


async def relay_clients(
    base: str, publishers: int, subscribers: int
) -> tuple[list[Publisher], list[RtpCounter], list[Any]]:
    pubs: list[Publisher] = []
    counters: list[RtpCounter] = []
    closers: list[Any] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(publishers):
            pc, ssrc = new_publisher_pc()
            pub = Publisher(pc, ssrc)
            pub.watch(pc.getTransceivers()[0].sender.transport)
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"{base}/publish", json={"sdp": pc.localDescription.sdp}) as r:
                answer = (await r.json())["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            pubs.append(pub)
            closers.append(pc.close)
        for _ in range(60):  # the server registers tracks once their connection is up
            async with http.get(f"{base}/published") as r:
                if (await r.json())["published"] >= 2 * publishers:
                    break
            await asyncio.sleep(0.25)
        for _ in range(subscribers):
            ice.ICE_POLICY.set(LOOPBACK)
            pc = RTCPeerConnection(BUNDLED)
            for _ in range(publishers):
                for kind in ("audio", "video"):
                    transceiver = pc.addTransceiver(kind, direction="recvonly")
                    counter = RtpCounter(keep_arrivals=True)
                    aiortc_hooks.tap_receiver(transceiver.receiver, counter.on_packet)
                    counters.append(counter)
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"{base}/subscribe", json={"sdp": pc.localDescription.sdp}) as r:
                answer = (await r.json())["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            closers.append(pc.close)
    return pubs, counters, closers


# -- measuring ------------------------------------------------------------------------------


def match_latencies(
    pubs: list[Publisher], counter: RtpCounter, since: float, until: float
) -> tuple[list[float], int, int]:
    """Align a subscriber stream with its publisher by timestamp pattern; latency per frame.

    Returns (latencies in ms, frames received in the window, frames sent in the window).
    Audio streams (no match) give nothing.
    """
    arrivals = sorted(counter.arrivals.items(), key=lambda kv: kv[1])
    if len(arrivals) < 10:
        return [], 0, 0
    probe = [ts for ts, _ in arrivals[:40]]
    best: tuple[int, Publisher | None, int] = (0, None, 0)
    for pub in pubs:
        sent = pub.sent
        for candidate in pub.order[:600]:
            offset = (probe[0] - candidate) % TS_MOD
            score = sum(1 for ts in probe if (ts - offset) % TS_MOD in sent)
            if score > best[0]:
                best = (score, pub, offset)
    score, pub, offset = best
    if pub is None or score < len(probe) // 2:
        return [], 0, 0
    # frames sent in [since, cutoff] and whether (and when) each reached this subscriber
    cutoff = until - 0.5
    latencies = []
    for ts, arrived in arrivals:
        sent_at = pub.sent.get((ts - offset) % TS_MOD)
        if sent_at is not None and since <= sent_at <= cutoff:
            latencies.append((arrived - sent_at) * 1000)
    sent_in_window = sum(1 for t in pub.sent.values() if since <= t <= cutoff)
    return latencies, len(latencies), sent_in_window


async def measure(
    name: str,
    server: subprocess.Popen[bytes],
    clients: Any,
    base: str,
    publishers: int,
    subscribers: int,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    log(f"{name}: connecting {publishers} publishers and {subscribers} subscribers ...")
    pubs, counters, closers = await clients(base, publishers, subscribers)
    try:
        deadline = time.monotonic() + 30
        while not all(c.packets > 0 for c in counters):
            if time.monotonic() > deadline:
                silent = sum(1 for c in counters if not c.packets)
                raise RuntimeError(f"{name}: {silent} of {len(counters)} streams got no media")
            await asyncio.sleep(0.2)
        await asyncio.sleep(warmup)
        log(f"{name}: all {len(counters)} streams flowing; measuring {duration:.0f} s ...")
        packets0 = sum(c.packets for c in counters)
        gaps0 = sum(c.gaps for c in counters)
        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        for second in range(int(duration)):
            await asyncio.sleep(1)
            if second % 5 == 4:
                log(f"{name}:   {second + 1} s")
        await asyncio.sleep(duration - int(duration))
        cpu1, t1 = cpu_seconds(server.pid), time.perf_counter()
        packets = sum(c.packets for c in counters) - packets0
        gaps = sum(c.gaps for c in counters) - gaps0
        latencies: list[float] = []
        received = sent = 0
        for counter in counters:
            lat, got, out = match_latencies(pubs, counter, t0, t1)
            latencies += lat
            received += got
            sent += out
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                await close()
    cpu = cpu1 - cpu0
    return {
        "system": name,
        "window_s": round(t1 - t0, 2),
        "streams": len(counters),
        "packets_delivered": packets,
        "packets_per_s": round(packets / (t1 - t0)),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_share": round(cpu / (t1 - t0), 3),
        "packets_per_server_cpu_s": round(packets / cpu) if cpu > 0 else None,
        "loss": round(gaps / (packets + gaps), 5) if packets + gaps else None,
        "video_frames_delivered_ratio": round(received / sent, 3) if sent else None,
        "added_latency_ms": {
            "frames": len(latencies),
            "p50": round(pct(latencies, 0.5), 1),
            "p95": round(pct(latencies, 0.95), 1),
            "p99": round(pct(latencies, 0.99), 1),
        },
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))
    ice.install()
    results = []
    systems = [
        (
            "switchboard-sfu",
            [sys.executable, "-m", "signaling", "serve", "--port", "{port}"],
            sfu_clients,
            {
                "SWITCHBOARD_JWT_SECRET": SECRET,
                "SWITCHBOARD_SFU_LISTEN_IPS": "127.0.0.1",
                "SWITCHBOARD_LOG_LEVEL": "WARNING",
                "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "1000",
                "SWITCHBOARD_RATE_LIMIT_BURST": "1000",
                "SWITCHBOARD_SFU_ICE_TIMEOUT": "60",
            },
        ),
        (
            "aiortc-mediarelay",
            [sys.executable, "-m", "benchmarks.relay_baseline", "--port", "{port}"],
            relay_clients,
            {},
        ),
    ]
    for name, cmd, clients, extra in systems:
        port = free_port()
        env = {**os.environ, **extra}
        server = start_pinned([c.replace("{port}", str(port)) for c in cmd], env, port)
        try:
            result = await measure(
                name,
                server,
                clients,
                f"http://127.0.0.1:{port}",
                args.publishers,
                args.subscribers,
                args.duration,
                args.warmup,
            )
        finally:
            stop(server)
        lat = result["added_latency_ms"]
        log(
            f"{name}: {result['packets_per_server_cpu_s']} packets per server CPU-s, "
            f"loss {result['loss']}, latency p50 {lat['p50']} p99 {lat['p99']} ms"
        )
        results.append(result)
    return results


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["system"] for r in results]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 4))
    ax1.bar(names, [r["packets_per_server_cpu_s"] or 0 for r in results], color=["C0", "C1"])
    ax1.set_title("packets delivered per server CPU-s")
    width = 0.25
    for i, key in enumerate(("p50", "p95", "p99")):
        xs = [j + (i - 1) * width for j in range(len(results))]
        ax2.bar(xs, [r["added_latency_ms"][key] for r in results], width, label=key)
    ax2.set_xticks(range(len(results)), names)
    ax2.set_title("added latency per video frame (ms)")
    ax2.legend()
    ax3.bar(names, [r["server_cpu_share"] for r in results], color=["C0", "C1"])
    ax3.set_title("server CPU (cores busy)")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sfu", description=__doc__)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=6)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sfu.json"))
    parser.add_argument("--quick", action="store_true", help="tiny run (< 60 s) for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.publishers, args.subscribers, args.duration, args.warmup = 1, 2, 4.0, 1.0
    results = asyncio.run(run(args))
    sfu, relay = results
    ratio = (
        round(sfu["packets_per_server_cpu_s"] / relay["packets_per_server_cpu_s"], 2)
        if sfu["packets_per_server_cpu_s"] and relay["packets_per_server_cpu_s"]
        else None
    )
    report = {
        "scenario": "sfu",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "results": results,
        "packets_per_cpu_s_ratio_sfu_over_mediarelay": ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    plot(
        results,
        args.out.with_suffix(".png"),
        f"{args.publishers} publishers x {args.subscribers} subscribers, server on one core",
    )
    print(orjson.dumps(report).decode())
    return 0
