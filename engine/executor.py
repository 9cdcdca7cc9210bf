"""Executing one step: claim it, pass its gates, render its arguments, run its action, record the
outcome and hand the successors it released to ``enqueue``. Knows nothing of Celery."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from actions.base import ActionContext, ActionRegistry, ActionSpec, NotYet
from engine import templating
from engine.argtypes import check_value, coerce_value
from engine.errors import ActionMismatch, HotswapError, LeaseLost, StepTimeout, UnknownActionError
from engine.hooks import Hooks
from engine.keys import CANCEL_CHECK_SECONDS, DEPLOY_RECHECK_SECONDS, LEASE_SECONDS
from engine.lease import REFUSAL_PATIENCE, refused_everywhere, renew, retrying, transient
from engine.plan import Plan, PlanStep
from engine.secrets import resolve_params as resolve_secrets
from engine.secrets import scrub
from engine.states import Outcome, Status
from engine.store import Claim, Completion, Store

logger = logging.getLogger("hotswap.executor")

DEPLOY_ADVICE = ("the step waits for a worker with the planned action; finish or roll back the deploy, "
                 "or cancel the run")

START_STEP = "__start__"
"""Pseudo step id: a message to (re)try starting a run that waits for its locks."""

Enqueue = Callable[[str, list[str]], None]
"""enqueue(run_id, step_ids): make these steps run soon (a Celery publish in production)."""


@dataclass
class Toolkits:
    """What the executor hands actions besides the logger; built per step by a factory."""

    inventory: Any = None
    ssh: Any = None
    http: Any = None


ToolkitFactory = Callable[[str, Any, bool, Callable[..., None], list[str], Callable[[], bool]], Toolkits]
"""factory(run_id, log, dry_run, would, secrets, cancelled) -> Toolkits."""


def no_toolkits(run_id: str, log: Any, dry_run: bool, would: Callable[..., None], secrets: list[str],
                cancelled: Callable[[], bool]) -> Toolkits:
    return Toolkits()


class StepLog:
    """The step logger actions receive: lines go to the step's log and the run's event stream."""

    def __init__(self, store: Store, run_id: str, step_id: str, secrets: list[str]) -> None:
        self.store, self.run_id, self.step_id, self.secrets = store, run_id, step_id, [s for s in secrets if s]

    def _write(self, level: str, message: str) -> None:
        self.store.log(self.run_id, self.step_id, level, scrub(message, self.secrets))

    def info(self, message: str) -> None:
        self._write("info", message)

    def warning(self, message: str) -> None:
        self._write("warning", message)

    def error(self, message: str) -> None:
        self._write("error", message)


class StepsView(Mapping[str, Any]):
    """``steps`` in templates: earlier steps' status and result, read from the store on demand.

    Inside a for_each item, ``steps.x`` means that item's own step ``x`` first. A for_each id gives
    ``{"status": ..., "results": [last step result of each item]}``.
    """

    def __init__(self, lookup: Callable[[list[str]], list[tuple[str | None, Any]]], plan: Plan,
                 prefixes: list[str]) -> None:
        self._lookup, self._plan, self._prefixes = lookup, plan, prefixes
        self._cache: dict[str, Any] = {}

    def _resolve(self, name: str) -> str | None:
        for prefix in self._prefixes:
            if prefix + name in self._plan.steps or prefix + name in self._plan.groups:
                return prefix + name
        if name in self._plan.steps or name in self._plan.groups:
            return name
        return None

    def __getitem__(self, name: str) -> Any:
        if name in self._cache:
            return self._cache[name]
        sid = self._resolve(name)
        if sid is None:
            raise KeyError(name)
        if sid in self._plan.groups:
            members = [m for m in self._plan.groups[sid] if m]
            found = self._lookup(members)
            statuses = {s for s, _ in found}
            value: Any = {
                "status": "succeeded" if statuses <= {"succeeded", "skipped"} else "incomplete",
                "results": [r for _, r in found],
            }
        else:
            status, result = self._lookup([sid])[0]
            value = {"status": status, "result": result}
        self._cache[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._plan.steps)

    def __len__(self) -> int:
        return len(self._plan.steps)


def template_context(params: Mapping[str, Any], step: PlanStep, steps: Mapping[str, Any], run: Mapping[str, Any],
                     inventory: Any, memory: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {
        "params": params,
        "inventory": inventory,
        "steps": steps,
        "run": run,
        "now": now,
        "poll": int(memory.get("polls", 0)),
        **step.scope,
    }


def typed_args(spec: ActionSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Rendered arguments converted to and checked against the action's declared types."""
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name not in spec.params:
            raise HotswapError(f"action {spec.name} has no argument '{name}'")
        value = coerce_value(spec.params[name].annotation, value)
        why = check_value(spec.params[name].annotation, value)
        if why:
            raise HotswapError(f"argument '{name}' of {spec.name}: {why}")
        out[name] = value
    return out


def run_metadata(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("id", "runbook", "launched_by", "source", "created", "started", "dry_run")}


def retry_delay(retry: Mapping[str, Any], attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff: backoff * 2^(attempt-1), capped at max_delay, with full jitter when enabled."""
    base = float(retry.get("backoff", 2.0)) * (2 ** max(0, attempt - 1))
    delay = min(base, float(retry.get("max_delay", 300.0)))
    if retry.get("jitter", True):
        delay = (rng or random).uniform(delay / 2, delay)
    return float(delay)


@dataclass
class _Beat:
    run_id: str
    step_id: str
    token: str
    memory: dict[str, Any]
    cleanup: bool = False
    """A cleanup step runs because its run failed or was cancelled: the cancellation must not stop it."""
    until: float = 0.0
    """When the lease runs out unless renewed (store clock)."""
    last: float = field(default_factory=time.monotonic)
    lost: threading.Event = field(default_factory=threading.Event)
    lease_lost: str = ""
    """Why this execution may no longer act (its lease lapsed or was taken over); empty while it may."""

    def cancelled(self) -> bool:
        return self.lost.is_set()

    def lose(self, reason: str) -> None:
        self.lease_lost = self.lease_lost or reason
        self.lost.set()


class Heartbeats:
    """One thread per process renews the leases of the steps running in it and notices a lost lease or a
    cancelled run (within CANCEL_CHECK_SECONDS). Started on first use, so it lives in the process that runs
    steps (a prefork child), never in a parent that forks."""

    def __init__(self, store: Store, lease: float = LEASE_SECONDS) -> None:
        self.store, self.lease = store, lease
        self._beats: dict[int, _Beat] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def beating(self, run_id: str, step_id: str, token: str, memory: dict[str, Any],
                cleanup: bool = False, until: float = 0.0) -> Iterator[_Beat]:
        beat = _Beat(run_id, step_id, token, memory, cleanup, until or self.store.clock() + self.lease)
        with self._lock:
            self._beats[id(beat)] = beat
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="hotswap-heartbeats", daemon=True)
                self._thread.start()
        try:
            yield beat
        finally:
            with self._lock:
                self._beats.pop(id(beat), None)

    def _loop(self) -> None:
        while True:
            time.sleep(CANCEL_CHECK_SECONDS)
            with self._lock:
                beats = list(self._beats.values())
            for beat in beats:
                try:
                    self._check(beat)
                except (OSError, RedisError) as e:
                    logger.info("heartbeat of %s/%s: %s (retrying)", beat.run_id, beat.step_id, e)
                except Exception:
                    logger.exception("heartbeat of %s/%s failed; retrying", beat.run_id, beat.step_id)

    def _check(self, beat: _Beat) -> None:
        if time.monotonic() - beat.last >= self.lease / 3:
            self._renew(beat)
        if not beat.cleanup and not beat.lost.is_set() and self.store.run_status(beat.run_id) == Status.CANCELLED:
            beat.lost.set()

    def _renew(self, beat: _Beat) -> None:
        """One renewal; a transient failure is tried again next round while the lease lasts (self-fencing after)."""
        clock, what = self.store.clock, f"step {beat.step_id}"
        sent = clock()
        try:
            ours = self.store.heartbeat(beat.run_id, beat.step_id, beat.token, dict(beat.memory), until=sent + self.lease)
        except (OSError, RedisError) as e:
            patience = beat.until + (REFUSAL_PATIENCE if refused_everywhere(e) else 0.0)
            if not transient(e) or clock() >= patience:
                beat.lose(f"{what}: its lease could not be renewed ({type(e).__name__}: {e})")
            return
        if not ours:
            beat.lose(f"{what} lost its lease; another worker has taken it over")
        elif clock() >= sent + self.lease:
            beat.lose(f"{what}: Redis answered {clock() - sent:.1f}s late, after the lease it renewed had lapsed")
        else:
            beat.until, beat.last = sent + self.lease, time.monotonic()


@dataclass
class Executor:
    store: Store
    registry: ActionRegistry
    enqueue: Enqueue
    worker: str = "worker"
    toolkits: ToolkitFactory = no_toolkits
    interrupts: tuple[type[BaseException], ...] = ()
    """Exceptions the task runtime raises into a step that ran past its time limit."""
    rng: random.Random = field(default_factory=random.Random)
    lease: float = LEASE_SECONDS
    """How long a running step's claim lasts without renewal (renewed every third of it)."""
    hooks: Hooks = field(default_factory=Hooks)
    """Observers of each step's life (metrics, audit sinks): see engine/hooks.py."""
    deploy_recheck: float = DEPLOY_RECHECK_SECONDS
    """How often a step parked for a compatible worker is tried again (on whichever worker takes it)."""
    inline: int = 0
    """How many released steps one task may go on to run itself instead of publishing them (a chain link
    or a join then costs no broker round trip). Safe: every released step also has a redelivery timer."""

    def clock(self) -> float:
        """Wall-clock seconds for deadlines and timers: the store's clock, so both agree (fake in unit tests)."""
        return self.store.clock()

    def __post_init__(self) -> None:
        self.heartbeats = Heartbeats(self.store, self.lease)
        self._next: tuple[str, str] | None = None

    def run_step(self, run_id: str, step_id: str) -> Outcome:
        """Execute one step if it is this worker's to execute, then up to ``inline`` steps it released;
        return what happened to the first (for logs and tests)."""
        outcome = self._run_one(run_id, step_id)
        for _ in range(self.inline):
            if self._next is None:
                break
            (next_run, next_step), self._next = self._next, None
            self._run_one(next_run, next_step)
        if self._next is not None:
            (next_run, next_step), self._next = self._next, None
            self.enqueue(next_run, [next_step])
        return outcome

    def _run_one(self, run_id: str, step_id: str) -> Outcome:
        if step_id == START_STEP:
            return self.try_start(run_id)
        claim = self.store.claim(run_id, step_id, self.worker, lease=self.lease)
        if claim.outcome == "orphaned" and claim.start_cleanup:
            self._start_cleanup(run_id)
        if claim.outcome == "lost_lock":
            self.store.fail_run(run_id, f"the run lost its lock '{claim.lost_lock}' (no worker renewed it in time) "
                                        "and may no longer act; check who holds it, then resume")
            return Outcome.LOST_LOCK
        if not claim.ok:
            return Outcome.of_claim(claim.outcome)
        plan = self.store.plan(run_id)
        step = plan.steps.get(step_id) or plan.cleanup[step_id]
        self.hooks.emit("claimed", run_id, step_id, step.action, claim.attempt, claim.takeover)
        record = self.store.run_meta(run_id)
        memory = dict(claim.memory or {})
        try:
            params, secrets = resolve_secrets(plan.params, plan.secret_params)
        except HotswapError as e:
            return self._finish(run_id, step, claim, Status.FAILED, memory, [], error=str(e))
        log = StepLog(self.store, run_id, step_id, secrets)
        try:
            return self._execute(plan, step, record, claim, log, memory, params, secrets)
        except self.interrupts:
            return self._fail_or_retry(run_id, step, claim, memory,
                                       StepTimeout(step_id, step.timeout or 0).args[0], log)

    def _execute(self, plan: Plan, step: PlanStep, record: Mapping[str, Any], claim: Claim, log: StepLog,
                 memory: dict[str, Any], params: dict[str, Any], secrets: list[str]) -> Outcome:
        run_id, now = record["id"], self.clock()
        memory.setdefault("first_started", now)
        if step.timeout and now > memory["first_started"] + step.timeout:
            last = memory.get("last_wait_reason")
            error = str(StepTimeout(step.id, step.timeout)) + (f" (last: {last})" if last else "")
            return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets, error=error)
        if step.approval:
            gate = self._approval_gate(run_id, step, claim, memory, log)
            if gate is not None:
                return gate
        planned: list[dict[str, Any]] = []
        ctx = ActionContext(
            run_id=run_id, step_id=step.id, attempt=claim.attempt, dry_run=bool(record.get("dry_run")), log=log,
            memory=memory, run=run_metadata(record), planned=planned,
        )
        tk = self.toolkits(run_id, log, ctx.dry_run, ctx.would, secrets, lambda: ctx.cancelled())
        ctx.inventory, ctx.ssh, ctx.http = tk.inventory, tk.ssh, tk.http
        ctx.approvals = _FixedDecision(claim.decision)
        steps = StepsView(lambda ids: self.store.results(run_id, ids), plan, step.prefixes)
        inventory_ctx = tk.inventory.as_template_context() if hasattr(tk.inventory, "as_template_context") else {}
        context = template_context(params, step, steps, ctx.run, inventory_ctx, memory, now)
        try:
            if step.when is not None and not templating.render(step.when, context):
                log.info(f"skipped: condition {step.when} is false")
                return self._finish(run_id, step, claim, Status.SKIPPED, memory, log.secrets)
            spec, args = self._action_for(plan, step, context)
        except ActionMismatch as e:
            return self._park_for_deploy(run_id, step, claim, memory, str(e), log)
        except HotswapError as e:
            log.error(str(e))
            return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets, error=str(e))
        except (MemoryError, RecursionError) as e:
            error = f"rendering the step's arguments failed: {type(e).__name__}"
            log.error(error)
            return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets, error=error)
        with self.heartbeats.beating(run_id, step.id, claim.token, memory, step.cleanup, claim.until) as beat:
            deadline = memory["first_started"] + step.timeout if step.timeout else None
            ctx.cancelled = lambda: beat.cancelled() or (deadline is not None and self.clock() >= deadline)
            ctx.save = lambda: self._save_memory(run_id, step.id, claim.token, memory, beat)
            ctx.notify = lambda message: self._notify(run_id, step.id, message, log)
            try:
                result = spec(ctx, **args)
            except LeaseLost as e:
                return self._abandon(run_id, step, beat.lease_lost or str(e))
            except NotYet as wait:
                if beat.lease_lost:
                    return self._abandon(run_id, step, beat.lease_lost)
                return self._park_poll(run_id, step, claim, memory, wait, log)
            except self.interrupts:
                raise
            except HotswapError as e:
                if beat.lease_lost:
                    return self._abandon(run_id, step, beat.lease_lost)
                return self._fail_or_retry(run_id, step, claim, memory, str(e), log)
            except Exception as e:  # noqa: BLE001 - any bug in an action must become a recorded step failure
                if beat.lease_lost:
                    return self._abandon(run_id, step, beat.lease_lost)
                return self._fail_or_retry(run_id, step, claim, memory, f"{type(e).__name__}: {e}", log)
            if beat.lease_lost:
                return self._abandon(run_id, step, beat.lease_lost)
        if planned:
            result = {"result": result, "dry_run": planned} if not isinstance(result, dict) else {**result, "dry_run": planned}
        return self._finish(run_id, step, claim, Status.SUCCEEDED, memory, log.secrets, result=result)

    def _action_for(self, plan: Plan, step: PlanStep, context: Mapping[str, Any]) -> tuple[ActionSpec, dict[str, Any]]:
        """The action to run and its typed arguments, or ActionMismatch when a deploy since the launch changed
        the action so that it no longer means what the plan meant."""
        planned = plan.actions.get(step.action)
        try:
            spec = self.registry.get(step.action)
        except UnknownActionError:
            if planned is None:
                raise
            raise ActionMismatch(f"this worker has no action {step.action} (the run was planned with version "
                                 f"{planned['version']}): {DEPLOY_ADVICE}") from None
        rendered = templating.render(step.args, context)
        if planned is None or planned == spec.identity():
            return spec, typed_args(spec, rendered)
        if planned["version"] != spec.version:
            raise ActionMismatch(f"action {step.action} is version {spec.version} on this worker, the run was "
                                 f"planned with version {planned['version']}: {DEPLOY_ADVICE}")
        try:
            return spec, typed_args(spec, rendered)
        except HotswapError as e:
            raise ActionMismatch(f"action {step.action} on this worker no longer accepts the planned arguments "
                                 f"({e}): {DEPLOY_ADVICE}") from e

    def _notify(self, run_id: str, step_id: str, message: str, log: StepLog) -> None:
        self.store.event(run_id, type="attention", step=step_id, reason=scrub(message, log.secrets))

    def _park_for_deploy(self, run_id: str, step: PlanStep, claim: Claim, memory: dict[str, Any], reason: str,
                         log: StepLog) -> Outcome:
        if memory.get("deploy_wait") != reason:
            memory["deploy_wait"] = reason
            message = f"waiting for a compatible worker: {reason}"
            log.warning(f"needs attention: {message}")
            self._notify(run_id, step.id, message, log)
        self._park(run_id, step, claim, "deploy", self.clock() + self.deploy_recheck, reason, memory)
        return Outcome.WAITING

    def _approval_gate(self, run_id: str, step: PlanStep, claim: Claim, memory: dict[str, Any],
                       log: StepLog) -> Outcome | None:
        """None when the action may run; otherwise the step was parked or finished here."""
        approval = step.approval or {}
        decision = claim.decision
        now = self.clock()
        if decision is None:
            timeout = approval.get("timeout")
            deadline = memory.setdefault("approval_deadline", now + timeout if timeout else None)
            if deadline is not None and now >= deadline:
                outcome = approval.get("on_timeout", "reject")
                decision = {"approved": outcome == "approve", "by": "timeout", "comment": f"no decision in {timeout:g}s"}
                self.store.record_decision(run_id, step.id, decision)
                log.warning(f"approval timed out after {timeout:g}s: on_timeout={outcome}")
            else:
                if not memory.get("approval_requested"):
                    memory["approval_requested"] = now
                    who = ", ".join(approval.get("approvers") or []) or "anyone allowed"
                    log.info(f"waiting for approval ({who}): {approval.get('message', '')}")
                    self.store.event(run_id, type="approval_requested", step=step.id,
                                     message=approval.get("message", ""), approvers=",".join(approval.get("approvers") or []))
                wake = deadline if deadline is not None else now + 86400
                self._park(run_id, step, claim, "approval", wake, f"waiting for approval: {approval.get('message', '')}",
                           memory)
                return Outcome.WAITING
        if not decision.get("approved"):
            error = f"not approved by {decision.get('by')}: {decision.get('comment') or 'rejected'}"
            return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets, error=error)
        return None

    def _park_poll(self, run_id: str, step: PlanStep, claim: Claim, memory: dict[str, Any], wait: NotYet,
                   log: StepLog) -> Outcome:
        wake = self.clock() + wait.after
        if step.timeout:
            deadline = memory["first_started"] + step.timeout
            if self.clock() >= deadline:
                return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets,
                                    error=f"{StepTimeout(step.id, step.timeout)} (last: {wait.reason or 'not ready'})")
            wake = min(wake, deadline)
        if wait.reason and wait.reason != memory.get("last_wait_reason"):
            log.info(f"waiting: {wait.reason}")
        memory["last_wait_reason"] = wait.reason
        self._park(run_id, step, claim, "poll", wake, wait.reason, memory)
        return Outcome.WAITING

    def _fail_or_retry(self, run_id: str, step: PlanStep, claim: Claim, memory: dict[str, Any], error: str,
                       log: StepLog) -> Outcome:
        attempts = int(step.retry.get("attempts", 1))
        if step.timeout and self.clock() >= memory["first_started"] + step.timeout:
            error = f"{StepTimeout(step.id, step.timeout)} ({error})"
            log.error(error)
            return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets, error=error)
        log.error(f"attempt {claim.attempt}/{attempts} failed: {error}")
        if claim.attempt < attempts:
            delay = retry_delay(step.retry, claim.attempt, self.rng)
            if step.timeout and self.clock() + delay > memory["first_started"] + step.timeout:
                return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets,
                                    error=f"{error} (no time left for a retry within the step timeout)")
            log.info(f"retrying in {delay:.1f}s")
            self._park(run_id, step, claim, "retry", self.clock() + delay, f"retry after: {error}", memory)
            return Outcome.RETRYING
        return self._finish(run_id, step, claim, Status.FAILED, memory, log.secrets, error=error)

    def _save_memory(self, run_id: str, step_id: str, token: str, memory: dict[str, Any], beat: _Beat) -> None:
        """ctx.save(): persist progress now, retried through Redis hiccups while the lease lasts."""
        if beat.lease_lost:
            raise LeaseLost(beat.lease_lost)
        try:
            beat.until = renew(lambda until: self.store.heartbeat(run_id, step_id, token, dict(memory), until=until),
                               self.lease, beat.until, self.clock, f"step {step_id}")
        except LeaseLost as e:
            beat.lose(str(e))
            raise

    def _abandon(self, run_id: str, step: PlanStep, reason: str) -> Outcome:
        """This execution may no longer act: record nothing (the takeover records the outcome)."""
        logger.warning("run %s step %s: execution abandoned: %s", run_id, step.id, reason)
        return Outcome.STALE

    def try_start(self, run_id: str) -> Outcome:
        """Start a run that waits for its locks: take them and release its roots, or try again later."""
        plan = self.store.plan(run_id)
        record = self.store.run(run_id)
        if record["status"] != Status.PENDING:
            return Outcome.RUN_INACTIVE
        busy = self.store.acquire_locks(run_id, plan)
        if busy:
            self.store.wait_for_lock(run_id, *busy)
            return Outcome.WAITING
        ready = self.store.start_run(run_id)
        if ready:
            self.enqueue(run_id, ready)
        return Outcome.STARTED

    def _park(self, run_id: str, step: PlanStep, claim: Claim, kind: str, wake_at: float, reason: str,
              memory: dict[str, Any]) -> None:
        try:
            parked = retrying(lambda: self.store.park(run_id, step.id, claim.token, kind=kind, wake_at=wake_at,
                                                      reason=reason, memory=memory),
                              self.clock() + self.lease, self.clock, f"parking step {step.id}")
        except LeaseLost as e:
            self._abandon(run_id, step, str(e))
            return
        if parked == "parked":
            self.hooks.emit("parked", run_id, step.id, step.action, kind, wake_at, reason)
        elif parked == "start_cleanup":
            self._start_cleanup(run_id)

    def _finish(self, run_id: str, step: PlanStep, claim: Claim, status: Status, memory: dict[str, Any],
                secrets: list[str], *, result: Any = None, error: str = "") -> Outcome:
        """Record the outcome, scrubbed of the secret values this execution resolved (resolving them again
        here could fail — a file gone, a variable unset — and leave the outcome unscrubbed)."""
        result, error, memory = scrub(result, secrets), scrub(error, secrets), scrub(memory, secrets)
        deadline, what = self.clock() + self.lease, f"recording the outcome of step {step.id}"
        try:
            try:
                done = retrying(lambda: self.store.complete(run_id, step.id, claim.token, status, result=result,
                                                            error=error, memory=memory), deadline, self.clock, what)
            except ValueError as e:
                too_big = str(e)
                done = retrying(lambda: self.store.complete(run_id, step.id, claim.token, Status.FAILED, error=too_big,
                                                            memory=memory), deadline, self.clock, what)
                status = Status.FAILED
        except LeaseLost as e:
            return self._abandon(run_id, step, str(e))
        if done is None:
            return Outcome.STALE
        if self.hooks:
            seconds = time.monotonic() - claim.at if claim.at else 0.0
            self.hooks.emit("finished", run_id, step.id, step.action, status.value, seconds, error)
        self.release(run_id, done, failed_item=step if "tolerated" in done.flags else None)
        return Outcome.TOLERATED if "tolerated" in done.flags else Outcome(status.value)

    def release(self, run_id: str, done: Completion, failed_item: PlanStep | None = None) -> None:
        """Publish what a completion released. After a failure within a for_each budget, the rest of that
        item is skipped (it cannot run on top of a failed step) while everything else goes on."""
        ready = list(done.ready)
        item = failed_item.prefixes[0] if failed_item and failed_item.prefixes else None
        publish: list[str] = []
        while ready:
            sid = ready.pop()
            if item and sid.startswith(item):
                skipped = self.store.skip(run_id, sid, f"skipped: {failed_item.id if failed_item else ''} failed "
                                                       "within the failure budget")
                if skipped:
                    ready.extend(skipped.ready)
                    if "start_cleanup" in skipped.flags:
                        self._start_cleanup(run_id)
            else:
                publish.append(sid)
        if "start_cleanup" in done.flags:
            self._start_cleanup(run_id)
        if publish and self.inline and self._next is None:
            self._next = (run_id, publish.pop())
        if publish:
            self.enqueue(run_id, publish)

    def _start_cleanup(self, run_id: str) -> None:
        roots = self.store.plan(run_id).cleanup_roots()
        self.store.arm(run_id, roots)
        self.hooks.emit("cleanup_started", run_id)
        self.enqueue(run_id, roots)


class _FixedDecision:
    def __init__(self, decision: dict[str, Any] | None) -> None:
        self._decision = decision

    def decision(self) -> dict[str, Any] | None:
        return self._decision
