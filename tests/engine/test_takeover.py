"""A pool child that dies mid-step is noticed by its worker's main process: the step runs again at once,
not after its lease (30 s for the session worker) runs out."""

from __future__ import annotations

import os
import signal
import time

from tests.engine.conftest import Harness
from tests.support.workers import wait_for


def test_a_killed_pool_child_is_taken_over_within_seconds_not_after_the_lease(engine: Harness) -> None:
    run = engine.launch("""
name: takeover
steps:
  - id: long
    action: core.sleep
    with: {seconds: 8}
  - id: after
    action: core.echo
    with: {message: done}
""")
    step = engine.wait_step(run, "long", "running", timeout=30)
    host, _, pid = str(step["worker"]).rpartition(":")
    assert host and int(pid) != os.getpid()
    os.kill(int(pid), signal.SIGKILL)
    killed = time.monotonic()
    again = wait_for(lambda: (s := engine.step(run, "long"))["attempt"] == 2 and s["status"] == "running" and s,
                     timeout=20, what="the step to run again as attempt 2")
    taken_over_after = time.monotonic() - killed
    assert taken_over_after < 5, f"taken over after {taken_over_after:.1f}s"
    assert again["worker"] != step["worker"]
    record = engine.wait(run, timeout=60)
    assert record["status"] == "succeeded"
    claims = [ev for _, ev in engine.store.events(run) if ev.get("type") == "step" and ev.get("step") == "long"
              and ev.get("status") == "running"]
    assert [ev.get("kind") for ev in claims] == ["running", "takeover"]
