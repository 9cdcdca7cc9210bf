"""Real `hotswap worker` processes (Celery prefork + ticker) for tests: the scaffolding lives in bench/procs.py
(bench and tests share it; bench never imports tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from bench.procs import ROOT, HotswapWorker, descendants
from engine.config import redis_client

Worker = HotswapWorker
__all__ = ["ROOT", "Worker", "descendants", "flush", "wait_for"]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30, interval: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def flush(url: str) -> None:
    redis_client(url).flushdb()
