"""Steps that reach a host over SSH (a real sshd): arguments stay literal, and cancel or a timeout kills
the remote process instead of leaving it running."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.service import Identity
from tests.engine.conftest import Harness
from tests.support.redis_server import RedisServer
from tests.support.sshd import Sshd
from tests.support.workers import Worker, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    sshd = Sshd(tmp_path_factory.mktemp("sshd"))
    sshd.start()
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def remote(box: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """Its own Redis and a worker whose inventory has the host ``box`` (the real sshd)."""
    home = tmp_path_factory.mktemp("remote")
    server = RedisServer(home / "redis").start()
    inventory = home / "inventory.yaml"
    inventory.write_text(f"""
ssh:
  user: {box.user}
  known_hosts: {box.known_hosts}
  key_file: {box.client_key}
  connect_timeout: 5
hosts:
  box:
    address: 127.0.0.1
    port: {box.port}
""")
    worker = Worker(server.url, home / "w", concurrency=2, name="remote",
                    env={"HOTSWAP_INVENTORY": str(inventory)}).start()
    yield Harness(server.url, home)
    worker.stop()
    server.stop()


def remote_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return out.stdout.split()


def test_a_hostile_parameter_arrives_as_one_literal_argument(remote: Harness, tmp_path: Path) -> None:
    engine = remote
    canary = tmp_path / "pwned"
    run = engine.launch("""
name: literal
params:
  node: {type: string}
steps:
  - id: show
    action: host.run
    with: {host: box, argv: [printf, "%s|", "{{ params.node }}"]}
""", node=f"node2; touch {canary} $(touch {canary}) `touch {canary}`")
    assert engine.wait(run)["status"] == "succeeded", engine.store.run(run).get("reason")
    assert engine.step(run, "show")["result"]["stdout"] == f"node2; touch {canary} $(touch {canary}) `touch {canary}`|"
    assert not canary.exists()


def test_cancel_kills_the_remote_command(remote: Harness) -> None:
    engine = remote
    run = engine.launch("""
name: cancel-remote
steps:
  - id: long
    action: host.run
    with: {host: box, argv: [sleep, "61.25"]}
""")
    wait_for(lambda: remote_processes("sleep 61.25"), what="the remote sleep to start")
    engine.service.cancel(run, Identity("alice"))
    wait_for(lambda: engine.step(run, "long")["status"] == "failed", timeout=30, what="the step to stop")
    assert "cancelled" in engine.step(run, "long")["error"]
    wait_for(lambda: not remote_processes("sleep 61.25"), timeout=15, what="the remote sleep to be killed")


def test_a_step_timeout_kills_the_remote_command(remote: Harness) -> None:
    engine = remote
    run = engine.launch("""
name: timeout-remote
steps:
  - id: long
    action: host.run
    with: {host: box, argv: [sleep, "62.25"]}
    timeout: 2s
""")
    record = engine.wait(run, timeout=60)
    assert record["status"] == "failed" and "exceeded its timeout of 2s" in record["reason"]
    wait_for(lambda: not remote_processes("sleep 62.25"), timeout=15, what="the remote sleep to be killed")
