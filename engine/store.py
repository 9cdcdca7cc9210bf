"""Run state in Redis: run records, per-step state, logs, the event stream, timers and leases.

Every transition that must be atomic (claiming a step, completing it and releasing its successors,
parking it until a timer) is one Lua script, so successors are released exactly once however
completions race and however often a message is delivered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from engine import redisconn, scripts
from engine.errors import InvalidTransition, LockHeld, RunNotFound, StepNotFound
from engine.keys import (
    LEASE_SECONDS,
    LOCK_LEASE_SECONDS,
    LOCK_RETRY_SECONDS,
    MAX_LOG_LINE,
    MAX_RESULT_BYTES,
    REDELIVER_SECONDS,
    TIMER_REARM_SECONDS,
    Keys,
)
from engine.plan import Plan
from engine.states import DONE_OK, Status, can_run, can_step, run_settled

RUN_META = ("id", "runbook", "file", "launched_by", "source", "created", "started", "dry_run", "params")
HOLDING = ("pending", "running", "waiting", "failed")
"""Run statuses that keep a run's locks: a failed run may have left a host drained; cancel it to release."""

@dataclass(frozen=True)
class Claim:
    outcome: str
    token: str = ""
    attempt: int = 0
    memory: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    lost_lock: str = ""
    start_cleanup: bool = False
    takeover: bool = False
    """The step was running under a worker that lost its lease; this claim takes it over."""
    until: float = 0.0
    """When the lease this claim took runs out (store clock), unless renewed."""
    at: float = 0.0
    """time.monotonic() when this process claimed it."""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class Completion:
    """What recording an outcome released: successors now ready, and flags (tolerated, start_cleanup)."""

    ready: list[str]
    flags: frozenset[str] = frozenset()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


class Store:
    """All of hotswap's Redis state. One instance per process; safe to share between threads."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None, redeliver: float = REDELIVER_SECONDS,
                 clock: Callable[[], float] = time.time, lock_lease: float = LOCK_LEASE_SECONDS) -> None:
        """``clock``: wall-clock seconds for every timestamp, timer and lease (a fake one in unit tests)."""
        self.r: Any = client
        self.clock = clock
        self.lock_lease = lock_lease
        self.keys = keys or Keys()
        self.redeliver = redeliver
        self._claim = client.register_script(scripts.CLAIM)
        self._complete = client.register_script(scripts.COMPLETE)
        self._wait = client.register_script(scripts.WAIT)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._pop_due = client.register_script(scripts.POP_DUE)
        self._cancel = client.register_script(scripts.CANCEL)
        self._skip = client.register_script(scripts.SKIP)
        self._fail_run = client.register_script(scripts.FAIL_RUN)
        self._release_worker = client.register_script(scripts.RELEASE_WORKER)
        self._acquire = client.register_script(scripts.ACQUIRE)
        self._renew = client.register_script(scripts.RENEW)
        self._plans: dict[str, Plan] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def _replicated(self, what: str, strict: bool = True) -> bool:
        """Wait for as many replicas as the client asks for (Config.replication) to have ``what``, a transition
        a failover must not lose; see :func:`engine.redisconn.wait_replicated`."""
        return redisconn.wait_replicated(self.r, self.keys.prefix + "replication", what, strict=strict)

    # ---- runs ------------------------------------------------------------------------------
    def create_run(self, run_id: str, plan: Plan, meta: Mapping[str, Any]) -> None:
        k = self.keys
        now = self.clock()
        record = {
            **{key: _field(value) for key, value in meta.items()},
            "id": run_id,
            "runbook": plan.runbook,
            "file": plan.file,
            "status": Status.PENDING.value,
            "created": now,
            "n_steps": len(plan.steps),
            "n_done": 0,
            "n_failed": 0,
            "n_active": 0,
            "n_cleanup": len(plan.cleanup),
            "n_cleanup_done": 0,
        }
        every = {**plan.steps, **plan.cleanup}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(k.run(run_id), mapping=record)
        pipe.set(k.plan(run_id), json.dumps(plan.to_dict(), separators=(",", ":")))
        if every:
            pipe.hset(k.statuses(run_id), mapping={sid: Status.PENDING.value for sid in every})
            pipe.hset(k.remaining(run_id), mapping={sid: len(s.deps) for sid, s in every.items()})
        pipe.zadd(k.runs, {run_id: now})
        pipe.xadd(k.events(run_id), {"type": "run", "status": "pending", "t": now})
        pipe.execute()

    # ---- locks --------------------------------------------------------------------------------
    def lock_keys(self, plan: Plan) -> list[str]:
        return [self.keys.lock(lock["name"]) for lock in plan.locks]

    def acquire_locks(self, run_id: str, plan: Plan) -> tuple[str, str] | None:
        """Take every lock of the plan at once; None when taken, else (lock, holders) that block it."""
        if not plan.locks:
            return None
        res = self._acquire(keys=self.lock_keys(plan),
                            args=[run_id, self.clock(), self.lock_lease, self.keys.prefix,
                                  *[lock["limit"] for lock in plan.locks]])
        parts = [_s(x) for x in res]
        if parts[0] == "ok":
            if self._replicated(f"the locks of run {run_id}", strict=False):
                return None
            return plan.locks[0]["name"], f"{run_id} (itself: not yet confirmed by the Redis replicas)"
        return parts[1][len(self.keys.prefix) + len("lock:"):], parts[2]

    def wait_for_lock(self, run_id: str, lock: str, holders: str) -> None:
        """Keep a pending run waiting for a lock; a timer retries starting it."""
        k = self.keys
        reason = f"waiting for lock '{lock}' held by run {holders}"
        pipe = self.r.pipeline()
        pipe.hset(k.run(run_id), "reason", reason)
        pipe.zadd(k.timers, {k.member(run_id, "__start__"): self.clock() + LOCK_RETRY_SECONDS})
        pipe.execute()

    def refuse_run(self, run_id: str, reason: str) -> None:
        """A run that never started (its lock was held): cancelled, with the reason, kept for the audit."""
        now = self.clock()
        k = self.keys
        self.r.hset(k.run(run_id), mapping={"status": Status.CANCELLED.value, "reason": reason, "finished": now})
        self.r.xadd(k.events(run_id), {"type": "run", "status": "cancelled", "reason": reason, "t": now})

    def fail_run(self, run_id: str, reason: str) -> bool:
        """An active run fails (its parked steps stop) in one atomic step; False when it was not active.
        Used when a run is fenced off (it lost a lock): its cleanup does not start, since another run may now
        hold the cluster; resume takes the locks again."""
        k = self.keys
        res = self._fail_run(keys=[k.run(run_id), k.statuses(run_id), k.events(run_id), k.timers],
                             args=[reason, self.clock(), run_id])
        return _s(res[0]) == "ok"

    def renew_locks(self) -> int:
        """Extend the locks of every run that still holds them; drop those of finished runs."""
        return int(self._renew(keys=[], args=[self.clock(), self.lock_lease, self.keys.prefix]))

    def lock_holders(self, name: str) -> list[str]:
        """Runs holding the lock ``name`` now (finished runs and lapsed leases excluded)."""
        now = self.clock()
        holders = []
        for member, score in self.r.zrange(self.keys.lock(name), 0, -1, withscores=True):
            run_id = _s(member)
            status = self.r.hget(self.keys.run(run_id), "status")
            if score >= now and status is not None and _s(status) in HOLDING:
                holders.append(run_id)
        return holders

    def lock_conflict(self, locks: Iterable[Mapping[str, Any]]) -> tuple[str, list[str]] | None:
        """(lock, holders) when a run declaring ``locks`` would be refused or made to wait now, else None."""
        for lock in locks:
            holders = self.lock_holders(str(lock["name"]))
            if len(holders) >= int(lock.get("limit", 1)):
                return str(lock["name"]), holders
        return None

    def once(self, key: str, ttl: int) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds, across every process (replay guards)."""
        return bool(self.r.set(self.keys.lock(f"once:{key}"), "1", nx=True, ex=ttl))

    def start_run(self, run_id: str) -> list[str]:
        """pending -> running; returns the steps ready to go (the roots)."""
        plan = self.plan(run_id)
        now = self.clock()
        k = self.keys
        ok = self.r.hsetnx(k.run(run_id), "started", now) if plan.steps else True
        if not ok:
            return []
        status = Status.SUCCEEDED.value if not plan.steps else Status.RUNNING.value
        roots = plan.roots()
        pipe = self.r.pipeline()
        pipe.hset(k.run(run_id), mapping={"status": status, **({"finished": now} if not plan.steps else {})})
        pipe.xadd(k.events(run_id), {"type": "run", "status": status, "t": now})
        if roots:
            pipe.zadd(k.timers, {k.member(run_id, sid): now + self.redeliver for sid in roots})
        pipe.execute()
        return roots

    def arm(self, run_id: str, step_ids: Iterable[str]) -> None:
        """Durable timers for steps about to be published, so a lost message is published again."""
        due = self.clock() + self.redeliver
        members = {self.keys.member(run_id, sid): due for sid in step_ids}
        if members:
            self.r.zadd(self.keys.timers, members)

    def run(self, run_id: str) -> dict[str, Any]:
        raw = _decode_hash(self.r.hgetall(self.keys.run(run_id)))
        if not raw:
            raise RunNotFound(run_id)
        return _parse_record(raw)

    def run_meta(self, run_id: str) -> dict[str, Any]:
        """The parts of a run record that never change once it started (id, runbook, who, dry_run...),
        cached like the plan: a step needs them but should not pay a round trip for them."""
        meta = self._meta.get(run_id)
        if meta is None:
            record = self.run(run_id)
            meta = {k: record.get(k) for k in RUN_META}
            if record.get("started"):
                if len(self._meta) > 256:
                    self._meta.clear()
                self._meta[run_id] = meta
        return meta

    def exists(self, run_id: str) -> bool:
        return bool(self.r.exists(self.keys.run(run_id)))

    def list_runs(self, limit: int = 20, status: str | None = None, runbook: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = 0
        while len(out) < limit:
            ids = [_s(x) for x in self.r.zrevrange(self.keys.runs, offset, offset + 199)]
            if not ids:
                break
            offset += len(ids)
            pipe = self.r.pipeline(transaction=False)
            for rid in ids:
                pipe.hgetall(self.keys.run(rid))
            for raw in pipe.execute():
                rec = _parse_record(_decode_hash(raw)) if raw else None
                if rec and (status is None or rec["status"] == status) and (runbook is None or rec["runbook"] == runbook):
                    out.append(rec)
        return out[:limit]

    def any_unsettled_run(self, page: int = 500) -> bool:
        """Whether any run, however old, may still change by itself (see states.run_settled): a pending,
        running or waiting run, or a failed or cancelled one whose steps or cleanup still run."""
        if self.r.zcard(self.keys.leases) or self.r.zcard(self.keys.timers):
            return True
        offset = 0
        while True:
            ids = [_s(x) for x in self.r.zrevrange(self.keys.runs, offset, offset + page - 1)]
            if not ids:
                return False
            offset += len(ids)
            pipe = self.r.pipeline(transaction=False)
            for rid in ids:
                pipe.hmget(self.keys.run(rid), "status", "cleanup", "n_active")
            for status, cleanup, active in pipe.execute():
                record = {"status": _s(status) if status else None, "cleanup": _s(cleanup) if cleanup else None,
                          "n_active": _s(active) if active else 0}
                if status is not None and not run_settled(record):
                    return True

    def plan(self, run_id: str) -> Plan:
        """The run's plan; cached because a plan never changes once launched."""
        plan = self._plans.get(run_id)
        if plan is None:
            raw = self.r.get(self.keys.plan(run_id))
            if raw is None:
                raise RunNotFound(run_id)
            plan = Plan.from_dict(json.loads(raw))
            if len(self._plans) > 256:
                self._plans.clear()
            self._plans[run_id] = plan
        return plan

    def set_run_fields(self, run_id: str, **fields: Any) -> None:
        self.r.hset(self.keys.run(run_id), mapping={k: _field(v) for k, v in fields.items()})

    # ---- steps -----------------------------------------------------------------------------
    def statuses(self, run_id: str) -> dict[str, str]:
        return _decode_hash(self.r.hgetall(self.keys.statuses(run_id)))

    def step(self, run_id: str, step_id: str) -> dict[str, Any]:
        """One step's record and status, read together (one transaction: never a status without its detail)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(self.keys.step(run_id, step_id))
        pipe.hget(self.keys.statuses(run_id), step_id)
        detail, status = pipe.execute()
        raw = _decode_hash(detail)
        if status is None:
            if not self.exists(run_id):
                raise RunNotFound(run_id)
            raise StepNotFound(run_id, step_id)
        return _parse_step(step_id, _s(status), raw)

    def steps(self, run_id: str, step_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(step_ids)
        pipe = self.r.pipeline(transaction=True)
        for sid in ids:
            pipe.hgetall(self.keys.step(run_id, sid))
        pipe.hgetall(self.keys.statuses(run_id))
        *details, raw_statuses = pipe.execute()
        statuses = _decode_hash(raw_statuses)
        return {sid: _parse_step(sid, statuses.get(sid, "pending"), _decode_hash(raw))
                for sid, raw in zip(ids, details, strict=True)}

    def results(self, run_id: str, step_ids: list[str]) -> list[tuple[str | None, Any]]:
        """(status, result) of each step, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for sid in step_ids:
            pipe.hget(self.keys.statuses(run_id), sid)
            pipe.hget(self.keys.step(run_id, sid), "result")
        raw = pipe.execute()
        out: list[tuple[str | None, Any]] = []
        for i in range(0, len(raw), 2):
            status = _s(raw[i]) if raw[i] is not None else None
            out.append((status, json.loads(raw[i + 1]) if raw[i + 1] else None))
        return out

    def claim(self, run_id: str, step_id: str, worker: str, lease: float = LEASE_SECONDS) -> Claim:
        """Make this worker the step's executor, or say why not (done, busy, early, not_ready, run_*, lost_lock)."""
        k = self.keys
        plan = self.plan(run_id)
        cleanup = step_id in plan.cleanup
        now = self.clock()
        res = self._claim(
            keys=[k.run(run_id), k.statuses(run_id), k.remaining(run_id), k.step(run_id, step_id),
                  k.events(run_id), k.leases, k.timers, *self.lock_keys(plan)],
            args=[step_id, now, lease, worker, k.member(run_id, step_id), "1" if cleanup else "0", run_id],
        )
        parts = [_s(x) for x in res]
        if parts[0] == "lost_lock":
            return Claim("lost_lock", lost_lock=parts[1][len(k.prefix) + len("lock:"):])
        if parts[0] == "orphaned":
            return Claim("orphaned", start_cleanup=parts[1] == "start_cleanup")
        if parts[0] != "ok":
            return Claim(parts[0])
        self._replicated(f"the claim of step {step_id} (run {run_id})")
        decision = json.loads(parts[4]) if parts[4] else None
        return Claim("ok", parts[1], int(parts[2]), json.loads(parts[3]), decision,
                     takeover=parts[5] == "takeover", at=time.monotonic(), until=now + lease)

    def complete(self, run_id: str, step_id: str, token: str, status: Status, *, result: Any = None,
                 error: str = "", memory: Mapping[str, Any] | None = None) -> Completion | None:
        """Record the outcome; return what it released, or None when this execution was stale."""
        k = self.keys
        plan = self.plan(run_id)
        step = plan.steps.get(step_id) or plan.cleanup[step_id]
        budget = step.budget if status == Status.FAILED else ""
        encoded = encode_result(result)
        res = self._complete(
            keys=[k.run(run_id), k.statuses(run_id), k.remaining(run_id), k.step(run_id, step_id),
                  k.events(run_id), k.leases, k.timers],
            args=[step_id, token, status.value, encoded, error[:2000], self.clock(), k.member(run_id, step_id),
                  encode_memory(memory), "1" if step.cleanup else "0", budget, plan.budgets.get(budget, 0),
                  run_id, self.redeliver, *step.succ],
        )
        self._replicated(f"the outcome of step {step_id} (run {run_id})")
        return _completion(res)

    def skip(self, run_id: str, step_id: str, reason: str) -> Completion | None:
        """pending -> skipped (counts as done); used for the rest of a for_each item that failed within budget."""
        k = self.keys
        step = self.plan(run_id).steps[step_id]
        res = self._skip(keys=[k.run(run_id), k.statuses(run_id), k.remaining(run_id), k.step(run_id, step_id),
                               k.events(run_id), k.timers],
                         args=[step_id, self.clock(), reason, run_id, self.redeliver, *step.succ])
        return _completion(res)

    def park(self, run_id: str, step_id: str, token: str, *, kind: str, wake_at: float, reason: str,
             memory: Mapping[str, Any]) -> str:
        """running -> waiting until ``wake_at`` (a poll, a retry backoff or an approval). Returns "parked",
        "stale" (not this execution's any more), or, when the run failed or was cancelled meanwhile,
        "stopped" (the step is cancelled instead) or "start_cleanup" (and it was the run's last active step)."""
        k = self.keys
        step = self.plan(run_id).cleanup.get(step_id)
        res = self._wait(
            keys=[k.statuses(run_id), k.step(run_id, step_id), k.events(run_id), k.leases, k.timers, k.run(run_id)],
            args=[step_id, token, kind, wake_at, reason[:500], encode_memory(memory), self.clock(),
                  k.member(run_id, step_id), "1" if step is not None else "0"],
        )
        return {0: "stale", 1: "parked", 2: "start_cleanup", 3: "stopped"}[int(res)]

    def heartbeat(self, run_id: str, step_id: str, token: str, memory: Mapping[str, Any],
                  lease: float = LEASE_SECONDS, until: float | None = None) -> bool:
        """Renew the lease of this execution (``token``) until ``until`` (default: now + ``lease``) and save its
        memory; False when the step is no longer this execution's."""
        k = self.keys
        until = self.clock() + lease if until is None else until
        return bool(self._heartbeat(keys=[k.step(run_id, step_id), k.leases],
                                    args=[token, until, k.member(run_id, step_id), encode_memory(memory)]))

    def release_worker(self, worker: str) -> list[tuple[str, str]]:
        """End the leases of every step ``worker`` (a ``host:pid`` that is known to be dead) was running, so
        they are taken over now instead of when the lease runs out. Returns the (run, step) released."""
        res = self._release_worker(keys=[self.keys.leases], args=[self.keys.prefix, worker, self.clock()])
        return [Keys.split_member(_s(m)) for m in res]

    def due_timers(self, limit: int = 500) -> list[tuple[str, str]]:
        return self._pop_due_from(self.keys.timers, limit)

    def expired_leases(self, limit: int = 500) -> list[tuple[str, str]]:
        return self._pop_due_from(self.keys.leases, limit)

    def _pop_due_from(self, zset: str, limit: int) -> list[tuple[str, str]]:
        res = self._pop_due(keys=[zset], args=[self.clock(), TIMER_REARM_SECONDS, limit])
        return [Keys.split_member(_s(m)) for m in res]

    def forget_timers(self, run_id: str, step_ids: Iterable[str]) -> None:
        """Drop timers and leases of steps of a run that no longer exists (else they re-arm forever)."""
        members = [self.keys.member(run_id, sid) for sid in step_ids]
        if members:
            pipe = self.r.pipeline(transaction=False)
            pipe.zrem(self.keys.timers, *members)
            pipe.zrem(self.keys.leases, *members)
            pipe.execute()

    def run_status(self, run_id: str) -> Status | None:
        raw = self.r.hget(self.keys.run(run_id), "status")
        return Status(_s(raw)) if raw is not None else None

    def wake_now(self, run_id: str, step_id: str) -> None:
        k = self.keys
        self.r.hset(k.step(run_id, step_id), "wake_at", 0)
        self.r.zadd(k.timers, {k.member(run_id, step_id): 0})

    # ---- logs, events, audit -----------------------------------------------------------------
    def log(self, run_id: str, step_id: str, level: str, message: str) -> None:
        now = self.clock()
        line = message if len(message) <= MAX_LOG_LINE else message[:MAX_LOG_LINE] + "…"
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(self.keys.log(run_id, step_id), json.dumps({"t": now, "level": level, "msg": line}))
        pipe.xadd(self.keys.events(run_id), {"type": "log", "step": step_id, "level": level, "msg": line, "t": now})
        pipe.execute()

    def logs(self, run_id: str, step_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.keys.log(run_id, step_id), 0, -1)]

    def event(self, run_id: str, **fields: Any) -> None:
        self.r.xadd(self.keys.events(run_id), {k: _field(v) for k, v in {**fields, "t": self.clock()}.items()})

    def events(self, run_id: str, after: str = "0-0", block_ms: int | None = None,
               count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        key = self.keys.events(run_id)
        if block_ms is None:
            raw = self.r.xrange(key, min=f"({after}" if after != "0-0" else "-", count=count)
            return [(_s(i), _decode_hash(f)) for i, f in raw]
        res = self.r.xread({key: after}, count=count, block=block_ms)
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, entries in res or []:
            out.extend((_s(i), _decode_hash(f)) for i, f in entries)
        return out

    def audit(self, **fields: Any) -> None:
        self.r.xadd(self.keys.audit, {k: _field(v) for k, v in {**fields, "t": self.clock()}.items()})

    def audit_log(self, count: int = 100) -> list[dict[str, str]]:
        return [_decode_hash(f) | {"id": _s(i)} for i, f in self.r.xrevrange(self.keys.audit, count=count)]

    # ---- cancel, resume, approvals -------------------------------------------------------------
    def cancel(self, run_id: str, by: str) -> tuple[list[str], bool]:
        """Cancel a run: pending and waiting steps become cancelled. Returns the steps still running and
        whether the cleanup phase starts now (it starts when the last running step has stopped otherwise)."""
        k = self.keys
        self.run(run_id)
        plan = self.plan(run_id)
        res = self._cancel(keys=[k.run(run_id), k.statuses(run_id), k.events(run_id), k.timers],
                           args=[self.clock(), by, run_id, *plan.cleanup])
        parts = [_s(x) for x in res]
        if parts[0] != "ok":
            raise InvalidTransition(f"run {run_id} is {parts[1]}; only an active or failed run can be cancelled")
        return parts[2:], parts[1] == "start_cleanup"

    def resume(self, run_id: str, by: str) -> list[str]:
        """failed/cancelled -> running: failed and cancelled steps go back to pending (cleanup steps too, so they
        run again after a later failure); counters are recomputed; returns the steps ready now."""
        k = self.keys
        record = self.run(run_id)
        if not can_run(Status(record["status"]), Status.RUNNING) or record["status"] == Status.PENDING:
            raise InvalidTransition(f"run {run_id} is {record['status']}; only a failed or cancelled run can be resumed")
        if record.get("cleanup") == "running":
            raise InvalidTransition(f"run {run_id} is still running its cleanup steps; resume when they are done")
        plan = self.plan(run_id)
        with self.r.lock(k.lock(f"resume:{run_id}"), timeout=30, blocking_timeout=10):
            statuses = self.statuses(run_id)
            if any(s == Status.RUNNING for s in statuses.values()):
                raise InvalidTransition(f"run {run_id} still has running steps; wait for them to finish, then resume")
            busy = self.acquire_locks(run_id, plan)
            if busy:
                raise LockHeld(busy[0], busy[1])
            # failed and cancelled steps go back to pending (the status table's resume transitions); cleanup
            # steps are re-armed whatever they reached, so they run again after a later failure
            reset = [sid for sid, s in statuses.items()
                     if can_step(Status(s), Status.PENDING) or (sid in plan.cleanup and s != Status.PENDING)]
            for sid in reset:
                statuses[sid] = Status.PENDING.value
            every = {**plan.steps, **plan.cleanup}
            remaining = {sid: sum(1 for d in every[sid].deps if statuses.get(d) not in DONE_OK or sid in plan.cleanup)
                         for sid, s in statuses.items() if s == Status.PENDING}
            ready = [sid for sid, n in remaining.items() if n == 0 and sid in plan.steps]
            waiting = [sid for sid in plan.steps if statuses[sid] == Status.WAITING]
            n_done = sum(1 for sid in plan.steps if statuses[sid] in DONE_OK)
            pipe = self.r.pipeline(transaction=True)
            if reset:
                pipe.hset(k.statuses(run_id), mapping={sid: Status.PENDING.value for sid in reset})
                for sid in reset:
                    pipe.hset(k.step(run_id, sid), "status", Status.PENDING.value)
            if remaining:
                pipe.hset(k.remaining(run_id), mapping=remaining)
            if waiting:
                pipe.zadd(k.timers, {k.member(run_id, sid): 0 for sid in waiting})
            if ready:
                pipe.zadd(k.timers, {k.member(run_id, sid): self.clock() + self.redeliver for sid in ready})
            pipe.hset(k.run(run_id), mapping={"status": Status.RUNNING.value, "reason": "", "n_failed": 0,
                                              "n_done": n_done, "n_active": len(waiting), "n_cleanup_done": 0,
                                              "resumed_by": by})
            pipe.hdel(k.run(run_id), "finished", "cleanup", *[f"budget:{b}" for b in plan.budgets])
            pipe.xadd(k.events(run_id), {"type": "run", "status": "running", "kind": "resume", "by": by, "t": self.clock()})
            pipe.execute()
        return ready

    def record_decision(self, run_id: str, step_id: str, decision: Mapping[str, Any]) -> bool:
        """Store an approval decision once; a second decision is ignored (returns False)."""
        key = self.keys.step(run_id, step_id)
        first = bool(self.r.hsetnx(key, "decision", json.dumps(decision)))
        if first:
            self.event(run_id, type="approval", step=step_id, **{k: str(v) for k, v in decision.items()})
        self._replicated(f"the decision on step {step_id} (run {run_id})", strict=False)
        return first

    def decision(self, run_id: str, step_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.keys.step(run_id, step_id), "decision")
        return json.loads(raw) if raw else None


def _completion(res: list[Any]) -> Completion | None:
    parts = [_s(x) for x in res]
    if parts[0] == "stale":
        return None
    return Completion(parts[2:], frozenset(f for f in parts[1].split(",") if f))


def encode_result(result: Any) -> str:
    encoded = json.dumps(result, default=str, separators=(",", ":"))
    if len(encoded) > MAX_RESULT_BYTES:
        raise ValueError(f"step result is {len(encoded)} bytes; the limit is {MAX_RESULT_BYTES}: return less")
    return encoded


def encode_memory(memory: Mapping[str, Any] | None) -> str:
    """A step's saved progress as JSON. An action that keeps something JSON cannot hold (a set, an object)
    gets its string form back after a takeover rather than a crash that would cost the step its lease."""
    return json.dumps(memory or {}, default=str, separators=(",", ":"))


def _field(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, default=str)


_COUNTS = ("n_steps", "n_done", "n_failed", "n_active", "n_cleanup", "n_cleanup_done")
_NUMERIC = {"created", "started", "finished", "attempt", "wake_at", "lease_until", "token", "poll_late", *_COUNTS}
_JSON = {"params", "launched_by_detail", "result", "memory", "decision", "locks"}
_BOOL = {"dry_run"}


def _parse_record(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NUMERIC:
            out[key] = float(value) if value else None
        elif key in _JSON:
            out[key] = json.loads(value) if value else None
        elif key in _BOOL:
            out[key] = value not in ("", "0", "False", "false")
        else:
            out[key] = value
    for key in _COUNTS:
        if out.get(key) is not None:
            out[key] = int(out[key])
    return out


def _parse_step(step_id: str, status: str, raw: dict[str, str]) -> dict[str, Any]:
    rec = _parse_record(raw)
    rec["id"] = step_id
    rec["status"] = status
    rec["attempt"] = int(rec.get("attempt") or 0)
    return rec
