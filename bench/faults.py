"""Fault-injection run: a batch of runbook runs under real faults, then an audit of what the store kept.

``.venv/bin/python -m bench.faults [--runs 20] [--faults N] [--seed S]`` starts its own redis-server (AOF,
``appendfsync always``) and two ``hotswap worker`` processes (concurrency 2, 2 s leases, 10 s redelivery of
released steps nobody claimed), launches runs of
a few runbook shapes, and while they run injects, in a seeded random order and at random moments:

- ``worker_sigkill``: SIGKILL a whole worker (main process and pool children) while it executes a step;
- ``child_sigkill``: SIGKILL one prefork pool child executing a step (Celery's reject-on-worker-lost path);
- ``redis_restart``: SIGKILL redis-server and start it again on the same port and data directory;
- ``workers_restart``: warm-stop every worker (SIGTERM to its main process) and start them again;
- ``cli_kill``: SIGKILL a ``hotswap logs RUN --follow`` process;
- ``duplicate_delivery``: publish again steps that are running, waiting or already finished.

Whatever was killed is started again at once. Each fault is bracketed by a snapshot of every run so a
record that shrank or went back in time is caught where it happened. When every run has ended (bounded
time) each one is audited against what its shape must produce; the exit code is 1 when a record was lost,
a run ended wrongly or got stuck, or a non-idempotent side effect was repeated.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis

WORKER_ENV = {"HOTSWAP_LEASE_SECONDS": "2", "HOTSWAP_REDELIVER_SECONDS": "10",
              "HOTSWAP_ACTION_MODULES": "tests.support.fault_actions"}
"""Short leases and redelivery so a batch recovers in seconds; this process (it launches runs) uses them too."""
for _name, _value in WORKER_ENV.items():
    os.environ.setdefault(_name, _value)

from actions import default_registry  # noqa: E402 - after the environment is set: engine.keys reads it on import
from engine import templating  # noqa: E402 - after the environment is set: engine.keys reads it on import
from engine.celery_app import QUICK_QUEUE, Runtime, make_app, runtime  # noqa: E402 - after the environment is set: engine.keys reads it on import
from engine.service import Identity, Service  # noqa: E402 - after the environment is set: engine.keys reads it on import
from engine.store import Store  # noqa: E402 - after the environment is set: engine.keys reads it on import
from tests.support.redis_server import RedisServer  # noqa: E402 - after the environment is set: engine.keys reads it on import
from tests.support.workers import ROOT, Worker  # noqa: E402 - after the environment is set: engine.keys reads it on import

FAULTS = ("worker_sigkill", "child_sigkill", "redis_restart", "workers_restart", "cli_kill", "duplicate_delivery")
TERMINAL_RUN = {"succeeded", "failed", "cancelled"}
TERMINAL_STEP = {"succeeded", "failed", "skipped", "cancelled"}
IDEMPOTENT = {"core.echo", "core.wait_until", "core.fail"}
"""Actions that may run twice harmlessly; test.phases is not, and must rely on its saved progress."""

T = TypeVar("T")


# ---- runbook shapes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    name: str
    yaml: str
    """The runbook; DIR is replaced by the run's own side-effect directory."""
    fails_at: str = ""
    """The step that must fail (and end the run with its reason); empty when the run must succeed."""
    never: tuple[str, ...] = ()
    """Steps after the failing one: they must never have run."""


SHAPES = (
    Shape("sequence", """
name: fault-sequence
steps:
  - id: prepare
    action: core.echo
    with: {message: start}
  - id: flaky
    action: core.fail
    with: {message: transient, times: 1}
    retry: {attempts: 3, backoff: 0.2, jitter: false}
  - id: phases
    action: test.phases
    with: {directory: "DIR/phases", count: 4, pause: 0.7}
  - id: after
    action: core.echo
    with: {message: "{{ steps.phases.result.done | join(',') }}"}
"""),
    Shape("failing", """
name: fault-failing
steps:
  - parallel:
      - id: slow
        action: test.phases
        with: {directory: "DIR/slow", count: 3, pause: 0.8}
      - steps:
          - id: warmup
            action: core.echo
            with: {message: warmup}
          - id: boom
            action: core.fail
            with: {message: planned failure}
  - id: never
    action: core.echo
    with: {message: unreachable}
""", fails_at="boom", never=("never",)),
    Shape("parallel", """
name: fault-parallel
steps:
  - parallel:
      - id: left
        action: test.phases
        with: {directory: "DIR/left", count: 3, pause: 0.8}
      - steps:
          - id: poll
            action: core.wait_until
            with: {condition: "{{ poll >= 5 }}", interval: 0.4}
          - id: right
            action: core.echo
            with: {message: right}
  - id: join
    action: core.echo
    with: {message: "{{ steps.left.result.done | length }} {{ steps.right.result.message }}"}
"""),
    Shape("fan_out", """
name: fault-fanout
steps:
  - id: fan
    for_each: "{{ range(5) | list }}"
    as: n
    concurrency: 2
    action: test.phases
    with: {directory: "DIR/item-{{ n }}", count: 2, pause: 0.6}
  - id: total
    action: core.echo
    with: {message: "{{ steps.fan.results | length }} items"}
"""),
    Shape("wait", """
name: fault-wait
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 10 }}", interval: 0.5}
  - id: done
    action: core.echo
    with: {message: done}
"""),
)


# ---- the processes this run owns --------------------------------------------------------------------

class Cluster:
    """The redis-server and the worker slots; each restart of a slot is a new worker incarnation."""

    def __init__(self, work: Path, n_workers: int) -> None:
        self.work = work
        self.redis = RedisServer(work / "redis")
        self.slots = [f"w{i + 1}" for i in range(n_workers)]
        self.workers: dict[str, Worker] = {}
        self.incarnations: Counter[str] = Counter()

    def start(self) -> None:
        self.redis.start()
        for slot in self.slots:
            self.start_worker(slot)

    def start_worker(self, slot: str) -> None:
        self.incarnations[slot] += 1
        name = f"{slot}-{self.incarnations[slot]}"
        self.workers[slot] = Worker(self.redis.url, self.work / "workers" / slot, concurrency=2, name=name,
                                    env=WORKER_ENV).start()

    def pids(self, slot: str) -> set[int]:
        w = self.workers[slot]
        return {w.proc.pid, *w.children()} if w.proc else set()

    def slot_of(self, pid: int) -> str | None:
        return next((slot for slot in self.slots if pid in self.pids(slot)), None)

    def warm_stop(self, slot: str, timeout: float = 30) -> bool:
        """SIGTERM the main process (Celery's warm shutdown: finish running tasks); False if it had to be killed."""
        w = self.workers[slot]
        if w.proc is None or w.proc.poll() is not None:
            return True
        w.proc.send_signal(signal.SIGTERM)
        try:
            w.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            w.kill()
            return False

    def revive(self) -> list[str]:
        """Restart, as a supervisor would, any worker that exited without being told to; say why it died."""
        died: list[str] = []
        for slot, w in list(self.workers.items()):
            if w.proc is not None and w.proc.poll() is not None:
                died.append(f"{w.name} exited with {w.proc.returncode}: {last_critical(w.log)}")
                w.proc = None
                self.start_worker(slot)
        return died

    def stop(self) -> None:
        for w in self.workers.values():
            w.stop()
        self.redis.stop()


def last_critical(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "CRITICAL" in ln or "Unrecoverable" in ln]
    return lines[-1].split("] ", 1)[-1] if lines else "no CRITICAL line in its log"


def alive(pid: int) -> bool:
    """True for a live process (a killed pool child stays listed as a zombie until the pool reaps it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def patient(fn: Callable[[], T], timeout: float = 30) -> T:
    """Call fn, retrying while Redis is unreachable (it is being restarted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ---- runs and snapshots ---------------------------------------------------------------------------

@dataclass
class Launched:
    run_id: str
    shape: Shape
    effects: Path
    at: float


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


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def regressions(before: dict[str, RunSnap], after: dict[str, RunSnap]) -> list[str]:
    """Every way a record went back in time between two snapshots (each one is a lost state record)."""
    lost: list[str] = []
    for run_id, b in before.items():
        a = after[run_id]
        if not a.status:
            lost.append(f"{run_id}: run record gone")
            continue
        if b.status in TERMINAL_RUN and a.status != b.status:
            lost.append(f"{run_id}: run status {b.status} -> {a.status}")
        if a.n_done < b.n_done:
            lost.append(f"{run_id}: n_done {b.n_done} -> {a.n_done}")
        if a.xlen < b.xlen:
            lost.append(f"{run_id}: event stream shrank {b.xlen} -> {a.xlen}")
        lost.extend(f"{run_id}: step {sid} {st} -> {a.settled.get(sid, 'not finished')}"
                    for sid, st in b.settled.items() if a.settled.get(sid) != st)
    return lost


def missing_last_events(store: Store, before: dict[str, RunSnap]) -> list[str]:
    k = store.keys
    return [f"{run_id}: event {snap.last_id} gone" for run_id, snap in before.items()
            if snap.last_id and not store.r.xrange(k.events(run_id), min=snap.last_id, max=snap.last_id)]


# ---- faults ------------------------------------------------------------------------------------

@dataclass
class Injected:
    kind: str
    at: float
    detail: str
    lost: list[str] = field(default_factory=list)


class Injector:
    def __init__(self, cluster: Cluster, rt: Runtime, rng: random.Random, runs: list[Launched]) -> None:
        self.cluster, self.rt, self.store, self.rng, self.runs = cluster, rt, rt.store, rng, runs
        self.applied = time.monotonic()
        """When the last fault actually struck (after choosing its target)."""

    def strike(self) -> None:
        self.applied = time.monotonic()

    def inject(self, kind: str) -> str:
        handler: Callable[[], str] = getattr(self, kind)
        return handler()

    def running_steps(self) -> list[tuple[str, str, int]]:
        """(run, step, pid of the pool process) of steps being executed now under a live lease."""
        now = time.time()
        out: list[tuple[str, str, int]] = []
        for run in self.runs:
            for sid, st in self.store.statuses(run.run_id).items():
                if st != "running":
                    continue
                detail = _text(self.store.r.hgetall(self.store.keys.step(run.run_id, sid)))
                if float(detail.get("lease_until") or 0) > now and ":" in detail.get("worker", ""):
                    out.append((run.run_id, sid, int(detail["worker"].rsplit(":", 1)[1])))
        return out

    def busy_target(self, timeout: float = 6) -> tuple[str, str, int] | None:
        """A step in execution on one of our workers, waiting a little for one if none is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [t for t in self.running_steps() if self.cluster.slot_of(t[2]) and alive(t[2])]
            if live:
                return self.rng.choice(live)
            time.sleep(0.1)
        return None

    def worker_sigkill(self) -> str:
        target = self.busy_target()
        slot = self.cluster.slot_of(target[2]) if target else None
        slot = slot or self.rng.choice(self.cluster.slots)
        self.strike()
        self.cluster.workers[slot].kill()
        self.cluster.start_worker(slot)
        where = f"mid-step {target[0]}/{target[1]}" if target else "idle"
        return f"{slot} process group, {where}; restarted"

    def child_sigkill(self) -> str:
        target = self.busy_target()
        if target is None:
            slot = self.rng.choice(self.cluster.slots)
            children = self.cluster.workers[slot].children()
            if not children:
                return f"{slot} has no pool child: nothing killed"
            self.strike()
            os.kill(self.rng.choice(children), signal.SIGKILL)
            return f"idle pool child of {slot}"
        self.strike()
        os.kill(target[2], signal.SIGKILL)
        return f"pool child {target[2]} mid-step {target[0]}/{target[1]} (the pool replaces it)"

    def redis_restart(self) -> str:
        self.strike()
        started = time.monotonic()
        self.cluster.redis.kill()
        self.cluster.redis.start()
        return f"SIGKILL + restart, down {time.monotonic() - started:.2f}s"

    def workers_restart(self) -> str:
        self.strike()
        clean = [self.cluster.warm_stop(slot) for slot in self.cluster.slots]
        for slot in self.cluster.slots:
            self.cluster.start_worker(slot)
        return "warm SIGTERM to every worker; restarted" + ("" if all(clean) else " (one needed SIGKILL)")

    def cli_kill(self) -> str:
        active = [r for r in self.runs if self.store.run(r.run_id)["status"] not in TERMINAL_RUN] or self.runs
        run = self.rng.choice(active)
        out = self.cluster.work / f"cli-{run.run_id}.out"
        env = {**os.environ, "HOTSWAP_REDIS_URL": self.cluster.redis.url, "PYTHONUNBUFFERED": "1",
               "HOTSWAP_HOME": str(self.cluster.work / "cli")}
        with open(out, "ab") as f:
            cli = subprocess.Popen([sys.executable, "-m", "engine.cli", "logs", run.run_id, "--follow"], cwd=ROOT,
                                   env=env, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while out.stat().st_size == 0 and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        printed = out.stat().st_size
        self.strike()
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=10)
        return f"logs --follow of {run.run_id} after {printed} bytes of output"

    def duplicate_delivery(self) -> str:
        """Publish again one running, one waiting and one finished step (whichever exist)."""
        picks: dict[str, tuple[str, str]] = {}
        for run in self.rng.sample(self.runs, len(self.runs)):
            for sid, st in self.store.statuses(run.run_id).items():
                kind = "finished" if st in TERMINAL_STEP else st
                if kind in ("running", "waiting", "finished"):
                    picks.setdefault(kind, (run.run_id, sid))
        self.strike()
        for run_id, sid in picks.values():
            self.rt.publish(run_id, [sid])
        return ", ".join(f"{kind} {r}/{s}" for kind, (r, s) in sorted(picks.items())) or "no step to duplicate"


# ---- the audit --------------------------------------------------------------------------------

@dataclass
class StepReport:
    takeovers: int = 0
    duplicates: int = 0
    """Executions that started after the step had finished, or a second recorded outcome."""

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
        if st != "pending" and not store.r.hexists(k.step(rid, sid), "started") and st != "skipped":
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
    effects = phase_files(store, run)
    for sid, files in effects.items():
        counts = [len(f.read_text().splitlines()) if f.exists() else 0 for f in files]
        rep.repeated_effects.extend(f"{sid}/{f.name} x{n}" for f, n in zip(files, counts, strict=True) if n > 1)
        if statuses[sid] == "succeeded" and 0 in counts:
            rep.problems.append(f"step {sid} succeeded without doing every phase: {counts}")
    for sid, step_rep in rep.steps.items():
        if not step_rep.reexecuted:
            continue
        safe = plan.steps[sid].action in IDEMPOTENT or not any(e.startswith(f"{sid}/") for e in rep.repeated_effects)
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


# ---- the batch ---------------------------------------------------------------------------------

@dataclass
class Options:
    runs: int
    faults: int
    seed: int
    launch_window: float
    settle: float
    workers: int
    kinds: list[str]
    keep: bool
    json_out: Path | None


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="runs to launch (default %(default)s)")
    p.add_argument("--faults", type=int, help="faults to inject (default: one per run, at least one of each kind)")
    p.add_argument("--seed", type=int, help="seed of every random choice (default: from the clock; printed)")
    p.add_argument("--launch-window", type=float, help="seconds over which runs are launched (default 3 s per run)")
    p.add_argument("--settle", type=float, default=120, help="seconds to wait for every run to end (default %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kinds", default=",".join(FAULTS), help="fault kinds to draw from, comma-separated (default: all)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (kept anyway when something is wrong)")
    p.add_argument("--json", type=Path, dest="json_out", help="also write the results as JSON here")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(FAULTS):
        p.error(f"--kinds: choose from {', '.join(FAULTS)}")
    seed = a.seed if a.seed is not None else int(time.time() * 1000) % 1_000_000
    faults = a.faults if a.faults is not None else max(len(kinds), a.runs)
    window = a.launch_window if a.launch_window is not None else max(6.0, 3.0 * a.runs)
    return Options(a.runs, faults, seed, window, a.settle, a.workers, kinds, a.keep, a.json_out)


def schedule(opts: Options, rng: random.Random) -> list[tuple[float, str, str]]:
    """(at, "launch", shape) and (at, "fault", kind), in time order: every shape and kind comes up evenly."""
    shapes = [SHAPES[i % len(SHAPES)].name for i in range(opts.runs)]
    kinds = [opts.kinds[i % len(opts.kinds)] for i in range(opts.faults)]
    rng.shuffle(shapes)
    rng.shuffle(kinds)
    events = [(rng.uniform(0, opts.launch_window), "launch", s) for s in shapes]
    events += [(rng.uniform(1.0, opts.launch_window + 8.0), "fault", k) for k in kinds]
    return sorted(events)


class Batch:
    def __init__(self, opts: Options, work: Path) -> None:
        self.opts, self.work = opts, work
        self.rng = random.Random(opts.seed)
        self.cluster = Cluster(work, opts.workers)
        self.runs: list[Launched] = []
        self.injected: list[Injected] = []
        self.crashes: list[str] = []
        self.t0 = time.monotonic()

    def watch(self) -> None:
        for why in self.cluster.revive():
            at = time.monotonic() - self.t0
            self.crashes.append(f"{at:.1f}s {why}")
            print(f"  {at:6.1f}s  UNPLANNED worker exit: {why}; restarted", flush=True)

    def launch(self, shape: Shape, service: Service) -> None:
        effects = self.work / "effects" / f"run-{len(self.runs):03d}"
        for sub in ("phases", "left", "slow", *(f"item-{i}" for i in range(5))):
            (effects / sub).mkdir(parents=True, exist_ok=True)
        path = self.work / "runbooks" / f"{effects.name}-{shape.name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(shape.yaml.replace("DIR", str(effects)))
        run_id = service.launch(path, {}, Identity("faults", "bench"))
        self.runs.append(Launched(run_id, shape, effects, time.monotonic() - self.t0))
        print(f"  {self.runs[-1].at:6.1f}s  launch {run_id} ({shape.name})", flush=True)

    def fault(self, kind: str, injector: Injector, store: Store) -> None:
        before = patient(lambda: snapshot(store, self.runs))
        detail = injector.inject(kind)
        at = injector.applied - self.t0
        after = patient(lambda: snapshot(store, self.runs))
        lost = regressions(before, after) + patient(lambda: missing_last_events(store, before))
        self.injected.append(Injected(kind, at, detail, lost))
        print(f"  {at:6.1f}s  {kind:<19} {detail}" + (f"  LOST: {lost}" if lost else ""), flush=True)

    def drive(self) -> None:
        app = make_app(self.cluster.redis.url)
        rt = runtime(app)
        service = Service(rt.store, default_registry(), rt.publish)
        injector = Injector(self.cluster, rt, self.rng, self.runs)
        by_name = {s.name: s for s in SHAPES}
        for at, what, name in schedule(self.opts, self.rng):
            while (wait := at - (time.monotonic() - self.t0)) > 0:
                self.watch()
                time.sleep(min(wait, 0.2))
            self.watch()
            if what == "launch":
                self.launch(by_name[name], service)
            elif self.runs:
                self.fault(name, injector, rt.store)
        self.settle(rt.store)

    def settle(self, store: Store) -> None:
        """Wait until every run has ended and none of its steps is still running (bounded by --settle)."""
        deadline = time.monotonic() + self.opts.settle

        def done() -> bool:
            for run in self.runs:
                if store.run(run.run_id)["status"] not in TERMINAL_RUN:
                    return False
                if "running" in store.statuses(run.run_id).values():
                    return False
            return True

        while not patient(done) and time.monotonic() < deadline:
            self.watch()
            time.sleep(0.25)


# ---- the report ---------------------------------------------------------------------------------

def summarize(batch: Batch, reports: list[RunReport]) -> dict[str, Any]:
    verdicts = Counter(r.verdict for r in reports)
    reexec = sum(1 for r in reports for s in r.steps.values() if s.reexecuted)
    return {
        "seed": batch.opts.seed,
        "faults": {kind: sum(1 for f in batch.injected if f.kind == kind) for kind in FAULTS},
        "runs": len(reports),
        "completed": verdicts["ok"],
        "failed_correctly": verdicts["failed_ok"],
        "failed_wrongly": verdicts["wrong"],
        "stuck": verdicts["stuck"],
        "steps_reexecuted": reexec,
        "steps_reexecuted_safe": sum(r.reexecuted_safe for r in reports),
        "takeovers": sum(s.takeovers for r in reports for s in r.steps.values()),
        "duplicate_executions": sum(s.duplicates for r in reports for s in r.steps.values()),
        "side_effects_repeated": sum(len(r.repeated_effects) for r in reports),
        "lost": sum(len(f.lost) for f in batch.injected) + sum(len(r.lost) for r in reports),
        "worker_crashes": batch.crashes,
        "by_run": [{"run": r.run.run_id, "shape": r.run.shape.name, "status": r.status, "verdict": r.verdict,
                    "reason": r.reason, "problems": r.problems, "lost": r.lost, "repeated": r.repeated_effects}
                   for r in reports],
        "lost_at_faults": [{"kind": f.kind, "at": round(f.at, 1), "lost": f.lost} for f in batch.injected if f.lost],
    }


def table(s: dict[str, Any]) -> str:
    lines = ["| fault | injected |", "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in s["faults"].items()]
    lines += [f"| *(not injected)* worker exited by itself, restarted | {len(s['worker_crashes'])} |"]
    lines += ["", "| runs launched | completed ok | failed with correct reason | failed wrongly | stuck "
              "| steps executed >1 (idempotent-safe) | side effects repeated | state records lost |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| {s['runs']} | {s['completed']} | {s['failed_correctly']} | {s['failed_wrongly']} | {s['stuck']} "
              f"| {s['steps_reexecuted']} ({s['steps_reexecuted_safe']}) | {s['side_effects_repeated']} | {s['lost']} |"]
    return "\n".join(lines)


def bad(s: dict[str, Any]) -> bool:
    return bool(s["lost"] or s["failed_wrongly"] or s["stuck"] or s["side_effects_repeated"])


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="hotswap-faults-"))
    print(f"seed {opts.seed}: {opts.runs} runs, {opts.faults} faults, work dir {work}", flush=True)
    batch = Batch(opts, work)
    started = time.monotonic()
    try:
        batch.cluster.start()
        batch.drive()
        store = runtime(make_app(batch.cluster.redis.url)).store
        indexed = {str(r["id"]) for r in store.list_runs(limit=100_000)}
        reports = [audit_run(store, run, indexed) for run in batch.runs]
        broker = broker_messages(store)
        for r in reports:
            if r.verdict == "stuck":
                r.problems.extend(diagnose(store, r.run.run_id, broker))
    finally:
        batch.cluster.stop()
    summary = summarize(batch, reports)
    summary["seconds"] = round(time.monotonic() - started, 1)
    for r in reports:
        if r.verdict not in ("ok", "failed_ok") or r.repeated_effects:
            print(f"  {r.run.run_id} ({r.run.shape.name}, launched at {r.run.at:.1f}s): {r.verdict} {r.status} "
                  f"{r.reason!r} {r.problems} {r.lost} repeated={r.repeated_effects}")
    print(f"\n{table(summary)}\n")
    print(f"seed {opts.seed}, {summary['seconds']}s, {summary['takeovers']} takeovers, "
          f"{summary['duplicate_executions']} duplicate executions; reproduce: "
          f".venv/bin/python -m bench.faults --runs {opts.runs} --faults {opts.faults} --seed {opts.seed}"
          + ("" if opts.kinds == list(FAULTS) else f" --kinds {','.join(opts.kinds)}"))
    if opts.json_out:
        opts.json_out.write_text(json.dumps(summary, indent=2))
    if bad(summary) or opts.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad(summary) else 0


if __name__ == "__main__":
    sys.exit(main())
