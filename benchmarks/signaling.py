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
judged on several. ``--windows N`` (fan-out only) pairs the systems' runs closer: every
system is started and connected once, then they take turns, N windows of load each on the
same connections, each window a round.
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
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SECRET,
    cpu_share,
    emit_report,
    free_port,
    peak_rss_bytes,
    rss_bytes,
    start_pinned,
    start_redis,
    stop,
)
from benchmarks.redis_cluster import RedisClusterServer
from benchmarks.signaling_generators import PEERS, Generators, summarize
from benchmarks.signaling_report import plot, ratios

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


class Stack:
    """One system on one topology, running: the Redis its nodes share (if any), its nodes
    and its load generators, connected; each :meth:`window` is then one window of load on
    the same connections, until the stack is closed (it is a context manager).
    ``server_cpu_share`` runs the nodes and Redis on that share of one CPU (the overload
    test's way to flood them past what they deliver)."""

    def __init__(
        self,
        scenario: str,
        topology: str,
        system: str,
        params: dict[str, float],
        procs: int,
        history_size: int | None = None,
        server_cpu_share: float | None = None,
    ) -> None:
        self.scenario, self.topology, self.system = scenario, topology, system
        self.params, self.history_size = params, history_size
        self.nodes, kind = TOPOLOGIES[topology]
        # What is started is stopped in reverse order: by close(), or here if a later
        # part fails to start.
        with contextlib.ExitStack() as resources:
            self._start(resources, kind, procs, server_cpu_share)
            self._resources = resources.pop_all()

    def _start(
        self,
        resources: contextlib.ExitStack,
        kind: str | None,
        procs: int,
        server_cpu_share: float | None,
    ) -> None:
        on_close = resources.callback
        redis, redis_url, self.redis_pids = start_shared_redis(kind)
        if redis is not None:
            on_close(redis.stop)
        extra: dict[str, str] = {}
        if self.scenario == "messages":
            backend, backend_url = start_message_backend()
            on_close(stop, backend)
            extra["SWITCHBOARD_MESSAGE_BACKEND_URL"] = backend_url
            extra["SWITCHBOARD_API_SECRET"] = SECRET
        if self.history_size is not None:
            extra["SWITCHBOARD_HISTORY_SIZE"] = str(self.history_size)
        ports = [free_port() for _ in range(self.nodes)]
        self.pids = []
        for port in ports:
            node = start_node(self.system, port, redis_url, extra)
            on_close(stop, node)
            self.pids.append(node.pid)
        time.sleep(0.5)  # nodes register and subscribe
        self.rss_idle = sum(rss_bytes(pid) for pid in self.pids)
        if server_cpu_share is not None:
            resources.enter_context(cpu_share([*self.pids, *self.redis_pids], server_cpu_share))
        configs = generator_configs(
            self.scenario,
            self.params,
            procs,
            [url_of(self.system, p) for p in ports],
            self.system,
        )
        timeout = self.params["duration"] + self.params.get("drain_max", 0) + 240
        self.generators = Generators(configs, timeout)
        on_close(self.generators.close)
        self.rss_held = sum(rss_bytes(pid) for pid in self.pids)

    def window(self) -> dict[str, Any]:
        """One window of load: the run's record."""
        parts, readings = self.generators.window(self.pids, self.redis_pids)
        readings |= {"held": self.generators.held, "rss_held": self.rss_held}
        result = {
            "scenario": self.scenario,
            "topology": self.topology,
            "system": self.system,
            "nodes": self.nodes,
            **summarize(parts, readings, self.rss_idle, self.params["duration"]),
            "server_peak_rss_bytes": sum(peak_rss_bytes(pid) for pid in self.pids),
        }
        if self.redis_pids:
            result["redis_cpu_s"] = round(readings["redis_cpu"], 3)
            # Issue 20's measure: the nodes and the Redis they share, both counted.
            cpu = readings["server_cpu"] + readings["redis_cpu"]
            if cpu > 0:
                result["deliveries_per_cpu_s_with_redis"] = round(result["deliveries"] / cpu)
        if self.history_size is not None and self.system != "socketio":
            result["history_size"] = self.history_size
        return result

    def close(self) -> None:
        """The generators' connections closed, then the nodes, Redis and the backend
        stopped (the reverse of their start)."""
        self._resources.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The pause before each window of ``--windows``: what the last one left (its generators'
#: garbage collection, the servers' deferred work) is done before the next is measured.
WINDOW_SETTLE = 1.0
#: Each window of ``--windows`` starts with this many seconds of the same load, not
#: measured (:meth:`Generators.warm_up`).
WINDOW_WARM_UP = 2.0


def run_windows(
    topology: str, systems: list[str], params: dict[str, float], procs: int, windows: int
) -> list[dict[str, Any]]:
    """Fan-out with every system up at once (servers on the same CPU, idle but for their
    keep-alives while another is measured), taking turns: window ``w`` runs the systems in
    order, the next one in reverse, so that each system's run sits next to the others' and
    a drift of the machine over minutes (see "Where the spread comes from" in
    ``benchmarks/README.md``) weighs on them alike. Each window is a round of the report."""
    stacks: dict[str, Stack] = {}
    runs = []
    with contextlib.ExitStack() as running:
        for system in systems:
            log(f"fanout / {topology} / {system}: connecting {params} ...")
            stacks[system] = running.enter_context(Stack("fanout", topology, system, params, procs))
        for window in range(1, windows + 1):
            for system in systems if window % 2 else systems[::-1]:
                log(f"fanout / {topology} / {system} (window {window} of {windows}) ...")
                stacks[system].generators.warm_up(WINDOW_WARM_UP)
                time.sleep(WINDOW_SETTLE)
                run = stacks[system].window()
                run["round"] = window
                log_run(run)
                runs.append(run)
    return runs


def log_run(run: dict[str, Any]) -> None:
    log(
        f"  {run['connections']} connections, {run['deliveries']} deliveries "
        f"({run['dropped']} dropped, {run['errors']} errors), "
        f"{run['deliveries_per_server_cpu_s']} per server CPU-s "
        f"({share_text(run.get('server_kernel_share'))} in the kernel), "
        f"p50 {run['latency_p50_ms']} / p99 {run['latency_p99_ms']} ms, "
        f"generator busy {run['generator_busy']:.0%} "
        f"(its loop late p99 {run['generator_loop_delay_p99_ms']} / max "
        f"{run['generator_loop_delay_max_ms']} ms, GC max {run['generator_gc_max_ms']} ms)"
    )


def share_text(share: float | None) -> str:
    return "?" if share is None else f"{share:.0%}"


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
    parser.add_argument(
        "--windows",
        type=int,
        default=1,
        help="fanout: start every system once, then alternate this many windows of load "
        "between them on the same connections (each window a round)",
    )
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",")
    topologies = args.topologies.split(",")
    systems = args.systems.split(",")
    if args.rounds < 1 or args.windows < 1:
        parser.error("--rounds and --windows must be at least 1")
    if args.windows > 1 and (args.rounds > 1 or scenarios != ["fanout"]):
        parser.error("--windows is for --scenarios fanout alone, without --rounds")
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
    if args.windows > 1:
        runs = [
            run
            for topology in topologies
            for run in run_windows(topology, systems, params["fanout"], args.procs, args.windows)
        ]
    else:
        runs = []
        for round_, scenario, topology, system in itertools.product(
            range(1, args.rounds + 1), scenarios, topologies, systems
        ):
            which = f" (round {round_} of {args.rounds})" if args.rounds > 1 else ""
            log(f"{scenario} / {topology} / {system}{which}: {params[scenario]} ...")
            stack = Stack(
                scenario, topology, system, params[scenario], args.procs, args.history_size
            )
            with stack:
                run = stack.window()
            run["round"] = round_
            log_run(run)
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
