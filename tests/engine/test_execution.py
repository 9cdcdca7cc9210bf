"""The default executor, end to end: real redis-server, real `hotswap worker` processes (Celery prefork)."""

from __future__ import annotations

import pytest

from engine.errors import ApprovalDenied, InvalidTransition
from engine.service import Identity
from tests.engine.conftest import Harness, overlap
from tests.support.workers import wait_for

pytestmark = pytest.mark.slow


def test_sequence_runs_in_order_and_passes_results(engine: Harness) -> None:
    run = engine.launch("""
name: seq
steps:
  - id: a
    action: core.echo
    with: {message: first, data: {osds: [1, 2, 3]}}
  - id: b
    action: core.echo
    with: {message: "got {{ steps.a.result.data.osds | length }} osds", data: "{{ steps.a.result.data.osds }}"}
  - id: c
    action: core.echo
    with: {message: "{{ steps.b.result.message }}"}
""")
    assert engine.wait(run)["status"] == "succeeded"
    a, b, c = (engine.step(run, s) for s in "abc")
    assert a["finished"] <= b["started"] and b["finished"] <= c["started"]
    assert b["result"] == {"message": "got 3 osds", "data": [1, 2, 3]}
    assert c["result"]["message"] == "got 3 osds"


def test_parallel_branches_overlap_and_the_join_waits_for_all(engine: Harness) -> None:
    run = engine.launch("""
name: par
steps:
  - parallel:
      - id: slow
        action: core.sleep
        with: {seconds: 1.0}
      - steps:
          - id: quick1
            action: core.sleep
            with: {seconds: 0.3}
          - id: quick2
            action: core.echo
            with: {message: after quick1}
  - id: join
    action: core.echo
    with: {message: "joined after {{ steps.slow.status }} and {{ steps.quick2.status }}"}
""")
    assert engine.wait(run)["status"] == "succeeded"
    slow, q1, q2, join = (engine.step(run, s) for s in ("slow", "quick1", "quick2", "join"))
    assert q1["started"] < slow["finished"] and slow["started"] < q1["finished"], "branches ran one after another"
    assert join["started"] >= max(slow["finished"], q2["finished"])
    assert join["result"]["message"] == "joined after succeeded and succeeded"


def test_for_each_concurrency_cap_holds(engine: Harness) -> None:
    run = engine.launch("""
name: fan
params:
  n: {type: int, default: 6}
steps:
  - id: fan
    for_each: "{{ range(params.n) | list }}"
    as: osd
    concurrency: 2
    action: core.sleep
    with: {seconds: 0.4}
  - id: after
    action: core.echo
    with: {message: "{{ steps.fan.results | length }} done"}
""")
    assert engine.wait(run)["status"] == "succeeded"
    items = [engine.step(run, f"fan[{i}]") for i in range(6)]
    widest = overlap([(s["started"], s["finished"]) for s in items])
    assert widest == 2, f"at most 2 items may run at once and the 4-slot worker should use both; saw {widest}"
    assert engine.step(run, "after")["result"]["message"] == "6 done"


def test_for_each_with_a_sub_sequence_addresses_its_own_steps(engine: Harness) -> None:
    run = engine.launch("""
name: fan-seq
steps:
  - id: per_host
    for_each: [node1, node2]
    as: host
    steps:
      - id: look
        action: core.echo
        with: {message: "{{ host }}", data: {osds: ["{{ host }}-a", "{{ host }}-b"]}}
      - id: act
        action: core.echo
        with: {message: "acting on {{ steps.look.result.data.osds | join(',') }}"}
""")
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "per_host[1].act")["result"]["message"] == "acting on node2-a,node2-b"


def test_when_false_skips_and_successors_still_run(engine: Harness) -> None:
    run = engine.launch("""
name: when
params:
  notify: {type: bool, default: false}
steps:
  - id: maybe
    action: core.fail
    when: params.notify
  - id: next
    action: core.echo
    with: {message: "maybe was {{ steps.maybe.status }}"}
""")
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "maybe")["status"] == "skipped"
    assert engine.step(run, "next")["result"]["message"] == "maybe was skipped"


def test_retry_with_backoff_until_success(engine: Harness) -> None:
    run = engine.launch("""
name: retry
steps:
  - id: flaky
    action: core.fail
    with: {times: 2, message: transient}
    retry: {attempts: 3, backoff: 0.2, max_delay: 1, jitter: false}
""")
    assert engine.wait(run)["status"] == "succeeded"
    step = engine.step(run, "flaky")
    assert step["attempt"] == 3 and step["result"] == {"attempt": 3}
    waits = [e for _, e in engine.store.events(run) if e.get("step") == "flaky" and e.get("kind") == "retry"]
    assert len(waits) == 2
    logs = [line["msg"] for line in engine.store.logs(run, "flaky")]
    assert "retrying in 0.2s" in logs and "retrying in 0.4s" in logs


def test_retry_exhausted_fails_the_run_and_stops_dependents(engine: Harness) -> None:
    run = engine.launch("""
name: fail
steps:
  - id: ok
    action: core.echo
    with: {message: fine}
  - id: broken
    action: core.fail
    with: {message: disk on fire}
    retry: {attempts: 2, backoff: 0.1, jitter: false}
  - id: never
    action: core.echo
    with: {message: must not run}
""")
    record = engine.wait(run)
    assert record["status"] == "failed"
    assert "step broken failed: disk on fire (attempt 2)" in record["reason"]
    assert engine.step(run, "never")["status"] == "pending"
    assert engine.step(run, "never").get("started") is None


def test_resume_retries_failed_steps_and_skips_what_succeeded(engine: Harness) -> None:
    run = engine.launch("""
name: resume
steps:
  - id: first
    action: core.echo
    with: {message: done once}
  - id: flaky
    action: core.fail
    with: {times: 1}
  - id: last
    action: core.echo
    with: {message: "{{ steps.flaky.result.attempt }}"}
""")
    assert engine.wait(run)["status"] == "failed"
    ready = engine.service.resume(run, Identity("bob"))
    assert ready == ["flaky"]
    assert engine.wait(run)["status"] == "succeeded", (engine.store.run(run)["reason"], engine.store.events(run))
    assert engine.step(run, "first")["attempt"] == 1, "a succeeded step must not run again"
    assert engine.step(run, "flaky")["attempt"] == 2
    assert engine.step(run, "last")["result"]["message"] == "2"
    with pytest.raises(InvalidTransition):
        engine.service.resume(run, Identity("bob"))


def test_polling_step_times_out(engine: Harness) -> None:
    run = engine.launch("""
name: timeout
steps:
  - id: never_true
    action: core.wait_until
    with: {condition: "{{ false }}", interval: 0.2, reason: the cluster is not healthy}
    timeout: 1s
""")
    record = engine.wait(run)
    assert record["status"] == "failed"
    assert "exceeded its timeout of 1s" in record["reason"] and "the cluster is not healthy" in record["reason"]


def test_running_step_is_interrupted_at_its_timeout(engine: Harness) -> None:
    run = engine.launch("""
name: hard-timeout
steps:
  - id: stuck
    action: core.sleep
    with: {seconds: 30}
    timeout: 1s
""")
    record = engine.wait(run, timeout=30)
    assert record["status"] == "failed"
    assert "exceeded its timeout of 1s" in record["reason"]


def test_wait_until_polls_a_templated_condition(engine: Harness) -> None:
    run = engine.launch("""
name: wait
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 3 }}", interval: 0.1}
""")
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "wait")["result"] == {"polls": 4}


APPROVAL = """
name: gate
steps:
  - id: prepare
    action: core.echo
    with: {message: ready}
  - id: go
    action: core.approve
    with: {message: "Destroy OSDs?", approvers: [carol, dave]}
  - id: destroy
    action: core.echo
    with: {message: "approved by {{ steps.go.result.by }}"}
"""


def test_approval_gate_waits_for_an_allowed_approver(engine: Harness) -> None:
    run = engine.launch(APPROVAL)
    engine.wait_step(run, "go", "waiting")
    status = engine.service.status(run)
    assert [s["id"] for s in status["steps"] if s["needs_approval"]] == ["go"]
    with pytest.raises(ApprovalDenied):
        engine.service.approve(run, "go", Identity("mallory"))
    assert engine.service.approve(run, "go", Identity("carol", "chat")) is True
    assert engine.service.approve(run, "go", Identity("dave")) is False, "a second decision changes nothing"
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "destroy")["result"]["message"] == "approved by carol"
    audit = [a for a in engine.store.audit_log(50) if a.get("run") == run]
    assert {a["action"] for a in audit} >= {"launch", "approve", "approve_denied"}


def test_rejected_approval_fails_the_run(engine: Harness) -> None:
    run = engine.launch(APPROVAL)
    engine.wait_step(run, "go", "waiting")
    engine.service.approve(run, "go", Identity("dave"), approved=False, comment="not today")
    record = engine.wait(run)
    assert record["status"] == "failed" and "not approved by dave: not today" in record["reason"]
    assert engine.step(run, "destroy")["status"] == "pending"


def test_approval_timeout_takes_the_declared_outcome(engine: Harness) -> None:
    run = engine.launch("""
name: gate-timeout
steps:
  - id: go
    action: core.echo
    with: {message: proceeding}
    approval: {message: "ok?", timeout: 1s, on_timeout: approve}
""")
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.store.decision(run, "go")["by"] == "timeout"


def test_cancel_stops_a_waiting_run(engine: Harness) -> None:
    run = engine.launch("""
name: cancel
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ false }}", interval: 0.2}
  - id: after
    action: core.echo
    with: {message: never}
""")
    engine.wait_step(run, "wait", "waiting")
    engine.service.cancel(run, Identity("alice"))
    record = engine.wait(run)
    assert record["status"] == "cancelled" and record["reason"] == "cancelled by alice"
    assert engine.step(run, "wait")["status"] == "cancelled"
    assert engine.step(run, "after")["status"] == "cancelled"
    with pytest.raises(InvalidTransition):
        engine.service.cancel(run, Identity("alice"))


def test_cancel_interrupts_a_running_action(engine: Harness) -> None:
    run = engine.launch("""
name: cancel-running
steps:
  - id: long
    action: core.sleep
    with: {seconds: 60}
""")
    engine.wait_step(run, "long", "running")
    assert engine.service.cancel(run, Identity("alice")) == ["long"]
    wait_for(lambda: engine.step(run, "long")["status"] == "failed", timeout=30, what="the sleep to stop")
    assert "cancelled" in engine.step(run, "long")["error"]
    assert engine.store.run(run)["status"] == "cancelled"


def test_waiting_steps_do_not_hold_worker_slots(engine: Harness) -> None:
    waiting = [engine.launch("""
name: waiter
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ false }}", interval: 0.5}
""") for _ in range(40)]
    for run in waiting:
        engine.wait_step(run, "wait", "waiting")
    quick = engine.launch("""
name: quick
steps:
  - id: a
    action: core.echo
    with: {message: hi}
  - id: b
    action: core.echo
    with: {message: there}
""")
    assert engine.wait(quick, timeout=30)["status"] == "succeeded"
    assert all(engine.store.run(r)["status"] == "running" for r in waiting)
    for run in waiting:
        engine.service.cancel(run, Identity("alice"))


def test_native_canvas_executor_runs_the_same_plan(engine: Harness) -> None:
    run = engine.launch("""
name: canvas
steps:
  - id: a
    action: core.echo
    with: {message: one}
  - parallel:
      - id: b
        action: core.echo
        with: {message: "{{ steps.a.result.message }}-b"}
      - id: c
        action: core.echo
        with: {message: c}
  - id: d
    action: core.echo
    with: {message: "{{ steps.b.result.message }}+{{ steps.c.result.message }}"}
""", executor="canvas")
    assert engine.wait(run)["status"] == "succeeded"
    assert engine.step(run, "d")["result"]["message"] == "one-b+c"


def test_duplicate_delivery_runs_a_step_once(engine: Harness) -> None:
    run = engine.launch("""
name: dup
steps:
  - id: gate
    action: core.wait_until
    with: {condition: "{{ poll >= 2 }}", interval: 0.3}
  - id: once
    action: core.echo
    with: {message: once}
""")
    engine.wait_step(run, "gate", "waiting")
    engine.rt.publish(run, ["once", "once", "once"])  # not ready yet: must be ignored
    assert engine.wait(run)["status"] == "succeeded"
    engine.rt.publish(run, ["once", "once"])  # already done: must be ignored
    wait_for(lambda: engine.store.r.llen(engine.store.keys.log(run, "once")) >= 1, what="log")
    runs_of_once = [e for _, e in engine.store.events(run) if e.get("step") == "once" and e.get("status") == "running"]
    assert len(runs_of_once) == 1
    assert engine.step(run, "once")["attempt"] == 1


def test_every_recorded_transition_is_allowed_by_the_state_table(engine: Harness) -> None:
    from engine.states import STEP_TRANSITIONS, Status

    run = engine.launch("""
name: transitions
steps:
  - id: flaky
    action: core.fail
    with: {times: 1}
    retry: {attempts: 2, backoff: 0.1, jitter: false}
  - id: poll
    action: core.wait_until
    with: {condition: "{{ poll >= 2 }}", interval: 0.1}
  - id: skip
    action: core.fail
    when: "false"
  - id: boom
    action: core.fail
""")
    assert engine.wait(run)["status"] == "failed"
    last: dict[str, Status] = {}
    seen = 0
    for _, event in engine.store.events(run):
        if event.get("type") != "step":
            continue
        step, new = event["step"], Status(event["status"])
        old = last.get(step, Status.PENDING)
        assert new in STEP_TRANSITIONS[old] or (old == new == Status.RUNNING), f"{step}: {old} -> {new}"
        last[step] = new
        seen += 1
    assert seen >= 10 and last == {"flaky": "succeeded", "poll": "succeeded", "skip": "skipped", "boom": "failed"}


def test_a_wide_fan_out_is_published_in_batches_and_runs_every_step_once(engine: Harness) -> None:
    run = engine.launch("""
name: wide
steps:
  - id: start
    action: core.echo
    with: {message: go}
  - id: fan
    for_each: "{{ range(300) | list }}"
    action: core.echo
    with: {message: "{{ item }}"}
  - id: join
    action: core.echo
    with: {message: "{{ steps.fan.results | length }}"}
""")
    assert engine.wait(run)["status"] == "succeeded"
    starts: dict[str, int] = {}
    for _, event in engine.store.events(run):
        if event.get("type") == "step" and event.get("status") == "running":
            starts[event["step"]] = starts.get(event["step"], 0) + 1
    assert len(starts) == 302 and set(starts.values()) == {1}
    assert engine.step(run, "join")["result"]["message"] == "300"
