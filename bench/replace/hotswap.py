"""replace-node through the engine as the CLI runs it (Service over Redis, a real ``hotswap worker``),
every approval gate approved as soon as it is reached."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actions import default_registry
from bench.replace.recording import Recording, read_run
from engine.celery_app import make_app, runtime
from engine.service import Identity, Service
from inventory.sources import load_inventory
from lab import Lab

TERMINAL = ("succeeded", "failed", "cancelled")


class RunFailed(RuntimeError):
    """The hotswap run did not succeed (the message has every step's status and error)."""


class Hotswap:
    def __init__(self, lab: Lab, redis_url: str, runbook: Path) -> None:
        rt = runtime(make_app(redis_url))
        self.store = rt.store
        self.inventory = load_inventory(lab.inventory_path)
        self.service = Service(self.store, default_registry(), rt.publish, lambda: self.inventory)
        self.runbook = runbook

    def replace(self, params: dict[str, Any], timeout: float) -> Recording:
        """Launch, approve gates at once, wait for the end; the recording of a run that succeeded."""
        started = time.time()
        run_id = self.service.launch(self.runbook, params, Identity("bench", "cli"))
        after, status, deadline = "0-0", None, time.monotonic() + timeout
        approvers: dict[str, str] = {}
        while status is None:
            if time.monotonic() > deadline:
                self.store.cancel(run_id, "bench")
                raise RunFailed(f"run {run_id} did not end in {timeout:g}s:\n{self.explain(run_id)}")
            for event_id, ev in self.store.events(run_id, after=after, block_ms=1000):
                after = event_id
                if ev.get("type") == "approval_requested":
                    approvers[ev["step"]] = (ev.get("approvers") or "bench").split(",")[0]
                elif ev.get("type") == "step" and ev.get("status") == "waiting" and ev.get("kind") == "approval":
                    # Only once the gate has parked: Service.approve wakes a step only when it is already
                    # waiting, so a decision recorded while the gate is still running stays unseen for its
                    # whole approval timeout (measured: the run sat at the gate until cancelled).
                    who = Identity(approvers.get(ev["step"], "bench"), "cli")
                    self.service.approve(run_id, ev["step"], who, comment="bench: at once")
                elif ev.get("type") == "run" and ev.get("status") in TERMINAL:
                    status = ev["status"]
        if status != "succeeded":
            raise RunFailed(f"run {run_id} ended {status}:\n{self.explain(run_id)}")
        cluster = self.inventory.cluster(str(params["cluster"]))
        return read_run(self.store, run_id, started, self.inventory.hosts, cluster.ceph)

    def explain(self, run_id: str) -> str:
        status = self.service.status(run_id)
        lines = [f"run {run_id}: {status['run']['status']}"]
        lines += [f"  {s['id']:<22} {s['status']:<10} {s['error'] or s['waiting_reason'] or ''}" for s in status["steps"]]
        return "\n".join(lines)
