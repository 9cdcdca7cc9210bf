"""CI's fault-injection run (bench.faults): every fault kind at least once on a short seeded batch. It checks
the batch's own verdict and, independently, what its report claims: that kills really hit running steps
(the store shows each hit step executed again under a later attempt), that Celery saw the lost pool child,
that acknowledged writes survived the Redis SIGKILL and that writes really were refused. (A deploy may
have to kill a worker that hangs in shutdown after kombu's unrecoverable OOM error: reported, not failed.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from bench.faults.kinds import FAULTS, HIT_TARGET, KILL_FAULTS
from tests.support.workers import ROOT

pytestmark = pytest.mark.slow

SEED = 7
RUNS = 13
KINDS = [*FAULTS, *KILL_FAULTS]
"""13 faults: every kind once and each kill kind three times (so one unlucky miss is not 25 % of the kills).
About 100 s on 2 shared CPUs."""


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("faults") / "faults.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--runs", str(RUNS), "--seed", str(SEED), "--settle", "90",
         "--kinds", ",".join(KINDS), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    out.with_suffix(".out").write_text(proc.stdout + proc.stderr)
    assert out.exists(), proc.stdout[-5000:] + proc.stderr[-5000:]
    return proc, json.loads(out.read_text())


def test_every_fault_kind_was_injected(batch: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, summary = batch
    assert set(summary["faults"]) == set(FAULTS)
    assert all(n >= 1 for n in summary["faults"].values()), summary["faults"]
    assert summary["runs"] == RUNS


def test_kills_hit_running_steps_as_the_store_confirms(batch: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, summary = batch
    kills = [f for f in summary["by_fault"] if f["kind"] in KILL_FAULTS]
    hit = [f for f in kills if f["hits"]]
    assert len(hit) >= HIT_TARGET * len(kills), [f["detail"] for f in kills]
    for f in kills:
        assert f["detail"].startswith("hit ") == bool(f["hits"]), f
        assert len(f["evidence"]) == len(f["hits"])
        assert all(e.startswith("confirmed: ") for e in f["evidence"]), f["evidence"]
        assert f["detail"] in proc.stdout
        for h in f["hits"]:
            assert f"{h['run_id']}/{h['step_id']}" in f["detail"]
            if f["kind"] == "child_sigkill":
                assert h["process"].startswith("pool child of "), h
            else:
                assert h["process"].endswith("(whole group)"), h
    for f in kills:
        if f["kind"] == "child_sigkill" and f["hits"]:
            assert f["detail"].endswith("Celery reported the lost child: True"), f["detail"]


def test_redis_faults_did_what_they_say(batch: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    _, summary = batch
    for f in summary["by_fault"]:
        if f["kind"] == "redis_sigkill":
            m = re.search(r"\((\d+) acknowledged INCRs, (\d+) after restart\)", f["detail"])
            assert m and int(m[1]) > 0 and int(m[2]) >= int(m[1]), f["detail"]
        elif f["kind"] == "redis_refuse_writes":
            assert "writes refused (command not allowed when used memory" in f["detail"], f["detail"]
        elif f["kind"] == "redis_freeze":
            assert f["detail"].startswith("SIGSTOP 4s (2x lease), then SIGCONT"), f["detail"]
        elif f["kind"] == "rolling_deploy":
            assert f["detail"].count(" -> ") == 2, f["detail"]


def test_nothing_lost_duplicated_or_stuck(batch: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, summary = batch
    bad = [r for r in summary["by_run"] if r["verdict"] not in ("ok", "failed_ok") or r["repeated"] or r["duplicated"]]
    assert "| runs |" in proc.stdout and "per fault, what it hit:" in proc.stdout
    assert (proc.returncode == 0) == (summary["failures"] == []), proc.stdout[-3000:]
    assert summary["lost"] == 0, (summary["lost_at_faults"], summary["lost_between_faults"])
    assert summary["stuck"] == 0 and summary["failed_wrongly"] == 0, bad
    assert summary["duplicate_executions"] == 0, bad
    assert {r["shape"] for r in summary["by_run"]} == {"sequence", "failing", "parallel", "fan_out", "wait"}
    assert summary["side_effects_repeated"] == 0, (bad, summary["side_effects_repeated_after_redis_stall"])
    assert summary["failures"] == [] and proc.returncode == 0, proc.stdout[-3000:]
