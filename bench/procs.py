"""The processes a benchmark run owns: a redis-server without persistence and the workers.

Worker peak memory is the sum of VmHWM over the worker's main process and its pool children. The
peaks are reset (``/proc/<pid>/clear_refs`` = 5) before each measurement and sampled while it runs,
so a pool child recycled mid-run still counts.
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
from collections.abc import Callable
from pathlib import Path

import redis

from engine.embedded import redis_server_binary

ROOT = Path(__file__).resolve().parents[1]
KEEP_PREFIX = b"_kombu.binding."
"""kombu's exchange->queue bindings: publishers cache that they declared them, so they must survive a clean."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "no", "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.dir / 'redis.log'}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, 10, "redis-server")
        client.close()
        return self

    def version(self) -> str:
        return str(redis.Redis.from_url(self.url).info("server")["redis_version"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
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


class Worker:
    """A worker process (a Celery prefork main process with its pool children) started by the bench."""

    def __init__(self, name: str, argv: list[str], redis_url: str, home: Path, queue: str) -> None:
        self.name, self.argv, self.redis_url, self.home, self.queue = name, argv, redis_url, home, queue
        self.proc: subprocess.Popen[bytes] | None = None
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
        """Ready when a noop task sent to its queue has run (its consumer is attached)."""
        from engine.celery_app import NOOP_TASK, make_app

        app = make_app(self.redis_url)
        r = redis.Redis.from_url(self.redis_url)
        key = f"bench:ready:{self.name}:{time.monotonic_ns()}"
        app.tasks[NOOP_TASK].apply_async(args=[key], queue=self.queue)

        def ran() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}: see {self.log}")
            return bool(r.get(key))

        wait_until(ran, timeout, f"worker {self.name} to run a task")
        r.delete(key)
        r.close()

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        main = self.proc.pid
        found = [main]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == main:
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # pool children left behind by a hard kill
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


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
