"""The one place RBAC is enforced: every way in (CLI, HTTP API, chat, schedules) acts through a
:class:`GuardedService` built for the identity asking. Denials are audited and raise PermissionDenied."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.interfaces.facade import RunbookCatalog, audit_query
from engine.interfaces.policy import PermissionDenied, Policy, Request, principal
from engine.service import Identity, Service


class GuardedService:
    def __init__(self, service: Service, policy: Policy, who: Identity, catalog: RunbookCatalog,
                 inventory: Callable[[], Any] | None = None) -> None:
        self.service = service
        self.policy = policy
        self.who = policy.resolve(who)
        self.catalog = catalog
        self._inventory = inventory or service.inventory_loader

    # ---- checks ----------------------------------------------------------------------------------
    def allowed(self, request: Request) -> bool:
        return self.policy.check(self.who, request).allowed

    def require(self, request: Request, run: str | None = None) -> None:
        decision = self.policy.check(self.who, request)
        if decision.allowed:
            return
        self.service.store.audit(action="denied", verb=request.verb, who=self.who.name, principal=principal(self.who),
                                 source=self.who.source, run=run or "", runbook=request.runbook or "",
                                 clusters=",".join(request.clusters), gate=request.gate or "", reason=decision.reason)
        raise PermissionDenied(decision.reason)

    def _run_request(self, verb: str, record: Mapping[str, Any], gate: str | None = None) -> Request:
        return Request(verb, runbook=str(record.get("runbook")), gate=gate,
                       clusters=self.policy.clusters_of(record.get("params"), self._inventory()))

    def _require_on_run(self, verb: str, run_id: str, gate: str | None = None) -> dict[str, Any]:
        record = self.service.run(run_id)
        self.require(self._run_request(verb, record, gate), run=run_id)
        return record

    # ---- launching -------------------------------------------------------------------------------
    def launch(self, runbook: str | Path, params: Mapping[str, Any], *, dry_run: bool = False,
               by_path: bool = False, executor: str = "hotswap") -> str:
        """Validate, authorize against the resolved parameters, then launch. ``runbook`` is a catalogue name
        unless ``by_path`` (the CLI, which runs local files)."""
        path = Path(runbook) if by_path else self.catalog.path(str(runbook))
        rb, plan = self.service.plan(path, params)
        self.require(Request("launch", runbook=rb.name, clusters=self.policy.clusters_of(plan.params, self._inventory())))
        return self.service.launch_plan(rb, plan, self.who, dry_run=dry_run, executor=executor)

    # ---- reading ---------------------------------------------------------------------------------
    def status(self, run_id: str) -> dict[str, Any]:
        self._require_on_run("read", run_id)
        return self.service.status(run_id)

    def run(self, run_id: str) -> dict[str, Any]:
        return self._require_on_run("read", run_id)

    def runs(self, limit: int = 20, status: str | None = None, runbook: str | None = None,
             launched_by: str | None = None, source: str | None = None) -> list[dict[str, Any]]:
        """Runs this identity may read, newest first."""
        out = []
        inventory = self._inventory()
        for rec in self.service.runs(limit=max(limit * 5, 200), status=status, runbook=runbook):
            if launched_by and rec.get("launched_by") != launched_by:
                continue
            if source and rec.get("source") != source:
                continue
            req = Request("read", runbook=str(rec.get("runbook")),
                          clusters=self.policy.clusters_of(rec.get("params"), inventory))
            if self.allowed(req):
                out.append(rec)
            if len(out) >= limit:
                break
        return out

    def logs(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
        self._require_on_run("read", run_id)
        return self.service.logs(run_id, step_id)

    def events(self, run_id: str, after: str = "0-0", block_ms: int | None = None) -> list[tuple[str, dict[str, str]]]:
        return self.service.events(run_id, after, block_ms)

    def authorize_events(self, run_id: str) -> dict[str, Any]:
        """Check once before following a run's events (then :meth:`events` polls without re-checking)."""
        return self._require_on_run("read", run_id)

    def audit(self, **filters: Any) -> list[dict[str, str]]:
        self.require(Request("audit"))
        return audit_query(self.service, **filters)

    # ---- changing --------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> list[str]:
        self._require_on_run("cancel", run_id)
        return self.service.cancel(run_id, self.who)

    def resume(self, run_id: str) -> list[str]:
        self._require_on_run("resume", run_id)
        return self.service.resume(run_id, self.who)

    def approve(self, run_id: str, step_id: str, *, approved: bool = True, comment: str = "") -> bool:
        self._require_on_run("approve", run_id, gate=step_id)
        return self.service.approve(run_id, step_id, self.who, approved=approved, comment=comment)


class OpenService:
    """The same operations as :class:`GuardedService` for one identity, with no policy: used by the CLI
    when no policy file is configured (one operator on their own machine)."""

    def __init__(self, service: Service, who: Identity) -> None:
        self.service = service
        self.who = who

    def launch(self, runbook: str | Path, params: Mapping[str, Any], *, dry_run: bool = False,
               by_path: bool = True, executor: str = "hotswap") -> str:
        return self.service.launch(runbook, params, self.who, dry_run=dry_run, executor=executor)

    def status(self, run_id: str) -> dict[str, Any]:
        return self.service.status(run_id)

    def run(self, run_id: str) -> dict[str, Any]:
        return self.service.run(run_id)

    def runs(self, limit: int = 20, status: str | None = None, runbook: str | None = None) -> list[dict[str, Any]]:
        return self.service.runs(limit, status, runbook)

    def logs(self, run_id: str, step_id: str | None = None) -> list[dict[str, Any]]:
        return self.service.logs(run_id, step_id)

    def cancel(self, run_id: str) -> list[str]:
        return self.service.cancel(run_id, self.who)

    def resume(self, run_id: str) -> list[str]:
        return self.service.resume(run_id, self.who)

    def approve(self, run_id: str, step_id: str, *, approved: bool = True, comment: str = "") -> bool:
        return self.service.approve(run_id, step_id, self.who, approved=approved, comment=comment)
