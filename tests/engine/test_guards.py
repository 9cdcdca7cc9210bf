"""Locks, the failure-domain guard, cleanup steps and for_each failure budgets, on real workers."""

from __future__ import annotations

import pytest

from engine.errors import LockHeld
from engine.service import Identity
from tests.engine.conftest import Harness
from tests.support.workers import wait_for

pytestmark = pytest.mark.slow

HOLDER = """
name: holder
params:
  cluster: {type: string}
locks: ["cluster:{{ params.cluster }}"]
steps:
  - id: hold
    action: core.wait_until
    with: {condition: "{{ false }}", interval: 0.2}
"""


def test_a_second_run_on_the_same_cluster_is_refused_naming_the_holder(engine: Harness) -> None:
    first = engine.launch(HOLDER, cluster="c1")
    engine.wait_step(first, "hold", "waiting")
    with pytest.raises(LockHeld) as refused:
        engine.launch(HOLDER, cluster="c1")
    assert str(refused.value) == f"lock 'cluster:c1' is held by run {first}: wait for it or cancel it"
    other = engine.launch(HOLDER, cluster="c2")
    engine.wait_step(other, "hold", "waiting")
    refused_runs = [r for r in engine.store.list_runs(20) if r.get("reason", "").startswith("refused: lock")]
    assert refused_runs and refused_runs[0]["status"] == "cancelled"
    for run in (first, other):
        engine.service.cancel(run, Identity("alice"))


def test_a_waiting_run_starts_when_the_lock_is_released(engine: Harness) -> None:
    first = engine.launch(HOLDER, cluster="c3")
    engine.wait_step(first, "hold", "waiting")
    second = engine.launch(HOLDER.replace('locks: ["cluster:{{ params.cluster }}"]',
                                          'locks: [{name: "cluster:{{ params.cluster }}", on_busy: wait}]'),
                           cluster="c3")
    record = engine.store.run(second)
    assert record["status"] == "pending" and record["reason"] == f"waiting for lock 'cluster:c3' held by run {first}"
    engine.service.cancel(first, Identity("alice"))
    engine.wait_step(second, "hold", "waiting", timeout=30)
    assert engine.store.lock_holders("cluster:c3") == [second]
    engine.service.cancel(second, Identity("alice"))


GUARDED = """
name: drain
params:
  cluster: {type: string}
  host: {type: string}
locks:
  - {name: "hosts-down:{{ params.cluster }}", limit: 2}
steps:
  - id: hold
    action: core.wait_until
    with: {condition: "{{ false }}", interval: 0.2}
"""


def test_failure_domain_guard_allows_at_most_the_limit_across_runs(engine: Harness) -> None:
    a = engine.launch(GUARDED, cluster="g1", host="n1")
    b = engine.launch(GUARDED, cluster="g1", host="n2")
    with pytest.raises(LockHeld) as refused:
        engine.launch(GUARDED, cluster="g1", host="n3")
    assert "hosts-down:g1" in str(refused.value) and a in str(refused.value) and b in str(refused.value)
    engine.service.cancel(a, Identity("alice"))
    c = engine.launch(GUARDED, cluster="g1", host="n3")
    assert sorted(engine.store.lock_holders("hosts-down:g1")) == sorted([b, c])
    for run in (b, c):
        engine.service.cancel(run, Identity("alice"))


def test_a_failed_run_keeps_its_locks_until_cancelled(engine: Harness) -> None:
    failing = engine.launch("""
name: failing
locks: ["cluster:f1"]
steps:
  - id: boom
    action: core.fail
""")
    assert engine.wait(failing)["status"] == "failed"
    with pytest.raises(LockHeld):
        engine.launch(HOLDER, cluster="f1")
    engine.service.cancel(failing, Identity("alice"))
    run = engine.launch(HOLDER, cluster="f1")
    engine.service.cancel(run, Identity("alice"))


def test_a_run_that_lost_its_lock_is_fenced_off(engine: Harness) -> None:
    run = engine.launch("""
name: fenced
locks: ["cluster:fence"]
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 3 }}", interval: 0.5}
  - id: destroy
    action: core.echo
    with: {message: must not run}
""")
    engine.wait_step(run, "wait", "waiting")
    engine.store.r.delete(engine.store.keys.lock("cluster:fence"))  # the lease lapsed and another run took over
    record = engine.wait(run)
    assert record["status"] == "failed"
    assert "lost its lock 'cluster:fence'" in record["reason"]
    assert engine.step(run, "destroy")["status"] == "pending"


CLEANUP = """
name: with-cleanup
steps:
  - id: set_flags
    action: core.echo
    with: {message: set noout}
  - id: drain
    action: {action}
    with: {args}
  - id: never
    action: core.echo
    with: {message: not reached}
cleanup:
  - id: unset_flags
    action: core.echo
    with: {message: "unset noout (drain was {{ steps.drain.status }})"}
  - id: notify
    action: core.fail
    with: {message: notification service down}
  - id: last
    action: core.echo
    with: {message: still runs after a failed cleanup step}
"""


def test_cleanup_runs_after_a_failure(engine: Harness) -> None:
    run = engine.launch(CLEANUP.replace("{action}", "core.fail").replace("{args}", "{message: mid-drain}"))
    wait_for(lambda: engine.store.run(run).get("cleanup") == "done", what="cleanup to finish")
    assert engine.store.run(run)["status"] == "failed"
    assert engine.step(run, "unset_flags")["result"]["message"] == "unset noout (drain was failed)"
    assert engine.step(run, "notify")["status"] == "failed"
    assert engine.step(run, "last")["status"] == "succeeded"
    assert engine.step(run, "never")["status"] == "pending"


def test_cleanup_runs_after_cancel_once_the_running_step_stopped(engine: Harness) -> None:
    run = engine.launch(CLEANUP.replace("{action}", "core.sleep").replace("{args}", "{seconds: 60}"))
    engine.wait_step(run, "drain", "running")
    engine.service.cancel(run, Identity("alice"))
    wait_for(lambda: engine.store.run(run).get("cleanup") == "done", timeout=30, what="cleanup to finish")
    drain, unset = engine.step(run, "drain"), engine.step(run, "unset_flags")
    assert drain["finished"] <= unset["started"], "cleanup must not race the step it cleans up after"
    assert unset["result"]["message"] == "unset noout (drain was failed)"


def test_no_cleanup_when_the_run_succeeds(engine: Harness) -> None:
    run = engine.launch(CLEANUP.replace("{action}", "core.echo").replace("{args}", "{message: ok}"))
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "unset_flags")["status"] == "pending"


BUDGET = """
name: budget
params:
  failing: {type: list}
  budget: {type: int}
steps:
  - id: hosts
    for_each: [h0, h1, h2, h3, h4]
    as: host
    concurrency: 1
    max_failures: "{budget}"
    steps:
      - id: work
        action: core.fail
        when: "host in params.failing"
        with: {message: "{{ host }} broke"}
      - id: after
        action: core.echo
        with: {message: "{{ host }} done"}
  - id: report
    action: core.echo
    with: {message: "{{ steps.hosts.results | length }}"}
"""


def budget_runbook(budget: int) -> str:
    return BUDGET.replace('"{budget}"', str(budget))


def test_failures_within_the_budget_let_the_rest_go_on(engine: Harness) -> None:
    run = engine.launch(budget_runbook(2), failing="h1,h3", budget=2)
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "hosts[1].work")["status"] == "failed"
    assert engine.step(run, "hosts[1].after")["status"] == "skipped"
    assert engine.step(run, "hosts[4].after")["status"] == "succeeded"
    assert engine.step(run, "report")["status"] == "succeeded"


def test_one_failure_over_the_budget_stops_the_rest(engine: Harness) -> None:
    run = engine.launch(budget_runbook(1), failing="h1,h3", budget=1)
    record = engine.wait(run)
    assert record["status"] == "failed"
    assert "failure budget of hosts exhausted: 1 allowed" in record["reason"]
    assert engine.step(run, "hosts[3].work")["status"] == "failed"
    assert engine.step(run, "hosts[4].work")["status"] == "pending", "items after the exhausted budget must not start"


def test_a_zero_budget_fails_on_the_first_failure(engine: Harness) -> None:
    run = engine.launch(budget_runbook(0), failing="h0", budget=0)
    assert engine.wait(run)["status"] == "failed"
    assert engine.step(run, "hosts[1].work")["status"] == "pending"
