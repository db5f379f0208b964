"""Room fan-out load: N clients in rooms of K members, each toggling typing at R per second.

The server runs as a separate ``switchboard serve`` process pinned to CPU 0; load generator
processes are pinned to the other CPUs, connect once, then send for a fixed window. Every
``message:typing`` toggle is a state change, so each one is broadcast to the K-1 other
members. Senders and receivers of a room live in the same generator process, so the latency
(send to receive) is measured on one clock. Results: JSON on stdout and in ``--out``, and a
PNG plot beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.common import SECRET, cpu_seconds, free_port, pct, rss_bytes, start_pinned, stop


async def _generator(
    urls: list[str],
    rooms: list[str],
    room_size: int,
    rate: float,
    duration: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    from signaling.tokens import mint_token

    sent_at: dict[str, list[float]] = {}
    seen: dict[tuple[str, str], int] = {}
    latencies: list[float] = []
    deliveries = 0
    errors = 0
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets: list[tuple[str, str, aiohttp.ClientWebSocketResponse]] = []

    for room in rooms:
        for i in range(room_size):
            user = f"{room}-u{i}"
            token = mint_token(SECRET, user, rooms=[room])
            # Several nodes: a room's members alternate between them, so most deliveries
            # cross nodes.
            url = urls[i % len(urls)]
            ws = await session.ws_connect(url, params={"access_token": token}, compress=0)
            await ws.send_str(
                orjson.dumps({"type": "room:join", "data": {"roomId": room}}).decode()
            )
            sockets.append((user, room, ws))
            sent_at[user] = []

    measuring = False

    async def reader(user: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal deliveries, errors
        async for msg in ws:
            frame = orjson.loads(msg.data)
            kind = frame["type"]
            if kind == "user:typing":
                sender = frame["data"]["userId"]
                key = (user, sender)
                index = seen.get(key, 0)
                seen[key] = index + 1
                times = sent_at[sender]
                if index < len(times):
                    if measuring:
                        deliveries += 1
                        latencies.append(time.perf_counter() - times[index])
            elif kind == "error":
                errors += 1

    readers = [asyncio.create_task(reader(u, ws)) for u, _, ws in sockets]
    ready.release()
    await asyncio.to_thread(go.wait)
    await asyncio.sleep(0.5)  # joins settle

    async def sender(user: str, room: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        typing = False
        interval = 1.0 / rate
        await asyncio.sleep(random.random() * interval)
        next_at = time.perf_counter()
        end = next_at + duration
        while next_at < end:
            typing = not typing
            sent_at[user].append(time.perf_counter())
            frame = {"type": "message:typing", "data": {"conversationId": room, "isTyping": typing}}
            await ws.send_str(orjson.dumps(frame).decode())
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*(sender(u, r, ws) for u, r, ws in sockets))
    await asyncio.sleep(1.0)  # drain in-flight deliveries
    elapsed = time.perf_counter() - started
    expected = sum(len(t) for t in sent_at.values()) * (room_size - 1)
    for task in readers:
        task.cancel()
    for _, _, ws in sockets:
        await ws.close()
    await session.close()
    results.put(
        {
            "deliveries": deliveries,
            "expected": expected,
            "errors": errors,
            "latencies": latencies,
            "elapsed": elapsed,
            "generator_cpu": time.process_time(),
        }
    )


def _generator_main(cpu: int, *args: Any) -> None:
    import uvloop

    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    uvloop.run(_generator(*args))


def run_level(
    ports: list[int],
    server_pids: list[int],
    clients: int,
    room_size: int,
    rate: float,
    duration: float,
    procs: int,
    rss_idle: int,
) -> dict[str, Any]:
    rooms = [f"room{i}" for i in range(max(1, clients // room_size))]
    ctx = mp.get_context("spawn")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    cpus = sorted(os.sched_getaffinity(0))
    gen_cpus = [c for c in cpus if c != cpus[0]] or [-1]
    workers = []
    for p in range(procs):
        share = rooms[p::procs]
        if not share:
            continue
        proc = ctx.Process(
            target=_generator_main,
            args=(
                gen_cpus[p % len(gen_cpus)],
                [f"http://127.0.0.1:{port}/ws" for port in ports],
                share,
                room_size,
                rate,
                duration,
                ready,
                go,
                results,
            ),
        )
        proc.start()
        workers.append(proc)
    for _ in workers:
        ready.acquire(timeout=120)
    cpu_before = sum(cpu_seconds(pid) for pid in server_pids)
    go.set()
    parts = [results.get(timeout=duration + 120) for _ in workers]
    server_cpu = sum(cpu_seconds(pid) for pid in server_pids) - cpu_before
    for proc in workers:
        proc.join(30)
    latencies = [x for part in parts for x in part["latencies"]]
    deliveries = sum(p["deliveries"] for p in parts)
    expected = sum(p["expected"] for p in parts)
    return {
        "clients": len(rooms) * room_size,
        "room_size": room_size,
        "rate_per_client": rate,
        "offered_deliveries_per_s": round(len(rooms) * room_size * rate * (room_size - 1)),
        "deliveries": deliveries,
        "expected_deliveries": expected,
        "dropped": expected - deliveries,
        "errors": sum(p["errors"] for p in parts),
        "deliveries_per_s": round(deliveries / duration),
        "server_cpu_seconds": round(server_cpu, 3),
        "deliveries_per_server_cpu_s": round(deliveries / server_cpu) if server_cpu else None,
        "generator_cpu_seconds": round(sum(p["generator_cpu"] for p in parts), 3),
        "latency_ms": {
            "p50": round(pct(latencies, 0.50) * 1000, 3),
            "p95": round(pct(latencies, 0.95) * 1000, 3),
            "p99": round(pct(latencies, 0.99) * 1000, 3),
            "max": round(max(latencies, default=0) * 1000, 3),
            "mean": round(statistics.fmean(latencies) * 1000, 3) if latencies else 0.0,
        },
        "delivery_rate": round(deliveries / expected, 4) if expected else None,
        "server_rss_bytes": sum(rss_bytes(pid) for pid in server_pids),
        "server_rss_per_connection_bytes": round(
            (sum(rss_bytes(pid) for pid in server_pids) - rss_idle) / (len(rooms) * room_size)
        ),
    }


def start_server(port: int, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **extra_env,
        "SWITCHBOARD_JWT_SECRET": SECRET,
        "SWITCHBOARD_RATE_LIMIT_PER_SECOND": "10000",
        "SWITCHBOARD_RATE_LIMIT_BURST": "10000",
        "SWITCHBOARD_TYPING_THROTTLE": "0",
        "SWITCHBOARD_LOG_LEVEL": "WARNING",
        "SWITCHBOARD_SEND_BUFFER_LIMIT": str(16 * 1024 * 1024),
    }
    return start_pinned(
        [sys.executable, "-m", "signaling", "serve", "--port", str(port)], env, port
    )


def plot(levels: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [lv["offered_deliveries_per_s"] for lv in levels]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(offered, [lv["deliveries_per_s"] for lv in levels], "o-", label="delivered/s")
    ax1.plot(
        offered,
        [lv["deliveries_per_server_cpu_s"] or 0 for lv in levels],
        "s-",
        label="delivered per server CPU-s",
    )
    ax1.set_xlabel("offered deliveries/s")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for key in ("p50", "p95", "p99"):
        ax2.plot(offered, [lv["latency_ms"][key] for lv in levels], "o-", label=key)
    ax2.set_xlabel("offered deliveries/s")
    ax2.set_ylabel("latency ms")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle("Switchboard room fan-out (typing), server pinned to one core")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks fanout", description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=50)
    parser.add_argument("--rates", default="0.5,1,2", help="messages/s per client, per level")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fanout.json"))
    parser.add_argument("--quick", action="store_true", help="tiny run (< 30 s) for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.room_size, args.rates, args.duration = 40, 10, "2", 2.0
    port = free_port()
    server = start_server(port)
    levels = []
    rss_idle = rss_bytes(server.pid)
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            print(f"fanout: level rate={rate}/s per client ...", file=sys.stderr, flush=True)
            level = run_level(
                [port],
                [server.pid],
                args.clients,
                args.room_size,
                rate,
                args.duration,
                args.procs,
                rss_idle,
            )
            print(
                f"fanout:   {level['deliveries_per_s']} deliveries/s, "
                f"{level['deliveries_per_server_cpu_s']} per server CPU-s, "
                f"p99 {level['latency_ms']['p99']} ms",
                file=sys.stderr,
                flush=True,
            )
            levels.append(level)
    finally:
        stop(server)
    report = {
        "scenario": "fanout",
        "system": "switchboard",
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "levels": levels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    plot(levels, args.out.with_suffix(".png"))
    print(orjson.dumps(report).decode())
    return 0
