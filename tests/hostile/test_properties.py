"""Property-based tests: for any runbook structure (sequences, parallel, for_each, nested groups, random and
clashing ids, random references) the loader and the plan compiler either produce a sound DAG or raise
ValidationError with located issues; and load_yaml on any text or bytes only succeeds or raises
ValidationError. Example counts are moderate and derandomized so the suite is fast and repeatable."""

from __future__ import annotations

import itertools
import re
from collections import deque
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions import default_registry
from engine.errors import ValidationError
from engine.plan import Plan, build_plan
from engine.runbook import parse_runbook
from engine.yamlload import load_yaml

pytestmark = pytest.mark.unit

REGISTRY = default_registry()
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REFERENCE = re.compile(r"steps\.([A-Za-z0-9_-]+)")

SHAPES = st.recursive(
    st.just(("step",)),
    lambda children: st.one_of(
        st.tuples(st.just("par"), st.lists(st.one_of(children, st.lists(children, min_size=1, max_size=3)),
                                           min_size=1, max_size=3)),
        st.tuples(st.just("each"), st.one_of(st.lists(st.integers(0, 9), max_size=5), st.just("{{ [1, 2, 3] }}")),
                  st.one_of(st.none(), st.integers(1, 4)), st.lists(children, min_size=1, max_size=3)),
        st.tuples(st.just("group"), st.lists(children, min_size=1, max_size=3)),
    ),
    max_leaves=12,
)
MUTATIONS = ["duplicate id", "invalid id", "reserved id", "unknown action", "missing id", "reference to anything",
             "reference to a missing step", "template syntax", "empty parallel", "for_each over a number",
             "concurrency 0", "empty steps"]


class _Builder:
    """Turns a shape into runbook data: unique ids in document order, references to earlier ids, and
    (when drawn) one of MUTATIONS at a random place, so both valid and invalid runbooks are common."""

    def __init__(self, data: st.DataObject, mutate: bool) -> None:
        self.data = data
        self.mutate = mutate
        self.ids: list[str] = []

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def mutation(self) -> str | None:
        if self.mutate and self.draw(st.integers(0, 4)) == 0:
            return str(self.draw(st.sampled_from(MUTATIONS)))
        return None

    def new_id(self) -> str:
        self.ids.append(f"s{len(self.ids)}")
        return self.ids[-1]

    def seq(self, shapes: list[Any], before: list[str], in_loop: bool) -> tuple[list[Any], list[str]]:
        out = []
        for shape in shapes:
            node, before = self.node(shape, before, in_loop)
            out.append(node)
        return out, before

    def node(self, shape: tuple[Any, ...], before: list[str], in_loop: bool) -> tuple[Any, list[str]]:
        """The node for ``shape`` given the ids that finished before it; and the ids finished after it."""
        kind, m = shape[0], self.mutation()
        if kind == "step":
            return self.step(m, before, in_loop)
        if kind == "par":
            branches, after = [], list(before)
            for br in shape[1]:
                node, done = self.seq(br, before, in_loop) if isinstance(br, list) else self.node(br, before, in_loop)
                branches.append(node)
                after += [d for d in done if d not in after]
            return {"parallel": [] if m == "empty parallel" else branches}, after
        if kind == "each":
            fid = self.new_id()
            block: dict[str, Any] = {"id": fid, "for_each": "{{ 5 }}" if m == "for_each over a number" else shape[1]}
            if shape[2] is not None or m == "concurrency 0":
                block["concurrency"] = 0 if m == "concurrency 0" else shape[2]
            block["steps"], _ = self.seq(shape[3], before, True)
            return block, [*before, fid]
        children, after = self.seq(shape[1], before, in_loop)
        return {"steps": [] if m == "empty steps" else children}, after

    def step(self, m: str | None, before: list[str], in_loop: bool) -> tuple[dict[str, Any], list[str]]:
        sid = self.new_id()
        message = "hi"
        if before and self.draw(st.booleans()):
            message = "{{ steps." + self.draw(st.sampled_from(before)) + ".result }}"
        elif in_loop and self.draw(st.booleans()):
            message = "{{ item }}"
        step: dict[str, Any] = {"id": sid, "action": "core.echo", "with": {"message": message}}
        if m == "duplicate id" and len(self.ids) > 1:
            step["id"] = self.draw(st.sampled_from(self.ids[:-1]))
        elif m in ("invalid id", "reserved id"):
            step["id"] = "1bad" if m == "invalid id" else "items"
        elif m == "unknown action":
            step["action"] = "core.nope"
        elif m == "missing id":
            del step["id"]
        elif m == "reference to anything":
            step["with"]["message"] = "{{ steps." + self.draw(st.sampled_from(self.ids)) + ".result }}"
        elif m == "reference to a missing step":
            step["with"]["message"] = "{{ steps.nowhere.result }}"
        elif m == "template syntax":
            step["with"]["message"] = "{{ 1 +"
        return step, [*before, sid]


@st.composite
def runbooks(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(st.data())
    builder = _Builder(data, mutate=draw(st.booleans()))
    steps, _ = builder.seq(draw(st.lists(SHAPES, min_size=1, max_size=4)), [], False)
    return {"name": "prop", "steps": steps}


RUNBOOKS = runbooks()


def _descendants(plan: Plan, start: str) -> set[str]:
    seen: set[str] = set()
    todo = deque([start])
    while todo:
        for nxt in plan.steps[todo.popleft()].succ:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _ancestors(plan: Plan, start: str) -> set[str]:
    seen: set[str] = set()
    todo = deque([start])
    while todo:
        for dep in plan.steps[todo.popleft()].deps:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def assert_sound_dag(plan: Plan) -> None:
    steps = plan.steps
    for step in steps.values():
        assert all(dep in steps for dep in step.deps), f"{step.id} depends on a missing step"
        assert len(set(step.deps)) == len(step.deps), f"{step.id} has a repeated dependency"
        for dep in step.deps:
            assert step.id in steps[dep].succ
    indegree = {sid: len(s.deps) for sid, s in steps.items()}
    ready = deque(sid for sid, n in indegree.items() if n == 0)
    assert set(ready) == set(plan.roots())
    order = []
    while ready:
        sid = ready.popleft()
        order.append(sid)
        for nxt in steps[sid].succ:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    assert len(order) == len(steps), "the plan has a cycle"
    reachable = set(plan.roots())
    for root in plan.roots():
        reachable |= _descendants(plan, root)
    assert reachable == set(steps), "some steps are not reachable from a root"


def assert_references_run_first(plan: Plan) -> None:
    """A step that reads steps.X only runs after the step X resolves to (for_each prefixes first)."""
    for step in plan.steps.values():
        ancestors = _ancestors(plan, step.id)
        for name in REFERENCE.findall(str(step.args)):
            target = next((p + name for p in step.prefixes if p + name in plan.steps), name)
            if target in plan.steps:
                assert target in ancestors, f"{step.id} reads {target} without depending on it"
            elif target in plan.groups:
                assert set(plan.groups[target]) <= ancestors, f"{step.id} reads {target} before all its items"


def _items(plan: Plan, block: str) -> list[set[str]]:
    """The steps of each item of a for_each block (an item whose body expanded to nothing is empty)."""
    return [{sid for sid in plan.steps if sid == f"{block}[{i}]" or sid.startswith(f"{block}[{i}].")}
            for i in range(len(plan.groups.get(block, [])))]


def _must_finish_first(plan: Plan, first: set[str], then: set[str]) -> bool:
    """Whether every step of ``then`` transitively depends on every step of ``first``."""
    return all(first <= _ancestors(plan, sid) for sid in then)


def assert_concurrency_caps(plan: Plan) -> None:
    """With concurrency N, no N+1 items of a for_each block can be in flight at once: among any N+1
    items, one must finish before another may start."""
    def walk(part: list[Any]) -> None:
        if part[0] == "foreach":
            _, block, cap, children = part
            items = [m for m in _items(plan, block) if m]
            if cap:
                for group in itertools.combinations(range(len(items)), cap + 1):
                    assert any(_must_finish_first(plan, items[a], items[b]) for a, b in itertools.combinations(group, 2)), (
                        f"{block}: items {group} could all run at once with concurrency {cap}")
            for child in children:
                walk(child)
        elif part[0] in ("seq", "par"):
            for child in part[1]:
                walk(child)

    walk(plan.structure)


def assert_located(error: ValidationError) -> None:
    assert error.issues
    for issue in error.issues:
        assert issue.location is not None and issue.location.file == "rb.yaml", str(issue)
        assert str(issue).startswith("rb.yaml"), str(issue)


@SETTINGS
@given(RUNBOOKS)
def test_random_runbooks_compile_to_a_sound_dag_or_a_located_validation_error(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        runbook = parse_runbook(text, "rb.yaml", REGISTRY)
        plan = build_plan(runbook, {}, {})
    except ValidationError as e:
        assert_located(e)
        return
    assert_sound_dag(plan)
    assert_references_run_first(plan)
    assert_concurrency_caps(plan)
    assert Plan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()


@SETTINGS
@given(st.lists(st.integers(0, 9), min_size=0, max_size=9), st.integers(1, 4),
       st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True))
def test_for_each_concurrency_caps_items_in_flight(items: list[int], cap: int, body: list[str]) -> None:
    steps = "".join(f"      - id: {b}\n        action: core.echo\n        with: {{message: '{{{{ item }}}}'}}\n"
                    for b in body)
    text = f"name: p\nsteps:\n  - id: f\n    for_each: {items}\n    concurrency: {cap}\n    steps:\n{steps}"
    plan = build_plan(parse_runbook(text, "rb.yaml", REGISTRY), {}, {})
    assert len(plan.steps) == len(items) * len(body)
    assert_sound_dag(plan)
    assert_concurrency_caps(plan)
    roots = plan.roots()
    assert len(roots) == min(cap, len(items))


def _loads_or_refuses(doc: str | bytes) -> None:
    try:
        load_yaml(doc, "rb.yaml")
    except ValidationError as e:
        assert_located(e)


@SETTINGS
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_load_yaml_on_random_bytes_or_text_only_succeeds_or_refuses(doc: str | bytes) -> None:
    _loads_or_refuses(doc)


YAML_TOKENS = ["-", " ", "  ", "\n", ":", ": ", "[", "]", "{", "}", ",", "&a ", "*a", "? ", "|", ">", "'", '"',
               "#", "---\n", "<<: ", "a", "1", "0x", "_", "2020-02-30", "1e5", "~", "true", "\t", "\\", "é", "12:30",
               "!!str ", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!x "]
YAMLISH = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)


@SETTINGS
@given(YAMLISH)
def test_load_yaml_on_yaml_like_text_only_succeeds_or_refuses(doc: str) -> None:
    _loads_or_refuses(doc)
