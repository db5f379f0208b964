"""Cross-node delivery: the room fan-out load (see ``fanout``) against one node with
in-memory state, one node on Redis, and two nodes sharing Redis, in the same run.

In the two-node setup a room's members alternate between the nodes, so about half of
every room's deliveries cross nodes through Redis. Reported per setup: delivery rate
(delivered / expected), deliveries per second and per CPU-second of the node processes
(Redis's own CPU is reported beside it), latency from send to receive; and the added
latency and cost of each setup against the single in-memory node. Nodes and Redis are
pinned to CPU 0, the load generators to the others.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import cpu_seconds, free_port, rss_bytes, start_pinned, stop
from benchmarks.fanout import run_level, start_server

SETUPS = (
    ("one node, memory", 1, False),
    ("one node, Redis", 1, True),
    ("two nodes, Redis", 2, True),
)


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (apt-get install redis-server)")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return start_pinned(cmd, dict(os.environ), port)


def run_setup(name: str, nodes: int, redis: bool, args: argparse.Namespace) -> dict[str, Any]:
    redis_port = free_port()
    redis_proc = start_redis(redis_port) if redis else None
    env = {"SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"} if redis else {}
    ports = [free_port() for _ in range(nodes)]
    servers = [start_server(port, **env) for port in ports]
    time.sleep(0.5)  # nodes register and subscribe
    try:
        rss_idle = sum(rss_bytes(s.pid) for s in servers)
        redis_cpu = cpu_seconds(redis_proc.pid) if redis_proc else 0.0
        level = run_level(
            ports,
            [s.pid for s in servers],
            args.clients,
            args.room_size,
            args.rate,
            args.duration,
            args.procs,
            rss_idle,
        )
        if redis_proc is not None:
            level["redis_cpu_seconds"] = round(cpu_seconds(redis_proc.pid) - redis_cpu, 3)
    finally:
        for server in servers:
            stop(server)
        if redis_proc is not None:
            stop(redis_proc)
    return {"setup": name, "nodes": nodes, "redis": redis, **level}


def compare(setups: list[dict[str, Any]]) -> dict[str, Any]:
    base = setups[0]
    out = {}
    for other in setups[1:]:
        per_cpu = other["deliveries_per_server_cpu_s"] or 0
        out[other["setup"]] = {
            "delivery_rate": other["delivery_rate"],
            "added_latency_ms": {
                key: round(other["latency_ms"][key] - base["latency_ms"][key], 3)
                for key in ("p50", "p95", "p99")
            },
            "deliveries_per_server_cpu_s_ratio": round(
                per_cpu / base["deliveries_per_server_cpu_s"], 3
            )
            if base["deliveries_per_server_cpu_s"]
            else None,
        }
    return out


def plot(setups: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["setup"] for s in setups]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(names, [s["deliveries_per_server_cpu_s"] or 0 for s in setups])
    ax1.set_ylabel("deliveries per node CPU-s")
    ax1.grid(alpha=0.3, axis="y")
    width = 0.25
    for i, key in enumerate(("p50", "p95", "p99")):
        xs = [j + (i - 1) * width for j in range(len(setups))]
        ax2.bar(xs, [s["latency_ms"][key] for s in setups], width, label=key)
    ax2.set_xticks(range(len(setups)), names)
    ax2.set_ylabel("latency ms (send to receive)")
    ax2.legend()
    ax2.grid(alpha=0.3, axis="y")
    fig.suptitle("Cross-node delivery: room fan-out through Redis vs one node")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks cluster", description=__doc__)
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0, help="messages/s per client")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cluster.json"))
    parser.add_argument("--quick", action="store_true", help="tiny run (< 30 s) for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.room_size, args.rate, args.duration = 40, 10, 2.0, 2.0
    setups = []
    for name, nodes, redis in SETUPS:
        print(f"cluster: {name} ...", file=sys.stderr, flush=True)
        result = run_setup(name, nodes, redis, args)
        latency = result["latency_ms"]
        print(
            f"cluster:   {result['deliveries_per_s']} deliveries/s "
            f"(rate {result['delivery_rate']}), {result['deliveries_per_server_cpu_s']} per "
            f"node CPU-s, p50 {latency['p50']} ms, p99 {latency['p99']} ms",
            file=sys.stderr,
            flush=True,
        )
        setups.append(result)
    report = {
        "scenario": "cluster",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "parameters": {
            "clients": args.clients,
            "room_size": args.room_size,
            "rate_per_client": args.rate,
            "duration_s": args.duration,
        },
        "setups": setups,
        "versus_one_node_memory": compare(setups),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    plot(setups, args.out.with_suffix(".png"))
    print(orjson.dumps(report).decode())
    return 0
