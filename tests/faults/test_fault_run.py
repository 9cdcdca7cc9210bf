"""Smoke test of the fault-injection run (bench/faults.py): a tiny batch under real faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.workers import ROOT

pytestmark = pytest.mark.slow


def test_a_small_batch_under_faults_loses_nothing_and_ends_as_expected(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--runs", "4", "--faults", "3", "--seed", "7",
         "--kinds", "worker_sigkill,redis_restart,duplicate_delivery", "--settle", "90", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert out.exists(), proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    assert sum(summary["faults"].values()) == 3
    assert summary["runs"] == 4
    assert summary["lost"] == 0, summary["lost_at_faults"]
    wrong = [r for r in summary["by_run"] if r["verdict"] not in ("ok", "failed_ok")]
    assert not wrong, proc.stdout
    assert {r["shape"] for r in summary["by_run"]} == {"sequence", "failing", "parallel", "fan_out"}
    assert summary["failed_correctly"] == 1
    assert summary["side_effects_repeated"] == 0
    assert proc.returncode == 0
    assert "| runs launched |" in proc.stdout
