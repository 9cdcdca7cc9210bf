"""Redis stalls while a non-idempotent step runs (frozen by SIGSTOP then SIGCONT, or refusing writes): the
run must succeed with no phase done twice.

- a freeze longer than the lease: the lease lapses and a takeover starts as soon as Redis answers; the first
  execution learns that its renewal came back after the lease had lapsed and stops before its next phase
  (self-fencing, engine/lease.py). The test freezes up to four times;
- a freeze longer than redis-py's socket timeout (5 s) but shorter than the lease: the blocked ``ctx.save()``
  is retried, nothing fails and nothing is taken over;
- Redis refusing writes (``maxmemory`` reached with ``noeviction``) for a few seconds, shorter than the lease:
  the progress save is retried until Redis takes it, so no phase is done again.

A stall or refusal longer than the lease leaves an unsaved phase to be done again by the takeover: the
engine runs a step at least once, and exactly once only as far as the action saved its progress.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from bench.faults import WORKER_ENV
from bench.procs import HotswapWorker, RedisServer
from tests.engine.conftest import Harness
from tests.support.workers import wait_for

pytestmark = pytest.mark.slow

LEASE = 3.0
"""Leaves the first execution's next renewal about a second after Redis answers again; the ticker's takeover
usually comes first (within a tick)."""


def phases_run(harness: Harness, work: Path, count: int) -> str:
    return harness.launch(f"""
name: partition
steps:
  - id: phases
    action: test.phases
    with: {{directory: "{work}", count: {count}, pause: 1.0}}
""")


def done(harness: Harness, run: str) -> list[int]:
    return list((harness.step(run, "phases").get("memory") or {}).get("done", []))


def freeze(server: RedisServer, seconds: float) -> None:
    server.freeze()
    try:
        time.sleep(seconds)  # the partition's length, not a wait for a condition
    finally:
        server.thaw()


def repeated(work: Path) -> dict[str, list[str]]:
    return {f.name: lines for f in sorted(work.iterdir()) if len(lines := f.read_text().splitlines()) != 1}


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOTSWAP_ACTION_MODULES", WORKER_ENV["HOTSWAP_ACTION_MODULES"])
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    worker = HotswapWorker(server.url, tmp_path / "worker", env={**WORKER_ENV, **request.param})
    try:
        worker.start()
        yield server, Harness(server.url, tmp_path)
    finally:
        worker.stop()
        server.stop()


@pytest.mark.parametrize("cluster", [{"HOTSWAP_LEASE_SECONDS": str(LEASE)}], indirect=True)
def test_a_partition_longer_than_the_lease_does_no_phase_twice(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, harness = cluster
    work = tmp_path / "effects"
    work.mkdir()
    run = phases_run(harness, work, count=12)
    for _ in range(4):
        seen = len(done(harness, run))
        wait_for(lambda seen=seen: len(done(harness, run)) > seen, timeout=30, what="a phase to be recorded")
        freeze(server, 1.5 * LEASE)
        wait_for(lambda seen=seen: harness.step(run, "phases")["status"] != "running"
                 or len(done(harness, run)) >= seen + 3, timeout=30, what="two more phases after the freeze")
        if repeated(work):
            break
    record = harness.wait(run, timeout=90)
    assert record["status"] == "succeeded", record.get("reason")
    assert not repeated(work)


@pytest.mark.parametrize("cluster", [{"HOTSWAP_LEASE_SECONDS": "30"}], indirect=True)
def test_a_partition_longer_than_the_socket_timeout_fails_no_step(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, harness = cluster
    work = tmp_path / "effects"
    work.mkdir()
    run = phases_run(harness, work, count=3)
    wait_for(lambda: done(harness, run) == [0], what="phase 0 to be recorded")
    freeze(server, 7.0)
    record = harness.wait(run, timeout=90)
    assert record["status"] == "succeeded", record.get("reason")
    assert not repeated(work)


@pytest.mark.parametrize("cluster", [{"HOTSWAP_LEASE_SECONDS": "30"}], indirect=True)
def test_refused_writes_repeat_no_phase(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, harness = cluster
    work = tmp_path / "effects"
    work.mkdir()
    run = phases_run(harness, work, count=4)
    wait_for(lambda: done(harness, run) == [0], what="phase 0 to be recorded")
    admin = server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            admin.set("probe", "refused?")
        time.sleep(3.0)  # how long writes are refused, not a wait for a condition
    finally:
        admin.config_set("maxmemory", 0)
    record = harness.wait(run, timeout=90)
    assert record["status"] == "succeeded", record.get("reason")
    assert not repeated(work)
