"""Runbook model: YAML -> validated tree of steps, with file:line:column errors.

Nothing here performs I/O beyond reading the runbook file; validation needs only the action registry.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine import templating
from engine.argtypes import ActionCatalog, check_value, describe_type
from engine.durations import parse_duration
from engine.errors import Location, ValidationError, ValidationIssue
from engine.yamlload import Path as YPath
from engine.yamlload import Positions, load_yaml

PARAM_TYPES = ("string", "int", "float", "bool", "duration", "host", "list", "secret")
TEMPLATE_ROOTS = frozenset({"params", "inventory", "steps", "run", "now", "poll"})
MAX_ID_CHARS = 64
ID_PATTERN = re.compile(rf"^[A-Za-z_][A-Za-z0-9_-]{{0,{MAX_ID_CHARS - 1}}}$")
RESERVED_IDS = frozenset({"items", "keys", "values", "get"})
MAX_FOR_EACH_ITEMS = 20_000

RUNBOOK_KEYS = {"name", "description", "params", "steps", "cleanup", "locks", "version"}
STEP_KEYS = {"id", "action", "with", "when", "retry", "timeout", "approval", "description"}
PARALLEL_KEYS = {"id", "parallel", "description"}
FOR_EACH_KEYS = {"id", "for_each", "as", "concurrency", "max_failures", "steps", "action", "with", "when", "retry", "timeout",
                 "approval", "description"}
PARAM_KEYS = {"type", "required", "default", "choices", "pattern", "help", "min", "max"}
RETRY_KEYS = {"attempts", "backoff", "max_delay", "jitter"}
LOCK_KEYS = {"name", "limit", "on_busy"}
APPROVAL_KEYS = {"message", "approvers", "timeout", "on_timeout"}
ON_TIMEOUT = ("reject", "approve", "fail")


@dataclass(frozen=True)
class ParamDef:
    name: str
    type: str
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True


@dataclass(frozen=True)
class Approval:
    message: str
    approvers: tuple[str, ...] = ()
    timeout: float | None = None
    on_timeout: Literal["reject", "approve", "fail"] = "reject"


@dataclass(frozen=True)
class LockDef:
    """A named lock the run holds from start to end. ``limit`` > 1 makes it a counted guard
    (e.g. at most N hosts of a cluster down at once, across all runs)."""

    name: str
    limit: str | int = 1
    on_busy: Literal["refuse", "wait"] = "refuse"


@dataclass(frozen=True)
class StepNode:
    id: str
    action: str
    args: dict[str, Any]
    when: str | None
    retry: Retry
    timeout: float | None
    approval: Approval | None
    path: YPath


@dataclass(frozen=True)
class SequenceNode:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class ParallelNode:
    id: str | None
    branches: tuple[SequenceNode, ...]
    path: YPath


@dataclass(frozen=True)
class ForEachNode:
    id: str
    items: Any
    """A list, or a template rendering to one."""
    var: str
    concurrency: int | None
    max_failures: int | None
    """How many items may fail before the rest stop; None: the first failure fails the run."""
    body: SequenceNode
    path: YPath


Node = StepNode | ParallelNode | ForEachNode | SequenceNode


@dataclass(frozen=True)
class Runbook:
    name: str
    description: str
    params: dict[str, ParamDef]
    steps: SequenceNode
    cleanup: SequenceNode
    locks: tuple[LockDef, ...]
    file: str
    positions: Positions = field(compare=False, repr=False)

    def location(self, path: YPath) -> Location:
        return self.positions.at(path)


def load_runbook(path: str | Path, registry: ActionCatalog) -> Runbook:
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValidationError([ValidationIssue(Location(file), f"cannot read runbook: {e.strerror}")]) from None
    return parse_runbook(data, file, registry)


def parse_runbook(text: str | bytes, file: str, registry: ActionCatalog) -> Runbook:
    doc, positions = load_yaml(text, file)
    parser = _Parser(file, positions, registry)
    runbook = parser.parse(doc)
    if parser.issues:
        parser.issues.sort(key=lambda i: (i.location.line, i.location.column) if i.location else (0, 0))
        raise ValidationError(parser.issues)
    assert runbook is not None
    return runbook


def walk_steps(node: Node) -> Iterator[StepNode | ForEachNode | ParallelNode]:
    """Every node of a tree, depth-first, in document order."""
    if isinstance(node, SequenceNode):
        for item in node.items:
            yield from walk_steps(item)
    elif isinstance(node, ParallelNode):
        yield node
        for branch in node.branches:
            yield from walk_steps(branch)
    elif isinstance(node, ForEachNode):
        yield node
        yield from walk_steps(node.body)
    else:
        yield node


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Parser:
    def __init__(self, file: str, positions: Positions, registry: ActionCatalog) -> None:
        self.file = file
        self.positions = positions
        self.registry = registry
        self.issues: list[ValidationIssue] = []
        self.ids: dict[str, YPath] = {}
        self.params: dict[str, ParamDef] = {}

    def error(self, path: YPath, message: str, step: str | None = None) -> None:
        self.issues.append(ValidationIssue(self.positions.at(path), message, step))

    def parse(self, doc: Any) -> Runbook | None:
        if not isinstance(doc, dict):
            self.error((), "a runbook must be a mapping with at least 'name' and 'steps'")
            return None
        for key in doc:
            if key not in RUNBOOK_KEYS:
                self.error((key,), f"unknown key '{key}'{_suggest(key, RUNBOOK_KEYS)}")
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            self.error(("name",), "'name' is required and must be a string")
        description = doc.get("description", "")
        if not isinstance(description, str):
            self.error(("description",), "'description' must be a string")
            description = ""
        self.params = self._params(doc.get("params") or {})
        if "steps" not in doc:
            self.error((), "'steps' is required: a list of steps")
        steps = self._sequence(doc.get("steps") or [], ("steps",), allow_empty=False)
        cleanup = self._sequence(doc.get("cleanup") or [], ("cleanup",), allow_empty=True)
        locks = self._locks(doc.get("locks") or [])
        self._check_references(steps, frozenset(), {})
        self._check_references(cleanup, frozenset(self.ids), {})
        return Runbook(
            name=name if isinstance(name, str) else "",
            description=description,
            params=self.params,
            steps=steps,
            cleanup=cleanup,
            locks=tuple(locks),
            file=self.file,
            positions=self.positions,
        )

    # ---- parameters -------------------------------------------------------------------------
    def _params(self, raw: Any) -> dict[str, ParamDef]:
        if not isinstance(raw, dict):
            self.error(("params",), "'params' must be a mapping of name -> {type, required, default, ...}")
            return {}
        out: dict[str, ParamDef] = {}
        for name, spec in raw.items():
            path: YPath = ("params", name)
            if not ID_PATTERN.match(name):
                self.error(path, f"parameter name '{name}' must be letters, digits, '_' or '-'")
            if isinstance(spec, str):
                spec = {"type": spec}
            if not isinstance(spec, dict):
                self.error(path, "a parameter is a mapping like {type: string, required: true}")
                continue
            for key in spec:
                if key not in PARAM_KEYS:
                    self.error((*path, key), f"unknown parameter key '{key}'{_suggest(key, PARAM_KEYS)}")
            ptype = spec.get("type", "string")
            if ptype not in PARAM_TYPES:
                self.error((*path, "type"), f"parameter '{name}': unknown type '{ptype}'; use one of {', '.join(PARAM_TYPES)}")
                ptype = "string"
            choices = spec.get("choices") or []
            if not isinstance(choices, list):
                self.error((*path, "choices"), "'choices' must be a list")
                choices = []
            pattern = spec.get("pattern")
            if pattern is not None:
                try:
                    re.compile(str(pattern))
                except re.error as e:
                    self.error((*path, "pattern"), f"invalid regular expression: {e}")
                    pattern = None
            default = spec.get("default")
            if isinstance(default, str):
                why = templating.syntax_error(default)
                if why:
                    self.error((*path, "default"), why)
            out[name] = ParamDef(
                name=name,
                type=ptype,
                required=bool(spec.get("required", False)),
                default=default,
                choices=tuple(choices),
                pattern=str(pattern) if pattern is not None else None,
                help=str(spec.get("help", "")),
                minimum=self._bound(spec, "min", path),
                maximum=self._bound(spec, "max", path),
            )
        return out

    def _bound(self, spec: dict[str, Any], key: str, path: YPath) -> float | None:
        value = spec.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            self.error((*path, key), f"'{key}' must be a number")
            return None
        return value

    def _locks(self, raw: Any) -> list[LockDef]:
        if not isinstance(raw, list):
            self.error(("locks",), "'locks' must be a list, e.g. ['cluster:{{ params.cluster }}']")
            return []
        out = []
        for i, item in enumerate(raw):
            path: YPath = ("locks", i)
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.error(path, "a lock is a name or {name, limit, on_busy}")
                continue
            self._check_keys(item, LOCK_KEYS, path, None)
            limit = item.get("limit", 1)
            if isinstance(limit, str):
                self._check_template(limit, (*path, "limit"), None, frozenset(), set())
            elif not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                self.error((*path, "limit"), "'limit' must be a positive integer or a template")
                limit = 1
            on_busy = item.get("on_busy", "refuse")
            if on_busy not in ("refuse", "wait"):
                self.error((*path, "on_busy"), "'on_busy' must be 'refuse' or 'wait'")
                on_busy = "refuse"
            self._check_template(str(item["name"]), (*path, "name"), None, frozenset(), set())
            out.append(LockDef(item["name"], limit, on_busy))
        return out

    # ---- structure --------------------------------------------------------------------------
    def _sequence(self, raw: Any, path: YPath, *, allow_empty: bool) -> SequenceNode:
        if not isinstance(raw, list):
            self.error(path, "expected a list of steps")
            return SequenceNode(())
        if not raw and not allow_empty:
            self.error(path, "the list of steps is empty")
        items = [self._node(item, (*path, i)) for i, item in enumerate(raw)]
        return SequenceNode(tuple(n for n in items if n is not None))

    def _node(self, raw: Any, path: YPath) -> Node | None:
        if not isinstance(raw, dict):
            self.error(path, "a step must be a mapping with 'action', 'parallel' or 'for_each'")
            return None
        if "parallel" in raw:
            return self._parallel(raw, path)
        if "for_each" in raw:
            return self._for_each(raw, path)
        if "action" in raw:
            return self._step(raw, path)
        if "steps" in raw:
            self._check_keys(raw, {"id", "steps", "description"}, path, raw.get("id"))
            if "id" in raw:
                self._register_id(raw["id"], path)
            return self._sequence(raw["steps"], (*path, "steps"), allow_empty=False)
        self.error(path, "a step needs 'action' (or 'parallel', 'for_each', 'steps')", raw.get("id"))
        return None

    def _check_keys(self, raw: dict[str, Any], allowed: set[str], path: YPath, step: Any) -> None:
        for key in raw:
            if key not in allowed:
                self.error((*path, key), f"unknown key '{key}'{_suggest(key, allowed)}", _as_id(step))

    def _register_id(self, step_id: Any, path: YPath) -> str | None:
        if isinstance(step_id, str) and len(step_id) > MAX_ID_CHARS:
            self.error((*path, "id"), f"step id {step_id!r} must start with a letter or '_', use letters, digits, '_' or "
                       f"'-', and be at most {MAX_ID_CHARS} characters")
            return None
        if not isinstance(step_id, str) or not ID_PATTERN.match(step_id):
            self.error((*path, "id"), f"step id {step_id!r} must start with a letter or '_' and use letters, digits, '_' or '-'")
            return None
        if step_id in RESERVED_IDS:
            self.error((*path, "id"), f"step id '{step_id}' is reserved; choose another")
            return None
        if step_id in self.ids:
            first = self.positions.at(self.ids[step_id])
            self.error((*path, "id"), f"duplicate step id '{step_id}' (first used at line {first.line})", step_id)
            return None
        self.ids[step_id] = (*path, "id")
        return step_id

    def _parallel(self, raw: dict[str, Any], path: YPath) -> ParallelNode | None:
        self._check_keys(raw, PARALLEL_KEYS, path, raw.get("id"))
        pid = self._register_id(raw["id"], path) if "id" in raw else None
        branches_raw = raw["parallel"]
        if not isinstance(branches_raw, list) or not branches_raw:
            self.error((*path, "parallel"), "'parallel' must be a non-empty list of branches", pid)
            return None
        branches = []
        for i, branch in enumerate(branches_raw):
            bpath: YPath = (*path, "parallel", i)
            if isinstance(branch, list):
                branches.append(self._sequence(branch, bpath, allow_empty=False))
            else:
                node = self._node(branch, bpath)
                if node is not None:
                    branches.append(node if isinstance(node, SequenceNode) else SequenceNode((node,)))
        return ParallelNode(pid, tuple(branches), path)

    def _for_each(self, raw: dict[str, Any], path: YPath) -> ForEachNode | None:
        self._check_keys(raw, FOR_EACH_KEYS, path, raw.get("id"))
        if "id" not in raw:
            self.error(path, "a for_each block needs an 'id'")
            return None
        fid = self._register_id(raw["id"], path)
        items = raw["for_each"]
        if isinstance(items, str):
            why = templating.syntax_error(items)
            if why:
                self.error((*path, "for_each"), why, fid)
                items = []
        elif not isinstance(items, list):
            self.error((*path, "for_each"), "'for_each' must be a list or a template rendering to a list", fid)
        var = raw.get("as", "item")
        if not isinstance(var, str) or not ID_PATTERN.match(var) or var in TEMPLATE_ROOTS:
            self.error((*path, "as"), f"'as' must be a plain name not in {sorted(TEMPLATE_ROOTS)}", fid)
            var = "item"
        concurrency = raw.get("concurrency")
        if concurrency is not None and (not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1):
            self.error((*path, "concurrency"), "'concurrency' must be a positive integer", fid)
            concurrency = None
        max_failures = raw.get("max_failures")
        if max_failures is not None and (not isinstance(max_failures, int) or isinstance(max_failures, bool)
                                         or max_failures < 0):
            self.error((*path, "max_failures"), "'max_failures' must be a non-negative integer", fid)
            max_failures = None
        if "steps" in raw and "action" in raw:
            self.error(path, "a for_each block has either 'action' (one step) or 'steps', not both", fid)
            return None
        if "steps" in raw:
            body = self._sequence(raw["steps"], (*path, "steps"), allow_empty=False)
        elif "action" in raw:
            inner = {k: v for k, v in raw.items() if k in STEP_KEYS and k != "id"}
            step = self._step(inner, path, given_id="")
            body = SequenceNode((step,) if step else ())
        else:
            self.error(path, "a for_each block needs 'action' or 'steps'", fid)
            return None
        return ForEachNode(fid or "", items, var, concurrency, max_failures, body, path)

    def _step(self, raw: dict[str, Any], path: YPath, given_id: str | None = None) -> StepNode | None:
        if given_id is None:
            self._check_keys(raw, STEP_KEYS, path, raw.get("id"))
            if "id" not in raw:
                self.error(path, "a step needs an 'id' so later steps, logs and resume can name it")
                return None
            registered = self._register_id(raw["id"], path)
            sid = registered if registered is not None else str(raw["id"])
        else:
            registered = sid = given_id
        name = raw["action"]
        args = raw.get("with") or {}
        if not isinstance(args, dict):
            self.error((*path, "with"), "'with' must be a mapping of argument -> value", sid or None)
            args = {}
        if not isinstance(name, str) or name not in self.registry:
            self.error((*path, "action"), f"unknown action {name!r}{_suggest(str(name), [s.name for s in self.registry])}; "
                       "run 'hotswap actions' to list them", sid or None)
        else:
            self._check_args(name, args, path, sid)
        when = raw.get("when")
        if when is not None:
            when = _as_condition(when)
            why = templating.syntax_error(when)
            if why:
                self.error((*path, "when"), why, sid or None)
                when = None
        timeout = self._duration(raw.get("timeout"), (*path, "timeout"), sid)
        retry = self._retry(raw.get("retry"), (*path, "retry"), sid)
        approval = self._approval(raw.get("approval"), (*path, "approval"), sid)
        if name == "core.approve" and approval is None and isinstance(args.get("message"), str):
            approval = self._approval({k: v for k, v in args.items() if k in APPROVAL_KEYS}, (*path, "with"), sid)
        if registered is None:
            return None
        return StepNode(sid, str(name), args, when, retry, timeout, approval, path)

    def _check_args(self, name: str, args: dict[str, Any], path: YPath, sid: str) -> None:
        spec = self.registry.get(name)
        for key, value in args.items():
            if key not in spec.params:
                self.error((*path, "with", key), f"action {name} has no argument '{key}'"
                           f"{_suggest(key, spec.params)}; it takes: {', '.join(spec.params) or 'nothing'}", sid or None)
                continue
            if isinstance(value, str) and templating.is_template(value):
                continue
            if any(isinstance(s, str) and templating.is_template(s) for _, s in templating.strings_in(value)):
                continue
            why = check_value(spec.params[key].annotation, value)
            if why:
                self.error((*path, "with", key), f"argument '{key}' of {name}: {why}", sid or None)
        for pname, p in spec.params.items():
            if p.required and pname not in args:
                self.error((*path, "with"), f"action {name} needs argument '{pname}' ({describe_type(p.annotation)})",
                           sid or None)

    def _duration(self, raw: Any, path: YPath, sid: str | None) -> float | None:
        if raw is None:
            return None
        try:
            return parse_duration(raw)
        except ValueError as e:
            self.error(path, str(e), sid or None)
            return None

    def _retry(self, raw: Any, path: YPath, sid: str | None) -> Retry:
        if raw is None:
            return Retry()
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"attempts": raw}
        if not isinstance(raw, dict):
            self.error(path, "'retry' is a number of attempts or {attempts, backoff, max_delay, jitter}", sid or None)
            return Retry()
        self._check_keys(raw, RETRY_KEYS, path, sid)
        attempts = raw.get("attempts", 3)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
            self.error((*path, "attempts"), "'attempts' must be an integer from 1 to 100", sid or None)
            attempts = 1
        backoff = self._duration(raw.get("backoff", 2), (*path, "backoff"), sid)
        max_delay = self._duration(raw.get("max_delay", 300), (*path, "max_delay"), sid)
        return Retry(attempts, backoff if backoff is not None else 2.0, max_delay if max_delay is not None else 300.0,
                     bool(raw.get("jitter", True)))

    def _approval(self, raw: Any, path: YPath, sid: str | None) -> Approval | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = {"message": raw}
        if not isinstance(raw, dict):
            self.error(path, "'approval' is a message or {message, approvers, timeout, on_timeout}", sid or None)
            return None
        self._check_keys(raw, APPROVAL_KEYS, path, sid)
        approvers = raw.get("approvers") or []
        if isinstance(approvers, str) and templating.is_template(approvers):
            approvers = [approvers]
        if not isinstance(approvers, list) or not all(isinstance(a, str) for a in approvers):
            self.error((*path, "approvers"), "'approvers' must be a list of identities (or a template of one)",
                       sid or None)
            approvers = []
        on_timeout = raw.get("on_timeout", "reject")
        if on_timeout not in ON_TIMEOUT:
            self.error((*path, "on_timeout"), f"'on_timeout' must be one of {', '.join(ON_TIMEOUT)}", sid or None)
            on_timeout = "reject"
        return Approval(str(raw.get("message", "approval required")), tuple(approvers),
                        self._duration(raw.get("timeout"), (*path, "timeout"), sid), on_timeout)

    # ---- templates and references -----------------------------------------------------------
    def _check_references(self, node: Node, before: frozenset[str], local: dict[str, str]) -> frozenset[str]:
        """Check templates of ``node`` given the step ids that completed before it; return the ids done after it."""
        if isinstance(node, SequenceNode):
            done = before
            for item in node.items:
                done = self._check_references(item, done, local)
            return done
        if isinstance(node, ParallelNode):
            after = set(before)
            for branch in node.branches:
                after |= self._check_references(branch, before, local)
            if node.id:
                after.add(node.id)
            return frozenset(after)
        if isinstance(node, ForEachNode):
            if isinstance(node.items, str):
                self._check_template(node.items, (*node.path, "for_each"), node.id, before, set(local))
            inner_local = {**local, node.var: node.id}
            self._check_references(node.body, before, inner_local)
            return before | {node.id}
        step = node
        names = set(local)
        for spath, text in templating.strings_in(step.args, (*step.path, "with")):
            self._check_template(text, spath, step.id or None, before, names)
        if step.when:
            self._check_template(step.when, (*step.path, "when"), step.id or None, before, names)
        return before | ({step.id} if step.id else set())

    def _check_template(self, text: str, path: YPath, sid: str | None, before: frozenset[str], local: set[str]) -> None:
        why = templating.syntax_error(text)
        if why:
            self.error(path, why, sid)
            return
        for name in templating.top_level_names(text) - TEMPLATE_ROOTS - local:
            self.error(path, f"template uses unknown name '{name}'; available: "
                       f"{', '.join(sorted(TEMPLATE_ROOTS | local))}", sid)
        private = templating.unsafe_access(text, TEMPLATE_ROOTS | local)
        if private:
            self.error(path, private, sid)
        for pname in templating.references(text, "params"):
            if pname not in self.params:
                self.error(path, f"template refers to parameter '{pname}', which the runbook does not declare"
                           f"{_suggest(pname, self.params)}", sid)
        for ref in templating.references(text, "steps"):
            if ref in before:
                continue
            if ref in self.ids:
                self.error(path, f"template refers to step '{ref}', which does not run before this step; "
                           "move it earlier or depend on a step that does", sid)
            else:
                self.error(path, f"template refers to step '{ref}', which does not exist{_suggest(ref, self.ids)}", sid)


def _as_condition(when: Any) -> str:
    if isinstance(when, bool):
        return "{{ true }}" if when else "{{ false }}"
    text = str(when)
    return text if templating.is_template(text) else "{{ " + text + " }}"


def _as_id(value: Any) -> str | None:
    return value if isinstance(value, str) else None
