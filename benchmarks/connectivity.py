"""Connectivity: how calls connect from behind NATs, firewalls and bad links.

Builds the network lab of the test suite (``tests/netlab``: Linux network namespaces with
routers, NAT, firewalls, coturn with TURN over UDP, TCP and TLS on 443, and a Switchboard
node behind 1:1 NAT), then runs each scenario ``--runs`` times with real aiortc peers:

- 1:1 calls from each client placement (to the partner that makes the placement's path
  the forced one, as in ``tests/test_netlab.py``);
- group call joins to the SFU from each placement (with a reference client beside);
- group calls over shaped links (3 % loss; 150 ms RTT with 30 ms jitter; a 500 kbps
  downlink), watched for a few seconds: frame rate, freezes, loss — the baseline the
  bandwidth-estimation work improves.

Reported per scenario: connect success rate, join to first decoded media (p50/p95), the
candidate pair types seen, and for shaped links the media watched. JSON on stdout and in
``--out``, a PNG beside it. Needs root (namespaces); run from the repository root.

    python -m benchmarks connectivity [--runs 5] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import emit_report, pct
from tests.netlab.clients import group_call, one_to_one
from tests.netlab.lab import Lab
from tests.netlab.topology import Internet

ONE_TO_ONE = [
    ("direct", "direct-b"),
    ("eim", "direct-b"),
    ("symmetric", "eim-b"),
    ("udp-blocked", "direct-b"),
    ("tcp443-only", "direct-b"),
    ("symmetric", "symmetric-b"),
]
GROUP = [
    ("direct",),
    ("eim",),
    ("symmetric",),
    ("udp-blocked",),
    ("tcp443-only",),
    ("symmetric", "symmetric-b"),
]
PROFILES = {
    "loss-3pct": {"loss": 3.0},
    "rtt-150ms-jitter-30ms": {"delay_ms": 75.0, "jitter_ms": 15.0},
    "downlink-500kbps": {"rate": "500kbit"},
}
QUICK = {"1:1": [("symmetric", "eim-b")], "group": [("udp-blocked",)], "profiles": []}
WATCH_SECONDS = 6.0


def pair_kind(end: dict[str, Any]) -> str:
    relay = end.get("relayTransport")
    return f"relay/{relay}" if relay else end["type"]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def measure(net: Internet, name: str, attempt: Any) -> dict[str, Any]:
    """One scenario run: its outcome, whatever happened."""
    started = time.perf_counter()
    try:
        outcome = await attempt()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"ok": True, "seconds": round(time.perf_counter() - started, 2), **outcome}


async def run_one_to_one(net: Internet, a: str, b: str) -> dict[str, Any]:
    report_a, report_b = await one_to_one(net, net.placements[a], net.placements[b])
    mine, theirs = report_a["pair"], report_b["pair"]
    return {
        "first_media_ms": max(report_a["firstMediaMs"], report_b["firstMediaMs"]),
        # both ends as the first side sees them, and the first side as its peer sees it
        # (a relay may sit on either side: "host -> relay" is the peer's TURN relay)
        "path": (
            f"{pair_kind(mine['local'])} -> {pair_kind(mine['remote'])}; "
            f"peer sees {pair_kind(theirs['remote'])}"
        ),
    }


async def run_group(net: Internet, names: tuple[str, ...]) -> dict[str, Any]:
    placements = [net.placements[n] for n in names]
    if len(placements) == 1:
        placements.insert(0, net.placements["direct-b"])
    reports = await group_call(net, placements)
    mine = reports[-1]
    seen = mine["server"]["publisher"]["remote"]
    return {
        "first_media_ms": mine["firstMediaMs"],
        "path": f"{pair_kind(mine['publisher']['local'])}; server sees {seen['type']}",
    }


async def run_shaped(net: Internet, profile: dict[str, Any]) -> dict[str, Any]:
    placed = net.shaped(**profile)
    reports = await group_call(
        net, [net.placements["direct-b"], placed], 90.0, "--watch", str(WATCH_SECONDS)
    )
    mine = reports[-1]
    return {"first_media_ms": mine["firstMediaMs"], "path": "shaped", "watch": mine["watch"]}


def summarize(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["ok"]]
    first = [r["first_media_ms"] for r in ok if r.get("first_media_ms") is not None]
    summary: dict[str, Any] = {
        "scenario": name,
        "runs": len(runs),
        "connected": len(ok),
        "success_rate": round(len(ok) / len(runs), 3) if runs else 0.0,
        "first_media_ms": {"p50": pct(first, 0.5), "p95": pct(first, 0.95)},
        "paths": dict(Counter(r["path"] for r in ok)),
        "errors": [r["error"] for r in runs if not r["ok"]],
    }
    watched = [r["watch"] for r in ok if r.get("watch")]
    if watched:
        keys = ("videoFps", "freezes", "longestGapMs", "lossPercent", "signalingRoundTripMs")
        summary["watch"] = {key: _mean([w.get(key) for w in watched]) for key in keys}
        # a signaling answer that never came within the agent's timeout
        summary["watch"]["signalingStalls"] = sum(
            1 for w in watched if w.get("signalingRoundTripMs") is None
        )
    return summary


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 2) if known else None


async def run_all(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    lab = Lab(workdir)
    try:
        progress("building the lab")
        started = time.perf_counter()
        net = Internet(lab)
        net.start_node()
        progress(f"lab up in {time.perf_counter() - started:.1f} s")
        plan = (
            QUICK
            if args.quick
            else {
                "1:1": ONE_TO_ONE,
                "group": GROUP,
                "profiles": sorted(PROFILES),
            }
        )
        scenarios: list[tuple[str, Any]] = []
        for a, b in plan["1:1"]:
            scenarios.append((f"1:1 {a} -> {b}", lambda a=a, b=b: run_one_to_one(net, a, b)))
        for names in plan["group"]:
            scenarios.append((f"group {'+'.join(names)}", lambda n=names: run_group(net, n)))
        for profile in plan["profiles"]:
            scenarios.append((f"link {profile}", lambda p=profile: run_shaped(net, PROFILES[p])))
        summaries = []
        for name, attempt in scenarios:
            runs = []
            for i in range(args.runs):
                result = await measure(net, name, attempt)
                runs.append(result)
                state = f"{result['first_media_ms']:.0f} ms" if result["ok"] else "FAILED"
                progress(f"{name}: run {i + 1}/{args.runs} {state}")
            summaries.append(summarize(name, runs))
        return summaries
    finally:
        lab.close()


def draw(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["scenario"] for s in summaries]
    p50 = [s["first_media_ms"]["p50"] for s in summaries]
    p95 = [s["first_media_ms"]["p95"] for s in summaries]
    rate = [100 * s["success_rate"] for s in summaries]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 2), sharey=True)
    y = range(len(names))
    ax1.barh([i + 0.2 for i in y], p50, height=0.4, label="p50")
    ax1.barh([i - 0.2 for i in y], p95, height=0.4, label="p95")
    ax1.set_yticks(list(y), names)
    ax1.set_xlabel("join to first decoded media (ms)")
    ax1.legend()
    ax2.barh(list(y), rate, color="tab:green")
    ax2.set_xlim(0, 100)
    ax2.set_xlabel("connected (%)")
    fig.suptitle("Switchboard connectivity through NATs, firewalls and bad links")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks connectivity")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario")
    parser.add_argument("--quick", action="store_true", help="one run of three scenarios")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/connectivity.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
    workdir = args.out.parent / "connectivity-lab"
    summaries = asyncio.run(run_all(args, workdir))
    report = {
        "benchmark": "connectivity",
        "runs_per_scenario": args.runs,
        "scenarios": summaries,
        "all_connected": all(s["success_rate"] == 1.0 for s in summaries),
    }
    emit_report(report, args.out, lambda png: draw(summaries, png))
    return 0 if report["all_connected"] else 1
