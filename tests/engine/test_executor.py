"""The executor driven in this process against a real redis-server: no Celery, no worker processes.

A tiny driver stands in for the broker (it runs what the executor publishes and what timers release),
so each test reads as what happens to one run, step by step.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from actions import default_registry
from actions.base import ActionContext, ActionRegistry, action, spec_of
from engine.executor import Executor
from engine.keys import Keys
from engine.service import Identity, Service
from engine.states import Status
from engine.store import Store
from tests.support.redis_server import RedisServer

LEASE = 1.5


class Driver:
    """Runs published steps in order, like a broker and one worker would; timers too when asked."""

    def __init__(self, store: Store, registry: ActionRegistry) -> None:
        self.store = store
        self.queue: list[tuple[str, str]] = []
        self.executor = Executor(store, registry, self.enqueue, worker="test:1", lease=LEASE)
        self.service = Service(store, registry, self.enqueue)

    def enqueue(self, run_id: str, step_ids: list[str]) -> None:
        self.queue.extend((run_id, sid) for sid in step_ids)

    def drain(self) -> None:
        while self.queue:
            run_id, sid = self.queue.pop(0)
            self.executor.run_step(run_id, sid)

    def launch(self, path: Path, **params: Any) -> str:
        return self.service.launch(path, params, Identity("alice", "cli"))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


StoreFactory = Callable[..., Store]
"""new_store(prefix, clock=time.time) -> a Store on the backend under test."""


@pytest.fixture(params=["redis-server", pytest.param("in-memory", marks=pytest.mark.unit)])
def new_store(request: pytest.FixtureRequest) -> StoreFactory:
    """Each store-level specification runs on a real redis-server and on the in-memory twin (fakeredis runs
    the same Lua scripts), so the twin cannot drift from what production does."""
    if request.param == "in-memory":
        server = fakeredis.FakeServer()
        return lambda prefix, clock=time.time: Store(fakeredis.FakeRedis(server=server), Keys(prefix), clock=clock)
    url = request.getfixturevalue("redis_url")
    return lambda prefix, clock=time.time: Store(redis.Redis.from_url(url), Keys(prefix), clock=clock)


class FakeClock:
    """Wall-clock time that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fire_due_timers(driver: Driver, run: str) -> None:
    """What a worker's ticker does: publish the steps whose timers are due now (by the store's clock)."""
    driver.queue.extend((r, s) for r, s in driver.store.due_timers() if r == run)
    driver.drain()


def registry_with(*funcs: Any) -> ActionRegistry:
    return ActionRegistry([*default_registry(), *(spec_of(f) for f in funcs)])


def failing_with_cleanup(action: str, args: str) -> str:
    """A run whose only step fails, with one cleanup step ``action`` taking ``args``."""
    return f"""
name: fails-then-cleans-up
steps:
  - id: boom
    action: core.fail
    with: {{message: planned failure}}
cleanup:
  - id: tidy
    action: {action}
    with: {args}
"""


def runbook(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rb.yaml"
    path.write_text(text)
    return path


def test_an_outcome_is_scrubbed_with_the_secret_resolved_at_start_even_if_it_is_gone_at_the_end(
        new_store: StoreFactory, tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("tok-3f9a-very-secret")

    @action("test.use_secret_then_lose_it")
    def use_secret(ctx: ActionContext, *, value: str, path: str) -> dict[str, Any]:
        Path(path).unlink()  # the secret cannot be resolved again when the outcome is recorded
        ctx.memory["seen"] = value
        return {"echo": value}

    store = new_store("t-secret:")
    driver = Driver(store, registry_with(use_secret))
    run = driver.launch(runbook(tmp_path, """
name: secret
params:
  token: {type: secret}
  file: {type: string}
steps:
  - id: use
    action: test.use_secret_then_lose_it
    with: {value: "{{ params.token }}", path: "{{ params.file }}"}
"""), token=f"file:{secret_file}", file=str(secret_file))
    driver.drain()
    assert store.run(run)["status"] == Status.SUCCEEDED
    step = store.step(run, "use")
    assert step["result"] == {"echo": "***"}
    for key in store.r.scan_iter("t-secret:*"):
        kind = store.r.type(key).decode()
        dump = (store.r.get(key) if kind == "string" else
                store.r.hgetall(key) if kind == "hash" else
                store.r.xrange(key) if kind == "stream" else
                store.r.lrange(key, 0, -1) if kind == "list" else store.r.zrange(key, 0, -1))
        assert b"tok-3f9a" not in repr(dump).encode(), f"secret stored in {key!r}"


def test_a_step_keeping_non_json_memory_keeps_its_lease(new_store: StoreFactory, tmp_path: Path) -> None:
    store = new_store("t-memory:")
    observed: dict[str, Any] = {}

    @action("test.odd_memory")
    def odd_memory(ctx: ActionContext) -> dict[str, Any]:
        ctx.memory["ids"] = {3, 1, 2}  # a set: not JSON
        deadline = time.monotonic() + 3 * LEASE
        while time.monotonic() < deadline:
            time.sleep(0.05)
        detail = store.step(ctx.run_id, ctx.step_id)
        observed["lease_left"] = float(detail["lease_until"]) - time.time()
        return {"ok": True}

    driver = Driver(store, registry_with(odd_memory))
    run = driver.launch(runbook(tmp_path, "name: odd\nsteps:\n  - id: odd\n    action: test.odd_memory\n"))
    driver.drain()
    assert observed["lease_left"] > 0, "the heartbeat stopped renewing the lease"
    assert store.step(run, "odd")["attempt"] == 1
    assert store.run(run)["status"] == Status.SUCCEEDED
    assert driver.executor.heartbeats._thread is not None and driver.executor.heartbeats._thread.is_alive()


def test_cancelling_a_run_does_not_interrupt_its_cleanup_steps(new_store: StoreFactory, tmp_path: Path) -> None:
    store = new_store("t-cleanup:")
    driver = Driver(store, default_registry())
    run = driver.launch(runbook(tmp_path, """
name: cleanup-survives
steps:
  - id: long
    action: core.sleep
    with: {seconds: 60}
cleanup:
  - id: restore
    action: core.sleep
    with: {seconds: 1.5}
"""))
    worker = threading.Thread(target=driver.drain)
    worker.start()
    deadline = time.monotonic() + 10
    while store.step(run, "long")["status"] != Status.RUNNING:
        assert time.monotonic() < deadline, "step never started"
        time.sleep(0.05)
    running, start_cleanup = store.cancel(run, "alice")
    assert running == ["long"] and not start_cleanup
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert store.step(run, "long")["status"] == Status.FAILED
    restore = store.step(run, "restore")
    assert restore["status"] == Status.SUCCEEDED, restore.get("error")
    record = store.run(run)
    assert record["status"] == Status.CANCELLED and record["cleanup"] == "done"
    assert record["n_cleanup"] == 1 and record["n_cleanup_done"] == 1


def test_status_lists_cleanup_steps_with_their_outcome(new_store: StoreFactory, tmp_path: Path) -> None:
    store = new_store("t-status:")
    driver = Driver(store, default_registry())
    run = driver.launch(runbook(tmp_path, failing_with_cleanup("core.echo", "{message: tidy up}")))
    driver.drain()
    status = driver.service.status(run)
    assert [s["id"] for s in status["steps"]] == ["boom"]
    assert [(s["id"], s["status"]) for s in status["cleanup"]] == [("tidy", "succeeded")]


def test_a_fenced_run_fails_atomically_and_stops_its_parked_steps(new_store: StoreFactory, tmp_path: Path) -> None:
    store = new_store("t-fence:")
    driver = Driver(store, default_registry())
    run = driver.launch(runbook(tmp_path, """
name: fenced
locks: ["cluster:x"]
steps:
  - parallel:
      - id: gate
        action: core.approve
        with: {message: wait here}
      - id: next
        action: core.echo
        with: {message: hi}
"""))
    driver.queue = [(r, s) for r, s in driver.queue if s == "gate"]
    driver.drain()
    assert store.step(run, "gate")["status"] == Status.WAITING
    store.r.zadd(store.keys.lock("cluster:x"), {run: 1})  # the lease lapsed: nobody renewed it
    assert driver.executor.run_step(run, "next") == "lost_lock"
    record = store.run(run)
    assert record["status"] == Status.FAILED and "lost its lock 'cluster:x'" in record["reason"]
    assert store.step(run, "gate")["status"] == Status.CANCELLED
    assert store.fail_run(run, "again") is False
    assert record["n_active"] == 0


def test_timers_of_a_vanished_run_are_dropped_not_rearmed_forever(redis_url: str) -> None:
    from engine.celery_app import Runtime, make_app

    rt = Runtime(make_app(redis_url))
    member = Keys.member("no-such-run", "step")
    rt.store.r.zadd(rt.store.keys.timers, {member: 0})
    rt.store.r.zadd(rt.store.keys.leases, {member: 0})
    rt.tick()
    assert rt.store.r.zscore(rt.store.keys.timers, member) is None
    assert rt.store.r.zscore(rt.store.keys.leases, member) is None


def _mover_v1() -> Any:
    @action("test.move")
    def move(ctx: ActionContext, *, osd: int) -> dict[str, Any]:
        return {"moved": osd}
    return move


def _mover_renamed() -> Any:
    @action("test.move")
    def move(ctx: ActionContext, *, osds: list[int]) -> dict[str, Any]:
        return {"moved": osds}
    return move


def _mover_v2_same_params() -> Any:
    @action("test.move", version=2)
    def move(ctx: ActionContext, *, osd: int) -> dict[str, Any]:
        return {"moved": osd, "semantics": "new"}
    return move


def _mover_extra_optional() -> Any:
    @action("test.move")
    def move(ctx: ActionContext, *, osd: int, dry: bool = False) -> dict[str, Any]:
        return {"moved": osd, "dry": dry}
    return move


MOVE = """
name: move
steps:
  - id: move
    action: test.move
    with: {osd: 3}
"""


@pytest.mark.parametrize(("deployed", "reason"), [
    (_mover_renamed, "no longer accepts the planned arguments"),
    (_mover_v2_same_params, "is version 2 on this worker, the run was planned with version 1"),
    (None, "this worker has no action test.move"),
])
def test_a_step_whose_action_changed_in_a_deploy_waits_for_a_compatible_worker(
        new_store: StoreFactory, tmp_path: Path, deployed: Any, reason: str) -> None:
    store = new_store(f"t-deploy-{reason[:8].replace(' ', '')}:")
    launcher = Driver(store, registry_with(_mover_v1()))
    run = launcher.launch(runbook(tmp_path, MOVE))
    new_worker = Driver(store, registry_with(deployed()) if deployed else default_registry())
    new_worker.queue, launcher.queue = launcher.queue, []
    new_worker.drain()
    step = store.step(run, "move")
    assert step["status"] == Status.WAITING and step["wait_kind"] == "deploy"
    assert reason in step["waiting_reason"] and "cancel the run" in step["waiting_reason"]
    assert store.run(run)["status"] == Status.RUNNING
    assert next(ev for _, ev in store.events(run) if ev.get("type") == "attention")["step"] == "move"
    store.wake_now(run, "move")
    fire_due_timers(launcher, run)  # a worker that still has the planned action runs it
    assert store.step(run, "move")["result"] == {"moved": 3}
    assert store.run(run)["status"] == Status.SUCCEEDED


def test_a_compatible_change_to_an_action_does_not_hold_its_steps(new_store: StoreFactory, tmp_path: Path) -> None:
    store = new_store("t-deploy-ok:")
    run = Driver(store, registry_with(_mover_v1())).launch(runbook(tmp_path, MOVE))
    new_worker = Driver(store, registry_with(_mover_extra_optional()))
    new_worker.queue = [(run, "move")]
    new_worker.drain()
    assert store.step(run, "move")["result"] == {"moved": 3, "dry": False}


def test_run_settled_waits_for_running_steps_and_cleanup() -> None:
    from engine.states import run_settled

    assert not run_settled({"status": "running", "n_active": 0})
    assert not run_settled({"status": "cancelled", "n_active": 1}), "a cancelled run's step is still stopping"
    assert not run_settled({"status": "failed", "n_active": 0, "cleanup": "running"})
    assert run_settled({"status": "failed", "n_active": 0, "cleanup": "done"})
    assert run_settled({"status": "succeeded", "n_active": 0})


def test_following_a_failed_run_ends_only_after_its_cleanup(new_store: StoreFactory, tmp_path: Path) -> None:
    from engine.interfaces.progress import follow

    store = new_store("t-follow:")
    driver = Driver(store, default_registry())
    run = driver.launch(runbook(tmp_path, failing_with_cleanup("core.sleep", "{seconds: 1}")))
    seen: list[str] = []
    views: list[Any] = []
    follower = threading.Thread(target=lambda: views.append(
        follow(driver.service, run, lambda v: seen.append(v.status), threading.Event(), block_ms=100)))
    follower.start()
    driver.drain()  # fails 'boom', then runs the cleanup step for a second
    follower.join(timeout=20)
    assert not follower.is_alive()
    assert views[0].steps.get("tidy") == "succeeded", "the follower stopped before the cleanup ended"


def test_polling_and_gated_steps_are_published_to_the_poll_queue_quick_steps_to_the_quick_queue(
        redis_url: str, tmp_path: Path) -> None:
    from engine.celery_app import POLL_QUEUE, QUICK_QUEUE, Runtime, make_app

    rt = Runtime(make_app(redis_url))
    rt.store.r.delete(QUICK_QUEUE, POLL_QUEUE)
    service = Service(rt.store, rt.executor.registry, rt.publish)
    run = service.launch(runbook(tmp_path, """
name: queues
steps:
  - parallel:
      - id: quick
        action: core.echo
        with: {message: hi}
      - id: poll
        action: core.wait_until
        with: {condition: "{{ false }}", interval: 10}
      - id: gate
        action: core.approve
        with: {message: "ok?"}
"""), {}, Identity("alice", "cli"))

    def queued(queue: str) -> list[str]:
        return sorted(json.loads(m)["headers"]["kwargsrepr"] for m in rt.store.r.lrange(queue, 0, -1))

    assert run
    assert [k for k in queued(QUICK_QUEUE) if "'quick'" in k] and len(queued(QUICK_QUEUE)) == 1
    assert len(queued(POLL_QUEUE)) == 2 and all("'quick'" not in k for k in queued(POLL_QUEUE))
    rt.store.r.delete(QUICK_QUEUE, POLL_QUEUE)


def test_hooks_see_a_step_claimed_parked_for_a_retry_and_finished_and_a_failing_hook_changes_nothing(
        new_store: StoreFactory, tmp_path: Path) -> None:
    from engine.hooks import Hooks, StepHooks

    seen: list[tuple[Any, ...]] = []

    class Recorder(StepHooks):
        def claimed(self, run_id: str, step_id: str, action: str, attempt: int, takeover: bool) -> None:
            seen.append(("claimed", step_id, attempt, takeover))

        def parked(self, run_id: str, step_id: str, action: str, kind: str, wake_at: float, reason: str) -> None:
            seen.append(("parked", step_id, kind))

        def finished(self, run_id: str, step_id: str, action: str, status: str, seconds: float, error: str) -> None:
            seen.append(("finished", step_id, status))

    class Broken(StepHooks):
        def finished(self, run_id: str, step_id: str, action: str, status: str, seconds: float, error: str) -> None:
            raise RuntimeError("metrics backend down")

    store = new_store("t-hooks:")
    driver = Driver(store, default_registry())
    driver.executor.hooks = Hooks([Broken(), Recorder()])
    run = driver.launch(runbook(tmp_path, """
name: hooks
steps:
  - id: flaky
    action: core.fail
    with: {message: not yet, times: 1}
    retry: {attempts: 2, backoff: 0.01, jitter: false}
"""))
    driver.drain()
    store.wake_now(run, "flaky")
    fire_due_timers(driver, run)
    assert store.run(run)["status"] == Status.SUCCEEDED
    assert seen == [("claimed", "flaky", 1, False), ("parked", "flaky", "retry"),
                    ("claimed", "flaky", 2, False), ("finished", "flaky", "succeeded")]


def test_an_approval_gate_times_out_after_three_days_of_fake_time(new_store: StoreFactory, tmp_path: Path) -> None:
    clock = FakeClock()
    store = new_store("t-clock:", clock=clock)
    driver = Driver(store, default_registry())
    run = driver.launch(runbook(tmp_path, """
name: gate-timeout
steps:
  - id: swap
    action: core.approve
    with: {message: "swapped?", timeout: 72h, on_timeout: reject}
"""))
    driver.drain()
    assert store.step(run, "swap")["status"] == Status.WAITING
    clock.advance(71 * 3600)
    fire_due_timers(driver, run)
    assert store.step(run, "swap")["status"] == Status.WAITING, "woke before its deadline"
    clock.advance(3600 + 1)
    fire_due_timers(driver, run)
    record = store.run(run)
    assert record["status"] == Status.FAILED
    assert "not approved by timeout" in record["reason"]
    assert store.step(run, "swap")["finished"] == pytest.approx(clock.now)


def test_the_lua_scripts_refuse_a_transition_the_status_table_does_not_allow(new_store: StoreFactory) -> None:
    from engine.scripts import TRANSITIONS

    store = new_store("t-table:")
    move = store.r.register_script(TRANSITIONS + "step_to(KEYS[1], ARGV[1], ARGV[2]) return 1")
    store.r.hset("t-table:statuses", "s", "succeeded")
    with pytest.raises(redis.ResponseError, match="succeeded -> running is not in the status table"):
        move(keys=["t-table:statuses"], args=["s", "running"])
    assert store.r.hget("t-table:statuses", "s") == b"succeeded"
    store.r.hset("t-table:statuses", "s", "failed")
    assert move(keys=["t-table:statuses"], args=["s", "pending"]) == 1  # resume is in the table


@pytest.mark.unit
def test_timings_come_from_the_environment_when_asked_not_at_import() -> None:
    from engine.keys import LEASE_SECONDS, Timings

    assert Timings.from_env({}).lease == LEASE_SECONDS
    tuned = Timings.from_env({"HOTSWAP_LEASE_SECONDS": "2", "HOTSWAP_INLINE_STEPS": "4"})
    assert (tuned.lease, tuned.inline, tuned.redeliver) == (2.0, 4, Timings().redeliver)


def test_an_action_asking_for_attention_is_logged_and_becomes_an_attention_event(new_store: StoreFactory,
                                                                                   tmp_path: Path) -> None:
    @action("test.held")
    def held(ctx: ActionContext) -> dict[str, Any]:
        ctx.attention("drain held for 30m by SLOW_OPS on osd.3")
        return {}

    store = new_store("t-attention:")
    driver = Driver(store, registry_with(held))
    run = driver.launch(runbook(tmp_path, "name: held\nsteps:\n  - id: held\n    action: test.held\n"))
    driver.drain()
    events = [ev for _, ev in store.events(run) if ev.get("type") == "attention"]
    assert [(ev["step"], ev["reason"]) for ev in events] == [("held", "drain held for 30m by SLOW_OPS on osd.3")]
    assert any("needs attention: drain held" in line["msg"] for line in store.logs(run, "held"))


def test_an_approval_recorded_while_its_gate_is_still_running_is_not_lost(new_store: StoreFactory,
                                                                           tmp_path: Path) -> None:
    from engine.hooks import Hooks, StepHooks

    store = new_store("t-early-approval:")
    driver = Driver(store, default_registry())

    class ApproveOnClaim(StepHooks):
        def claimed(self, run_id: str, step_id: str, action: str, attempt: int, takeover: bool) -> None:
            if step_id == "swap" and attempt == 1:  # the decision lands before the gate parks
                driver.service.approve(run_id, step_id, Identity("tech", "chat"))

    driver.executor.hooks = Hooks([ApproveOnClaim()])
    run = driver.launch(runbook(tmp_path, """
name: early-approval
steps:
  - id: swap
    action: core.approve
    with: {message: "swapped?", timeout: 72h}
"""))
    driver.drain()
    fire_due_timers(driver, run)
    assert store.run(run)["status"] == Status.SUCCEEDED


def test_a_poll_that_parks_after_its_run_failed_stops_so_cleanup_can_start(new_store: StoreFactory,
                                                                             tmp_path: Path) -> None:
    from engine.hooks import Hooks, StepHooks

    store = new_store("t-late-park:")
    driver = Driver(store, default_registry())

    class FailRunMidPoll(StepHooks):
        def claimed(self, run_id: str, step_id: str, action: str, attempt: int, takeover: bool) -> None:
            if step_id == "boom":  # the run fails while 'poll' is between its claim and its park
                store.fail_run(run_id, "failed elsewhere meanwhile")

    driver.executor.hooks = Hooks([FailRunMidPoll()])
    run = driver.launch(runbook(tmp_path, """
name: late-park
steps:
  - id: boom
    action: core.wait_until
    with: {condition: "{{ false }}", interval: 10}
cleanup:
  - id: tidy
    action: core.echo
    with: {message: tidy}
"""))
    driver.drain()
    assert store.step(run, "boom")["status"] == Status.CANCELLED
    record = store.run(run)
    assert record["status"] == Status.FAILED and record["cleanup"] == "done" and record["n_active"] == 0
