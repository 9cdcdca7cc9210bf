"""``python -m bench.faults``: options, the schedule of launches and faults, the batch, the report."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import bench.faults

# engine.keys reads these when it is imported: set them before the imports below.
for _name, _value in bench.faults.WORKER_ENV.items():
    os.environ.setdefault(_name, _value)

from actions import default_registry  # noqa: E402
from bench.faults.audit import (  # noqa: E402
    RunSnap,
    audit_run,
    broker_messages,
    diagnose,
    hit_evidence,
    missing_last_events,
    regressions,
    snapshot,
)
from bench.faults.cluster import Cluster, patient  # noqa: E402
from bench.faults.kinds import FAULTS, SEEKING, Injected, Injector  # noqa: E402
from bench.faults.report import failures, summarize, table  # noqa: E402
from bench.faults.shapes import BY_NAME, EFFECT_DIRS, SHAPES, TERMINAL_RUN, Launched, Shape  # noqa: E402
from engine.celery_app import make_app, runtime  # noqa: E402
from engine.service import Identity, Service  # noqa: E402
from engine.store import Store  # noqa: E402

SNAPSHOT_EVERY = 1.0
"""Between faults every run is snapshotted this often: a record going back in time is caught near when."""


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
    deploy_env: dict[str, str]


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=bench.faults.__doc__,
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
    p.add_argument("--deploy-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the workers a rolling_deploy starts (a new version: e.g. "
                        "HOTSWAP_ACTION_MODULES=... with a changed action); default: the same code")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(FAULTS):
        p.error(f"--kinds: choose from {', '.join(FAULTS)}")
    seed = a.seed if a.seed is not None else int(time.time() * 1000) % 1_000_000
    faults = a.faults if a.faults is not None else max(len(kinds), a.runs)
    window = a.launch_window if a.launch_window is not None else max(6.0, 3.0 * a.runs)
    if any("=" not in e for e in a.deploy_env):
        p.error("--deploy-env: give NAME=VALUE")
    deploy_env = dict(e.split("=", 1) for e in a.deploy_env)
    return Options(a.runs, faults, seed, window, a.settle, a.workers, kinds, a.keep, a.json_out, deploy_env)


def schedule(opts: Options, rng: random.Random) -> list[tuple[float, str, str]]:
    """(at, "launch", shape) and (at, "fault", kind), in time order: every shape and kind comes up evenly, and
    faults fall while runs are being launched (kill faults still wait for a running step)."""
    shapes = [SHAPES[i % len(SHAPES)].name for i in range(opts.runs)]
    kinds = [opts.kinds[i % len(opts.kinds)] for i in range(opts.faults)]
    rng.shuffle(shapes)
    rng.shuffle(kinds)
    events = [(rng.uniform(0, opts.launch_window), "launch", s) for s in shapes]
    events += [(rng.uniform(1.0, max(2.0, opts.launch_window - 3.0)), "fault", k) for k in kinds]
    return sorted(events)


def next_launch(events: list[tuple[float, str, str]]) -> int | None:
    return next((i for i, (_, what, _) in enumerate(events) if what == "launch"), None)


class Batch:
    def __init__(self, opts: Options, work: Path) -> None:
        self.opts, self.work = opts, work
        self.rng = random.Random(opts.seed)
        self.cluster = Cluster(work, opts.workers, deploy=lambda slot: opts.deploy_env)
        self.runs: list[Launched] = []
        self.injected: list[Injected] = []
        self.crashes: list[str] = []
        self.drift: list[str] = []
        """Records lost or gone back in time between faults (the periodic snapshots)."""
        self.t0 = time.monotonic()
        self._last: dict[str, RunSnap] = {}
        self._last_at = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def watch(self, store: Store) -> None:
        for why in self.cluster.revive():
            self.crashes.append(f"{self.now():.1f}s {why}")
            print(f"  {self.now():6.1f}s  UNPLANNED: {why}", flush=True)
        if time.monotonic() - self._last_at >= SNAPSHOT_EVERY:
            self.observe(store, "between faults", self.drift)

    def observe(self, store: Store, label: str, into: list[str]) -> dict[str, RunSnap]:
        snap = patient(lambda: snapshot(store, self.runs))
        lost = regressions(self._last, snap)
        into.extend(f"{self.now():.1f}s ({label}) {x}" for x in lost)
        if lost:
            print(f"  {self.now():6.1f}s  LOST ({label}): {lost}", flush=True)
        self._last, self._last_at = snap, time.monotonic()
        return snap

    def launch(self, shape: Shape, service: Service, store: Store) -> None:
        effects = self.work / "effects" / f"run-{len(self.runs):03d}"
        for sub in EFFECT_DIRS:
            (effects / sub).mkdir(parents=True, exist_ok=True)
        path = self.work / "runbooks" / f"{effects.name}-{shape.name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(shape.yaml.replace("DIR", str(effects)))
        run_id = service.launch(path, {}, Identity("faults", "bench"))
        actions = {sid: step.action for sid, step in store.plan(run_id).steps.items()}
        self.runs.append(Launched(run_id, shape, effects, self.now(), actions))
        print(f"  {self.runs[-1].at:6.1f}s  launch {run_id} ({shape.name})", flush=True)

    def fault(self, kind: str, injector: Injector, store: Store) -> None:
        lost: list[str] = []
        before = self.observe(store, f"before {kind}", lost)
        done = injector.inject(kind)
        done.at -= self.t0
        self.observe(store, f"across {kind}", lost)
        done.lost += lost + patient(lambda: missing_last_events(store, before))
        self.injected.append(done)
        print(f"  {done.at:6.1f}s  {kind:<19} {done.detail}" + (f"  LOST: {done.lost}" if done.lost else ""),
              flush=True)

    def drive(self) -> Store:
        """Launch and inject as scheduled, wait for the runs to end; return the store (for the audit)."""
        rt = runtime(make_app(self.cluster.redis.url))
        service = Service(rt.store, default_registry(), rt.publish)
        injector = Injector(self.cluster, rt, self.rng, self.runs)
        events = schedule(self.opts, self.rng)
        while events:
            at, what, name = events.pop(0)
            while (wait := at - self.now()) > 0:
                self.watch(rt.store)
                time.sleep(min(wait, 0.2))
            self.watch(rt.store)
            if what == "launch":
                self.launch(BY_NAME[name], service, rt.store)
            elif name in SEEKING and (later := next_launch(events)) is not None and injector.seek(timeout=3) is None:
                events.insert(later + 1, (events[later][0], what, name))  # nothing runs now: strike after it
            elif self.runs:
                self.fault(name, injector, rt.store)
        self.settle(rt.store)
        return rt.store

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
            self.watch(store)
            time.sleep(0.25)
        self.observe(store, "at the end", self.drift)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="hotswap-faults-"))
    print(f"seed {opts.seed}: {opts.runs} runs, {opts.faults} faults, work dir {work}", flush=True)
    batch = Batch(opts, work)
    started = time.monotonic()
    try:
        batch.cluster.start()
        store = batch.drive()
        indexed = {str(r["id"]) for r in store.list_runs(limit=100_000)}
        reports = [audit_run(store, run, indexed) for run in batch.runs]
        broker = broker_messages(store)
        for r in reports:
            if r.verdict == "stuck":
                r.problems.extend(diagnose(store, r.run.run_id, broker))
    finally:
        batch.cluster.stop()
    by_id = {r.run.run_id: r for r in reports}
    for f in batch.injected:
        f.evidence = hit_evidence(f, by_id)
    summary = summarize(opts.seed, batch.injected, reports, batch.crashes, batch.drift)
    summary["seconds"] = round(time.monotonic() - started, 1)
    print("\nper fault, what it hit:")
    for f in batch.injected:
        print(f"  {f.at:6.1f}s  {f.kind:<19} {f.detail}")
        for line in f.evidence:
            print(f"  {'':26}{line}")
    for r in reports:
        if r.verdict not in ("ok", "failed_ok") or r.repeated_effects or r.duplicated:
            print(f"  {r.run.run_id} ({r.run.shape.name}, launched at {r.run.at:.1f}s): {r.verdict} {r.status} "
                  f"{r.reason!r} {r.problems} {r.lost} repeated={r.repeated_effects} duplicated={r.duplicated}")
    print(f"\n{table(summary)}\n")
    print(f"seed {opts.seed}, {summary['seconds']}s, {summary['takeovers']} takeovers; reproduce: "
          f".venv/bin/python -m bench.faults --runs {opts.runs} --faults {opts.faults} --seed {opts.seed}"
          + ("" if opts.kinds == list(FAULTS) else f" --kinds {','.join(opts.kinds)}"))
    why = failures(summary)
    summary["failures"] = why
    print("FAILED: " + "; ".join(why) if why else "PASSED: nothing lost, duplicated or stuck; kills hit running steps")
    if opts.json_out:
        opts.json_out.write_text(json.dumps(summary, indent=2))
    if why or opts.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
