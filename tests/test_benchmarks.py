"""The benchmark scripts must keep working: their quick mode runs here against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_quick(scenario: str, tmp_path: Path) -> tuple[dict, str]:
    """Run a scenario's quick mode; check JSON on stdout equals the file and a PNG exists."""
    out = tmp_path / f"{scenario}.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", scenario, "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == report
    assert out.with_suffix(".png").stat().st_size > 1000
    return report, result.stderr


def test_fanout_quick_mode(tmp_path):
    report, stderr = run_quick("fanout", tmp_path)
    (level,) = report["levels"]
    assert level["deliveries"] > 0 and level["dropped"] == 0 and level["errors"] == 0
    assert level["deliveries_per_server_cpu_s"] > 0
    assert level["latency_ms"]["p50"] > 0
    assert "fanout: level" in stderr  # progress is shown


def test_sfu_quick_mode_compares_with_mediarelay(tmp_path):
    report, stderr = run_quick("sfu", tmp_path)
    sfu, relay = report["results"]
    assert (sfu["system"], relay["system"]) == ("switchboard-sfu", "aiortc-mediarelay")
    for result in (sfu, relay):
        assert result["packets_delivered"] > 0 and result["packets_per_server_cpu_s"] > 0
        assert result["loss"] is not None
    # the relay may deliver no frame inside a 4 s window on a loaded machine; the SFU must
    assert sfu["added_latency_ms"]["frames"] > 0
    assert report["packets_per_cpu_s_ratio_sfu_over_mediarelay"] > 0
    assert "measuring" in stderr


def test_cluster_quick_mode_compares_one_node_with_two(tmp_path):
    report, stderr = run_quick("cluster", tmp_path)
    names = [s["setup"] for s in report["setups"]]
    assert names == ["one node, memory", "one node, Redis", "two nodes, Redis"]
    for setup in report["setups"]:
        assert setup["deliveries"] > 0 and setup["errors"] == 0
        assert setup["delivery_rate"] > 0.95
    two = report["versus_one_node_memory"]["two nodes, Redis"]
    assert two["deliveries_per_server_cpu_s_ratio"] > 0
    assert "cluster: two nodes, Redis" in stderr
