"""The faults. Each one strikes for real and says what it hit.

- ``worker_sigkill``: SIGKILL the whole process group of a worker that is running a step (then restart it);
- ``child_sigkill``: SIGKILL the prefork pool child that is running a step (Celery's reject-on-worker-lost
  path; the pool replaces the child);
- ``redis_sigkill``: SIGKILL redis-server (``appendfsync always``) while a client writes, start it again, and
  check that every write the client was told succeeded is there;
- ``redis_freeze``: SIGSTOP redis-server for twice the lease, then SIGCONT (a partition: every client waits);
- ``redis_refuse_writes``: ``maxmemory`` 1 byte with ``noeviction`` (every write gets an OOM error) for a
  while, then restored;
- ``rolling_deploy``: warm-restart the workers one at a time while runs go on (``Cluster.deploy`` gives the
  next incarnation its environment: same code by default, the hook for a changed action);
- ``workers_restart``: warm-stop every worker at once (SIGTERM), then start them again;
- ``cli_kill``: SIGKILL a ``hotswap logs RUN --follow`` process;
- ``duplicate_delivery``: publish again steps that are running, waiting or already finished.

Kill faults (the first two) wait up to ``SEEK_SECONDS`` for a step to be running in one of our processes and
strike the process the step's claim recorded. A hit is confirmed after the process is dead: the step is still
in the same execution (same claim token, running), so the kill interrupted it mid-step.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from bench.faults import LEASE_SECONDS
from bench.faults.cluster import Cluster, Running, patient, running_steps, still_running, wait_dead
from bench.faults.shapes import TERMINAL_RUN, TERMINAL_STEP, Launched
from bench.procs import ROOT, alive, wait_until
from engine.celery_app import Runtime

FAULTS = ("worker_sigkill", "child_sigkill", "redis_sigkill", "redis_freeze", "redis_refuse_writes",
          "rolling_deploy", "workers_restart", "cli_kill", "duplicate_delivery")
KILL_FAULTS = ("worker_sigkill", "child_sigkill")
"""Faults that must hit a running step (at least HIT_TARGET of them)."""
SEEKING = (*KILL_FAULTS, "redis_freeze", "redis_refuse_writes", "rolling_deploy")
"""Faults that mean most while steps run: with nothing running, the batch holds them until after the next launch."""
HIT_TARGET = 0.8
SEEK_SECONDS = 15.0
"""How long a fault waits for a step to be running before it strikes anyway (or reports nothing to hit)."""
FREEZE_SECONDS = 2 * LEASE_SECONDS
REFUSE_SECONDS = 3.0
PROBE_KEY = "faults:probe"
INSTANT = {"core.echo", "core.fail", "core.wait_until"}
"""Actions that are 'running' for milliseconds (a poll parks at once): a kill aims at the others first, and
at these only when nothing else has run for half the seek."""


@dataclass
class Hit:
    """A step that was running in the process a fault killed, at the moment it died."""

    run_id: str
    step_id: str
    action: str
    attempt: int
    progress: str
    pid: int
    process: str
    """Which process it was: 'pool child of w1-2', 'w2-1 (whole group)'."""

    def describe(self) -> str:
        return f"{self.run_id}/{self.step_id} ({self.action}, attempt {self.attempt}, {self.progress}) in {self.process} pid {self.pid}"


@dataclass
class Injected:
    kind: str
    at: float
    detail: str
    hits: list[Hit] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Records lost or gone back in time across this fault, and acknowledged writes missing after it."""
    evidence: list[str] = field(default_factory=list)
    """Filled by the audit: what the store shows happened to each hit step afterwards."""
    exposed: list[str] = field(default_factory=list)
    """'run/step' of the steps that were running when Redis froze or began refusing writes."""
    broken: str = ""
    """Why the fault did not take (it must have: the batch fails)."""
    wall: float = 0.0
    """time.time() when it struck (events carry wall-clock times)."""
    recovered: list[float] = field(default_factory=list)
    """Filled by the audit: seconds from the kill until each hit step was running again."""

    @property
    def kill(self) -> bool:
        return self.kind in KILL_FAULTS


class AckProbe:
    """A client that INCRs a counter as fast as it can and remembers the last value Redis acknowledged."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2)
        self.acked = 0
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ack-probe", daemon=True)

    def __enter__(self) -> AckProbe:
        self.client.delete(PROBE_KEY)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.acked = int(self.client.incr(PROBE_KEY))
            except redis.RedisError as e:
                self.error = type(e).__name__
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()


class Injector:
    def __init__(self, cluster: Cluster, rt: Runtime, rng: random.Random, runs: list[Launched]) -> None:
        self.cluster, self.rt, self.store, self.rng, self.runs = cluster, rt, rt.store, rng, runs
        self.applied = time.monotonic()
        """When the last fault actually struck (after choosing its target)."""
        self.applied_wall = time.time()

    def strike(self) -> None:
        self.applied = time.monotonic()
        self.applied_wall = time.time()

    def inject(self, kind: str) -> Injected:
        handler: Callable[[], Injected] = getattr(self, kind)
        return handler()

    def _made(self, kind: str, detail: str, **kw: Any) -> Injected:
        return Injected(kind, self.applied, detail, wall=self.applied_wall, **kw)

    # ---- finding what runs where ----------------------------------------------------------------

    def running(self) -> list[tuple[Running, str, int]]:
        """Steps in execution now in a live process of ours: (step, slot, depth of the process)."""
        actions = {(r.run_id, sid): a for r in self.runs for sid, a in r.actions.items()}
        active = [r.run_id for r in self.runs]
        out = []
        for t in patient(lambda: running_steps(self.store, active, actions)):
            own = self.cluster.owner(t.pid)
            if own is not None and alive(t.pid):
                out.append((t, *own))
        return out

    def seek(self, accept: Callable[[int], bool] = lambda depth: True,
             timeout: float = SEEK_SECONDS) -> tuple[Running, str, int] | None:
        """Wait (bounded) for a busy moment: a step running in one of our processes that ``accept``s its depth,
        preferably one whose action lasts."""
        started = time.monotonic()
        while True:
            live = [t for t in self.running() if accept(t[2])]
            lasting = [t for t in live if t[0].action not in INSTANT]
            if lasting or (live and time.monotonic() - started > timeout / 2):
                return self.rng.choice(lasting or live)
            if time.monotonic() - started > timeout:
                return None
            time.sleep(0.05)

    def aim(self, accept: Callable[[int], bool] = lambda depth: True) -> tuple[Running, str, int] | None:
        """A target that is still in the same execution at the moment this returns (checked again in the store,
        so the kill that follows at once strikes mid-step), seeking for at most SEEK_SECONDS."""
        deadline = time.monotonic() + SEEK_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            found = self.seek(accept, timeout=left)
            if found is None:
                return None
            target = found[0]
            if patient(partial(still_running, self.store, target)) and alive(target.pid):
                return found
        return None

    # ---- kill faults -------------------------------------------------------------------------------

    def child_sigkill(self) -> Injected:
        found = self.aim(lambda depth: depth == 2)
        if found is None:
            self.strike()
            return self._made("child_sigkill", f"nothing to hit: no step ran in a pool child within {SEEK_SECONDS:g}s; "
                                               "nothing killed")
        target, slot, _ = found
        w = self.cluster.workers[slot]
        offset = w.log.stat().st_size
        self.strike()
        os.kill(target.pid, signal.SIGKILL)
        wait_dead([target.pid])
        hit = self._confirm(target, f"pool child of {w.name}")
        saw = self._celery_saw(w.log, offset, target.pid)
        what = f"hit {hit.describe()}" if hit else f"missed: {target.describe()} had finished when pid {target.pid} died"
        return self._made("child_sigkill", f"{what}; Celery reported the lost child: {saw}",
                          hits=[hit] if hit else [])

    def worker_sigkill(self) -> Injected:
        found = self.aim()
        if found is None:
            slot = self.rng.choice(self.cluster.slots)
            victims: list[tuple[Running, str, int]] = []
        else:
            slot = found[1]
            key = (found[0].run_id, found[0].step_id)
            victims = [found, *(t for t in self.running() if t[1] == slot and (t[0].run_id, t[0].step_id) != key)]
        w = self.cluster.workers[slot]
        pids = w.pids()
        self.strike()
        w.kill()
        wait_dead(pids)
        hits = [h for t, _, _ in victims if (h := self._confirm(t, f"{w.name} (whole group)"))]
        new = self.cluster.start_worker(slot)
        if found is None:
            what = f"nothing to hit: no step ran within {SEEK_SECONDS:g}s; killed idle {w.name}"
        elif not hits:
            what = f"missed: {', '.join(t.describe() for t, _, _ in victims)} had finished when {w.name} died"
        else:
            what = "hit " + "; ".join(h.describe() for h in hits)
        return self._made("worker_sigkill", f"{what}; restarted as {new.name}", hits=hits)

    def _confirm(self, target: Running, process: str) -> Hit | None:
        """A Hit when the step was still in the execution the dead process was running."""
        detail = patient(lambda: self.store.step(target.run_id, target.step_id))
        if not (patient(lambda: still_running(self.store, target)) or int(detail.get("attempt") or 0) > target.attempt):
            return None
        return Hit(target.run_id, target.step_id, target.action, target.attempt, target.progress, target.pid, process)

    @staticmethod
    def _celery_saw(log: Any, offset: int, pid: int, timeout: float = 5) -> bool:
        needle = f"pid:{pid} exited".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(log, "rb") as f:
                f.seek(offset)
                if needle in f.read():
                    return True
            time.sleep(0.1)
        return False

    # ---- Redis faults ------------------------------------------------------------------------------

    def redis_sigkill(self) -> Injected:
        busy = self.seek(timeout=5)
        redis_server = self.cluster.redis
        with AckProbe(redis_server.url) as probe:
            wait_until(lambda: probe.acked > 50 or probe.error, 5, "the probe to write")
            self.strike()
            started = time.monotonic()
            redis_server.kill()
        acked = probe.acked
        redis_server.start()
        down = time.monotonic() - started
        there = int(patient(lambda: redis_server.client().get(PROBE_KEY)) or 0)
        lost = [] if there >= acked else [f"redis_sigkill: {acked} INCRs acknowledged before the kill, {there} after"]
        during = f", {busy[0].describe()} running" if busy else ""
        return self._made("redis_sigkill", f"SIGKILL with a client writing ({acked} acknowledged INCRs, {there} "
                                           f"after restart){during}; down {down:.2f}s", lost=lost)

    def redis_freeze(self) -> Injected:
        busy = self.seek(timeout=5)
        exposed = self.running()
        running = [t.describe() for t, _, _ in exposed]
        self.strike()
        self.cluster.redis.freeze()
        try:
            time.sleep(FREEZE_SECONDS)  # the fault's duration, not a wait for a condition
        finally:
            self.cluster.redis.thaw()
        what = f"{len(running)} step(s) running: {'; '.join(running)}" if busy else "no step running"
        return self._made("redis_freeze", f"SIGSTOP {FREEZE_SECONDS:g}s (2x lease), then SIGCONT; {what}",
                          exposed=[f"{t.run_id}/{t.step_id}" for t, _, _ in exposed])

    def redis_refuse_writes(self) -> Injected:
        self.seek(timeout=5)
        exposed = self.running()
        c = self.cluster.redis.client()
        before = c.config_get("maxmemory*")
        c.config_set("maxmemory-policy", "noeviction")
        self.strike()
        c.config_set("maxmemory", 1)
        try:
            c.set(PROBE_KEY, "refused?")
            refused = "NOT refused (the fault did not take)"
        except redis.ResponseError as e:
            refused = f"refused ({str(e)[:60]})"
        try:
            time.sleep(REFUSE_SECONDS)  # the fault's duration
        finally:
            c.config_set("maxmemory", before["maxmemory"] or "0")
            c.config_set("maxmemory-policy", before["maxmemory-policy"] or "noeviction")
        c.set(PROBE_KEY, "accepted")
        c.close()
        return self._made("redis_refuse_writes", f"maxmemory 1 byte, noeviction for {REFUSE_SECONDS:g}s: writes "
                                                 f"{refused}; restored",
                          broken="" if refused.startswith("refused") else f"a write was {refused}",
                          exposed=[f"{t.run_id}/{t.step_id}" for t, _, _ in exposed])

    # ---- deploys and restarts -------------------------------------------------------------------------

    def rolling_deploy(self) -> Injected:
        """One worker at a time: warm stop (running tasks finish), start the next version, then the next."""
        self.seek(timeout=5)
        self.strike()
        done = []
        for slot in self.cluster.slots:
            old = self.cluster.workers[slot]
            mid = [t.describe() for t, s, _ in self.running() if s == slot]
            clean = old.warm_stop()
            new = self.cluster.start_worker(slot, self.cluster.deploy(slot))
            done.append(f"{old.name} -> {new.name} ({'warm' if clean else 'killed after 30s'}"
                        f"{', while running ' + '; '.join(mid) if mid else ''})")
        return self._made("rolling_deploy", ", ".join(done))

    def workers_restart(self) -> Injected:
        self.strike()
        clean = [self.cluster.workers[slot].warm_stop() for slot in self.cluster.slots]
        for slot in self.cluster.slots:
            self.cluster.start_worker(slot)
        return self._made("workers_restart", "warm SIGTERM to every worker at once; restarted"
                                             + ("" if all(clean) else " (one needed SIGKILL)"))

    # ---- clients and the broker -----------------------------------------------------------------------

    def cli_kill(self) -> Injected:
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
        return self._made("cli_kill", f"logs --follow of {run.run_id} after {printed} bytes of output")

    def duplicate_delivery(self) -> Injected:
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
        what = ", ".join(f"{kind} {r}/{s}" for kind, (r, s) in sorted(picks.items())) or "no step to duplicate"
        return self._made("duplicate_delivery", what)
