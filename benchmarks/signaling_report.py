"""The signaling benchmark's report: ratios against Socket.IO (medians over rounds) and
the plot. Kept apart from the runs (``benchmarks/signaling.py``), which only measure."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Metrics compared as switchboard / socketio (higher is better for rates and per-CPU
# figures; lower is better for latency, RSS and CPU).
RATIO_KEYS = (
    "deliveries_per_s",
    "deliveries_per_server_cpu_s",
    "deliveries_per_cpu_s_with_redis",
    "server_cpu_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "server_rss_per_connection_bytes",
    "setups_per_s",
    "setup_p50_ms",
    "connect_p50_ms",
)
#: What ``ratios`` lists for each round when there are several: the targets' two halves
#: (and, on topologies with Redis, the efficiency with Redis's CPU counted).
ROUND_KEYS = ("deliveries_per_server_cpu_s", "deliveries_per_cpu_s_with_redis", "latency_p99_ms")


def ratios(runs: list[dict[str, Any]], ours_system: str = "switchboard") -> list[dict[str, Any]]:
    """``ours_system`` / socketio for each metric, per scenario and topology.

    Each round's runs are paired with the same round's Socket.IO run (they ran minutes
    apart, on the same machine state). With several rounds (``--rounds``) a ratio is the
    median of the rounds' ratios, and ``rounds`` lists each round's efficiency ratio and
    p99 ratio: on a shared machine one round's ratio moves by a tenth either way, so a
    target is judged on the median and the spread is shown."""
    keyed = {(r["scenario"], r["topology"], r["system"], r.get("round", 1)): r for r in runs}
    per_round: dict[tuple[str, str], list[dict[str, float]]] = {}
    for (scenario, topology, system, round_), ours in keyed.items():
        theirs = keyed.get((scenario, topology, "socketio", round_))
        if system != ours_system or theirs is None:
            continue
        entry: dict[str, float] = {}
        for key in RATIO_KEYS:
            a, b = ours.get(key), theirs.get(key)
            if isinstance(a, int | float) and isinstance(b, int | float) and b:
                entry[key] = a / b
        per_round.setdefault((scenario, topology), []).append(entry)
    out = []
    for (scenario, topology), rounds in per_round.items():
        summary: dict[str, Any] = {"scenario": scenario, "topology": topology}
        for key in RATIO_KEYS:
            values = [r[key] for r in rounds if key in r]
            if values:
                summary[key] = round(statistics.median(values), 3)
        if len(rounds) > 1:
            summary["rounds"] = [{k: round(r[k], 3) for k in ROUND_KEYS if k in r} for r in rounds]
        out.append(summary)
    return out


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of one system's rounds, the one with the median deliveries per server CPU-s (what
    the plot shows with ``--rounds``)."""
    if not runs:
        return None
    ranked = sorted(runs, key=lambda r: r.get("deliveries_per_server_cpu_s") or 0)
    return ranked[(len(ranked) - 1) // 2]


def plot(runs: list[dict[str, Any]], path: Path, systems: Sequence[str]) -> None:
    """Per scenario: deliveries per CPU-s, latency and RSS per connection, a bar per
    system (in ``systems``' order) and topology."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in runs))
    panels = (
        ("deliveries_per_server_cpu_s", "deliveries per server CPU-s", False),
        ("latency_p99_ms", "latency p50 (dot) / p99 (bar), ms", True),
        ("server_rss_per_connection_bytes", "server RSS per connection, KB", False),
    )
    width = 0.8 / len(systems)
    fig, axes = plt.subplots(len(scenarios), 3, figsize=(14, 3.4 * len(scenarios)), squeeze=False)
    for row, scenario in zip(axes, scenarios, strict=True):
        mine = [r for r in runs if r["scenario"] == scenario]
        topologies = list(dict.fromkeys(r["topology"] for r in mine))
        for ax, (key, title, with_p50) in zip(row, panels, strict=True):
            for i, system in enumerate(systems):
                xs, ys, p50 = [], [], []
                for j, topology in enumerate(topologies):
                    run = median_run(
                        [r for r in mine if r["topology"] == topology and r["system"] == system]
                    )
                    if run is None:
                        continue
                    value = run.get(key) or 0
                    xs.append(j + (i - (len(systems) - 1) / 2) * width)
                    ys.append(value / 1024 if key.endswith("bytes") else value)
                    p50.append(run["latency_p50_ms"])
                ax.bar(xs, ys, width, label=system, color=f"C{i}")
                if with_p50:
                    ax.plot(xs, p50, "k.", markersize=8)
            ax.set_xticks(range(len(topologies)), topologies)
            ax.set_title(f"{scenario}: {title}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        row[0].legend(fontsize=8)
    fig.suptitle("Switchboard vs Socket.IO (same load, same run; servers on one core)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
