"""Signaling load, Switchboard side by side with the Socket.IO stack it replaces.

Scenarios (``--scenarios``, all by default):
- ``idle``: N clients connect, join rooms of K and hold; at the end each room's first
  member types once, which proves every held connection still delivers;
- ``fanout``: N clients in rooms of K, each toggling ``message:typing`` R times a second;
- ``calls``: P caller/callee pairs running complete 1:1 call set-ups back to back (ring,
  accept, offer and answer SDP, a burst of ICE candidates each way, hang up);
- ``churn``: rooms of K-1 members who stay, while churners connect, join, stay a moment and
  disconnect at C per second in all (members get joined, offline and left events);
- ``messages``: N clients in rooms of K, each sending ``message:send`` R times a second
  through a stand-in chat backend (``benchmarks/message_backend.py``) that persists it;
  ``message:new`` reaches the K members (``--history-size 0`` measures it without the room
  history that missed-event recovery keeps).

Each scenario runs, in the same invocation, against each system (``switchboard``: its
``/ws`` protocol; ``socketio``: ``benchmarks/peers/socketio-server.mjs``;
``switchboard-sio``: ``switchboard serve`` driven through its ``/socket.io/`` endpoint by
the very socket.io-client code that drives the Node server) and in each topology
(``--topologies``: ``single`` node; ``redis1``/``redis2``, one or two nodes sharing a fresh
redis-server, members spread over both; ``cluster2``, two nodes on a fresh 3-primary Redis
Cluster, sharded pub/sub for both systems). Servers and Redis are pinned to CPU 0; the
load generators (``benchmarks/peers/loadgen.mjs``, the same code for every system, only
the transport differs) run as ``--procs`` Node processes on the other CPUs. Results: JSON on stdout
and in ``--out``, and a PNG plot beside it.

``--rounds N`` runs the whole set N times, one system after another in each round; the
ratios are the medians of the rounds' ratios, each round's efficiency and p99 ratios are
listed beside them, and the plot shows each system's median round. One round's ratio
moves by about a tenth either way on this shared machine, so a target near its bound is
judged on several.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    SECRET,
    cpu_seconds,
    cpu_share,
    emit_report,
    free_port,
    pct,
    peak_rss_bytes,
    rss_bytes,
    start_pinned,
    start_redis,
    stop,
)
from benchmarks.redis_cluster import RedisClusterServer
from benchmarks.signaling_report import plot, ratios

PEERS = Path(__file__).resolve().parent / "peers"
SYSTEMS = ("switchboard", "socketio", "switchboard-sio")
#: The systems whose clients are socket.io-client (the rest speak ``/ws``).
SOCKETIO_CLIENTS = ("socketio", "switchboard-sio")
#: nodes, and the Redis they share: none, one redis-server, or a 3-primary Redis Cluster.
TOPOLOGIES = {
    "single": (1, None),
    "redis1": (1, "redis"),
    "redis2": (2, "redis"),
    "cluster2": (2, "cluster"),
}

# Full-run parameters per scenario, and the quick mode the test suite runs.
DEFAULTS: dict[str, dict[str, float]] = {
    "idle": {"clients": 2000, "room_size": 10, "duration": 10},
    "fanout": {"clients": 1000, "room_size": 50, "rate": 1, "duration": 8},
    "calls": {"pairs": 100, "rate": 1, "ice_burst": 8, "duration": 8},
    "churn": {"clients": 500, "room_size": 10, "rate": 50, "hold": 1, "duration": 8},
    "messages": {"clients": 500, "room_size": 50, "rate": 1, "duration": 8},
}
QUICK: dict[str, dict[str, float]] = {
    "idle": {"clients": 40, "room_size": 10, "duration": 1},
    "fanout": {"clients": 40, "room_size": 10, "rate": 2, "duration": 1},
    "calls": {"pairs": 10, "rate": 2, "ice_burst": 4, "duration": 1},
    "churn": {"clients": 20, "room_size": 5, "rate": 10, "hold": 0.3, "duration": 1},
    "messages": {"clients": 40, "room_size": 10, "rate": 2, "duration": 1},
}


def log(msg: str) -> None:
    print(f"signaling: {msg}", file=sys.stderr, flush=True)


def ensure_peers() -> None:
    """Install the Socket.IO peer's npm packages (pinned by package-lock.json) once."""
    marker = PEERS / "node_modules" / ".package-lock.json"
    lock = PEERS / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    log("installing the Socket.IO peer (npm ci) ...")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PEERS,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start_node(
    system: str, port: int, redis_url: str | None, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    """One node of ``system``; ``extra`` holds ``SWITCHBOARD_*`` settings (the message
    backend, the history size), given to the Socket.IO peer under its own names."""
    if system != "socketio":
        env = {
            **os.environ,
            "SWITCHBOARD_JWT_SECRET": SECRET,
            "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "10000",
            "SWITCHBOARD_RATE_LIMIT_BURST": "10000",
            "SWITCHBOARD_TYPING_THROTTLE": "0",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_SEND_BUFFER_LIMIT": str(16 * 1024 * 1024),
        }
        if redis_url:
            env["SWITCHBOARD_REDIS_URL"] = redis_url
        env.update(extra)
        cmd = [sys.executable, "-m", "switchboard", "serve", "--port", str(port)]
    else:
        env = {**os.environ, "PORT": str(port), "JWT_SECRET": SECRET}
        if "SWITCHBOARD_MESSAGE_BACKEND_URL" in extra:
            env["MESSAGE_BACKEND_URL"] = extra["SWITCHBOARD_MESSAGE_BACKEND_URL"]
        if redis_url:
            env["REDIS_URL"] = redis_url
        cmd = ["node", str(PEERS / "socketio-server.mjs")]
    return start_pinned(cmd, env, port)


def url_of(system: str, port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws" if system == "switchboard" else f"http://127.0.0.1:{port}"


def client_of(system: str) -> str:
    """The load generator's transport: socket.io-client, or ``/ws`` envelopes."""
    return "socketio" if system in SOCKETIO_CLIENTS else "switchboard"


def generator_configs(
    scenario: str, params: dict[str, float], procs: int, urls: list[str], system: str
) -> list[dict[str, Any]]:
    """Split the load over the generator processes (whole rooms / pairs per process)."""
    size = int(params.get("room_size", 2))
    rooms = [f"room{i}" for i in range(max(1, int(params.get("clients", 0)) // size))]
    configs = []
    for p in range(procs):
        share = rooms[p::procs]
        total = int(params.get("pairs", 0))
        pairs = total // procs + (p < total % procs)
        if not (pairs if scenario == "calls" else share):
            continue
        configs.append(
            {
                "system": client_of(system),
                "urls": urls,
                "scenario": scenario,
                "secret": SECRET,
                "prefix": f"g{p}-",
                "rooms": share,
                "roomSize": size,
                "rate": params.get("rate", 1) / (procs if scenario == "churn" else 1),
                "duration": params["duration"],
                "pairs": pairs,
                "iceBurst": int(params.get("ice_burst", 0)),
                "hold": params.get("hold", 0),
                "drainMax": params.get("drain_max", 0) * 1000,
            }
        )
    return configs


def run_generators(
    configs: list[dict[str, Any]], servers: list[int], timeout: float, redis: Sequence[int] = ()
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Start the generators, wait until all are connected, start them together, collect.
    The servers' CPU and Redis's (``redis``: its processes) are read over the same
    window: from the start of the load to its last delivery, not the connecting before
    nor the disconnecting after (the generators close their connections when told)."""
    cpus = sorted(os.sched_getaffinity(0))
    gen_cpus = [c for c in cpus if c != cpus[0]] or cpus
    gens = []
    for i, cfg in enumerate(configs):
        proc = subprocess.Popen(
            ["node", str(PEERS / "loadgen.mjs"), orjson.dumps(cfg).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        os.sched_setaffinity(proc.pid, {gen_cpus[i % len(gen_cpus)]})
        gens.append(proc)
    watchdog = threading.Timer(timeout, lambda: [g.kill() for g in gens])
    watchdog.start()
    try:
        held = sum(orjson.loads(g.stdout.readline() or "{}").get("ready", 0) for g in gens)  # type: ignore[union-attr]
        if len(gens) == 0 or held == 0:
            raise RuntimeError("the load generators did not connect")
        rss_held = sum(rss_bytes(pid) for pid in servers)
        gen_cpu0 = sum(cpu_seconds(g.pid) for g in gens)
        cpu0 = sum(cpu_seconds(pid) for pid in servers)
        redis_cpu0 = sum(cpu_seconds(pid) for pid in redis)
        for g in gens:
            g.stdin.write("go\n")  # type: ignore[union-attr]
            g.stdin.flush()  # type: ignore[union-attr]
        lines = [g.stdout.readline() for g in gens]  # type: ignore[union-attr]
        cpu1 = sum(cpu_seconds(pid) for pid in servers)
        redis_cpu = sum(cpu_seconds(pid) for pid in redis) - redis_cpu0
        gen_cpu = sum(cpu_seconds(g.pid) for g in gens) - gen_cpu0
        for g in gens:  # only now: the disconnects are not the load
            g.stdin.write("close\n")  # type: ignore[union-attr]
            g.stdin.flush()  # type: ignore[union-attr]
        for g in gens:
            g.wait(30)
    finally:
        watchdog.cancel()
        for g in gens:
            if g.poll() is None:
                g.kill()
    if not all(lines):
        raise RuntimeError("a load generator died (or timed out) before reporting")
    results = [orjson.loads(line) for line in lines]
    readings = {
        "held": held,
        "rss_held": rss_held,
        "server_cpu": cpu1 - cpu0,
        "redis_cpu": redis_cpu,
        "generator_cpu": gen_cpu,
        "generator_cores": min(len(gens), len(gen_cpus)),
    }
    return results, readings


def summarize(
    parts: list[dict[str, Any]], readings: dict[str, float], rss_idle: int, duration: float
) -> dict[str, Any]:
    latencies = [x for p in parts for x in p["latencies"]]
    deliveries = sum(p["deliveries"] for p in parts)
    expected = sum(p["expected"] for p in parts)
    elapsed = max(p["elapsed"] for p in parts)
    cpu = readings["server_cpu"]
    held = int(readings["held"])
    codes: dict[str, int] = {}
    for p in parts:
        for code, n in p["errorCodes"].items():
            codes[code] = codes.get(code, 0) + n
    out: dict[str, Any] = {
        "connections": held,
        "connections_held_at_end": sum(p.get("connections", 0) for p in parts),
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "dropped": max(0, expected - deliveries),
        "errors": sum(p["errors"] for p in parts),
        "error_codes": codes,
        "deliveries_per_s": round(deliveries / duration),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_share": round(cpu / elapsed, 3),
        "deliveries_per_server_cpu_s": round(deliveries / cpu) if cpu > 0 else None,
        "latency_p50_ms": round(pct(latencies, 0.50), 3),
        "latency_p95_ms": round(pct(latencies, 0.95), 3),
        "latency_p99_ms": round(pct(latencies, 0.99), 3),
        "latency_max_ms": round(max((p["max"] for p in parts), default=0.0), 3),
        "server_rss_bytes": int(readings["rss_held"]),
        "server_rss_per_connection_bytes": round((readings["rss_held"] - rss_idle) / held),
        "generator_cpu_s": round(readings["generator_cpu"], 3),
        "generator_busy": round(
            readings["generator_cpu"] / (elapsed * readings["generator_cores"]), 3
        ),
        # The generators' own stalls, which every delivery they time includes.
        "generator_loop_delay_p99_ms": round(max(p["loopDelayP99Ms"] for p in parts), 3),
        "generator_loop_delay_max_ms": round(max(p["loopDelayMaxMs"] for p in parts), 3),
        "generator_gc_ms": round(sum(p["gc"]["totalMs"] for p in parts), 1),
        "generator_gc_max_ms": round(max(p["gc"]["maxMs"] for p in parts), 3),
    }
    setups = sum(p.get("setups", 0) for p in parts)
    if setups:
        setup_ms = [x for p in parts for x in p.get("setupMs", [])]
        out |= {
            "setups": setups,
            "setups_per_s": round(setups / duration, 1),
            "setup_p50_ms": round(pct(setup_ms, 0.5), 3),
            "setup_p99_ms": round(pct(setup_ms, 0.99), 3),
        }
    drains = [p["drainMs"] for p in parts if "drainMs" in p]
    if drains:
        out["drain_ms"] = None if None in drains else max(drains)
    if any("churnCycles" in p for p in parts):
        connect_ms = [x for p in parts for x in p.get("connectMs", [])]
        out |= {
            "churn_cycles": sum(p.get("churnCycles", 0) for p in parts),
            "connect_p50_ms": round(pct(connect_ms, 0.5), 3),
            "connect_p99_ms": round(pct(connect_ms, 0.99), 3),
        }
    return out


def start_message_backend() -> tuple[subprocess.Popen[bytes], str]:
    """The stand-in chat backend, on the generators' CPUs (its cost is not the server's)."""
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "benchmarks.message_backend", str(port)])
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(backend.pid, set(cpus[1:]) or set(cpus))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return backend, f"http://127.0.0.1:{port}/messages"
        except OSError:
            time.sleep(0.1)
    backend.kill()
    raise RuntimeError("the message backend did not start")


class SharedRedis:
    """What a topology's nodes share: one redis-server or a Redis Cluster (all pinned
    with the servers, their CPU counted with the servers')."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cluster: RedisClusterServer | None = None
        if kind == "redis":
            port = free_port()
            self.procs = [start_redis(port)]
            self.url = f"redis://127.0.0.1:{port}/0"
        else:
            self._workdir = tempfile.TemporaryDirectory(prefix="sb-bench-cluster-")
            self.cluster = RedisClusterServer(Path(self._workdir.name)).start()
            self.procs = self.cluster.procs
            cpus = sorted(os.sched_getaffinity(0))
            for proc in self.procs:
                os.sched_setaffinity(proc.pid, {cpus[0]})
            self.url = self.cluster.url

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self._workdir.cleanup()
        else:
            for proc in self.procs:
                stop(proc)


def start_shared_redis(kind: str | None) -> tuple[SharedRedis | None, str | None, list[int]]:
    if kind is None:
        return None, None, []
    shared = SharedRedis(kind)
    return shared, shared.url, [p.pid for p in shared.procs]


def run_one(
    scenario: str,
    topology: str,
    system: str,
    params: dict[str, float],
    procs: int,
    history_size: int | None = None,
    server_cpu_share: float | None = None,
) -> dict[str, Any]:
    """One system on one topology. ``server_cpu_share`` runs the nodes and Redis on that
    share of one CPU (the overload test's way to flood them past what they deliver)."""
    nodes, kind = TOPOLOGIES[topology]
    redis, redis_url, redis_pids = start_shared_redis(kind)
    extra: dict[str, str] = {}
    backend = None
    if scenario == "messages":
        backend, backend_url = start_message_backend()
        extra["SWITCHBOARD_MESSAGE_BACKEND_URL"] = backend_url
        extra["SWITCHBOARD_API_SECRET"] = SECRET
    if history_size is not None:
        extra["SWITCHBOARD_HISTORY_SIZE"] = str(history_size)
    ports = [free_port() for _ in range(nodes)]
    servers = [start_node(system, port, redis_url, extra) for port in ports]
    try:
        time.sleep(0.5)  # nodes register and subscribe
        pids = [s.pid for s in servers]
        rss_idle = sum(rss_bytes(pid) for pid in pids)
        configs = generator_configs(
            scenario, params, procs, [url_of(system, p) for p in ports], system
        )
        limited = (
            cpu_share([*pids, *redis_pids], server_cpu_share)
            if server_cpu_share is not None
            else contextlib.nullcontext()
        )
        with limited:
            parts, readings = run_generators(
                configs,
                pids,
                timeout=params["duration"] + params.get("drain_max", 0) + 240,
                redis=redis_pids,
            )
        result = {
            "scenario": scenario,
            "topology": topology,
            "system": system,
            "nodes": nodes,
            **summarize(parts, readings, rss_idle, params["duration"]),
            "server_peak_rss_bytes": sum(peak_rss_bytes(pid) for pid in pids),
        }
        if redis_pids:
            result["redis_cpu_s"] = round(readings["redis_cpu"], 3)
            # Issue 20's measure: the nodes and the Redis they share, both counted.
            cpu = readings["server_cpu"] + readings["redis_cpu"]
            if cpu > 0:
                result["deliveries_per_cpu_s_with_redis"] = round(result["deliveries"] / cpu)
        if history_size is not None and system != "socketio":
            result["history_size"] = history_size
    finally:
        for server in servers:
            stop(server)
        if redis is not None:
            redis.stop()
        if backend:
            stop(backend)
    return result


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "missing"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks signaling", description=__doc__)
    parser.add_argument("--scenarios", default="idle,fanout,calls,churn,messages")
    parser.add_argument("--topologies", default="single,redis2", help="single, redis1, redis2")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--clients", type=int, help="idle/fanout/churn: clients (churn: members)")
    parser.add_argument("--room-size", type=int, help="members per room")
    parser.add_argument(
        "--rate", type=float, help="typing/s per client, set-ups/s per pair, churn/s"
    )
    parser.add_argument("--pairs", type=int, help="calls: caller/callee pairs")
    parser.add_argument("--ice-burst", type=int, help="calls: ICE candidates each way")
    parser.add_argument("--hold", type=float, help="churn: seconds a churner stays")
    parser.add_argument("--duration", type=float, help="seconds of load per run")
    parser.add_argument(
        "--drain-max",
        type=float,
        help="fanout/idle: wait up to this many seconds after the load for late deliveries",
    )
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--history-size", type=int, help="Switchboard's room history (0: recovery off)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/signaling.json"))
    parser.add_argument("--quick", action="store_true", help="tiny run for CI (< 1 min/scenario)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every system this many times, interleaved; ratios are the rounds' medians",
    )
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",")
    topologies = args.topologies.split(",")
    systems = args.systems.split(",")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    unknown = set(scenarios) - set(DEFAULTS) | set(topologies) - set(TOPOLOGIES)
    if unknown or set(systems) - set(SYSTEMS):
        parser.error(f"unknown scenario, topology or system: {sorted(unknown)} {systems}")
    ensure_peers()
    params: dict[str, dict[str, float]] = {}
    for scenario in scenarios:
        params[scenario] = dict((QUICK if args.quick else DEFAULTS)[scenario])
        for key in params[scenario]:
            if getattr(args, key, None) is not None:
                params[scenario][key] = getattr(args, key)
        if args.drain_max is not None:
            params[scenario]["drain_max"] = args.drain_max
    runs = []
    for round_, scenario, topology, system in itertools.product(
        range(1, args.rounds + 1), scenarios, topologies, systems
    ):
        which = f" (round {round_} of {args.rounds})" if args.rounds > 1 else ""
        log(f"{scenario} / {topology} / {system}{which}: {params[scenario]} ...")
        run = run_one(scenario, topology, system, params[scenario], args.procs, args.history_size)
        run["round"] = round_
        log(
            f"  {run['connections']} connections, {run['deliveries']} deliveries "
            f"({run['dropped']} dropped, {run['errors']} errors), "
            f"{run['deliveries_per_server_cpu_s']} per server CPU-s, "
            f"p50 {run['latency_p50_ms']} / p99 {run['latency_p99_ms']} ms, "
            f"generator busy {run['generator_busy']:.0%} "
            f"(its loop late p99 {run['generator_loop_delay_p99_ms']} / max "
            f"{run['generator_loop_delay_max_ms']} ms, GC max {run['generator_gc_max_ms']} ms)"
        )
        runs.append(run)
    report = {
        "benchmark": "signaling",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "node": node_version(),
        },
        "parameters": params,
        "procs": args.procs,
        "runs": runs,
        "ratios_switchboard_over_socketio": ratios(runs),
        "ratios_switchboard_sio_over_socketio": ratios(runs, "switchboard-sio"),
    }
    emit_report(report, args.out, lambda png: plot(runs, png, SYSTEMS))
    return 0
