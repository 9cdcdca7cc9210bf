"""Real `hotswap worker` processes (Celery prefork + ticker) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, redis_url: str, home: Path, concurrency: int = 2, name: str = "w1",
                 env: dict[str, str] | None = None) -> None:
        self.redis_url, self.home, self.concurrency, self.name = redis_url, home, concurrency, name
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / f"worker-{name}.log"

    def start(self) -> Worker:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOTSWAP_REDIS_URL": self.redis_url, "HOTSWAP_HOME": str(self.home), **self.env}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "worker", "--concurrency", str(self.concurrency),
                 "--loglevel", "INFO", "-n", f"{self.name}@%h"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        """Ready when Celery has logged 'ready' (its consumer is attached to the queues)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: see {self.log}")
            if b" ready." in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s: see {self.log}")

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

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
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): an abrupt machine-level death."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def wait_for(predicate, timeout: float = 30, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def flush(url: str) -> None:
    redis.Redis.from_url(url).flushdb()
