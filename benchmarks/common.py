"""Shared by the benchmark scenarios: ports, CPU and memory readings, percentiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

SECRET = "benchmark-secret-0123456789abcdef0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, from /proc (Linux), to the nanosecond where the kernel allows.

    `stat` counts in clock ticks (10 ms), so a quiet window (the idle scenario's quick mode)
    can read as zero CPU and make "per CPU-second" undefined. Each live thread's `schedstat`
    counts nanoseconds on CPU; `stat` still includes threads that have exited, so the larger
    of the two is taken.
    """
    ticks = sum(stat_seconds(pid))
    precise = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            precise += int((task / "schedstat").read_text().split()[0])
    return max(ticks, precise / 1e9)


def stat_seconds(pid: int) -> tuple[float, float]:
    """A process's CPU time in user space and in the kernel, from ``stat``'s clock ticks
    (threads that have exited included).

    The kernel's part is reported on its own because a signaling server's sends cost
    about as much there whoever makes them: the rest is what tuning its code can change.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmRSS:")


def peak_rss_bytes(pid: int) -> int:
    return _status_kb(pid, "VmHWM:")


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_pinned(
    cmd: list[str], env: dict[str, str], port: int, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start a server on the first CPU (the load runs on the others); wait for its port."""
    server = subprocess.Popen(cmd, env=env, **popen)
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(server.pid, {cpus[0]})
    deadline = time.time() + 30
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{' '.join(cmd)} did not start")


@contextlib.contextmanager
def cpu_share(pids: list[int], share: float) -> Iterator[None]:
    """Run ``pids`` (all their threads) on ``share`` of one CPU, in a cgroup of their own
    (the CFS quota; cgroup v1's ``cpu`` controller or v2's), so a test can flood servers
    past what they deliver with a load generator that could not outrun a whole core."""
    roots = [Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")]
    root = next(
        (
            r
            for r in roots
            if (r / "cpu.cfs_quota_us").exists()
            or "cpu" in _read(r / "cgroup.subtree_control").split()
        ),
        None,
    )
    if root is None:
        raise RuntimeError("no cgroup cpu controller to limit the servers with")
    group = root / f"switchboard-bench-{os.getpid()}"
    group.mkdir()
    period = 100_000
    try:
        if (group / "cpu.cfs_quota_us").exists():
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(int(period * share)))
        else:
            (group / "cpu.max").write_text(f"{int(period * share)} {period}")
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        parent = group.parent / "cgroup.procs"
        for pid in _read(group / "cgroup.procs").split():
            with contextlib.suppress(OSError):
                parent.write_text(pid)
        group.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A throw-away redis-server on loopback, pinned beside the servers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (apt-get install redis-server)")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    # its log goes to stderr: stdout carries only the report
    return start_pinned(cmd, dict(os.environ), port, stdout=sys.stderr.fileno())


def emit_report(report: dict[str, Any], out: Path, draw: Callable[[Path], None]) -> None:
    """Every benchmark's ending: JSON into ``out``, the plot beside it, JSON on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    draw(out.with_suffix(".png"))
    print(orjson.dumps(report).decode())
