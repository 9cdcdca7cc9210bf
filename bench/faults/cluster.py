"""The processes a fault-injection batch owns (one redis-server, a few worker slots) and which of them is
running which step right now."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from bench.faults import WORKER_ENV
from bench.procs import HotswapWorker, RedisServer, alive
from engine.store import Store

T = TypeVar("T")

Deploy = Callable[[str], Mapping[str, str]]
"""deploy(slot) -> extra environment of the next incarnation of that worker slot (a new code version: e.g. a
different HOTSWAP_ACTION_MODULES). The default deploys the same code."""


def same_code(_slot: str) -> Mapping[str, str]:
    return {}


class Cluster:
    """The redis-server and the worker slots; each restart of a slot is a new worker incarnation."""

    def __init__(self, work: Path, n_workers: int, deploy: Deploy = same_code) -> None:
        self.work = work
        self.redis = RedisServer(work / "redis", appendonly=True)
        self.slots = [f"w{i + 1}" for i in range(n_workers)]
        self.workers: dict[str, HotswapWorker] = {}
        self.incarnations: Counter[str] = Counter()
        self.deploy = deploy
        self._log_seen: dict[str, int] = {}

    def start(self) -> None:
        self.redis.start()
        for slot in self.slots:
            self.start_worker(slot)

    def start_worker(self, slot: str, env: Mapping[str, str] | None = None) -> HotswapWorker:
        self.incarnations[slot] += 1
        name = f"{slot}-{self.incarnations[slot]}"
        self.workers[slot] = HotswapWorker(self.redis.url, self.work / "workers" / slot, concurrency=2, name=name,
                                           env={**WORKER_ENV, **(env or {})}).start()
        return self.workers[slot]

    def owner(self, pid: int) -> tuple[str, int] | None:
        """(slot, depth below its supervisor) of a live process of ours: depth 2 is a prefork pool child."""
        for slot, w in self.workers.items():
            if w.proc is not None and (depth := w.tree().get(pid)) is not None:
                return slot, depth
        return None

    def revive(self) -> list[str]:
        """Restart, as a supervisor of the supervisor would, any worker that exited without being told to; and
        say when a Celery worker logged an unrecoverable error (it then shuts down, and may hang doing so:
        that worker serves nothing until it is restarted)."""
        died: list[str] = []
        for slot, w in list(self.workers.items()):
            died.extend(f"{w.name} logged: {line}" for line in self._new_critical(w))
            if w.proc is not None and w.proc.poll() is not None:
                died.append(f"{w.name} exited with {w.proc.returncode}: {last_critical(w.log)}")
                w.kill()
                self.start_worker(slot)
        return died

    def _new_critical(self, w: HotswapWorker) -> list[str]:
        if not w.log.exists():
            return []
        with open(w.log, "rb") as f:
            f.seek(self._log_seen.get(w.name, 0))
            text = f.read()
            self._log_seen[w.name] = f.tell()
        return [ln.split("] ", 1)[-1] for ln in text.decode(errors="replace").splitlines() if "CRITICAL" in ln]

    def stop(self) -> None:
        for w in self.workers.values():
            w.stop()
        self.redis.stop()


def last_critical(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "CRITICAL" in ln or "Unrecoverable" in ln]
    return lines[-1].split("] ", 1)[-1] if lines else "no CRITICAL line in its log"


def patient(fn: Callable[[], T], timeout: float = 30) -> T:
    """Call fn, retrying while Redis is unreachable or refusing writes (a fault is under way)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
            pass
        except redis.ResponseError as e:
            if "OOM" not in str(e) and "MISCONF" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis still unusable after {timeout:g}s")
        time.sleep(0.1)


@dataclass(frozen=True)
class Running:
    """A step being executed now, as the store recorded its claim."""

    run_id: str
    step_id: str
    pid: int
    token: str
    attempt: int
    action: str
    progress: str
    """What the step had done so far (test.phases: the phases its saved memory lists)."""

    def describe(self) -> str:
        return f"{self.run_id}/{self.step_id} ({self.action}, attempt {self.attempt}, {self.progress})"


def _text(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def running_steps(store: Store, run_ids: Iterable[str], actions: Mapping[tuple[str, str], str]) -> list[Running]:
    """Steps that are running under a live lease on this host, with the pid the claim recorded
    (the worker string is ``host:pid`` of the process that claimed it)."""
    host, now = socket.gethostname(), time.time()
    k = store.keys
    out: list[Running] = []
    for run_id in run_ids:
        statuses = _text(store.r.hgetall(k.statuses(run_id)))
        for sid, st in statuses.items():
            if st != "running":
                continue
            detail = _text(store.r.hgetall(k.step(run_id, sid)))
            worker_host, _, pid = detail.get("worker", "").rpartition(":")
            if detail.get("status") != "running" or float(detail.get("lease_until") or 0) <= now:
                continue
            if worker_host != host or not pid.isdigit():
                continue
            memory = json.loads(detail.get("memory") or "{}")
            action = actions.get((run_id, sid), "?")
            progress = (f"phases done {memory.get('done', [])}" if action == "test.phases"
                        else f"polls {memory.get('polls', 0)}" if action == "core.wait_until" else "in its action")
            out.append(Running(run_id, sid, int(pid), detail.get("token", ""), int(detail.get("attempt") or 0),
                               action, progress))
    return out


def still_running(store: Store, target: Running) -> bool:
    """The step is still in the execution the target names (same claim token, still running)."""
    detail = _text(store.r.hgetall(store.keys.step(target.run_id, target.step_id)))
    return detail.get("status") == "running" and detail.get("token") == target.token


def wait_dead(pids: Iterable[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if alive(p)}
        if pending:
            time.sleep(0.02)
    return not pending
