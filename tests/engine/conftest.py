"""Fixtures for engine tests: a real redis-server and real `hotswap worker` processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions import default_registry
from engine.celery_app import make_app, runtime
from engine.service import Identity, Service
from engine.states import Status
from engine.store import Store
from tests.support.redis_server import RedisServer
from tests.support.workers import Worker, wait_for

SECRET_VALUE = "s3cr3t-Value-42"
"""Known to the session worker as $HS_TEST_TOKEN; must never appear in Redis."""
TERMINAL = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(redis_server.url, tmp_path_factory.mktemp("worker-home"), concurrency=4,
               env={"HS_TEST_TOKEN": SECRET_VALUE}).start()
    yield w
    w.stop()


class Harness:
    """A client of the engine as the CLI would be: service over the test Redis; runbooks from strings."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.app = make_app(url)
        self.rt = runtime(self.app)
        self.store: Store = self.rt.store
        self.service = Service(self.store, default_registry(), self.rt.publish, launch_canvas=self._canvas)
        self.tmp = tmp
        self.who = Identity("alice", "cli")

    def _canvas(self, run_id: str, plan: Any) -> None:
        from engine.canvas import compile_canvas

        compile_canvas(self.app, run_id, plan).apply_async()

    def runbook(self, text: str, name: str = "rb.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def launch(self, text: str, executor: str = "hotswap", **params: Any) -> str:
        return self.service.launch(self.runbook(text), params, self.who, executor=executor)

    def wait(self, run_id: str, statuses: set[str] | None = None, timeout: float = 60) -> dict[str, Any]:
        want = statuses or TERMINAL
        return wait_for(lambda: (r := self.store.run(run_id)) and r["status"] in want and r,  # type: ignore[no-any-return]
                        timeout=timeout, what=f"run {run_id} to reach {sorted(want)}")

    def wait_step(self, run_id: str, step: str, status: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (s := self.store.step(run_id, step))["status"] == status and s,  # type: ignore[no-any-return]
                        timeout=timeout, what=f"step {step} to be {status}")

    def step(self, run_id: str, step: str) -> dict[str, Any]:
        return self.store.step(run_id, step)


@pytest.fixture
def engine(redis_server: RedisServer, worker: Worker, tmp_path: Path) -> Harness:
    return Harness(redis_server.url, tmp_path)


def overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def now() -> float:
    return time.time()
