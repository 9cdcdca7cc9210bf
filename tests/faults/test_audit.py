"""The fault run's audit fails a batch for each thing that must never happen: a step executed again after it
finished, a repeated non-idempotent side effect, a record gone back in time, a lost record, a stuck run, and
too few kills on running steps. Real runs on a real redis-server and worker, then the store is damaged the
way each fault would damage it, and the audit must say so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.faults import WORKER_ENV
from bench.faults.audit import audit_run, regressions, snapshot
from bench.faults.kinds import Hit, Injected
from bench.faults.report import failures, summarize
from bench.faults.shapes import BY_NAME, EFFECT_DIRS, Launched
from bench.procs import HotswapWorker, RedisServer
from tests.engine.conftest import Harness

pytestmark = pytest.mark.slow

CASES = ("clean", "duplicate", "repeated", "back_in_time", "lost", "stuck")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, dict[str, Launched]]]:
    """One finished run of the 'sequence' shape per case."""
    env = pytest.MonkeyPatch()
    env.setenv("HOTSWAP_ACTION_MODULES", WORKER_ENV["HOTSWAP_ACTION_MODULES"])
    tmp = tmp_path_factory.mktemp("audit")
    server = RedisServer(tmp / "redis").start()
    worker = HotswapWorker(server.url, tmp / "worker", env=WORKER_ENV)
    try:
        worker.start()
        harness = Harness(server.url, tmp)
        shape = BY_NAME["sequence"]
        runs: dict[str, Launched] = {}
        for case in CASES:
            effects = tmp / case
            for sub in EFFECT_DIRS:
                (effects / sub).mkdir(parents=True)
            run_id = harness.launch(shape.yaml.replace("DIR", str(effects)))
            actions = {sid: s.action for sid, s in harness.store.plan(run_id).steps.items()}
            runs[case] = Launched(run_id, shape, effects, 0.0, actions)
        for run in runs.values():
            assert harness.wait(run.run_id, timeout=90)["status"] == "succeeded"
        worker.stop()
        yield harness, runs
    finally:
        worker.stop()
        server.stop()
        env.undo()


def verdict_of(harness: Harness, run: Launched, drift: list[str] | None = None,
               injected: list[Injected] | None = None) -> list[str]:
    indexed = {str(r["id"]) for r in harness.store.list_runs(limit=1000)}
    return failures(summarize(1, injected or [], [audit_run(harness.store, run, indexed)], [], drift or []))


def test_an_undamaged_run_passes(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    assert verdict_of(harness, runs["clean"]) == []


def test_a_step_executed_again_after_it_finished_fails_the_batch(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    run = runs["duplicate"].run_id
    events = harness.store.keys.events(run)
    harness.store.r.xadd(events, {"type": "step", "step": "phases", "status": "running", "kind": "running",
                                  "attempt": "2", "worker": "x:1", "t": "0"})
    harness.store.r.xadd(events, {"type": "step", "step": "phases", "status": "succeeded", "t": "0"})
    why = verdict_of(harness, runs["duplicate"])
    assert any("execution(s) of a step that had already finished" in w for w in why), why


def test_a_repeated_non_idempotent_side_effect_fails_the_batch(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    with open(runs["repeated"].effects / "phases" / "phase-1", "a") as f:
        f.write("attempt 2\n")
    why = verdict_of(harness, runs["repeated"])
    assert any("non-idempotent side effect(s) repeated" in w for w in why), why


def test_a_run_that_went_back_in_time_fails_the_batch(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    run = runs["back_in_time"]
    before = snapshot(harness.store, [run])
    harness.store.r.hset(harness.store.keys.run(run.run_id), "status", "running")
    went_back = regressions(before, snapshot(harness.store, [run]))
    assert went_back == [f"{run.run_id}: run went back in time: succeeded -> running"]
    why = verdict_of(harness, run, drift=went_back)
    assert any("lost or gone back in time" in w for w in why), why


def test_a_lost_step_record_fails_the_batch(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    run = runs["lost"]
    harness.store.r.delete(harness.store.keys.step(run.run_id, "phases"))
    why = verdict_of(harness, run)
    assert any("lost or gone back in time" in w for w in why), why


def test_a_stuck_run_fails_the_batch(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    run = runs["stuck"]
    harness.store.r.hset(harness.store.keys.run(run.run_id), "status", "running")
    harness.store.r.hset(harness.store.keys.statuses(run.run_id), "after", "running")
    why = verdict_of(harness, run)
    assert any("run(s) stuck" in w for w in why), why


def test_too_few_kills_on_running_steps_fail_the_batch(finished: tuple[Harness, dict[str, Launched]]) -> None:
    harness, runs = finished
    hit = Hit(runs["clean"].run_id, "phases", "test.phases", 1, "phases done [0]", 1, "pool child of w1-1")
    kills = [Injected("child_sigkill", 1.0, "hit", hits=[hit], evidence=["confirmed: ..."]),
             Injected("worker_sigkill", 2.0, "nothing to hit")]
    why = verdict_of(harness, runs["clean"], injected=kills)
    assert why == ["only 1 of 2 kill faults hit a running step (need 80%)"]
    kills[1].hits = [hit]
    kills[1].evidence = ["UNCONFIRMED: ..."]
    assert verdict_of(harness, runs["clean"], injected=kills) == ["1 hit(s) the store does not confirm: ['UNCONFIRMED: ...']"]
