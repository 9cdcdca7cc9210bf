"""Processes that benchmarks, the fault-injection run and tests own: redis-server, `hotswap worker`, and
the /proc walks that find a worker's pool children. The one place this scaffolding lives: bench imports it,
and tests import it through tests/support (bench never imports tests).

Worker peak memory is the sum of VmHWM over the worker's whole process tree (supervisor, Celery main
process, pool children). The peaks are reset (``/proc/<pid>/clear_refs`` = 5) before each measurement and
sampled while it runs, so a pool child recycled mid-run still counts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import redis

from engine.config import redis_client
from engine.embedded import redis_server_binary

ROOT = Path(__file__).resolve().parents[1]
KEEP_PREFIX = b"_kombu.binding."
"""kombu's exchange->queue bindings: publishers cache that they declared them, so they must survive a clean."""


class ProcessError(RuntimeError):
    """A process this scaffolding started did not come up or go down as it should (its log says why)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ProcessError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ---- the process tree ---------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1], pgrp [2])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True for a live process (a killed pool child stays listed as a zombie until its parent reaps it)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and fields[0] not in ("Z", "X"):
            out[int(entry.name)] = int(fields[1])
    return out


def descendants(root: int) -> dict[int, int]:
    """Every live process under ``root`` (at any depth) -> its depth below root (children are 1)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents().items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    frontier = [(root, 0)]
    while frontier:
        pid, depth = frontier.pop()
        for child in children.get(pid, []):
            if child not in out:
                out[child] = depth + 1
                frontier.append((child, depth + 1))
    return out


# ---- redis-server -------------------------------------------------------------------------------

class RedisServer:
    """A redis-server on 127.0.0.1. Without ``appendonly`` nothing persists (benchmarks); with it, the AOF is
    fsynced before every reply (``appendfsync always``), so a SIGKILL loses nothing acknowledged."""

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.dir = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                *persistence, "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ProcessError(f"redis-server exited; see {self.dir / 'redis.log'}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False
            except redis.ResponseError as e:  # LOADING: still replaying its AOF
                return "LOADING" not in str(e) and bool(client.ping())

        wait_until(up, 30, f"redis-server on port {self.port}")
        client.close()
        return self

    def version(self) -> str:
        return str(self.client().info("server")["redis_version"])

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no chance to flush anything not yet on disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (what a network partition looks like)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


def clean(r: redis.Redis) -> None:
    """Delete everything but kombu's bindings, and reset Redis' traffic counters."""
    batch: list[bytes] = []
    for key in r.scan_iter(count=2000):
        if not key.startswith(KEEP_PREFIX):
            batch.append(key)
        if len(batch) >= 2000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)
    r.config_resetstat()


def traffic_bytes(r: redis.Redis) -> int:
    stats = r.info("stats")
    return int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])


# ---- workers ------------------------------------------------------------------------------------

class _Group:
    """A process started in its own session (so its whole tree is one process group)."""

    proc: subprocess.Popen[bytes] | None

    def pids(self) -> list[int]:
        """The process and everything under it, at any depth."""
        if self.proc is None:
            return []
        return [self.proc.pid, *descendants(self.proc.pid)]

    def stop(self) -> None:
        """SIGTERM the group (a warm shutdown: running tasks finish), SIGKILL after 20 s and for leftovers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # pool children left behind by a hard kill
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group: an abrupt, machine-level death."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


class Worker(_Group):
    """A benchmark worker (any argv), ready when a noop task sent to its queue has run."""

    def __init__(self, name: str, argv: list[str], redis_url: str, home: Path, queue: str) -> None:
        self.name, self.argv, self.redis_url, self.home, self.queue = name, argv, redis_url, home, queue
        self.proc = None
        self.log = home / f"{name}.log"

    def start(self) -> Worker:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
        env.update(HOTSWAP_REDIS_URL=self.redis_url, HOTSWAP_HOME=str(self.home))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, *self.argv], cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        from engine.celery_app import NOOP_TASK, make_app

        app = make_app(self.redis_url)
        r = redis_client(self.redis_url)
        key = f"bench:ready:{self.name}:{time.monotonic_ns()}"
        app.tasks[NOOP_TASK].apply_async(args=[key], queue=self.queue)

        def ran() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ProcessError(f"worker {self.name} exited with {self.proc.returncode}: see {self.log}")
            return bool(r.get(key))

        wait_until(ran, timeout, f"worker {self.name} to run a task")
        r.delete(key)
        r.close()


class HotswapWorker(_Group):
    """A real ``hotswap worker`` (its supervisor, the Celery prefork main process under it, and the pool
    children under that, which run the steps), ready when Celery has logged 'ready'."""

    def __init__(self, redis_url: str, home: Path, concurrency: int = 2, name: str = "w1",
                 env: Mapping[str, str] | None = None) -> None:
        self.redis_url, self.home, self.concurrency, self.name = redis_url, home, concurrency, name
        self.env = dict(env or {})
        self.proc = None
        self.log = home / f"worker-{name}.log"

    def start(self, timeout: float = 60) -> HotswapWorker:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOTSWAP_REDIS_URL": self.redis_url, "HOTSWAP_HOME": str(self.home), **self.env}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "worker", "--concurrency", str(self.concurrency),
                 "--loglevel", "INFO", "-n", f"{self.name}@%h"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_ready(timeout, offset)
        return self

    def wait_ready(self, timeout: float = 60, offset: int = 0) -> None:
        """Ready when Celery has logged 'ready' (its consumer is attached to the queues) since ``offset``."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ProcessError(f"worker {self.name} exited with {self.proc.returncode}: see {self.log}")
            with open(self.log, "rb") as f:
                f.seek(offset)
                return b" ready." in f.read()

        wait_until(ready, timeout, f"worker {self.name} to be ready (see {self.log})", interval=0.1)

    def children(self) -> list[int]:
        """The supervisor's direct children: the Celery main process (one, unless it is being restarted)."""
        return [pid for pid, depth in self.tree().items() if depth == 1]

    def pool_children(self) -> list[int]:
        """The prefork pool processes: the ones that execute steps."""
        return [pid for pid, depth in self.tree().items() if depth == 2]

    def tree(self) -> dict[int, int]:
        return descendants(self.proc.pid) if self.proc is not None else {}

    def warm_stop(self, timeout: float = 30) -> bool:
        """SIGTERM to the supervisor only (it passes it on: Celery's warm shutdown lets running tasks finish);
        False when it had to be killed after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        self.stop()
        return True


def _hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm(pid: int) -> None:
    with contextlib.suppress(OSError):  # the process just exited: nothing to reset
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class PeakMemory:
    """Samples the summed VmHWM of some processes (a worker's, a client's) while a measurement runs."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.25) -> None:
        self.pids, self.interval = pids, interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        for pid in self.pids():
            _reset_hwm(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for pid in self.pids():
            kib = _hwm_kib(pid)
            if kib is not None:
                self.peaks[pid] = max(kib, self.peaks.get(pid, 0))

    @property
    def mib(self) -> float:
        return sum(self.peaks.values()) / 1024
