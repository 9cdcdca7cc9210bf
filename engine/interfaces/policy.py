"""RBAC: one policy file says who may launch which runbooks on which clusters, approve which gates,
cancel, resume and read.

Identities are matched by *principal*, a stable ``kind:id`` string set by the way in:
``cli:alice`` (login or $HOTSWAP_USER), ``token:ci-bot`` (API token), ``proxy:alice`` (identity header
behind a trusted proxy), ``chat:U0123ABCD`` (the chat user id, never the display name) and
``schedule:rebalance``. ``people`` ties principals to one person, whose name is what runs record.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, HotswapError, ValidationError
from engine.service import Identity
from engine.yamlload import Positions, load_yaml

VERBS = frozenset({"launch", "approve", "cancel", "resume", "read", "audit"})
POLICY_KEYS = {"people", "groups", "rules", "cluster_params", "host_params"}
RULE_KEYS = {"name", "who", "allow", "runbooks", "clusters", "gates"}


class PermissionDenied(HotswapError):
    """The policy does not allow this identity to do this."""

    exit_code = 4


@dataclass(frozen=True)
class Rule:
    name: str
    who: tuple[str, ...]
    allow: frozenset[str]
    runbooks: tuple[str, ...] = ("*",)
    clusters: tuple[str, ...] = ("*",)
    gates: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    rule: str | None = None


@dataclass(frozen=True)
class Request:
    """What is asked: a verb, and what it applies to (unknown parts are None/empty)."""

    verb: str
    runbook: str | None = None
    clusters: tuple[str, ...] = ()
    gate: str | None = None

    def describe(self) -> str:
        text = self.verb
        if self.gate:
            text += f" gate '{self.gate}' of"
        if self.runbook:
            text += f" '{self.runbook}'"
        if self.clusters:
            text += f" on cluster {', '.join(self.clusters)}"
        return text


def principal(who: Identity) -> str:
    """The stable id the policy matches. Empty when the way in did not establish one (matches nothing)."""
    explicit = who.detail.get("principal")
    if isinstance(explicit, str):
        return explicit
    if who.source == "cli":
        return f"cli:{who.name}"
    if who.source == "schedule":
        return f"schedule:{who.detail.get('schedule', who.name)}"
    return ""


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    people: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cluster_params: tuple[str, ...] = ("cluster",)
    host_params: tuple[str, ...] = ("host", "node", "hosts", "nodes")
    file: str = "<policy>"

    # ---- who -----------------------------------------------------------------------------------
    def person(self, who: Identity) -> str | None:
        p = principal(who)
        if not p:
            return None
        for name, principals in self.people.items():
            if any(fnmatch.fnmatchcase(p, pat) for pat in principals):
                return name
        return None

    def resolve(self, who: Identity) -> Identity:
        """The identity as runs record it: the person's name when the principal belongs to one."""
        person = self.person(who)
        p = principal(who)
        detail = {**who.detail, "principal": p} if p else dict(who.detail)
        if person and person != who.name:
            return replace(who, name=person, detail={**detail, "as": who.name})
        return replace(who, detail=detail)

    def _matches_who(self, entry: str, p: str, person: str | None, seen: frozenset[str] = frozenset()) -> bool:
        if entry.startswith("group:"):
            group = entry[len("group:"):]
            if group in seen:
                return False
            return any(self._matches_who(m, p, person, seen | {group}) for m in self.groups.get(group, ()))
        if ":" in entry or entry == "*":
            return fnmatch.fnmatchcase(p, entry)
        return person is not None and entry == person

    # ---- what ----------------------------------------------------------------------------------
    def check(self, who: Identity, request: Request) -> Decision:
        if request.verb not in VERBS:
            raise ValueError(f"unknown verb {request.verb!r}")
        p = principal(who)
        label = f"{p} ({who.name})" if p and who.name not in p else p or who.name
        if not p:
            return Decision(False, f"{who.name} via {who.source} has no verified identity; {request.describe()} "
                                   "is refused")
        person = self.person(who)
        for rule in self.rules:
            if request.verb not in rule.allow:
                continue
            if not any(self._matches_who(w, p, person) for w in rule.who):
                continue
            if request.runbook is not None and not _any_glob(request.runbook, rule.runbooks):
                continue
            if rule.clusters != ("*",) and (not request.clusters or
                                            not all(_any_glob(c, rule.clusters) for c in request.clusters)):
                continue
            if request.gate is not None and not _any_glob(request.gate, rule.gates):
                continue
            return Decision(True, f"allowed by rule '{rule.name}'", rule.name)
        return Decision(False, f"{label} may not {request.describe()}: no rule in {self.file} allows it")

    def clusters_of(self, params: Mapping[str, Any] | None, inventory: Any = None) -> tuple[str, ...]:
        """The clusters a run touches: cluster parameters, plus the clusters of host parameters."""
        found: list[str] = []
        for name, value in (params or {}).items():
            if name in self.cluster_params:
                found.extend(str(v) for v in _values(value))
            elif name in self.host_params and inventory is not None:
                for host in _values(value):
                    cluster = _cluster_of_host(inventory, str(host))
                    if cluster:
                        found.append(cluster)
        return tuple(dict.fromkeys(found))


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if v is not None]
    return [value]


def _cluster_of_host(inventory: Any, host: str) -> str | None:
    try:
        cluster = inventory.host(host).cluster
    except HotswapError:
        return None
    return str(cluster) if cluster else None


def _any_glob(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pat) for pat in patterns)


# ---- loading -----------------------------------------------------------------------------------
def load_policy(path: str | Path) -> Policy:
    file = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{file}: cannot read the policy file: {e.strerror}") from None
    return parse_policy(text, file)


def parse_policy(text: str | bytes, file: str) -> Policy:
    try:
        doc, positions = load_yaml(text, file)
    except ValidationError as e:
        raise ConfigError(str(e)) from None
    parser = _PolicyParser(file, positions)
    policy = parser.parse(doc)
    if parser.errors:
        raise ConfigError("invalid policy:\n" + "\n".join(parser.errors))
    return policy


class _PolicyParser:
    def __init__(self, file: str, positions: Positions) -> None:
        self.file = file
        self.positions = positions
        self.errors: list[str] = []

    def error(self, path: tuple[str | int, ...], message: str) -> None:
        self.errors.append(f"{self.positions.at(path)}: {message}")

    def strings(self, value: Any, path: tuple[str | int, ...], what: str) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            self.error(path, f"{what} must be a string or a list of strings")
            return ()
        return tuple(value)

    def parse(self, doc: Any) -> Policy:
        if not isinstance(doc, dict):
            self.error((), "a policy must be a mapping with 'rules' (and optionally 'people', 'groups')")
            return Policy(file=self.file)
        for key in doc:
            if key not in POLICY_KEYS:
                self.error((key,), f"unknown key '{key}': expected one of {', '.join(sorted(POLICY_KEYS))}")
        people = self.mapping_of_lists(doc.get("people") or {}, "people", "principals such as chat:U0123ABCD")
        for name, principals in people.items():
            for i, p in enumerate(principals):
                if ":" not in p:
                    self.error(("people", name, i), f"'{p}' is not a principal: write kind:id, e.g. cli:{p} or "
                                                    "chat:U0123ABCD")
        groups = self.mapping_of_lists(doc.get("groups") or {}, "groups", "members")
        rules_raw = doc.get("rules")
        if not isinstance(rules_raw, list):
            self.error(("rules",), "'rules' is required: a list of rules (who, allow, runbooks, clusters, gates)")
            rules_raw = []
        rules = tuple(r for i, raw in enumerate(rules_raw) if (r := self.rule(raw, i, people, groups)))
        kwargs: dict[str, Any] = {}
        for key in ("cluster_params", "host_params"):
            if key in doc:
                kwargs[key] = self.strings(doc[key], (key,), f"'{key}'")
        return Policy(rules=rules, people=people, groups=groups, file=self.file, **kwargs)

    def mapping_of_lists(self, raw: Any, key: str, what: str) -> dict[str, tuple[str, ...]]:
        if not isinstance(raw, dict):
            self.error((key,), f"'{key}' must map names to lists of {what}")
            return {}
        return {str(name): self.strings(value, (key, name), f"'{key}.{name}'") for name, value in raw.items()}

    def rule(self, raw: Any, i: int, people: Mapping[str, Any], groups: Mapping[str, Any]) -> Rule | None:
        where: tuple[str | int, ...] = ("rules", i)
        if not isinstance(raw, dict):
            self.error(where, "a rule must be a mapping with 'who' and 'allow'")
            return None
        for key in raw:
            if key not in RULE_KEYS:
                self.error((*where, key), f"unknown key '{key}': expected one of {', '.join(sorted(RULE_KEYS))}")
        who = self.strings(raw.get("who"), (*where, "who"), "'who'")
        for j, entry in enumerate(who):
            if entry.startswith("group:") and entry[len("group:"):] not in groups:
                self.error((*where, "who", j), f"unknown group '{entry[len('group:'):]}'")
            elif ":" not in entry and entry != "*" and entry not in people:
                self.error((*where, "who", j), f"'{entry}' is neither a person under 'people' nor a principal "
                                               "(kind:id) nor group:NAME")
        allow = self.strings(raw.get("allow"), (*where, "allow"), "'allow'")
        for j, verb in enumerate(allow):
            if verb not in VERBS:
                self.error((*where, "allow", j), f"unknown permission '{verb}': use {', '.join(sorted(VERBS))}")
        name = raw.get("name") or f"rule {i + 1}"
        return Rule(
            name=str(name), who=who, allow=frozenset(allow),
            runbooks=self.strings(raw.get("runbooks", "*"), (*where, "runbooks"), "'runbooks'"),
            clusters=self.strings(raw.get("clusters", "*"), (*where, "clusters"), "'clusters'"),
            gates=self.strings(raw.get("gates", "*"), (*where, "gates"), "'gates'"),
        )
