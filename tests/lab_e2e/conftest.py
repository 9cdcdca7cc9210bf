"""End-to-end fixtures: the real Ceph lab, a real redis-server and a real `hotswap worker` whose
actions reach the lab's hosts over SSH through the lab's inventory ($HOTSWAP_INVENTORY)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actions import default_registry
from engine.celery_app import make_app, runtime
from engine.service import Identity, Service
from engine.states import Status
from engine.store import Store
from inventory.sources import load_inventory
from lab import Lab, clientload
from lab.clientload import ClientLoad
from lab.pytest_plugin import ceph_lab  # noqa: F401 - the session fixture, re-exported for these tests
from tests.lab_e2e.pgsampler import PgSampler
from tests.support.redis_server import RedisServer
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
TERMINAL = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}
OPERATION_FLAGS = {"noout", "norebalance", "nobackfill", "norecover", "noscrub", "nodeep-scrub", "noup", "nodown", "noin"}
T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 120, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class LabEngine:
    """The engine as the CLI uses it (Service over Redis), launching the project's runbooks on the lab."""

    def __init__(self, lab: Lab, redis_url: str, worker: Worker) -> None:
        self.lab = lab
        self.worker = worker
        app = make_app(redis_url)
        rt = runtime(app)
        self.store: Store = rt.store
        inventory = load_inventory(lab.inventory_path)
        self.service = Service(self.store, default_registry(), rt.publish, lambda: inventory)
        self.operator = Identity("alice", "cli")

    def launch(self, runbook: str, **params: Any) -> str:
        return self.service.launch(RUNBOOKS / runbook, params, self.operator)

    def step(self, run_id: str, step: str) -> dict[str, Any]:
        return self.store.step(run_id, step)

    def wait_step(self, run_id: str, step: str, status: str, timeout: float) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            self._fail_fast(run_id)
            s = self.store.step(run_id, step)
            return s if s["status"] == status else None

        return eventually(reached, f"step {step} of run {run_id} to be {status}", timeout)

    def wait(self, run_id: str, timeout: float) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            r = self.store.run(run_id)
            return r if r["status"] in TERMINAL else None

        return eventually(done, f"run {run_id} to end", timeout, interval=1.0)

    def _fail_fast(self, run_id: str) -> None:
        run = self.store.run(run_id)
        if run["status"] in TERMINAL:
            pytest.fail(f"run {run_id} ended {run['status']} early:\n{self.explain(run_id)}")

    def explain(self, run_id: str) -> str:
        status = self.service.status(run_id)
        lines = [f"run {run_id}: {status['run']['status']}"]
        for s in status["steps"]:
            lines.append(f"  {s['id']:<16} {s['status']:<10} {s['error'] or s['waiting_reason']}")
        return "\n".join(lines)

    def result(self, run_id: str, step: str) -> Any:
        return self.step(run_id, step).get("result")


@pytest.fixture(scope="session")
def lab_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("lab-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lab_worker(ceph_lab: Lab, lab_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:  # noqa: F811
    env = {"HOTSWAP_INVENTORY": str(ceph_lab.inventory_path)}
    w = Worker(lab_redis.url, tmp_path_factory.mktemp("lab-worker-home"), concurrency=4, name="lab", env=env).start()
    yield w
    w.stop()


@pytest.fixture(scope="session")
def lab_engine(ceph_lab: Lab, lab_redis: RedisServer, lab_worker: Worker) -> LabEngine:  # noqa: F811
    return LabEngine(ceph_lab, lab_redis.url, lab_worker)


@pytest.fixture
def settled_lab(ceph_lab: Lab) -> Lab:  # noqa: F811
    """The lab, HEALTH_OK and clean, with the receiver emptied."""
    ceph_lab.wait_settled(timeout=300)
    ceph_lab.clear_received()
    return ceph_lab


@pytest.fixture
def pg_sampler(settled_lab: Lab) -> Iterator[PgSampler]:
    """Every PG's state about once a second for the whole test; read ``pg_sampler.findings``."""
    with PgSampler(settled_lab) as sampler:
        yield sampler


@pytest.fixture
def client_load(settled_lab: Lab) -> Iterator[ClientLoad]:
    """4 KiB client writes+reads on the replicated and the EC pool for the whole test, the idle p99
    measured first (5 s). Time phases with ``client_load.window("drain")``; ``client_load.stop()`` returns
    the summary (ops, errors, p99_ms, idle_p99_ms, windows[...]); teardown stops it if the test did not."""
    load = clientload.start(settled_lab)
    try:
        yield load
    finally:
        load.stop()


def silences(lab: Lab) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{lab.alertmanager_url}/api/v2/silences", timeout=10) as response:
        data: list[dict[str, Any]] = json.loads(response.read())
    return data


def run_silences(lab: Lab, run_id: str) -> list[dict[str, Any]]:
    return [s for s in silences(lab) if f"run={run_id} " in s.get("comment", "")]


def host_osds(lab: Lab, host: str) -> list[int] | None:
    for node in lab.ceph_json("osd", "tree")["nodes"]:
        if node.get("type") == "host" and node["name"] == host:
            return sorted(int(c) for c in node.get("children") or [])
    return None


def osd_states(lab: Lab) -> dict[int, dict[str, Any]]:
    return {int(o["osd"]): o for o in lab.ceph_json("osd", "dump")["osds"]}


def crush_weights(lab: Lab) -> dict[int, float]:
    return {int(n["id"]): float(n["crush_weight"]) for n in lab.ceph_json("osd", "tree")["nodes"] if n["type"] == "osd"}


def assert_healthy_and_clean(lab: Lab) -> dict[str, Any]:
    status: dict[str, Any] = lab.ceph_json("status")
    assert status["health"]["status"] == "HEALTH_OK", status["health"]
    states = {s["state_name"]: s["count"] for s in status["pgmap"]["pgs_by_state"]}
    assert set(states) == {"active+clean"}, states
    flags = set(lab.ceph_json("osd", "dump")["flags_set"])
    assert not flags & OPERATION_FLAGS, f"flags left set: {sorted(flags & OPERATION_FLAGS)}"
    return status
