"""Compile a plan to a native Celery canvas (chains, groups, chords of real signatures).

This makes the structure the runbook asked for visible and runnable as plain Celery; hotswap's own
executor is the default because native canvas degrades on large workflows (see README).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain, group

from engine.celery_app import CANVAS_STEP_TASK
from engine.plan import Plan, Structure


def compile_canvas(app: Celery, run_id: str, plan: Plan) -> Any:
    task = app.signature(CANVAS_STEP_TASK)

    def sig(step_id: str) -> Any:
        return task.clone(kwargs={"run_id": run_id, "step_id": step_id}).set(immutable=True)

    def build(part: Structure) -> Any:
        kind = part[0]
        if kind == "step":
            return sig(part[1])
        if kind == "seq":
            children = [build(p) for p in part[1] if not _empty(p)]
            return children[0] if len(children) == 1 else chain(*children)
        if kind == "par":
            return group(*[build(p) for p in part[1] if not _empty(p)])
        if kind == "foreach":
            items = [build(p) for p in part[3] if not _empty(p)]
            cap = part[2] or len(items) or 1
            waves = [group(*items[i:i + cap]) for i in range(0, len(items), cap)]
            return waves[0] if len(waves) == 1 else chain(*waves)
        raise ValueError(f"unknown plan structure {kind!r}")

    return build(plan.structure)


def _empty(part: Structure) -> bool:
    if part[0] == "step":
        return False
    children = part[3] if part[0] == "foreach" else part[1]
    return all(_empty(c) for c in children)


def describe_canvas(canvas: Any, indent: str = "") -> list[str]:
    """The canvas as Celery would print it, one primitive per line."""
    from celery.canvas import _chain, chord

    lines: list[str] = []
    if isinstance(canvas, list | tuple):
        lines.append(f"{indent}group(")
        for t in canvas:
            lines.extend(describe_canvas(t, indent + "  "))
        lines.append(f"{indent})")
    elif isinstance(canvas, _chain):
        lines.append(f"{indent}chain(")
        for t in canvas.tasks:
            lines.extend(describe_canvas(t, indent + "  "))
        lines.append(f"{indent})")
    elif isinstance(canvas, chord):
        lines.append(f"{indent}chord(")
        lines.extend(describe_canvas(canvas.tasks, indent + "  "))
        lines.append(f"{indent}  body:")
        lines.extend(describe_canvas(canvas.body, indent + "    "))
        lines.append(f"{indent})")
    elif isinstance(canvas, group):
        lines.append(f"{indent}group(")
        for t in canvas.tasks:
            lines.extend(describe_canvas(t, indent + "  "))
        lines.append(f"{indent})")
    else:
        lines.append(f"{indent}{canvas.name}(step_id={canvas.kwargs.get('step_id')!r})")
    return lines
