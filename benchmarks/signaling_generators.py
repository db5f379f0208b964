"""The signaling benchmark's load generators, and what one window of their load measured.

The generators are Node processes running ``peers/loadgen.mjs`` (the same code for every
system, only the transport differs), pinned to the CPUs the servers do not use. They
connect once; each ``go`` on their stdin is then one window of load on those connections,
answered by one result line each; any other line closes the connections. The servers'
and Redis's CPU is read over each window only: from the start of the load to its last
delivery, neither the connecting before nor the disconnecting after.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from benchmarks.common import cpu_seconds, pct, stat_seconds

PEERS = Path(__file__).resolve().parent / "peers"

T = TypeVar("T")


class Generators:
    """One system's generator processes: connected on construction, then windows of load."""

    def __init__(self, configs: list[dict[str, Any]], timeout: float) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        gen_cpus = [c for c in cpus if c != cpus[0]] or cpus
        #: How long any one wait (connecting, a window) may take before the generators
        #: are killed, so that a hung one ends the run instead of stalling it.
        self.timeout = timeout
        self.procs: list[subprocess.Popen[str]] = []
        for i, cfg in enumerate(configs):
            proc = subprocess.Popen(
                ["node", "--expose-gc", str(PEERS / "loadgen.mjs"), orjson.dumps(cfg).decode()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            os.sched_setaffinity(proc.pid, {gen_cpus[i % len(gen_cpus)]})
            self.procs.append(proc)
        self.cores = min(len(self.procs), len(gen_cpus))
        try:
            self.held = self._watched(
                lambda: sum(
                    orjson.loads(self._stdout(g).readline() or "{}").get("ready", 0)
                    for g in self.procs
                )
            )
            if not self.procs or self.held == 0:
                raise RuntimeError("the load generators did not connect")
        except BaseException:
            self.kill()
            raise

    @staticmethod
    def _stdout(proc: subprocess.Popen[str]) -> Any:
        assert proc.stdout is not None
        return proc.stdout

    def _watched(self, read: Callable[[], T]) -> T:
        """``read()``, with the generators killed if it takes longer than ``timeout``
        (their pipes then close, so the read returns)."""
        watchdog = threading.Timer(self.timeout, self.kill)
        watchdog.start()
        try:
            return read()
        finally:
            watchdog.cancel()

    def _go(self, line: str) -> list[str]:
        """Start a window (``line``: ``go`` or ``go S``) and wait for every generator's
        result line."""
        self._tell(line)
        lines = self._watched(lambda: [self._stdout(g).readline() for g in self.procs])
        if not all(lines):
            raise RuntimeError("a load generator died (or timed out) before reporting")
        return lines

    def _tell(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def warm_up(self, seconds: float) -> None:
        """A short window of the same load, measured by nobody: generators idle while
        another system had its turn get their heap and code going again (after such a
        pause their own stalls, which every latency includes, ran up to three times
        longer in the first window than in a window right after their last)."""
        self._go(f"go {seconds}")

    def window(
        self, servers: Sequence[int], redis: Sequence[int] = ()
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """One window of load: each generator's result, and the servers', Redis's
        (``redis``: its processes) and the generators' CPU seconds over it."""
        gen_cpu0 = sum(cpu_seconds(g.pid) for g in self.procs)
        cpu0 = sum(cpu_seconds(pid) for pid in servers)
        kernel0, all0 = _kernel_and_all(servers)
        redis_cpu0 = sum(cpu_seconds(pid) for pid in redis)
        lines = self._go("go")
        kernel1, all1 = _kernel_and_all(servers)
        readings = {
            "server_cpu": sum(cpu_seconds(pid) for pid in servers) - cpu0,
            "server_kernel_ticks": kernel1 - kernel0,
            "server_all_ticks": all1 - all0,
            "redis_cpu": sum(cpu_seconds(pid) for pid in redis) - redis_cpu0,
            "generator_cpu": sum(cpu_seconds(g.pid) for g in self.procs) - gen_cpu0,
            "generator_cores": self.cores,
        }
        return [orjson.loads(line) for line in lines], readings

    def close(self) -> None:
        """Close the connections (only now: the disconnects are not the load) and wait
        for the processes to end."""
        try:
            self._tell("close")
        except OSError:  # one already gone (killed by its watchdog)
            pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


def _kernel_and_all(pids: Sequence[int]) -> tuple[float, float]:
    """The processes' CPU seconds in the kernel, and in all (clock ticks)."""
    readings = [stat_seconds(pid) for pid in pids]
    return sum(k for _, k in readings), sum(u + k for u, k in readings)


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
        # The part of it in the kernel (clock ticks): the sends, whoever makes them.
        "server_kernel_share": (
            round(readings["server_kernel_ticks"] / readings["server_all_ticks"], 3)
            if readings.get("server_all_ticks")
            else None
        ),
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
