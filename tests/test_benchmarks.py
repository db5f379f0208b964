"""The benchmark scripts must keep working: their quick mode runs here against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fanout_quick_mode(tmp_path):
    out = tmp_path / "fanout.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "fanout", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == report
    (level,) = report["levels"]
    assert level["deliveries"] > 0 and level["dropped"] == 0 and level["errors"] == 0
    assert level["deliveries_per_server_cpu_s"] > 0
    assert level["latency_ms"]["p50"] > 0
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "fanout: level" in result.stderr  # progress is shown
