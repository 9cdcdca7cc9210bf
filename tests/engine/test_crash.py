"""Crash safety with faults injected for real: SIGKILLed workers, a restarted Redis, restarted workers,
a killed CLI. Each test has its own redis-server and workers (short leases so detection is quick)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Harness
from tests.support.redis_server import RedisServer
from tests.support.workers import ROOT, Worker, wait_for

pytestmark = pytest.mark.slow

FAST_LEASE = {"HOTSWAP_LEASE_SECONDS": "2", "HOTSWAP_ACTION_MODULES": "tests.support.fault_actions"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def harness(own_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.setenv("HOTSWAP_ACTION_MODULES", "tests.support.fault_actions")
    return Harness(own_redis.url, tmp_path)


def start_worker(url: str, tmp: Path, name: str) -> Worker:
    return Worker(url, tmp / name, concurrency=2, name=name, env=FAST_LEASE).start()


def test_sigkilled_worker_mid_step_is_detected_and_the_step_resumes_without_redoing(
        harness: Harness, own_redis: RedisServer, tmp_path: Path) -> None:
    work = tmp_path / "effects"
    work.mkdir()
    first = start_worker(own_redis.url, tmp_path, "w1")
    try:
        run = harness.launch(f"""
name: crash
steps:
  - id: phases
    action: test.phases
    with: {{directory: "{work}", count: 3, pause: 1.5}}
  - id: after
    action: core.echo
    with: {{message: "{{{{ steps.phases.result.done | join(',') }}}}"}}
""")
        wait_for(lambda: (work / "phase-1").exists(), what="phase 1 to happen")
        wait_for(lambda: 1 in (harness.step(run, "phases").get("memory") or {}).get("done", []),
                 what="progress to be recorded")
        first.kill()
    finally:
        first.stop()
    assert harness.step(run, "phases")["status"] == "running", "the dead worker's step looks alive until its lease ends"
    second = start_worker(own_redis.url, tmp_path, "w2")
    try:
        record = harness.wait(run, timeout=60)
    finally:
        second.stop()
    assert record["status"] == "succeeded", record.get("reason")
    step = harness.step(run, "phases")
    assert step["attempt"] == 2
    takeovers = [e for _, e in harness.store.events(run) if e.get("kind") == "takeover"]
    assert len(takeovers) == 1 and takeovers[0]["step"] == "phases"
    for i in range(3):
        lines = (work / f"phase-{i}").read_text().splitlines()
        assert len(lines) == 1, f"phase {i} ran {len(lines)} times"
    assert (work / "phase-2").read_text() == "attempt 2\n"


def test_redis_sigkilled_mid_run_loses_nothing_it_acknowledged(harness: Harness, own_redis: RedisServer,
                                                               tmp_path: Path) -> None:
    """SIGKILL (no shutdown save) with appendfsync always: every event, status and step record a client had
    read back before the kill is there after the restart, and the run goes on to succeed."""
    assert harness.store.r.config_get("appendfsync")["appendfsync"] == "always"
    worker = start_worker(own_redis.url, tmp_path, "w1")
    try:
        run = harness.launch("""
name: survive
steps:
  - id: before
    action: core.echo
    with: {message: before}
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 8 }}", interval: 0.5}
  - parallel:
      - id: a
        action: core.echo
        with: {message: a}
      - id: b
        action: core.echo
        with: {message: b}
  - id: after
    action: core.echo
    with: {message: "{{ steps.a.result.message }}{{ steps.b.result.message }}"}
""")
        harness.wait_step(run, "wait", "waiting")
        wait_for(lambda: harness.store.step(run, "wait").get("memory", {}).get("polls", 0) >= 2,
                 what="a few polls to be recorded")
        told_events = harness.store.events(run)
        told_before = harness.step(run, "before")
        told_statuses = harness.store.statuses(run)
        own_redis.kill()
        own_redis.start()
        after_events = harness.store.events(run)
        assert after_events[:len(told_events)] == told_events, "an acknowledged event was lost"
        assert harness.step(run, "before") == told_before
        assert harness.store.statuses(run)["before"] == told_statuses["before"] == "succeeded"
        assert harness.store.step(run, "wait")["memory"]["polls"] >= 2
        record = harness.wait(run, timeout=90)
    finally:
        worker.stop()
    assert record["status"] == "succeeded"
    assert harness.step(run, "after")["result"]["message"] == "ab"
    assert len(harness.store.events(run)) > len(told_events)


def test_restarting_every_worker_changes_nothing_for_the_run(harness: Harness, own_redis: RedisServer,
                                                             tmp_path: Path) -> None:
    worker = start_worker(own_redis.url, tmp_path, "w1")
    run = harness.launch("""
name: restart
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 6 }}", interval: 0.5}
  - id: after
    action: core.echo
    with: {message: done}
""")
    harness.wait_step(run, "wait", "waiting")
    worker.stop()
    worker = start_worker(own_redis.url, tmp_path, "w2")
    try:
        assert harness.wait(run, timeout=60)["status"] == "succeeded"
    finally:
        worker.stop()
    assert harness.step(run, "wait")["attempt"] == 1


def test_killing_the_cli_while_it_follows_changes_nothing(harness: Harness, own_redis: RedisServer,
                                                          tmp_path: Path) -> None:
    worker = start_worker(own_redis.url, tmp_path, "w1")
    try:
        run = harness.launch("""
name: follow
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 6 }}", interval: 0.4}
""")
        env = {**os.environ, "HOTSWAP_REDIS_URL": own_redis.url, "HOTSWAP_HOME": str(tmp_path / "cli")}
        cli = subprocess.Popen([sys.executable, "-m", "engine.cli", "logs", run, "--follow"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        harness.wait_step(run, "wait", "waiting")
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=10)
        assert harness.wait(run, timeout=60)["status"] == "succeeded"
    finally:
        worker.stop()


def test_a_step_whose_message_was_lost_is_published_again(harness: Harness, own_redis: RedisServer,
                                                           tmp_path: Path) -> None:
    from engine.service import prepare
    from engine.store import Store

    _, plan = prepare(harness.runbook("""
name: lost
steps:
  - id: a
    action: core.echo
    with: {message: found}
  - id: b
    action: core.echo
    with: {message: and went on}
"""), {}, harness.service.registry)
    store = Store(harness.store.r, redeliver=1.0)
    store.create_run("lost-1", plan, {"launched_by": "test", "source": "cli"})
    assert store.start_run("lost-1") == ["a"]  # ... and its message is never published
    worker = start_worker(own_redis.url, tmp_path, "w1")
    try:
        assert harness.wait("lost-1", timeout=30)["status"] == "succeeded"
    finally:
        worker.stop()


def test_a_step_orphaned_after_its_run_failed_is_recorded_and_cleanup_runs(
        harness: Harness, own_redis: RedisServer, tmp_path: Path) -> None:
    work = tmp_path / "effects"
    work.mkdir()
    first = start_worker(own_redis.url, tmp_path, "w1")
    try:
        run = harness.launch(f"""
name: orphan
steps:
  - parallel:
      - id: long
        action: test.phases
        with: {{directory: "{work}", count: 2, pause: 30}}
      - steps:
          - id: go
            action: core.approve
            with: {{message: fail once long runs}}
          - id: boom
            action: core.fail
cleanup:
  - id: tidy
    action: core.echo
    with: {{message: tidy}}
""")
        harness.wait_step(run, "long", "running")
        harness.service.approve(run, "go", harness.who)  # boom fails only once long is surely running
        harness.wait_step(run, "boom", "failed")
        first.kill()
    finally:
        first.stop()
    assert harness.store.run(run)["status"] == "failed"
    second = start_worker(own_redis.url, tmp_path, "w2")
    try:
        wait_for(lambda: harness.store.run(run).get("cleanup") == "done", timeout=60, what="cleanup after the orphan")
    finally:
        second.stop()
    assert harness.step(run, "long")["error"] == "its worker was lost after the run had ended"
    assert harness.step(run, "tidy")["status"] == "succeeded"


def test_a_parked_step_stops_when_its_run_fails_so_cleanup_can_run(harness: Harness, own_redis: RedisServer,
                                                                    tmp_path: Path) -> None:
    worker = start_worker(own_redis.url, tmp_path, "w1")
    try:
        run = harness.launch("""
name: parked
steps:
  - parallel:
      - id: poll
        action: core.wait_until
        with: {condition: "{{ false }}", interval: 0.3}
      - steps:
          - id: wait_a_bit
            action: core.sleep
            with: {seconds: 0.5}
          - id: boom
            action: core.fail
cleanup:
  - id: tidy
    action: core.echo
    with: {message: tidy}
""")
        wait_for(lambda: harness.store.run(run).get("cleanup") == "done", timeout=30, what="cleanup")
    finally:
        worker.stop()
    assert harness.step(run, "poll")["status"] == "cancelled"
    assert harness.step(run, "tidy")["status"] == "succeeded"


def test_the_supervisor_restarts_a_worker_that_exits_on_its_own(harness: Harness, own_redis: RedisServer,
                                                                tmp_path: Path) -> None:
    worker = start_worker(own_redis.url, tmp_path, "w1")
    try:
        [celery_main] = worker.children()
        os.kill(celery_main, signal.SIGKILL)  # kombu has been seen to exit a worker (status 0) on a Redis restart
        wait_for(lambda: worker.children() and worker.children() != [celery_main], timeout=30,
                 what="the supervisor to start a new worker")
        run = harness.launch("""
name: after-restart
steps:
  - id: a
    action: core.echo
    with: {message: still served}
""")
        assert harness.wait(run, timeout=60)["status"] == "succeeded"
    finally:
        worker.stop()
    assert worker.proc is None
