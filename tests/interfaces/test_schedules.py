"""Schedules: parsing, firing (overlap and lock policy, RBAC, audit), next fire times, and a real
Celery beat (`hotswap scheduler`) launching runs on real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.interfaces.schedules import ScheduleDef, next_fire, parse_schedules
from engine.service import Identity
from tests.interfaces.conftest import POLICY, Stack
from tests.support.workers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_schedule_file_errors_have_locations() -> None:
    with pytest.raises(ConfigError) as e:
        parse_schedules("""schedules:
  - name: a
    runbook: slow
    every: 6h
    cron: "0 * * * *"
  - name: b
    runbook: slow
    cron: "every tuesday"
  - name: c
    every: soon
    overlap: queue
""", "s.yaml")
    text = str(e.value)
    assert "s.yaml:2:5: give exactly one of 'cron'" in text
    assert "s.yaml:8:5: 'every tuesday' is not a 5-field cron expression" in text
    assert "s.yaml:10:5: 'every':" in text and "s.yaml:11:5: 'overlap' must be one of skip, allow" in text
    assert "s.yaml:9:5: 'runbook' is required" in text


def test_next_fire_times() -> None:
    now = datetime(2024, 5, 1, 7, 30, tzinfo=UTC).timestamp()
    cron = ScheduleDef("r", "slow", cron="0 */6 * * *")
    assert datetime.fromtimestamp(next_fire(cron, now, None), UTC) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    every = ScheduleDef("r", "slow", every=6 * 3600)
    assert next_fire(every, now, None) == now + 6 * 3600
    assert next_fire(every, now, now - 3600) == now + 5 * 3600


@pytest.mark.slow
def test_fire_now_launches_each_cluster_as_the_scheduler(stack: Stack) -> None:
    book = stack.server.ctx.schedules
    outcomes = book.fire("rebalance", manual_by=Identity("alice", "cli"))
    assert [(o.entry, o.outcome) for o in outcomes] == [("rebalance@ceph-a", "launched"), ("rebalance@ceph-b", "launched")]
    for o in outcomes:
        rec = stack.service.run(o.run)
        assert rec["launched_by"] == "schedule:rebalance" and rec["source"] == "schedule"
        assert rec["params"]["cluster"] == o.entry.split("@")[1]
        assert stack.audit(action="schedule_fired", run=o.run, entry=o.entry, manual_by="alice")
        assert stack.audit(action="launch", run=o.run, who="schedule:rebalance", source="schedule")
    # the previous runs still run: a second fire of the same entries is skipped, and audited
    again = book.fire("rebalance@ceph-a")
    assert again[0].outcome == "skipped" and again[0].run == outcomes[0].run and "overlap" in again[0].reason
    assert stack.audit(action="schedule_skipped", entry="rebalance@ceph-a", run=outcomes[0].run)
    for o in outcomes:
        assert stack.wait(o.run)["status"] == "succeeded"
    assert book.fire("rebalance", cluster="ceph-a")[0].outcome == "launched"


@pytest.mark.slow
def test_fire_respects_cluster_locks_and_the_policy(stack: Stack) -> None:
    book = stack.server.ctx.schedules
    holder = stack.api("POST", "/runs", json={"runbook": "locked", "params": {"cluster": "ceph-a", "seconds": 30}}).json()
    holder_run = holder["run"]
    stack.wait(holder_run, {"running"})
    out = book.fire("guarded")[0]
    assert out.outcome == "skipped" and out.run == holder_run and "lock 'cluster:ceph-a'" in out.reason
    assert stack.audit(action="schedule_skipped", entry="guarded@ceph-a", run=holder_run)
    stack.service.cancel(holder_run, Identity("alice", "cli"))
    stack.wait(holder_run)
    launched = book.fire("guarded")[0]
    assert launched.outcome == "launched", launched
    stack.wait(launched.run)

    denied = book.fire("forbidden")[0]
    assert denied.outcome == "denied" and "schedule:forbidden" in denied.reason
    assert stack.audit(action="denied", principal="schedule:forbidden", runbook="replace-node")


@pytest.mark.slow
def test_schedules_via_the_api(stack: Stack) -> None:
    listed = {s["entry"]: s for s in stack.api("GET", "/schedules").json()}
    assert listed["nightly"]["when"] == "cron '0 */6 * * *'"
    assert datetime.fromisoformat(listed["nightly"]["next_fire_iso"]).minute == 0
    r = stack.api("POST", "/schedules/nightly/fire")
    assert r.status_code == 200 and r.json()[0]["outcome"] == "launched"
    assert stack.service.run(r.json()[0]["run"])["launched_by_detail"]["manual_by"] == "alice"
    assert stack.api("POST", "/schedules/nightly/fire", token="ci-reader").status_code == 403


@pytest.mark.slow
def test_celery_beat_fires_and_skips_overlaps(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "beat.yaml").write_text("""
schedules:
  - name: tick
    runbook: slow
    every: 1s
    clusters: [ceph-b]
    params: {seconds: 4}
""")
    env = {**os.environ, "HOTSWAP_REDIS_URL": stack.redis_url, "HOTSWAP_HOME": str(tmp_path / "beat-home"),
           "HOTSWAP_POLICY": str(tmp_path / "policy.yaml"), "HOTSWAP_SCHEDULES": str(tmp_path / "beat.yaml"),
           "HOTSWAP_RUNBOOKS": str(stack.runbooks), "HOTSWAP_INVENTORY": str(tmp_path / "inventory.yaml"),
           "HOTSWAP_SERVER_CONFIG": str(tmp_path / "none.yaml")}
    assert (tmp_path / "policy.yaml").read_text() == POLICY
    since = time.time()
    log = tmp_path / "beat.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.interfaces.commands", "scheduler", "--max-interval", "1"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        fired = wait_for(lambda: [e for e in stack.audit(action="schedule_fired", entry="tick@ceph-b")
                                  if float(e["t"]) >= since], timeout=60, what=f"beat to fire (log: {log})")
        run = fired[-1]["run"]
        skipped = wait_for(lambda: [e for e in stack.audit(action="schedule_skipped", entry="tick@ceph-b", run=run)],
                           timeout=60, what="beat to skip an overlapping fire")
        assert "overlap" in skipped[0]["reason"]
        assert stack.service.run(run)["launched_by"] == "schedule:tick"
        assert stack.wait(run)["status"] == "succeeded"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)

    listing = subprocess.run([sys.executable, "-m", "engine.interfaces.commands", "schedules"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "tick@ceph-b" in listing.stdout and "every 1.0s" in listing.stdout

    audit = subprocess.run([sys.executable, "-m", "engine.interfaces.commands", "audit", "--source", "schedule",
                            "--since", "10m"], cwd=ROOT, env={**env, "HOTSWAP_USER": "alice"},
                           capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stderr
    assert "schedule_fired" in audit.stdout and "schedule_skipped" in audit.stdout and run in audit.stdout
    refused = subprocess.run([sys.executable, "-m", "engine.interfaces.commands", "audit"], cwd=ROOT,
                             env={**env, "HOTSWAP_USER": "mallory"}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 4 and "cli:mallory" in refused.stderr
