"""One large room on one node: N participants where everyone subscribes to everyone
(the first ten with a three-layer simulcast camera, every one with a microphone, five
talking, the rest silent with Opus DTX), Switchboard's SFU side by side with Janus's
VideoRoom on the same load.

The server runs pinned to CPU 0; the participants are spread over ``--workers`` load
processes (``benchmarks/room_worker.py``) pinned to the other CPUs. Each participant
publishes as a browser does (pre-encoded VP8 layers, Opus at 50 packets/s while talking,
one DTX packet per 400 ms while silent, the audio level on every packet) and subscribes
as a lean client: ICE and DTLS once, then RTP counted from the clear header, never
decrypted (``benchmarks/lean.py``). Subscribers want the first participant's camera in
high quality and the others' in low, in both systems.

Reported per system, over a fixed window once every subscriber receives every video:
server cores busy, forwarded packets per server CPU-second, egress Mbit/s (RTP as sent,
SRTP included), loss (sequence gaps), added delay per video frame (publisher's send time
to a sampled subscriber's first packet of it: one clock, ``CLOCK_MONOTONIC``), join
(a late subscribe-only participant's join request to its first RTP packet: its hub
connection, like Janus's session, is made before the clock starts), server
RSS, and the load processes' own CPU (saturation check). JSON + PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import cpu_seconds, emit_report, free_port, pct, rss_bytes, stop
from benchmarks.janus import JanusSession, local_ipv4
from benchmarks.media import TS_MOD, align, start_system
from benchmarks.room_worker import CAMERAS, JANUS_ROOM, TALKERS
from benchmarks.simulcast import layer_loops, save_loops

SYSTEMS = {"switchboard": "switchboard-sfu", "janus": "janus-videoroom"}
DEFAULT_OUT = Path("benchmarks/results/room.json")
#: Fifty aiortc clients on one core answer the subscribe offers of a join storm slowly
#: (an offer of 60 sections costs aiortc a good part of a second where a browser takes
#: milliseconds), and finish ICE late: the server waits longer for them than for browsers.
SWITCHBOARD_ENV = {
    "SWITCHBOARD_SFU_NEGOTIATION_TIMEOUT": "180",
    "SWITCHBOARD_SFU_ICE_TIMEOUT": "240",
}


def log(msg: str) -> None:
    print(f"room: {msg}", file=sys.stderr, flush=True)


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, first: int, count: int) -> None:
        self.proc, self.first, self.count = proc, first, count

    async def ask(self, cmd: dict[str, Any], wanted: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"worker {self.first}.. ended while waiting for {wanted}")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == wanted:
                return event


async def start_workers(
    system: str, base: str, participants: int, workers: int, layers: Path, listen_ip: str
) -> list[Worker]:
    cpus = sorted(os.sched_getaffinity(0))
    load_cpus = set(cpus[1:]) or set(cpus)
    out = []
    per = -(-participants // workers)
    for first in range(0, participants, per):
        count = min(per, participants - first)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.room_worker",
            "--system", system, "--base", base, "--first", str(first),
            "--count", str(count), "--layers", str(layers), "--listen-ip", listen_ip,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26,
        )  # fmt: skip
        os.sched_setaffinity(proc.pid, load_cpus)
        out.append(Worker(proc, first, count))
    return out


def match(arrivals: dict[int, float], sent: list[dict[int, float]], since: float) -> list[float]:
    """Added delay (ms) per frame of one received video stream (its publisher and the
    server's timestamp offset found as in ``benchmarks/media.py``)."""
    aligned = align(arrivals, [(frames, list(frames)) for frames in sent], since, 300)
    if aligned is None:
        return []
    frames, offset = aligned
    out = []
    for ts, arrived in arrivals.items():
        at = frames.get((ts - offset) % TS_MOD)
        if at is not None:
            out.append((arrived - at) * 1000)
    return out


async def create_janus_room(base: str, participants: int) -> None:
    async with aiohttp.ClientSession() as http:
        session = JanusSession(http, f"{base}/janus")
        await session.create()
        admin = await session.attach()
        await session.request(
            admin,
            {
                "request": "create",
                "room": JANUS_ROOM,
                "publishers": participants + 10,
                "videocodec": "vp8",
                "audiocodec": "opus",
            },
        )
        await session.destroy()


async def measure(name: str, args: argparse.Namespace, layers: Path) -> dict[str, Any]:
    port = free_port()
    listen_ip = local_ipv4() if name == "janus" else "127.0.0.1"
    server, cleanup = start_system(SYSTEMS[name], port, listen_ip, SWITCHBOARD_ENV)
    base = f"http://127.0.0.1:{port}"
    workers: list[Worker] = []
    try:
        rss_idle = rss_bytes(server.pid)
        if name == "janus":
            await create_janus_room(base, args.participants)
        workers = await start_workers(
            name, base, args.participants, args.workers, layers, listen_ip
        )
        log(f"{name}: {args.participants} participants in {len(workers)} load processes ...")
        started = time.monotonic()
        published = await asyncio.gather(
            *(w.ask({"cmd": "publish"}, "published", 180) for w in workers)
        )
        feeds = {k: v for p in published for k, v in p["feeds"].items()}
        log(f"{name}: everyone publishes ({time.monotonic() - started:.0f} s); subscribing ...")
        cmd = {"cmd": "subscribe", "feeds": feeds, "speaker": feeds["0"]}
        await asyncio.gather(*(w.ask(cmd, "flowing", 400) for w in workers))
        log(f"{name}: every video flowing ({time.monotonic() - started:.0f} s); warming up ...")
        await asyncio.sleep(args.warmup)
        await asyncio.gather(*(w.ask({"cmd": "mark"}, "marked", 30) for w in workers))
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        for second in range(int(args.duration)):
            await asyncio.sleep(1)
            if second % 5 == 4:
                log(f"{name}:   {second + 1} s")
        reports = await asyncio.gather(*(w.ask({"cmd": "report"}, "report", 60) for w in workers))
        cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
        rss = rss_bytes(server.pid)
        joins: list[float] = []
        connects: list[float] = []
        for worker in workers:
            late = await worker.ask({"cmd": "late", "count": args.late}, "late", 60)
            joins += late["join_ms"]
            connects += late["connect_ms"]
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                assert worker.proc.stdin is not None
                worker.proc.stdin.write(b'{"cmd": "stop"}\n')
                await worker.proc.stdin.drain()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), 20)
            except TimeoutError:
                worker.proc.kill()
        stop(server)
        cleanup()
    window, cpu = t1 - t0, cpu1 - cpu0
    packets = sum(r["packets"] for r in reports)
    lost = sum(r["lost"] for r in reports)
    sent = [
        {int(ts): at for ts, at in frames.items()} for r in reports for frames in r["sent"].values()
    ]
    delays: list[float] = []
    for r in reports:
        for arrivals in r["arrivals"]:
            delays += match({int(ts): at for ts, at in arrivals.items()}, sent, t0)
    return {
        "system": SYSTEMS[name],
        "window_s": round(window, 2),
        "participants": args.participants,
        "packets_per_s": round(packets / window),
        "video_packets_per_s": round(sum(r["video_packets"] for r in reports) / window),
        "audio_packets_per_s": round(sum(r["audio_packets"] for r in reports) / window),
        "egress_mbit_per_s": round(sum(r["bytes"] for r in reports) * 8 / window / 1e6, 2),
        "server_cpu_share": round(cpu / window, 3),
        "packets_per_server_cpu_s": round(packets / cpu) if cpu > 0 else None,
        "loss": round(lost / (packets + lost), 5) if packets + lost else None,
        "added_delay_ms": {
            "frames": len(delays),
            "p50": round(pct(delays, 0.5), 1),
            "p99": round(pct(delays, 0.99), 1),
        },
        "join_ms": {
            "joins": len(joins),
            "p50": round(pct(joins, 0.5), 1),
            "p90": round(pct(joins, 0.9), 1),
            # before the clock: the hub connection (Janus's session exists already)
            "connect_p50": round(pct(connects, 0.5), 1) if connects else None,
        },
        "server_rss_bytes": rss,
        "server_rss_added_bytes": rss - rss_idle,
        "load_cpu_share": round(sum(r["cpu"] for r in reports) / window, 3),
    }


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["system"] for r in results]
    colors = [f"C{i}" for i in range(len(results))]
    panels = [
        ("server cores busy", lambda r: r["server_cpu_share"]),
        ("forwarded packets per server CPU-s", lambda r: r["packets_per_server_cpu_s"] or 0),
        ("added delay p99 (ms)", lambda r: r["added_delay_ms"]["p99"]),
        ("join to first packet p50 (ms)", lambda r: r["join_ms"]["p50"]),
        ("loss (%)", lambda r: (r["loss"] or 0) * 100),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4))
    for ax, (label, value) in zip(axes, panels, strict=True):
        ax.bar(names, [value(r) for r in results], color=colors)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks room", description=__doc__)
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4, help="load processes")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument(
        "--late", type=int, default=3, help="late joiners per load process (one after another)"
    )
    parser.add_argument("--systems", default="switchboard,janus")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="a 6-person room (< 60 s) for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.participants, args.workers, args.duration, args.warmup = 6, 2, 3.0, 1.0
        args.late = 1
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    log("pre-encoding the simulcast layers ...")
    with tempfile.TemporaryDirectory() as folder:
        layers = save_loops(layer_loops(2.0), Path(folder) / "layers.bin")
        results = [asyncio.run(measure(name, args, layers)) for name in args.systems.split(",")]
    for r in results:
        log(
            f"{r['system']}: {r['server_cpu_share']} cores, {r['packets_per_server_cpu_s']} "
            f"packets per CPU-s, loss {r['loss']}, delay p50 {r['added_delay_ms']['p50']} "
            f"p99 {r['added_delay_ms']['p99']} ms, join p50 {r['join_ms']['p50']} ms"
        )
    ratios = {}
    if len(results) == 2:
        ours, janus = results
        ratios = {
            "packets_per_server_cpu_s": round(
                (ours["packets_per_server_cpu_s"] or 0) / (janus["packets_per_server_cpu_s"] or 1),
                2,
            ),
            "server_cpu_share": round(
                ours["server_cpu_share"] / max(janus["server_cpu_share"], 1e-6), 2
            ),
            "join_p50": round(ours["join_ms"]["p50"] / max(janus["join_ms"]["p50"], 1e-6), 2),
        }
    report = {
        "benchmark": "room",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "parameters": {
            "participants": args.participants,
            "cameras": min(CAMERAS, args.participants),
            "talking": min(TALKERS, args.participants),
            "load_processes": args.workers,
            "duration_s": args.duration,
        },
        "results": results,
        "ratios_switchboard_over_janus": ratios,
    }
    title = f"one room of {args.participants}, everyone subscribed to everyone"
    emit_report(report, args.out, lambda path: plot(results, path, title))
    return 0
