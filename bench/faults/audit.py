"""What the store kept: snapshots compared across faults (nothing may shrink or go back in time), and the
final audit of every run against what its shape must produce."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults.kinds import Injected
from bench.faults.shapes import IDEMPOTENT, TERMINAL_RUN, TERMINAL_STEP, Launched, Shape
from engine import templating
from engine.celery_app import QUICK_QUEUE
from engine.store import Store

RUN_ORDER = {"pending": 0, "waiting": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
"""A run's status only moves forward along this order."""


def _text(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


# ---- snapshots ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSnap:
    status: str
    n_done: int
    xlen: int
    last_id: str
    settled: dict[str, str]


def snapshot(store: Store, runs: list[Launched]) -> dict[str, RunSnap]:
    k = store.keys
    pipe = store.r.pipeline(transaction=False)
    for run in runs:
        pipe.hgetall(k.run(run.run_id))
        pipe.hgetall(k.statuses(run.run_id))
        pipe.xlen(k.events(run.run_id))
        pipe.xrevrange(k.events(run.run_id), count=1)
    raw = pipe.execute()
    out: dict[str, RunSnap] = {}
    for i, run in enumerate(runs):
        rec, statuses, xlen, last = raw[4 * i: 4 * i + 4]
        rec, statuses = _text(rec), _text(statuses)
        out[run.run_id] = RunSnap(rec.get("status", ""), int(rec.get("n_done", 0)), int(xlen),
                                  last[0][0].decode() if last else "",
                                  {s: st for s, st in statuses.items() if st in TERMINAL_STEP})
    return out


def regressions(before: dict[str, RunSnap], after: dict[str, RunSnap]) -> list[str]:
    """Every way a record was lost or went back in time between two snapshots."""
    lost: list[str] = []
    for run_id, b in before.items():
        a = after.get(run_id)
        if a is None or not a.status:
            lost.append(f"{run_id}: run record gone")
            continue
        if RUN_ORDER.get(a.status, -1) < RUN_ORDER.get(b.status, -1) or (
                b.status in TERMINAL_RUN and a.status != b.status):
            lost.append(f"{run_id}: run went back in time: {b.status} -> {a.status}")
        if a.n_done < b.n_done:
            lost.append(f"{run_id}: n_done went back {b.n_done} -> {a.n_done}")
        if a.xlen < b.xlen:
            lost.append(f"{run_id}: event stream shrank {b.xlen} -> {a.xlen}")
        lost.extend(f"{run_id}: step {sid} went back {st} -> {a.settled.get(sid, 'not finished')}"
                    for sid, st in b.settled.items() if a.settled.get(sid) != st)
    return lost


def missing_last_events(store: Store, before: dict[str, RunSnap]) -> list[str]:
    k = store.keys
    return [f"{run_id}: event {snap.last_id} gone" for run_id, snap in before.items()
            if snap.last_id and not store.r.xrange(k.events(run_id), min=snap.last_id, max=snap.last_id)]


# ---- the final audit ------------------------------------------------------------------------------

@dataclass
class StepReport:
    takeovers: int = 0
    duplicates: int = 0
    """Executions that started after the step had finished, or a second recorded outcome."""
    starts: list[tuple[int, float]] = field(default_factory=list)
    """(attempt, wall time) of every execution that started (from the 'running' events)."""

    @property
    def reexecuted(self) -> bool:
        return self.takeovers + self.duplicates > 0


@dataclass
class RunReport:
    run: Launched
    status: str
    reason: str
    verdict: str = ""
    problems: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    steps: dict[str, StepReport] = field(default_factory=dict)
    reexecuted_safe: int = 0
    repeated_effects: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    """Steps executed again after they had finished: '<step> (<action>) x<n>'."""
    final: dict[str, tuple[str, str]] = field(default_factory=dict)
    """step -> (status, error) at the end."""


def all_events(store: Store, run_id: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    last = "0-0"
    while batch := store.events(run_id, after=last, count=1000):
        out.extend(ev for _, ev in batch)
        last = batch[-1][0]
    return out


def step_histories(events: list[dict[str, str]]) -> dict[str, StepReport]:
    reports: dict[str, StepReport] = {}
    state: dict[str, str] = {}
    for ev in events:
        if ev.get("type") != "step":
            continue
        sid, status = ev["step"], ev["status"]
        rep = reports.setdefault(sid, StepReport())
        previous = state.get(sid, "")
        if status == "running":
            rep.starts.append((int(ev.get("attempt") or 0), float(ev.get("t") or 0)))
            if ev.get("kind") == "takeover":
                rep.takeovers += 1
            if previous in TERMINAL_STEP:
                rep.duplicates += 1
        elif status in TERMINAL_STEP and previous in TERMINAL_STEP:
            rep.duplicates += 1
        state[sid] = status
    return reports


def phase_files(store: Store, run: Launched) -> dict[str, list[Path]]:
    """step -> the side-effect files of its test.phases action."""
    plan = store.plan(run.run_id)
    out: dict[str, list[Path]] = {}
    for sid, step in plan.steps.items():
        if step.action == "test.phases":
            directory = Path(str(templating.render(step.args["directory"], dict(step.scope))))
            out[sid] = [directory / f"phase-{i}" for i in range(int(step.args.get("count", 3)))]
    return out


def audit_records(store: Store, run: Launched, indexed: set[str]) -> list[str]:
    """Lost state: the run must be listed, and have its plan, every step's status, and a detail record for
    every step that started."""
    k, rid = store.keys, run.run_id
    if rid not in indexed:
        return [f"{rid}: missing from the runs index"]
    if not store.exists(rid):
        return [f"{rid}: run record missing"]
    if not store.r.exists(k.plan(rid)):
        return [f"{rid}: plan missing"]
    plan = store.plan(rid)
    statuses = store.statuses(rid)
    lost = [f"{rid}: no status for step {sid}" for sid in plan.steps if sid not in statuses]
    for sid, st in statuses.items():
        if st not in ("pending", "skipped") and not store.r.hexists(k.step(rid, sid), "started"):
            lost.append(f"{rid}: step {sid} is {st} but its record is missing")
    events = store.r.xrange(k.events(rid), count=1)
    if not events or _text(events[0][1]).get("status") != "pending":
        lost.append(f"{rid}: event stream lost its beginning")
    return lost


def audit_run(store: Store, run: Launched, indexed: set[str]) -> RunReport:
    record = store.run(run.run_id) if store.exists(run.run_id) else {"status": "missing"}
    rep = RunReport(run, str(record["status"]), str(record.get("reason") or ""))
    rep.lost = audit_records(store, run, indexed)
    if rep.lost:
        rep.verdict = "lost"
        return rep
    statuses = store.statuses(run.run_id)
    plan = store.plan(run.run_id)
    rep.steps = step_histories(all_events(store, run.run_id))
    details = store.steps(run.run_id, list(statuses))
    rep.final = {sid: (st, str(details.get(sid, {}).get("error") or "")) for sid, st in statuses.items()}
    for sid, files in phase_files(store, run).items():
        counts = [len(f.read_text().splitlines()) if f.exists() else 0 for f in files]
        rep.repeated_effects.extend(f"{sid}/{f.name} x{n}" for f, n in zip(files, counts, strict=True) if n > 1)
        if statuses[sid] == "succeeded" and 0 in counts:
            rep.problems.append(f"step {sid} succeeded without doing every phase: {counts}")
    for sid, step_rep in rep.steps.items():
        action = plan.steps[sid].action if sid in plan.steps else plan.cleanup[sid].action
        if step_rep.duplicates:
            rep.duplicated.append(f"{sid} ({action}) x{step_rep.duplicates}")
        if step_rep.reexecuted:
            safe = action in IDEMPOTENT or not any(e.startswith(f"{sid}/") for e in rep.repeated_effects)
            rep.reexecuted_safe += int(safe)
    rep.problems.extend(f"step {sid} still running" for sid, st in statuses.items() if st == "running")
    rep.verdict = verdict(run.shape, rep, statuses)
    return rep


def verdict(shape: Shape, rep: RunReport, statuses: dict[str, str]) -> str:
    if rep.status not in TERMINAL_RUN or any(st == "running" for st in statuses.values()):
        return "stuck"
    if not shape.fails_at:
        bad = {sid: st for sid, st in statuses.items() if st != "succeeded"}
        if rep.status != "succeeded" or bad:
            rep.problems.append(f"expected success; steps not succeeded: {bad}")
            return "wrong"
        return "ok"
    want = f"step {shape.fails_at} failed: planned failure (attempt "
    ran = [sid for sid in shape.never if statuses.get(sid) != "pending"]
    if rep.status != "failed" or not rep.reason.startswith(want) or statuses.get(shape.fails_at) != "failed" or ran:
        rep.problems.append(f"expected failed with '{want}…' and {list(shape.never)} never run; got {rep.status}: "
                            f"{rep.reason!r}, steps {statuses}")
        return "wrong"
    return "failed_ok"


def hit_evidence(fault: Injected, reports: dict[str, RunReport]) -> list[str]:
    """What the store shows became of each step a kill hit: executed again under a later attempt, or ended
    by the run's end. Empty strings never; one line per hit, starting 'confirmed' or 'UNCONFIRMED'."""
    out = []
    for hit in fault.hits:
        rep = reports.get(hit.run_id)
        step = rep.steps.get(hit.step_id) if rep else None
        status, error = rep.final.get(hit.step_id, ("?", "")) if rep else ("?", "")
        later = [(a, t) for a, t in (step.starts if step else []) if a > hit.attempt]
        if later:
            after = ""
            if fault.wall and later[0][1]:
                fault.recovered.append(later[0][1] - fault.wall)
                after = f" {later[0][1] - fault.wall:.1f}s after the kill"
            out.append(f"confirmed: {hit.run_id}/{hit.step_id} ran again as attempt {later[0][0]}{after} and "
                       f"ended {status}")
        elif status in TERMINAL_STEP and "worker was lost" in error:
            out.append(f"confirmed: {hit.run_id}/{hit.step_id} ended {status}: {error}")
        else:
            out.append(f"UNCONFIRMED: {hit.run_id}/{hit.step_id} attempts {[a for a, _ in step.starts] if step else []}, "
                       f"ended {status} {error!r}")
    return out


def broker_messages(store: Store) -> dict[tuple[str, str], str]:
    """(run, step) -> where its step message sits in the broker: the queue, or a consumer's unacked hash."""
    where: dict[tuple[str, str], str] = {}
    raw = [(m, "queued") for m in store.r.lrange(QUICK_QUEUE, 0, -1)]
    raw += [(json.loads(m)[0], "unacked") for m in store.r.hvals("unacked")]
    for message, place in raw:
        message = json.loads(message) if isinstance(message, bytes | str) else message
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        where[(kwargs["run_id"], kwargs["step_id"])] = place
    return where


def diagnose(store: Store, run_id: str, broker: dict[tuple[str, str], str]) -> list[str]:
    """Why a run did not end: its steps that are ready but unclaimed, or running without a live worker."""
    k, now = store.keys, time.time()
    remaining = _text(store.r.hgetall(k.remaining(run_id)))
    out: list[str] = []
    for sid, st in store.statuses(run_id).items():
        if st == "pending" and remaining.get(sid) == "0":
            timer = store.r.zscore(k.timers, k.member(run_id, sid))
            out.append(f"{sid} is ready but was never claimed; its message is "
                       f"{broker.get((run_id, sid), 'nowhere')}, timer {timer}")
        elif st == "running":
            detail = _text(store.r.hgetall(k.step(run_id, sid)))
            lease = store.r.zscore(k.leases, k.member(run_id, sid))
            out.append(f"{sid} running on {detail.get('worker')}, lease_until {float(detail.get('lease_until') or 0) - now:+.1f}s, "
                       f"lease entry {'present' if lease else 'absent'}")
    return out
