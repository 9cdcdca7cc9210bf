"""Core actions: building blocks for runbooks and tests."""

from __future__ import annotations

import time
from typing import Any, Literal

from actions.base import ActionContext, action
from engine.errors import ActionError


@action("core.echo")
def echo(ctx: ActionContext, *, message: str, data: Any = None) -> dict[str, Any]:
    """Log a message and return it (with optional data) as the step result."""
    ctx.log.info(message)
    return {"message": message, "data": data}


@action("core.sleep")
def sleep(ctx: ActionContext, *, seconds: float) -> dict[str, Any]:
    """Sleep in the worker for a number of seconds (holds a worker slot; use core.wait_until to wait)."""
    if ctx.dry_run:
        ctx.would("sleep", seconds=seconds)
        return {"slept": 0.0}
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if ctx.cancelled():
            raise ActionError("cancelled while sleeping")
        time.sleep(min(left, 0.2))
    return {"slept": seconds}


@action("core.fail")
def fail(ctx: ActionContext, *, message: str = "failed on purpose", times: int = -1) -> dict[str, Any]:
    """Fail with ``message``. With ``times: N`` only the first N attempts fail (for retry tests)."""
    if times < 0 or ctx.attempt <= times:
        raise ActionError(f"{message} (attempt {ctx.attempt})")
    return {"attempt": ctx.attempt}


@action("core.wait_until", polling=True)
def wait_until(ctx: ActionContext, *, condition: bool, interval: float = 5.0, reason: str = "") -> dict[str, Any]:
    """Poll until the templated ``condition`` is true, re-rendered every ``interval`` seconds.

    The step does not hold a worker slot while it waits. Bound the wait with the step's ``timeout:``.
    """
    polls = int(ctx.memory.get("polls", 0)) + 1
    ctx.memory["polls"] = polls
    if condition or ctx.dry_run:
        return {"polls": polls}
    ctx.not_yet(interval, reason or "condition is false")


@action("core.approve", polling=True)
def approve(
    ctx: ActionContext,
    *,
    message: str,
    approvers: list[str] | None = None,
    timeout: str | int | float | None = None,
    on_timeout: Literal["reject", "approve", "fail"] = "reject",
) -> dict[str, Any]:
    """A human gate: wait until an allowed approver approves (``hotswap approve RUN STEP``).

    The engine lifts ``message``, ``approvers``, ``timeout`` and ``on_timeout`` into the step's
    approval gate; by the time this runs the gate was approved, and the decision is the result.
    """
    decision = ctx.approvals.decision() if ctx.approvals else None
    if ctx.dry_run:
        ctx.would("wait for approval", message=message, approvers=",".join(approvers or []) or "anyone")
        return {"approved": True, "by": "dry-run"}
    if decision is None:
        ctx.not_yet(3600, f"waiting for approval: {message}")
    return dict(decision)
