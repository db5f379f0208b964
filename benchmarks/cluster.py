"""Group call signaling across a cluster: what the Redis relay to a media node costs.

One redis-server and two ``switchboard serve`` nodes: ``m1`` hosts group call media, ``a``
hosts none (``SWITCHBOARD_SFU_HOST_ROOMS=false``). The same load runs twice in the same
invocation, in fresh rooms on the same processes:

- ``local``: every participant's WebSocket is on ``m1``, so ``sfu:*`` is handled in place;
- ``relayed``: every WebSocket is on ``a``, so each request is relayed to ``m1`` over Redis
  and every event comes back the same way (one message per WebSocket node).

Each of R rooms has P participants publishing pre-encoded Opus (no client encoding), so
media flows through ``m1`` all along. Timed on one clock, per topology:

- ``join`` and ``publish``: the ``sfu:join`` and ``sfu:publish`` round trips;
- ``stats``: ``sfu:stats`` round trips at ``--rate`` per participant per second (a request
  the media node answers in well under 0.1 ms, so it is nearly all transport);
- ``mute``: the ``sfu:mute`` round trip, and ``mute_event``: from sending it to each other
  participant's ``sfu:track-muted`` (the media node's fan-out, through the relay);
- CPU seconds of each node and of Redis over the steady window.

There is no anchor system to run here (LiveKit's multi-node relay is the same design, in
Go, and is not installable offline), so the comparison is ``relayed / local``: the ratio
and the milliseconds the relay adds. Results: JSON on stdout and in ``--out``, and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection

from benchmarks.common import (
    SECRET,
    cpu_seconds,
    emit_report,
    free_port,
    pct,
    start_pinned,
    start_redis,
    stop,
)
from benchmarks.media import SWITCHBOARD_ENV
from benchmarks.preencoded import PreEncodedAudio, opus_loop
from media import ice
from media.client import BUNDLED, SfuClient
from signaling.client import HubClient
from signaling.metrics import relay_totals
from signaling.tokens import mint_token

TOPOLOGIES = ("local", "relayed")
OPS = ("join", "publish", "stats", "mute", "mute_event")
RelayMetric = dict[str, dict[str, float]]  # op -> {"count", "sum"} of a node's relay histogram
NODE_ENV = {**SWITCHBOARD_ENV, "SWITCHBOARD_SFU_STATS_LOG_INTERVAL": "0"}  # as the media bench


def log(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


@dataclass
class Timings:
    """Milliseconds per operation, all taken in this process (one clock)."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    errors: dict[str, int] = field(default_factory=dict)
    #: (trackId, muted) -> when its sfu:mute left, for matching sfu:track-muted arrivals.
    mute_sent: dict[tuple[str, bool], float] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None) or type(exc).__name__
        self.errors[str(code)] = self.errors.get(str(code), 0) + 1


@dataclass
class Member:
    hub: HubClient
    sfu: SfuClient
    track_id: str = ""


async def timed(timings: Timings, op: str, call: Any) -> Any:
    started = time.perf_counter()
    result = await call
    timings.ms[op].append((time.perf_counter() - started) * 1000)
    return result


def on_track_muted(timings: Timings, own_track: str) -> Any:
    def handle(data: dict[str, Any]) -> None:
        key = (data.get("trackId", ""), bool(data.get("muted")))
        sent = timings.mute_sent.get(key)
        if sent is not None and key[0] != own_track:
            timings.ms["mute_event"].append((time.perf_counter() - sent) * 1000)

    return handle


async def join_room(url: str, room: str, people: int, timings: Timings) -> list[Member]:
    """Connect, join and publish one audio track each; wait for the subscriptions."""
    members = []
    for i in range(people):
        hub = await HubClient.connect(url, mint_token(SECRET, f"{room}-u{i}"))
        sfu = SfuClient(hub, room, decode=False)
        await timed(timings, "join", sfu.join())
        pc = sfu.publisher = RTCPeerConnection(BUNDLED)
        pc.addTransceiver(PreEncodedAudio(opus_loop()), direction="sendonly")
        ack = await timed(timings, "publish", sfu.renegotiate_publish({}, timeout=30))
        member = Member(hub, sfu, ack["tracks"][0]["trackId"])
        hub.listeners["sfu:track-muted"] = on_track_muted(timings, member.track_id)
        members.append(member)
    for m in members:
        await m.sfu.wait_for(lambda c: len(c.remote) == people - 1, timeout=60)
    return members


async def drive(member: Member, room: str, rate: float, until: float, timings: Timings) -> None:
    """``sfu:stats`` at ``rate`` per second, and a mute toggle every fifth request; paced by
    the clock, so a slow answer does not lower the offered rate."""
    muted = False
    n = 0
    await asyncio.sleep(random.uniform(0, 1 / rate))  # participants spread, not in step
    start = time.perf_counter()
    while time.perf_counter() < until:
        n += 1
        try:
            if n % 5 == 0:
                muted = not muted
                timings.mute_sent[(member.track_id, muted)] = time.perf_counter()
                body = {"roomId": room, "trackId": member.track_id, "muted": muted}
                await timed(timings, "mute", member.hub.request("sfu:mute", body))
            else:
                await timed(timings, "stats", member.hub.request("sfu:stats", {"roomId": room}))
        except Exception as exc:  # counted and reported, the run goes on
            timings.error(exc)
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))


async def relay_metric(base: str) -> RelayMetric:
    """``switchboard_sfu_relay_seconds`` per op from a node's /metrics: count and sum."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        return relay_totals(await resp.text())


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 3) if values else 0.0,
        "p50": round(pct(values, 0.50), 3),
        "p95": round(pct(values, 0.95), 3),
        "p99": round(pct(values, 0.99), 3),
        "max": round(max(values, default=0.0), 3),
    }


@dataclass
class Nodes:
    redis: subprocess.Popen[bytes]
    servers: dict[str, subprocess.Popen[bytes]]
    ports: dict[str, int]

    def cpu(self) -> dict[str, float]:
        procs = {**self.servers, "redis": self.redis}
        return {name: cpu_seconds(p.pid) for name, p in procs.items()}


def start_nodes(heartbeat: float) -> Nodes:
    redis_port = free_port()
    redis = start_redis(redis_port)
    ports = {"m1": free_port(), "a": free_port()}
    servers = {}
    for name, port in ports.items():
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
            **NODE_ENV,
            "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "SWITCHBOARD_NODE_ID": name,
            "SWITCHBOARD_NODE_HEARTBEAT_INTERVAL": str(heartbeat),
            "SWITCHBOARD_SFU_HOST_ROOMS": "true" if name == "m1" else "false",
        }
        cmd = [sys.executable, "-m", "switchboard", "serve", "--port", str(port)]
        servers[name] = start_pinned(cmd, env, port)
    return Nodes(redis, servers, ports)


@dataclass
class Load:
    rooms: int
    participants: int
    rate: float
    duration: float


@dataclass
class Tally:
    """One topology's measurements, summed over its rounds."""

    topology: str
    timings: Timings = field(default_factory=Timings)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    relay: dict[str, list[float]] = field(default_factory=dict)  # op -> [count, sum]

    def add(self, before: dict[str, float], after: dict[str, float]) -> None:
        for k in after:
            self.cpu[k] = self.cpu.get(k, 0.0) + after[k] - before[k]

    def add_relay(self, before: RelayMetric, after: RelayMetric) -> None:
        for op, v in after.items():
            was = before.get(op, {})
            acc = self.relay.setdefault(op, [0.0, 0.0])
            acc[0] += v.get("count", 0) - was.get("count", 0)
            acc[1] += v.get("sum", 0) - was.get("sum", 0)

    def result(self, load: Load, rounds: int) -> dict[str, Any]:
        ms = self.timings.ms
        return {
            "topology": self.topology,
            "websocket_node": entry_node(self.topology),
            "media_node": "m1",
            "participants": load.rooms * load.participants,
            "rounds": rounds,
            "ops_ms": {op: summary(ms[op]) for op in OPS},
            "mute_events_expected": len(ms["mute"]) * (load.participants - 1),
            "errors": self.timings.errors,
            "cpu_s": {k: round(v, 3) for k, v in self.cpu.items()},
            "cpu_share": {k: round(v / self.elapsed, 3) for k, v in self.cpu.items()},
            "relay_metric_mean_ms_on_a": {
                op: round(1000 * total / n, 3) for op, (n, total) in self.relay.items() if n
            },
            # near 1.0 the client process, not the servers, sets the latencies
            "client_cpu_share": round(self.client_cpu / self.elapsed, 3),
        }


def entry_node(topology: str) -> str:
    return "m1" if topology == "local" else "a"


async def run_topology(nodes: Nodes, load: Load, tag: str, tally: Tally) -> None:
    """One round: join fresh rooms through the topology's node, drive them, leave."""
    topology, timings = tally.topology, tally.timings
    entry = entry_node(topology)
    url = f"ws://127.0.0.1:{nodes.ports[entry]}/ws"
    base_a = f"http://127.0.0.1:{nodes.ports['a']}"
    rooms = [f"{tag}-{topology}-{r}" for r in range(load.rooms)]
    log(f"{topology}: {load.rooms} rooms x {load.participants} participants joining via {entry}")
    members = await asyncio.gather(
        *(join_room(url, room, load.participants, timings) for room in rooms)
    )
    relay0, cpu0 = await relay_metric(base_a), nodes.cpu()
    client0, started = time.process_time(), time.perf_counter()
    log(f"{topology}: steady for {load.duration:g} s at {load.rate:g} requests/s each")
    await asyncio.gather(
        *(
            drive(m, room, load.rate, started + load.duration, timings)
            for room, group in zip(rooms, members, strict=True)
            for m in group
        )
    )
    tally.elapsed += time.perf_counter() - started
    tally.client_cpu += time.process_time() - client0
    tally.add(cpu0, nodes.cpu())
    tally.add_relay(relay0, await relay_metric(base_a))
    for group in members:
        for m in group:
            with contextlib.suppress(Exception):
                await m.sfu.close()
            await m.hub.close()
    ms = timings.ms
    log(
        f"{topology} so far: stats p50 {pct(ms['stats'], 0.5):.2f} ms "
        f"p99 {pct(ms['stats'], 0.99):.2f} ms, mute event p50 {pct(ms['mute_event'], 0.5):.2f} "
        f"ms, errors {sum(timings.errors.values())}"
    )


def compare(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """relayed / local per op (p50, p99), and the milliseconds the relay adds at p50."""
    by = {r["topology"]: r["ops_ms"] for r in results}
    out: dict[str, dict[str, float]] = {}
    if set(by) != set(TOPOLOGIES):
        return out
    for op in OPS:
        local, relayed = by["local"][op], by["relayed"][op]
        entry = {"added_p50_ms": round(relayed["p50"] - local["p50"], 3)}
        for q in ("p50", "p99"):
            if local[q]:
                entry[f"ratio_{q}"] = round(relayed[q] / local[q], 3)
        out[op] = entry
    return out


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    width = 0.38
    for i, r in enumerate(results):
        xs = [j + (i - 0.5) * width for j in range(len(OPS))]
        for ax, q in ((axes[0], "p50"), (axes[1], "p99")):
            ax.bar(xs, [r["ops_ms"][op][q] for op in OPS], width, label=r["topology"])
            ax.set_xticks(range(len(OPS)), OPS)
            ax.set_title(f"{q} (ms)")
            ax.set_yscale("log")
    names = [r["topology"] for r in results]
    nodes = list(results[0]["cpu_share"])
    for j, node in enumerate(nodes):
        xs = [i + (j - (len(nodes) - 1) / 2) * 0.25 for i in range(len(results))]
        axes[2].bar(xs, [r["cpu_share"][node] for r in results], 0.25, label=node)
    axes[2].set_xticks(range(len(results)), names)
    axes[2].set_title("CPU in the steady window (cores busy)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def run(load: Load, heartbeat: float, rounds: int) -> list[dict[str, Any]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))
    ice.install()
    ice.ICE_POLICY.set(ice.IcePolicy(listen_ips=("127.0.0.1",)))
    nodes = start_nodes(heartbeat)
    tallies = {t: Tally(t) for t in TOPOLOGIES}
    try:
        await asyncio.sleep(2 * heartbeat)  # both nodes see each other's load
        tag = f"r{int(time.time())}"
        # one untimed call first, so neither topology pays the first placement and imports
        await run_topology(nodes, Load(1, 2, load.rate, 0.5), tag + "w", Tally("local"))
        for n in range(rounds):  # alternating, so drift over the run hits both alike
            order = TOPOLOGIES if n % 2 == 0 else TOPOLOGIES[::-1]
            for topology in order:
                await run_topology(nodes, load, f"{tag}n{n}", tallies[topology])
    finally:
        for server in nodes.servers.values():
            stop(server)
        stop(nodes.redis)
    return [tallies[t].result(load, rounds) for t in TOPOLOGIES]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks cluster", description=__doc__)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--participants", type=int, default=4, help="per room")
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s per participant")
    parser.add_argument("--duration", type=float, default=15.0, help="steady window, seconds")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="node heartbeat, seconds")
    parser.add_argument("--rounds", type=int, default=2, help="each topology, alternating")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cluster.json"))
    parser.add_argument("--quick", action="store_true", help="tiny run (< 60 s) for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.rooms, args.participants, args.duration, args.rounds = 2, 2, 3.0, 1
    if args.participants < 2 or args.rooms < 1 or args.rate <= 0 or args.rounds < 1:
        parser.error("need --rooms >= 1, --participants >= 2, --rate > 0 and --rounds >= 1")
    load = Load(args.rooms, args.participants, args.rate, args.duration)
    results = asyncio.run(run(load, args.heartbeat, args.rounds))
    report = {
        "benchmark": "cluster",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "parameters": {
            "rooms": args.rooms,
            "participants_per_room": args.participants,
            "requests_per_s_each": args.rate,
            "duration_s": args.duration,
            "heartbeat_s": args.heartbeat,
            "rounds": args.rounds,
        },
        "results": results,
        "relayed_over_local": compare(results),
    }
    title = (
        f"{args.rooms} rooms x {args.participants} participants, Opus flowing; WebSockets on "
        "the media node (local) or on a signaling-only node (relayed over Redis)"
    )
    emit_report(report, args.out, lambda png: plot(results, png, title))
    return 0
