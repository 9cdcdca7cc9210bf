"""The HTTP API (FastAPI): JSON in and out, OpenAPI at /openapi.json, every request authenticated.

Authentication: ``Authorization: Bearer <token>`` checked against SHA-256 hashes in the tokens file,
or, when ``trusted_header`` is configured, that header on requests from a trusted proxy address.
Every call acts through a :class:`GuardedService` for the caller, so the policy applies as on the CLI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.errors import (
    ApprovalDenied,
    ConfigError,
    HotswapError,
    InvalidTransition,
    LockHeld,
    RunNotFound,
    StepNotFound,
    ValidationError,
)
from engine.interfaces.facade import RunbookCatalog, RunbookNotFound, list_actions, list_inventory
from engine.interfaces.guard import GuardedService
from engine.interfaces.policy import PermissionDenied
from engine.interfaces.policy import Request as PolicyRequest
from engine.interfaces.settings import ServerSettings, token_name
from engine.service import Identity, Service
from engine.states import run_settled

log = logging.getLogger("hotswap.api")
API = "/api/v1"


class ApiError(HotswapError):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass
class ServerContext:
    """What the server process shares between requests."""

    service: Service
    settings: ServerSettings
    catalog: RunbookCatalog
    inventory: Callable[[], Any] = lambda: None
    extra_routers: list[Any] = field(default_factory=list)
    schedules: Any = None
    """A :class:`engine.interfaces.schedules.ScheduleBook`, when schedules are configured."""

    def guard(self, who: Identity) -> GuardedService:
        return GuardedService(self.service, self.settings.require_policy(), who, self.catalog, self.inventory)


# ---- request and response bodies -------------------------------------------------------------------
class LaunchBody(BaseModel):
    runbook: str = Field(description="runbook name (its 'name:' or file stem in the server's runbooks directory)")
    params: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = Field(False, description="run every step in dry-run mode: show commands, change nothing")


class LaunchReply(BaseModel):
    run: str


class ApproveBody(BaseModel):
    approved: bool = True
    comment: str = ""


class ApproveReply(BaseModel):
    run: str
    step: str
    approved: bool
    first: bool = Field(description="false when the gate had already been decided (nothing changed)")


class ChangeReply(BaseModel):
    run: str
    steps: list[str] = Field(description="cancel: steps still finishing; resume: steps restarted")


class Issue(BaseModel):
    file: str | None
    line: int | None
    column: int | None
    step: str | None
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    issues: list[Issue] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc} for code, desc in (
        (401, "not authenticated"), (403, "denied by the policy"), (404, "no such run, step or runbook"),
        (409, "not possible in the run's current status"), (422, "invalid runbook, parameters or body"))
}


# ---- errors -----------------------------------------------------------------------------------------
_STATUS: list[tuple[type[HotswapError], int, str]] = [
    (ValidationError, 422, "validation"),
    (PermissionDenied, 403, "forbidden"),
    (ApprovalDenied, 403, "forbidden"),
    (RunNotFound, 404, "not_found"),
    (StepNotFound, 404, "not_found"),
    (RunbookNotFound, 404, "not_found"),
    (InvalidTransition, 409, "conflict"),
    (LockHeld, 409, "conflict"),
    (ConfigError, 500, "config"),
]


def error_response(exc: HotswapError) -> JSONResponse:
    if isinstance(exc, ApiError):
        return JSONResponse({"error": exc.kind, "message": str(exc)}, status_code=exc.status,
                            headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            body: dict[str, Any] = {"error": kind, "message": str(exc)}
            if isinstance(exc, ValidationError):
                body["issues"] = [i.as_dict() for i in exc.issues]
            return JSONResponse(body, status_code=status)
    return JSONResponse({"error": "bad_request", "message": str(exc)}, status_code=400)


# ---- authentication -----------------------------------------------------------------------------------
def authenticate(settings: ServerSettings, request: Request) -> Identity:
    client = request.client.host if request.client else ""
    auth = request.headers.get("authorization", "")
    scheme, _, presented = auth.partition(" ")
    if scheme.lower() == "bearer" and presented.strip():
        name = token_name(settings.tokens, presented.strip())
        if name is None:
            raise ApiError(401, "unauthorized", "invalid API token")
        return Identity(name, "api", {"principal": f"token:{name}", "remote": client})
    header = settings.trusted_header
    if header and request.headers.get(header):
        if client not in settings.trusted_proxies:
            raise ApiError(401, "unauthorized", f"the {header} header is only trusted from the configured proxies")
        user = request.headers[header].strip()
        return Identity(user, "api", {"principal": f"proxy:{user}", "remote": client})
    how = "Authorization: Bearer <token>" + (f" or {header} from a trusted proxy" if header else "")
    raise ApiError(401, "unauthorized", f"authentication required: send {how}")


# ---- the app --------------------------------------------------------------------------------------------
def create_app(ctx: ServerContext) -> FastAPI:
    ctx.settings.require_policy()
    app = FastAPI(title="hotswap", version="1", description=(
        "Launch and follow hotswap runbook runs. Every request is authenticated (Bearer API token or a "
        "trusted proxy header) and authorized by the policy file. Errors are JSON: {error, message, issues?}."))

    @app.exception_handler(HotswapError)
    async def hotswap_error(_: Request, exc: HotswapError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def body_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        messages = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        issues = [{"file": None, "line": None, "column": None, "step": None, "message": m} for m in messages]
        return JSONResponse({"error": "validation", "message": "; ".join(messages),
                             "issues": issues}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": "http", "message": str(exc.detail)}, status_code=exc.status_code)

    def guard(request: Request) -> GuardedService:
        return ctx.guard(authenticate(ctx.settings, request))

    Guard = Depends(guard)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(f"{API}/runs", status_code=201, response_model=LaunchReply, responses=ERRORS, tags=["runs"])
    def launch(body: LaunchBody, g: GuardedService = Guard) -> LaunchReply:
        """Launch a runbook. Validation errors come back as 422 with file/line/column of each issue."""
        return LaunchReply(run=g.launch(body.runbook, body.params, dry_run=body.dry_run))

    @app.get(f"{API}/runs", responses=ERRORS, tags=["runs"])
    def runs(g: GuardedService = Guard, limit: int = Query(20, ge=1, le=1000), status: str | None = None,
             runbook: str | None = None, launched_by: str | None = None,
             source: str | None = None) -> list[dict[str, Any]]:
        """Recent runs the caller may read, newest first, filtered."""
        return g.runs(limit, status, runbook, launched_by, source)

    @app.get(f"{API}/runs/{{run_id}}", responses=ERRORS, tags=["runs"])
    def get_run(run_id: str, g: GuardedService = Guard) -> dict[str, Any]:
        """A run and its steps (status, attempts, timings, errors, waiting reasons, pending approvals)."""
        return g.status(run_id)

    @app.get(f"{API}/runs/{{run_id}}/logs", responses=ERRORS, tags=["runs"])
    def get_logs(run_id: str, g: GuardedService = Guard, step: str | None = None) -> list[dict[str, Any]]:
        """Log lines of every step (or of one ``step``): {step, t, level, msg}."""
        return g.logs(run_id, step)

    @app.get(f"{API}/runs/{{run_id}}/events", responses={
        **ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}}, tags=["runs"])
    def events(run_id: str, request: Request, g: GuardedService = Guard, after: str = "0-0") -> StreamingResponse:
        """The run's events live as server-sent events (``id`` is the event id; resume with ``after`` or
        Last-Event-ID). The stream ends with an ``end`` event once the run has finished."""
        g.authorize_events(run_id)
        start = request.headers.get("last-event-id") or after
        return StreamingResponse(_sse(g, run_id, start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post(f"{API}/runs/{{run_id}}/steps/{{step_id}}/approve", response_model=ApproveReply, responses=ERRORS,
              tags=["runs"])
    def approve(run_id: str, step_id: str, body: ApproveBody | None = None, g: GuardedService = Guard) -> ApproveReply:
        """Approve (or with approved=false reject) a step's approval gate. Idempotent: the first decision wins."""
        b = body or ApproveBody()
        first = g.approve(run_id, step_id, approved=b.approved, comment=b.comment)
        return ApproveReply(run=run_id, step=step_id, approved=b.approved, first=first)

    @app.post(f"{API}/runs/{{run_id}}/cancel", response_model=ChangeReply, responses=ERRORS, tags=["runs"])
    def cancel(run_id: str, g: GuardedService = Guard) -> ChangeReply:
        return ChangeReply(run=run_id, steps=g.cancel(run_id))

    @app.post(f"{API}/runs/{{run_id}}/resume", response_model=ChangeReply, responses=ERRORS, tags=["runs"])
    def resume(run_id: str, g: GuardedService = Guard) -> ChangeReply:
        return ChangeReply(run=run_id, steps=g.resume(run_id))

    @app.get(f"{API}/runbooks", responses=ERRORS, tags=["catalogue"])
    def runbooks(g: GuardedService = Guard) -> list[dict[str, Any]]:
        """Runbooks the server can launch (invalid ones listed with their issues)."""
        return [{"name": e.name, "file": e.file.name, "description": e.description, "params": e.params,
                 "issues": e.issues} for e in ctx.catalog.entries()
                if g.allowed(PolicyRequest("read", runbook=e.name))]

    @app.get(f"{API}/actions", responses=ERRORS, tags=["catalogue"])
    def actions(g: GuardedService = Guard) -> list[dict[str, Any]]:
        return list_actions(ctx.service.registry)

    @app.get(f"{API}/inventory", responses=ERRORS, tags=["catalogue"])
    def inventory(g: GuardedService = Guard, cluster: str | None = None, role: str | None = None,
                  rack: str | None = None, datacenter: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Inventory hosts, filtered (``name`` is a glob)."""
        return list_inventory(ctx.inventory(), cluster=cluster, role=role, rack=rack, datacenter=datacenter,
                              pattern=name)

    @app.get(f"{API}/audit", responses=ERRORS, tags=["audit"])
    def audit(g: GuardedService = Guard, limit: int = Query(100, ge=1, le=10_000), action: str | None = None,
              who: str | None = None, source: str | None = None, run: str | None = None,
              since: float | None = None) -> list[dict[str, str]]:
        """Audit entries, newest first: launches, approvals, denials, cancels, resumes, schedule fires/skips."""
        return g.audit(limit=limit, action=action, who=who, source=source, run=run, since=since)

    @app.get(f"{API}/schedules", responses=ERRORS, tags=["schedules"])
    def schedules(g: GuardedService = Guard) -> list[dict[str, Any]]:
        """Declared schedules with their next fire times."""
        g.require(PolicyRequest("read"))
        return ctx.schedules.describe() if ctx.schedules is not None else []

    @app.post(f"{API}/schedules/{{name}}/fire", responses=ERRORS, tags=["schedules"])
    def fire(name: str, g: GuardedService = Guard, cluster: str | None = None) -> list[dict[str, Any]]:
        """Fire a schedule now (for testing): the same overlap, lock and policy checks as a timed fire."""
        if ctx.schedules is None:
            raise ApiError(404, "not_found", "no schedules are configured")
        g.require(PolicyRequest("launch", runbook=ctx.schedules.get(name).runbook))
        return [o.as_dict() for o in ctx.schedules.fire(name, cluster=cluster, manual_by=g.who)]

    for router in ctx.extra_routers:
        app.include_router(router)
    return app


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (it does not depend on the configuration; nothing connects)."""
    from pathlib import Path

    from engine.interfaces.policy import Policy

    settings = ServerSettings(policy=Policy())
    ctx = ServerContext(None, settings, RunbookCatalog(Path("runbooks"), None))  # type: ignore[arg-type]
    return create_app(ctx).openapi()


def _sse(g: GuardedService, run_id: str, after: str) -> Iterator[str]:
    last = after
    while True:
        batch = g.events(run_id, last, block_ms=1000)
        for eid, ev in batch:
            last = eid
            yield f"id: {eid}\nevent: {ev.get('type', 'message')}\ndata: {json.dumps(ev)}\n\n"
        if not batch:
            yield ": keep-alive\n\n"
        if run_settled(g.service.run(run_id)) and not g.events(run_id, last):
            yield f"event: end\ndata: {json.dumps({'run': run_id})}\n\n"
            return
