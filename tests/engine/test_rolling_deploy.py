"""Runs outlive deploys: workers restarted on a changed action mid-run park the step with the reason
instead of running it with other arguments; a worker with the planned action finishes it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Harness
from tests.support.redis_server import RedisServer
from tests.support.workers import Worker, wait_for

pytestmark = pytest.mark.slow

SITE_V1 = '''
from actions.base import ActionContext, action

@action("site.move")
def move(ctx: ActionContext, *, osd: int) -> dict:
    return {"moved": osd, "by": "v1"}
'''

SITE_V2 = '''
from actions.base import ActionContext, action

@action("site.move")
def move(ctx: ActionContext, *, osds: list[int]) -> dict:
    return {"moved": osds, "by": "v2"}
'''

RUNBOOK = """
name: deploy-mid-run
steps:
  - id: gate
    action: core.approve
    with: {message: hold the run while workers are redeployed}
  - id: move
    action: site.move
    with: {osd: 3}
  - id: after
    action: core.echo
    with: {message: "moved {{ steps.move.result.moved }}"}
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    code = tmp_path / "site"
    code.mkdir()
    (code / "hs_site_actions.py").write_text(SITE_V1)
    monkeypatch.setenv("HOTSWAP_ACTION_MODULES", "hs_site_actions")
    monkeypatch.syspath_prepend(str(code))
    yield code
    sys.modules.pop("hs_site_actions", None)


def deploy(url: str, tmp: Path, site: Path, code: str, name: str) -> Worker:
    (site / "hs_site_actions.py").write_text(code)
    env = {"HOTSWAP_ACTION_MODULES": "hs_site_actions", "PYTHONPATH": str(site)}
    return Worker(url, tmp / name, concurrency=1, name=name, env=env).start()


def test_a_run_started_on_one_version_waits_on_an_incompatible_one_and_finishes_on_a_compatible_one(
        tmp_path: Path, site: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    workers: list[Worker] = []
    try:
        engine = Harness(server.url, tmp_path)
        workers.append(deploy(server.url, tmp_path, site, SITE_V1, "v1"))
        run = engine.launch(RUNBOOK)
        engine.wait_step(run, "gate", "waiting")
        workers.pop().stop()

        workers.append(deploy(server.url, tmp_path, site, SITE_V2, "v2"))
        engine.service.approve(run, "gate", engine.who)
        parked = wait_for(lambda: (s := engine.step(run, "move"))["status"] == "waiting" and s.get("wait_kind") == "deploy"
                          and s, timeout=30, what="the step to wait for a compatible worker")
        assert "no longer accepts the planned arguments" in parked["waiting_reason"]
        assert "osd" in parked["waiting_reason"]
        assert engine.store.run(run)["status"] == "running"
        assert any(ev.get("type") == "attention" and ev.get("step") == "move" for _, ev in engine.store.events(run))
        workers.pop().stop()

        workers.append(deploy(server.url, tmp_path, site, SITE_V1, "v1-again"))
        engine.store.wake_now(run, "move")
        record = engine.wait(run, timeout=60)
        assert record["status"] == "succeeded"
        assert engine.step(run, "move")["result"] == {"moved": 3, "by": "v1"}
        assert engine.step(run, "move")["attempt"] == 1
    finally:
        for w in workers:
            w.stop()
        server.stop()
