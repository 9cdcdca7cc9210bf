"""The CLI as an operator uses it: real processes, the session's Redis and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import Harness
from tests.support.redis_server import RedisServer
from tests.support.workers import ROOT, Worker

pytestmark = pytest.mark.slow


def hotswap(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(redis_server: RedisServer, worker: Worker, tmp_path: Path) -> dict[str, str]:
    return {"HOTSWAP_REDIS_URL": redis_server.url, "HOTSWAP_HOME": str(tmp_path / "home"), "HOTSWAP_USER": "erin"}


def test_run_follow_shows_every_step_and_status_is_a_table(env: dict[str, str]) -> None:
    out = hotswap("run", "runbooks/demo.yaml", "-p", "items=2", "-p", "pause=0.2s", "--follow", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    run_id = lines[0].split()[1]
    assert any(line.endswith("✓ done succeeded") for line in lines)
    assert any("fan[1] | item 1 of 2" in line for line in lines)
    assert lines[-1].endswith(f"run {run_id} succeeded")
    status = hotswap("status", run_id, env=env)
    assert status.returncode == 0
    assert status.stdout.splitlines()[0].startswith(f"run {run_id}  demo  SUCCEEDED  by erin via cli")
    assert "STEP" in status.stdout and "ACTION" in status.stdout and "right2" in status.stdout
    as_json = json.loads(hotswap("--json", "status", run_id, env=env).stdout)
    assert as_json["run"]["status"] == "succeeded" and len(as_json["steps"]) == 7
    runs = hotswap("runs", "--limit", "50", env=env).stdout
    assert run_id in runs
    logs = hotswap("logs", run_id, "right2", env=env).stdout
    assert "after right: right branch" in logs


def test_validate_reports_file_line_and_exit_code(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - id: a\n    action: core.nope\n")
    out = hotswap("validate", str(bad), "runbooks", env=env)
    assert out.returncode == 2
    assert f"error   {bad}:4:5: step 'a': unknown action 'core.nope'" in out.stdout
    assert "ok      runbooks/demo.yaml" in out.stdout
    launched = hotswap("run", str(bad), env=env)
    assert launched.returncode == 2 and launched.stderr.startswith(f"error: {bad}:4:5:")


def test_plan_and_canvas_and_dry_run(env: dict[str, str]) -> None:
    plan = hotswap("plan", "runbooks/demo.yaml", "-p", "items=3", env=env).stdout
    assert "* for_each fan (3 items, at most 2 at once)" in plan
    canvas = hotswap("plan", "runbooks/demo.yaml", "--executor", "canvas", env=env).stdout
    assert canvas.startswith("chain(") and "chord(" in canvas
    dry = hotswap("run", "runbooks/demo.yaml", "--dry-run", env=env)
    assert dry.returncode == 0
    assert "    sleep: seconds=1.0" in dry.stdout and "nothing changed" in dry.stdout


def test_bad_parameter_is_one_clear_line(env: dict[str, str]) -> None:
    out = hotswap("run", "runbooks/demo.yaml", "-p", "items=many", env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: runbooks/demo.yaml:7:3: parameter 'items' must be an integer, got 'many'"


def test_approve_cancel_resume_from_the_cli(env: dict[str, str], engine: Harness) -> None:
    path = engine.runbook("""
name: gate
steps:
  - id: go
    action: core.approve
    with: {message: proceed, approvers: [erin]}
  - id: fail
    action: core.fail
    with: {times: 1}
""")
    run_id = json.loads(hotswap("--json", "run", str(path), env=env).stdout)["run"]
    engine.wait_step(run_id, "go", "waiting")
    denied = hotswap("approve", run_id, "go", env={**env, "HOTSWAP_USER": "mallory"})
    assert denied.returncode == 1 and "mallory may not approve 'go': allowed are erin" in denied.stderr
    assert hotswap("approve", run_id, "go", env=env).stdout.strip() == "go approved"
    assert hotswap("approve", run_id, "go", env=env).stdout.strip() == "go was already decided; nothing changed"
    assert engine.wait(run_id)["status"] == "failed"
    resumed = hotswap("resume", run_id, "--follow", env=env)
    assert resumed.returncode == 0 and f"run {run_id} succeeded" in resumed.stdout
    gone = hotswap("cancel", run_id, env=env)
    assert gone.returncode == 1 and "only an active or failed run can be cancelled" in gone.stderr


def test_actions_lists_typed_parameters(env: dict[str, str]) -> None:
    out = hotswap("actions", env=env).stdout
    assert "core.sleep: Sleep in the worker" in out and "    seconds: float (required)" in out
    assert "ceph.destroy_osds [destructive]" in out


def test_embedded_default_needs_nothing_and_outlives_the_cli(tmp_path: Path) -> None:
    env = {"HOTSWAP_HOME": str(tmp_path / "state"), "HOTSWAP_REDIS_URL": ""}
    try:
        out = hotswap("run", "runbooks/demo.yaml", "-p", "items=2", "-p", "pause=0.1s", "--follow", env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        run_id = out.stdout.split()[1]
        later = hotswap("--json", "runs", env=env)
        assert [r["id"] for r in json.loads(later.stdout)] == [run_id]
        assert (tmp_path / "state" / "appendonlydir").exists() or (tmp_path / "state" / "appendonly.aof").exists()
    finally:
        down = hotswap("down", env=env)
    assert down.stdout.startswith("stopped: worker (")
