"""Plan: a runbook with its parameters and inventory rendered into a DAG of concrete steps.

The plan is plain data (it round-trips through dicts with a version field) so the store can keep it
and any worker can execute any step of it. ``for_each`` is expanded here; ``concurrency: N`` becomes
dependency edges (item i waits for item i-N), which caps the number of items in flight at N.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import templating
from engine.errors import ValidationError, ValidationIssue
from engine.runbook import (
    MAX_FOR_EACH_ITEMS,
    ForEachNode,
    LockDef,
    Node,
    ParallelNode,
    Runbook,
    SequenceNode,
    StepNode,
)

PLAN_VERSION = 1
MAX_PLAN_STEPS = 50_000

Structure = list[Any]
"""Nested display/canvas structure: ["step", id] | ["seq", [...]] | ["par", [...]] | ["foreach", id, concurrency, [...]]."""


@dataclass
class PlanStep:
    id: str
    action: str
    args: dict[str, Any]
    when: str | None = None
    retry: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    approval: dict[str, Any] | None = None
    deps: list[str] = field(default_factory=list)
    succ: list[str] = field(default_factory=list)
    scope: dict[str, Any] = field(default_factory=dict)
    """Loop variables of enclosing for_each blocks."""
    prefixes: list[str] = field(default_factory=list)
    """Id prefixes of enclosing for_each items, innermost first: ``steps.x`` looks in these first."""
    budget: str = ""
    """The for_each block with a failure budget this step counts against (its id), if any."""
    cleanup: bool = False
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanStep:
        return cls(**data)


@dataclass
class Plan:
    runbook: str
    file: str
    params: dict[str, Any]
    steps: dict[str, PlanStep]
    structure: Structure
    groups: dict[str, list[str]]
    """for_each id -> the last step of each item, in item order (for ``steps.<for_each id>.results``)."""
    locks: list[dict[str, Any]] = field(default_factory=list)
    """[{name, limit, on_busy}] rendered."""
    budgets: dict[str, int] = field(default_factory=dict)
    """for_each id -> how many items may fail before the run fails."""
    secret_params: list[str] = field(default_factory=list)
    """Parameters holding secret references (env:NAME, file:/path), resolved only in workers."""
    cleanup: dict[str, PlanStep] = field(default_factory=dict)
    cleanup_structure: Structure = field(default_factory=lambda: ["seq", []])
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """action name -> {"version", "signature"} of the action the plan was validated against, so a worker
    deployed later can tell whether its action still means what the plan meant (see Executor)."""
    version: int = PLAN_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "runbook": self.runbook,
            "file": self.file,
            "params": self.params,
            "steps": [s.to_dict() for s in self.steps.values()],
            "structure": self.structure,
            "groups": self.groups,
            "locks": self.locks,
            "budgets": self.budgets,
            "secret_params": self.secret_params,
            "cleanup": [s.to_dict() for s in self.cleanup.values()],
            "cleanup_structure": self.cleanup_structure,
            "actions": self.actions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {data.get('version')} is not supported (expected {PLAN_VERSION})")
        return cls(
            runbook=data["runbook"],
            file=data["file"],
            params=data["params"],
            steps={s["id"]: PlanStep.from_dict(s) for s in data["steps"]},
            structure=data["structure"],
            groups=data["groups"],
            locks=data.get("locks", []),
            budgets=data.get("budgets", {}),
            secret_params=data.get("secret_params", []),
            cleanup={s["id"]: PlanStep.from_dict(s) for s in data.get("cleanup", [])},
            cleanup_structure=data.get("cleanup_structure", ["seq", []]),
            actions=data.get("actions", {}),
        )

    def roots(self) -> list[str]:
        return [s.id for s in self.steps.values() if not s.deps]

    def cleanup_roots(self) -> list[str]:
        return [s.id for s in self.cleanup.values() if not s.deps]

    def topological(self) -> Iterator[PlanStep]:
        """Steps in an order where every step comes after its dependencies (document order within)."""
        return iter(self.steps.values())


def build_plan(runbook: Runbook, params: Mapping[str, Any], inventory_context: Mapping[str, Any]) -> Plan:
    builder = _Builder(runbook, dict(params), inventory_context)
    structure, _ = builder.build(runbook.steps, [], {}, [])
    main_steps = builder.steps
    builder.steps = {}
    builder.in_cleanup = True
    cleanup_structure, _ = builder.build(runbook.cleanup, [], {}, [])
    locks = [builder.lock(i, lock) for i, lock in enumerate(runbook.locks)]
    if builder.issues:
        raise ValidationError(builder.issues)
    _link_successors(main_steps.values())
    _link_successors(builder.steps.values())
    return Plan(
        runbook=runbook.name,
        file=runbook.file,
        params=dict(params),
        steps=main_steps,
        structure=structure,
        groups=builder.groups,
        locks=[lock for lock in locks if lock is not None],
        budgets=builder.budgets,
        secret_params=[n for n, p in runbook.params.items() if p.type == "secret"],
        cleanup=builder.steps,
        cleanup_structure=cleanup_structure,
    )


def _link_successors(steps: Iterable[PlanStep]) -> None:
    by_id = {s.id: s for s in steps}
    for step in by_id.values():
        for dep in step.deps:
            by_id[dep].succ.append(step.id)


class _Builder:
    def __init__(self, runbook: Runbook, params: dict[str, Any], inventory_context: Mapping[str, Any]) -> None:
        self.runbook = runbook
        self.base_context = {"params": params, "inventory": inventory_context}
        self.steps: dict[str, PlanStep] = {}
        self.groups: dict[str, list[str]] = {}
        self.budgets: dict[str, int] = {}
        self.budget_stack: list[str] = []
        self.in_cleanup = False
        self.too_many_steps = False
        self.issues: list[ValidationIssue] = []

    def lock(self, index: int, lock: LockDef) -> dict[str, Any] | None:
        """The lock rendered from parameters and inventory, or None after recording why it cannot be."""
        try:
            name = str(templating.render(lock.name, self.base_context))
        except templating.TemplateError as e:
            self._issue(("locks", index, "name"), str(e))
            return None
        limit_path = ("locks", index, "limit")
        try:
            limit = templating.render(lock.limit, self.base_context) if isinstance(lock.limit, str) else lock.limit
            limit = int(limit)
        except templating.TemplateError as e:
            self._issue(limit_path, f"lock '{name}': {e}")
            return None
        except (TypeError, ValueError, OverflowError):
            self._issue(limit_path, f"lock '{name}': limit rendered to {limit!r}, not an integer")
            return None
        return {"name": name, "limit": max(1, limit), "on_busy": lock.on_busy}

    def build(self, node: Node, deps: list[str], scope: dict[str, Any], prefixes: list[str]) -> tuple[Structure, list[str]]:
        """Add ``node``'s steps, each depending on ``deps``; return its structure and its tail step ids."""
        if isinstance(node, SequenceNode):
            parts = []
            tails = deps
            for item in node.items:
                part, tails = self.build(item, tails, scope, prefixes)
                parts.append(part)
            return ["seq", parts], tails
        if isinstance(node, ParallelNode):
            branches: list[Structure] = []
            all_tails: list[str] = []
            for branch in node.branches:
                part, tails = self.build(branch, deps, scope, prefixes)
                branches.append(part)
                all_tails.extend(t for t in tails if t not in all_tails)
            return ["par", branches], all_tails
        if isinstance(node, ForEachNode):
            return self._for_each(node, deps, scope, prefixes)
        return self._step(node, deps, scope, prefixes)

    def _step(self, node: StepNode, deps: list[str], scope: dict[str, Any], prefixes: list[str]) -> tuple[Structure, list[str]]:
        prefix = prefixes[0] if prefixes else ""
        sid = (prefix + node.id) if node.id else prefix.rstrip(".")
        if len(self.steps) >= MAX_PLAN_STEPS:
            if not self.too_many_steps:
                self._issue(node.path, f"the plan exceeds {MAX_PLAN_STEPS} steps; split the work into several runs")
            self.too_many_steps = True
            return ["step", sid], deps
        approval = self._approval(node, scope)
        self.steps[sid] = PlanStep(
            id=sid,
            action=node.action,
            args=node.args,
            when=node.when,
            retry=dataclasses.asdict(node.retry),
            timeout=node.timeout,
            approval=approval,
            deps=list(deps),
            scope=dict(scope),
            prefixes=list(prefixes),
            budget=self.budget_stack[-1] if self.budget_stack else "",
            cleanup=self.in_cleanup,
            line=self.runbook.location(node.path).line,
        )
        return ["step", sid], [sid]

    def _approval(self, node: StepNode, scope: dict[str, Any]) -> dict[str, Any] | None:
        """The step's gate with its message and approvers rendered from parameters and inventory."""
        if node.approval is None:
            return None
        approval = dataclasses.asdict(node.approval)
        context = {**self.base_context, **scope}
        try:
            approval["message"] = str(templating.render(node.approval.message, context))
            approvers: list[str] = []
            for entry in node.approval.approvers:
                value = templating.render(entry, context)
                approvers.extend(str(v) for v in value) if isinstance(value, list) else approvers.append(str(value))
            approval["approvers"] = approvers
        except templating.TemplateError as e:
            self._issue((*node.path, "approval"), f"approval gate: {e} (gates may use params and inventory only)",
                        node.id)
        return approval

    def _for_each(self, node: ForEachNode, deps: list[str], scope: dict[str, Any],
                  prefixes: list[str]) -> tuple[Structure, list[str]]:
        items = self._items(node, scope)
        parts: list[Structure] = []
        item_tails: list[list[str]] = []
        outer = prefixes[0] if prefixes else ""
        if node.max_failures is not None:
            self.budgets[outer + node.id] = node.max_failures
            self.budget_stack.append(outer + node.id)
        for i, value in enumerate(items):
            if self.too_many_steps:
                break
            wait_for = list(deps)
            if node.concurrency and i >= node.concurrency:
                wait_for += [t for t in item_tails[i - node.concurrency] if t not in wait_for]
            item_prefix = f"{outer}{node.id}[{i}]."
            part, tails = self.build(node.body, wait_for, {**scope, node.var: value}, [item_prefix, *prefixes])
            parts.append(part)
            item_tails.append(tails)
        if node.max_failures is not None:
            self.budget_stack.pop()
        self.groups[outer + node.id] = [t[-1] if t else "" for t in item_tails]
        all_tails = [t for tails in item_tails for t in tails] or list(deps)
        return ["foreach", outer + node.id, node.concurrency, parts], all_tails

    def _items(self, node: ForEachNode, scope: dict[str, Any]) -> list[Any]:
        raw = node.items
        if isinstance(raw, str):
            if templating.references(raw, "steps"):
                self._issue((*node.path, "for_each"),
                            "for_each over an earlier step's result is not supported yet: fan out over parameters "
                            "or inventory, or let the action handle the list", node.id)
                return []
            try:
                raw = templating.render(raw, {**self.base_context, **scope})
            except templating.TemplateError as e:
                self._issue((*node.path, "for_each"), str(e), node.id)
                return []
        if isinstance(raw, dict):
            raw = [{"key": k, "value": v} for k, v in raw.items()]
        if not isinstance(raw, list):
            self._issue((*node.path, "for_each"), f"for_each must produce a list, got {type(raw).__name__}", node.id)
            return []
        if len(raw) > MAX_FOR_EACH_ITEMS:
            self._issue((*node.path, "for_each"), f"for_each produced {len(raw)} items; the limit is {MAX_FOR_EACH_ITEMS}",
                        node.id)
            return []
        return raw

    def _issue(self, path: tuple[Any, ...], message: str, step: str | None = None) -> None:
        self.issues.append(ValidationIssue(self.runbook.location(path), message, step))


def describe(plan: Plan) -> list[str]:
    """A readable tree of the plan, one line per step or block."""
    lines = [f"plan for runbook '{plan.runbook}' ({len(plan.steps)} steps)"]

    def walk(part: Structure, indent: str) -> None:
        kind = part[0]
        if kind == "step":
            step = plan.steps.get(part[1]) or plan.cleanup[part[1]]
            extra = []
            if step.when:
                extra.append(f"when {step.when}")
            if step.approval:
                extra.append("approval required")
            if step.retry.get("attempts", 1) > 1:
                extra.append(f"retry x{step.retry['attempts']}")
            if step.timeout:
                extra.append(f"timeout {step.timeout:g}s")
            tail = f"  [{'; '.join(extra)}]" if extra else ""
            lines.append(f"{indent}- {step.id}: {step.action}{tail}")
        elif kind == "seq":
            for child in part[1]:
                walk(child, indent)
        elif kind == "par":
            lines.append(f"{indent}+ parallel ({len(part[1])} branches)")
            for i, child in enumerate(part[1]):
                lines.append(f"{indent}  | branch {i + 1}")
                walk(child, indent + "  |   ")
        elif kind == "foreach":
            cap = f", at most {part[2]} at once" if part[2] else ""
            lines.append(f"{indent}* for_each {part[1]} ({len(part[3])} items{cap})")
            for child in part[3]:
                walk(child, indent + "    ")

    walk(plan.structure, "  ")
    if plan.cleanup:
        lines.append("  cleanup (runs after a failure or cancel):")
        walk(plan.cleanup_structure, "    ")
    return lines
