"""The one API every interface (CLI, HTTP, chatops, schedules) uses: validate, plan, launch, status,
approve, cancel, resume, logs. Interfaces never touch Redis or Celery directly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actions.base import ActionRegistry
from engine.errors import ApprovalDenied, InvalidTransition, LockHeld, StepNotFound, ValidationError
from engine.params import resolve_params
from engine.plan import Plan, PlanStep, build_plan
from engine.runbook import Runbook, load_runbook
from engine.states import Status
from engine.store import Store

Publish = Callable[[str, Iterable[str]], None]


@dataclass(frozen=True)
class Identity:
    """Who asks, and through which way in."""

    name: str
    source: str = "cli"
    detail: Mapping[str, Any] = field(default_factory=dict)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


class Service:
    def __init__(self, store: Store, registry: ActionRegistry, publish: Publish,
                 inventory_loader: Callable[[], Any] = lambda: None,
                 launch_canvas: Callable[[str, Plan], None] | None = None) -> None:
        self.store = store
        self.registry = registry
        self.publish = publish
        self.inventory_loader = inventory_loader
        self.launch_canvas = launch_canvas

    # ---- before anything runs ---------------------------------------------------------------
    def load(self, path: str | Path) -> Runbook:
        return load_runbook(path, self.registry)

    def plan(self, path: str | Path, params: Mapping[str, Any]) -> tuple[Runbook, Plan]:
        return prepare(path, params, self.registry, self.inventory_loader())

    # ---- launching --------------------------------------------------------------------------
    def launch(self, path: str | Path, params: Mapping[str, Any], who: Identity, *, dry_run: bool = False,
               executor: str = "hotswap") -> str:
        runbook, plan = self.plan(path, params)
        return self.launch_plan(runbook, plan, who, dry_run=dry_run, executor=executor)

    def launch_plan(self, runbook: Runbook, plan: Plan, who: Identity, *, dry_run: bool = False,
                    executor: str = "hotswap") -> str:
        """Launch a plan made by ``plan``: whoever authorized that very plan launches it, not a new reading
        of the file and the inventory (which may have changed in between)."""
        run_id = new_run_id()
        stored_plan = plan
        meta = {
            "launched_by": who.name,
            "source": who.source,
            "launched_by_detail": dict(who.detail),
            "params": plan.params,
            "dry_run": dry_run,
            "executor": executor,
            "locks": plan.locks,
        }
        self.store.create_run(run_id, stored_plan, meta)
        self.store.audit(action="launch", run=run_id, runbook=runbook.name, who=who.name, source=who.source, detail=dict(who.detail),
                         params=plan.params, dry_run=dry_run)
        busy = self.store.acquire_locks(run_id, plan)
        if busy:
            lock, holders = busy
            refuse = any(lk["on_busy"] == "refuse" for lk in plan.locks if lk["name"] == lock)
            if refuse:
                self.store.refuse_run(run_id, f"refused: lock '{lock}' is held by run {holders}")
                self.store.audit(action="refused", run=run_id, who=who.name, source=who.source, detail=dict(who.detail), lock=lock,
                                 holders=holders)
                raise LockHeld(lock, holders)
            self.store.wait_for_lock(run_id, lock, holders)
            return run_id
        ready = self.store.start_run(run_id)
        if executor == "canvas":
            if self.launch_canvas is None:
                raise InvalidTransition("the canvas executor is not available in this process")
            self.launch_canvas(run_id, plan)
        elif ready:
            self.publish(run_id, ready)
        return run_id

    # ---- reading ------------------------------------------------------------------------------
    def run(self, run_id: str) -> dict[str, Any]:
        record = self.store.run(run_id)
        return record

    def status(self, run_id: str) -> dict[str, Any]:
        record = self.run(run_id)
        plan = self.store.plan(run_id)
        return {"run": record, "steps": self._step_rows(run_id, plan.steps),
                "cleanup": self._step_rows(run_id, plan.cleanup)}

    def _step_rows(self, run_id: str, steps: Mapping[str, PlanStep]) -> list[dict[str, Any]]:
        details = self.store.steps(run_id, steps)
        rows = []
        for sid, step in steps.items():
            d = details[sid]
            rows.append({
                "id": sid, "action": step.action, "status": d["status"], "attempt": d.get("attempt", 0),
                "started": d.get("started"), "finished": d.get("finished"), "error": d.get("error") or "",
                "waiting_reason": d.get("waiting_reason") or "", "result": d.get("result"),
                "poll_late": d.get("poll_late"),
                "needs_approval": bool(step.approval) and d["status"] == Status.WAITING and d.get("wait_kind") == "approval",
            })
        return rows

    def runs(self, limit: int = 20, status: str | None = None, runbook: str | None = None) -> list[dict[str, Any]]:
        out = self.store.list_runs(limit, status, runbook)
        return out

    def logs(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
        plan = self.store.plan(run_id)
        ids = [step_id] if step_id else list(plan.steps)
        if step_id and step_id not in plan.steps:
            raise StepNotFound(run_id, step_id)
        return [{"step": sid, **line} for sid in ids for line in self.store.logs(run_id, sid)]

    def events(self, run_id: str, after: str = "0-0", block_ms: int | None = None) -> list[tuple[str, dict[str, str]]]:
        self.store.run(run_id)
        return self.store.events(run_id, after, block_ms)

    # ---- changing ---------------------------------------------------------------------------
    def cancel(self, run_id: str, who: Identity) -> list[str]:
        """Cancel a run; returns the steps still running (they are interrupted and then cleanup runs)."""
        running, start_cleanup = self.store.cancel(run_id, who.name)
        self.store.audit(action="cancel", run=run_id, who=who.name, source=who.source, detail=dict(who.detail))
        if start_cleanup:
            roots = self.store.plan(run_id).cleanup_roots()
            self.store.arm(run_id, roots)
            self.publish(run_id, roots)
        return running

    def resume(self, run_id: str, who: Identity) -> list[str]:
        ready = self.store.resume(run_id, who.name)
        self.store.audit(action="resume", run=run_id, who=who.name, source=who.source, detail=dict(who.detail))
        if ready:
            self.publish(run_id, ready)
        return ready

    def approve(self, run_id: str, step_id: str, who: Identity, *, approved: bool = True, comment: str = "") -> bool:
        """Record a decision on an approval gate; True when it was the first decision."""
        plan = self.store.plan(run_id)
        step = plan.steps.get(step_id)
        if step is None:
            raise StepNotFound(run_id, step_id)
        if not step.approval:
            raise InvalidTransition(f"step '{step_id}' has no approval gate")
        allowed = step.approval.get("approvers") or []
        if allowed and who.name not in allowed:
            self.store.audit(action="approve_denied", run=run_id, step=step_id, who=who.name, source=who.source, detail=dict(who.detail))
            raise ApprovalDenied(f"{who.name} may not approve '{step_id}': allowed are {', '.join(allowed)}")
        if self.store.decision(run_id, step_id) is not None:
            self.store.audit(action="approve_repeated", run=run_id, step=step_id, who=who.name, source=who.source, detail=dict(who.detail))
            return False
        status = self.store.statuses(run_id).get(step_id)
        if status in (Status.SUCCEEDED, Status.FAILED, Status.SKIPPED, Status.CANCELLED):
            raise InvalidTransition(f"step '{step_id}' is already {status}")
        decision = {"approved": approved, "by": who.name, "source": who.source, "comment": comment, "t": time.time()}
        first = self.store.record_decision(run_id, step_id, decision)
        self.store.audit(action="approve" if approved else "reject", run=run_id, step=step_id, who=who.name,
                         source=who.source, first=first, comment=comment)
        if first and status == Status.WAITING:
            self.store.wake_now(run_id, step_id)
        return first


def prepare(path: str | Path, params: Mapping[str, Any], registry: ActionRegistry,
            inventory: Any = None) -> tuple[Runbook, Plan]:
    """Load and validate a runbook, resolve its parameters and build its plan. Pure: nothing runs."""
    runbook = load_runbook(path, registry)
    values = resolve_params(runbook, params, inventory)
    inv_ctx = inventory.as_template_context() if inventory is not None else {}
    plan = build_plan(runbook, values, inv_ctx)
    used = {s.action for s in (*plan.steps.values(), *plan.cleanup.values())}
    plan.actions = {name: registry.get(name).identity() for name in sorted(used)}
    return runbook, plan


def validate_paths(paths: Iterable[Path], registry: ActionRegistry) -> list[tuple[Path, ValidationError | None]]:
    results: list[tuple[Path, ValidationError | None]] = []
    for path in paths:
        try:
            load_runbook(path, registry)
            results.append((path, None))
        except ValidationError as e:
            results.append((path, e))
    return results
