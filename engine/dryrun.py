"""Dry-run: walk the whole plan in order with every action in dry-run mode, in this process.

Nothing is changed: actions record what they would do (commands per host, HTTP requests) through
``ctx.would``. Read-only queries may still run so later steps can be shown with real inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actions.base import ActionContext, ActionRegistry, NotYet
from engine import templating
from engine.errors import HotswapError
from engine.executor import StepsView, ToolkitFactory, no_toolkits, template_context, typed_args
from engine.plan import Plan


@dataclass
class DryStep:
    id: str
    action: str
    status: str
    args: dict[str, Any] = field(default_factory=dict)
    would: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    note: str = ""


class _Log:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.lines.append("warning: " + message)

    def error(self, message: str) -> None:
        self.lines.append("error: " + message)


def dry_run(plan: Plan, registry: ActionRegistry, toolkits: ToolkitFactory = no_toolkits,
            run: Mapping[str, Any] | None = None, on_step: Callable[[DryStep], None] | None = None) -> list[DryStep]:
    results: dict[str, tuple[str | None, Any]] = {}
    run_meta = {"id": "dry-run", "runbook": plan.runbook, "dry_run": True, **(run or {})}
    out: list[DryStep] = []
    for step in plan.topological():
        lines: list[str] = []
        log = _Log(lines)
        ctx = ActionContext(run_id="dry-run", step_id=step.id, attempt=1, dry_run=True, log=log, run=run_meta)
        tk = toolkits("dry-run", log, True, ctx.would, [], lambda: False)
        ctx.inventory, ctx.ssh, ctx.http = tk.inventory, tk.ssh, tk.http
        inv = tk.inventory.as_template_context() if hasattr(tk.inventory, "as_template_context") else {}
        steps = StepsView(lambda ids: [results.get(i, ("succeeded", None)) for i in ids], plan, step.prefixes)
        context = template_context(plan.params, step, steps, run_meta, inv, {}, time.time())
        record = DryStep(step.id, step.action, "would run", would=ctx.planned, logs=lines)
        try:
            if step.when is not None and not templating.render(step.when, context):
                record.status = "would skip"
                results[step.id] = ("skipped", None)
                out.append(record)
                if on_step:
                    on_step(record)
                continue
            spec = registry.get(step.action)
            record.args = typed_args(spec, templating.render(step.args, context))
            result = spec(ctx, **record.args)
            results[step.id] = ("succeeded", result)
        except NotYet as e:
            record.note = f"would wait: {e.reason}"
            results[step.id] = ("succeeded", None)
        except (HotswapError, TypeError, KeyError) as e:
            record.status = "cannot show"
            record.note = f"depends on run-time values or failed in dry-run: {e}"
            results[step.id] = ("succeeded", None)
        if step.approval:
            record.note = (record.note + "; " if record.note else "") + "approval gate: " + step.approval.get("message", "")
        out.append(record)
        if on_step:
            on_step(record)
    return out


def format_dry_run(steps: list[DryStep]) -> list[str]:
    lines = []
    for s in steps:
        lines.append(f"- {s.id} ({s.action}): {s.status}" + (f"  [{s.note}]" if s.note else ""))
        for w in s.would:
            kind = w.get("kind", "?")
            if kind == "ssh":
                lines.append(f"    ssh {w.get('host')}: {w.get('command')}")
            elif kind == "http":
                body = f" {w.get('body')}" if w.get("body") not in (None, "") else ""
                lines.append(f"    http {w.get('method')} {w.get('url')}{body}")
            else:
                details = " ".join(f"{k}={v}" for k, v in w.items() if k != "kind")
                lines.append(f"    {kind}: {details}")
    lines.append(f"dry-run: {len(steps)} steps walked, {sum(len(s.would) for s in steps)} effects shown, nothing changed "
                 f"({time.strftime('%H:%M:%S')})")
    return lines
