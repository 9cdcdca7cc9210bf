"""Pure parsing and decision functions over ``ceph ... -f json`` outputs (Ceph Pacific and later).

No I/O here: :mod:`actions.ceph` runs the commands and feeds the parsed documents to these functions,
so every decision can be tested against real captured outputs. Quirks this module encodes (all seen
on a real cluster):

- missing ``misplaced_ratio`` / ``degraded_ratio`` keys mean zero;
- HEALTH_OK says nothing about data movement: PGs can be remapped, recovering or peering under it;
- ``osd ok-to-stop`` exits 16 with its JSON on stdout when not ok;
- ``osd safe-to-destroy -f json`` exits 0 even when unsafe: only the JSON tells;
- ``ok-to-stop``, ``safe-to-destroy``, ``osd out``, ``destroy`` and ``purge`` accept nonexistent ids;
- ``pg ls-by-osd N`` prints ``{"pg_ready": true}`` without ``pg_stats`` when the OSD holds no PG, and
  exits 11 (EAGAIN, "osd N is not up") for a down or nonexistent OSD;
- a recreated OSD that never boots stays ``exists,new`` (down, but ``in``) while health stays OK.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ActionError

KNOWN_FLAGS = frozenset(
    {"noout", "norebalance", "nobackfill", "norecover", "noscrub", "nodeep-scrub", "noup", "nodown", "noin"}
)

FATAL_CHECKS = frozenset(
    {
        "PG_DAMAGED",
        "OSD_SCRUB_ERRORS",
        "OBJECT_UNFOUND",
        "OSD_FULL",
        "OSD_BACKFILLFULL",
        "POOL_FULL",
        "POOL_BACKFILLFULL",
        "PG_BACKFILL_FULL",
        "PG_RECOVERY_FULL",
        "SLOW_OPS",
    }
)
"""Health checks that waiting will not fix: a gradual operation stops instead of waiting on them.
MON_DOWN is not among them: a mon restarting or an election passes; waits bound it separately."""

CLEAN_EXTRAS = frozenset({"scrubbing", "deep", "snaptrim", "snaptrim_wait"})
"""State components that may accompany ``active+clean`` and still count as clean."""

MOVING = frozenset({"backfilling", "recovering"})

PG_AVAILABILITY_GRACE = 60.0
"""Seconds of PG_AVAILABILITY (peering) tolerated during a planned operation before giving up."""

OK_TO_STOP_NOT_OK = 16
EAGAIN = 11
EBUSY = 16
ENOTEMPTY = 39


def loads(text: str, what: str) -> Any:
    """Parse a ceph JSON output; the ceph CLI pads it with blank lines."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise ActionError(f"'{what}' did not print valid JSON ({e}): {text.strip()[:200]!r}") from None


# -- health and PG states ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    severity: str
    message: str
    count: int = 0
    detail: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "detail": list(self.detail),
        }


@dataclass(frozen=True)
class Health:
    status: str
    checks: Mapping[str, Check] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "HEALTH_OK"

    def unexpected(self, allowed: Iterable[str]) -> list[str]:
        """Names of the raised checks not in ``allowed`` (muted checks are ignored)."""
        allow = set(allowed)
        return sorted(name for name in self.checks if name not in allow)

    def fatal(self, allowed: Iterable[str]) -> list[str]:
        allow = set(allowed)
        return sorted(name for name in self.checks if name in FATAL_CHECKS and name not in allow)

    def describe(self, names: Iterable[str]) -> str:
        return "; ".join(f"{n}: {self.checks[n].message}" for n in names if n in self.checks)


def parse_health(doc: Mapping[str, Any]) -> Health:
    """Health from ``health [detail]`` or from ``status`` (which nests it under ``health``)."""
    health = doc.get("health", doc)
    checks: dict[str, Check] = {}
    for name, raw in (health.get("checks") or {}).items():
        if raw.get("muted"):
            continue
        summary = raw.get("summary") or {}
        detail = tuple(str(d.get("message", "")) for d in raw.get("detail") or [])
        checks[name] = Check(
            name=name,
            severity=str(raw.get("severity", "")),
            message=str(summary.get("message", "")),
            count=int(summary.get("count", 0) or 0),
            detail=detail,
        )
    return Health(status=str(health.get("status", "HEALTH_UNKNOWN")), checks=checks)


def pg_states(doc: Mapping[str, Any]) -> dict[str, int]:
    """PG counts by state from ``status`` (pgmap.pgs_by_state) or ``pg stat`` (pg_summary)."""
    if "pgmap" in doc:
        return {s["state_name"]: int(s["count"]) for s in doc["pgmap"].get("pgs_by_state") or []}
    if "pgs_by_state" in doc:
        return {s["state_name"]: int(s["count"]) for s in doc["pgs_by_state"] or []}
    summary = doc.get("pg_summary", doc)
    return {s["name"]: int(s["num"]) for s in summary.get("num_pg_by_state") or []}


def num_pgs(doc: Mapping[str, Any]) -> int:
    if "pgmap" in doc:
        return int(doc["pgmap"].get("num_pgs", 0))
    return int(doc.get("pg_summary", doc).get("num_pgs", 0))


def is_clean(state: str) -> bool:
    """``active+clean``, possibly scrubbing; anything remapped, degraded, peering... is not clean."""
    parts = set(state.split("+"))
    return {"active", "clean"} <= parts and parts - {"active", "clean"} <= CLEAN_EXTRAS


def unclean(states: Mapping[str, int]) -> dict[str, int]:
    return {s: n for s, n in states.items() if n and not is_clean(s)}


def all_clean(states: Mapping[str, int]) -> bool:
    return sum(states.values()) > 0 and not unclean(states)


def count_with(states: Mapping[str, int], components: Iterable[str]) -> int:
    wanted = set(components)
    return sum(n for s, n in states.items() if wanted & set(s.split("+")))


def inactive(states: Mapping[str, int]) -> int:
    return sum(n for s, n in states.items() if "active" not in s.split("+"))


def ratio(doc: Mapping[str, Any], name: str) -> float:
    """``misplaced_ratio`` / ``degraded_ratio`` of a status or pg stat; Ceph omits them when zero."""
    section = doc.get("pgmap") or doc.get("pg_summary") or doc
    return float(section.get(name, 0.0) or 0.0)


@dataclass(frozen=True)
class Summary:
    health: Health
    pg_states: Mapping[str, int]
    num_pgs: int
    misplaced_ratio: float
    degraded_ratio: float
    num_osds: int
    num_up_osds: int
    num_in_osds: int
    num_remapped_pgs: int

    @property
    def all_clean(self) -> bool:
        return all_clean(self.pg_states)

    @property
    def moving(self) -> int:
        return count_with(self.pg_states, MOVING)

    @property
    def inactive(self) -> int:
        return inactive(self.pg_states)

    def as_dict(self) -> dict[str, Any]:
        return {
            "health": self.health.status,
            "checks": {n: c.message for n, c in self.health.checks.items()},
            "pg_states": dict(self.pg_states),
            "num_pgs": self.num_pgs,
            "all_active_clean": self.all_clean,
            "unclean_pgs": unclean(self.pg_states),
            "misplaced_ratio": self.misplaced_ratio,
            "degraded_ratio": self.degraded_ratio,
            "backfilling_pgs": self.moving,
            "inactive_pgs": self.inactive,
            "num_osds": self.num_osds,
            "num_up_osds": self.num_up_osds,
            "num_in_osds": self.num_in_osds,
            "num_remapped_pgs": self.num_remapped_pgs,
        }


def summarize_status(status: Mapping[str, Any]) -> Summary:
    osdmap = status.get("osdmap") or {}
    osdmap = osdmap.get("osdmap", osdmap)  # releases before Octopus nest it once more
    return Summary(
        health=parse_health(status),
        pg_states=pg_states(status),
        num_pgs=num_pgs(status),
        misplaced_ratio=ratio(status, "misplaced_ratio"),
        degraded_ratio=ratio(status, "degraded_ratio"),
        num_osds=int(osdmap.get("num_osds", 0)),
        num_up_osds=int(osdmap.get("num_up_osds", 0)),
        num_in_osds=int(osdmap.get("num_in_osds", 0)),
        num_remapped_pgs=int(osdmap.get("num_remapped_pgs", 0)),
    )


# -- flags ------------------------------------------------------------------------------------------


def osd_flags(dump: Mapping[str, Any]) -> set[str]:
    """Cluster-wide OSD map flags from ``osd dump`` (``flags_set``, else the comma-separated ``flags``)."""
    if "flags_set" in dump:
        return {str(f) for f in dump["flags_set"]}
    return {f for f in str(dump.get("flags", "")).split(",") if f}


def validate_flags(flags: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(flags))
    unknown = [f for f in chosen if f not in KNOWN_FLAGS]
    if unknown:
        raise ActionError(f"unknown OSD flag(s) {', '.join(unknown)}: use {', '.join(sorted(KNOWN_FLAGS))}")
    if not chosen:
        raise ActionError("no flags given: name at least one of " + ", ".join(sorted(KNOWN_FLAGS)))
    return chosen


# -- OSD tree and OSD dump --------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeOsd:
    id: int
    host: str | None
    crush_weight: float
    status: str
    reweight: float


def tree_osds(tree: Mapping[str, Any]) -> dict[int, TreeOsd]:
    """Every OSD of ``osd tree`` (including ``stray`` ones outside CRUSH, with host None)."""
    parent: dict[int, str] = {}
    for node in tree.get("nodes") or []:
        if node.get("type") == "host":
            for child in node.get("children") or []:
                parent[int(child)] = str(node["name"])
    found: dict[int, TreeOsd] = {}
    for node in list(tree.get("nodes") or []) + list(tree.get("stray") or []):
        if node.get("type", "osd") != "osd" or int(node["id"]) < 0:
            continue
        oid = int(node["id"])
        found[oid] = TreeOsd(
            id=oid,
            host=parent.get(oid),
            crush_weight=float(node.get("crush_weight", 0.0)),
            status=str(node.get("status", "")),
            reweight=float(node.get("reweight", 0.0)),
        )
    return found


def host_bucket(tree: Mapping[str, Any], host: str) -> Mapping[str, Any] | None:
    for node in tree.get("nodes") or []:
        if node.get("type") == "host" and node.get("name") == host:
            return dict(node)
    return None


def host_osds(tree: Mapping[str, Any], host: str) -> list[int] | None:
    """Sorted OSD ids under the CRUSH host bucket ``host``, or None when there is no such bucket."""
    bucket = host_bucket(tree, host)
    if bucket is None:
        return None
    return sorted(int(c) for c in bucket.get("children") or [] if int(c) >= 0)


def crush_weights(tree: Mapping[str, Any], osds: Iterable[int]) -> dict[int, float]:
    known = tree_osds(tree)
    missing = [o for o in osds if o not in known]
    if missing:
        raise ActionError(f"{names(missing)} not in the OSD tree: check the ids ('ceph osd tree')")
    return {o: known[o].crush_weight for o in osds}


@dataclass(frozen=True)
class OsdState:
    id: int
    up: bool
    in_: bool
    state: tuple[str, ...]

    @property
    def destroyed(self) -> bool:
        return "destroyed" in self.state

    @property
    def new(self) -> bool:
        return "new" in self.state

    @property
    def up_and_in(self) -> bool:
        return self.up and self.in_ and not self.new and not self.destroyed

    def describe(self) -> str:
        up = "up" if self.up else "down"
        in_ = "in" if self.in_ else "out"
        return f"osd.{self.id} {up}, {in_} ({','.join(self.state)})"


def dump_osds(dump: Mapping[str, Any]) -> dict[int, OsdState]:
    """The OSDs of ``osd dump``: purged ids are absent, destroyed ones keep ``destroyed`` in their state."""
    return {
        int(o["osd"]): OsdState(
            id=int(o["osd"]),
            up=bool(o.get("up")),
            in_=bool(o.get("in")),
            state=tuple(str(s) for s in o.get("state") or []),
        )
        for o in dump.get("osds") or []
    }


def unknown_ids(known: Iterable[int], osds: Iterable[int]) -> list[int]:
    have = set(known)
    return [o for o in osds if o not in have]


def free_ids(dump: Mapping[str, Any], count: int) -> list[int]:
    """The ``count`` lowest ids not in the OSD map (the ids ``ceph osd new`` would pick)."""
    taken = set(dump_osds(dump))
    ids: list[int] = []
    candidate = 0
    while len(ids) < count:
        if candidate not in taken:
            ids.append(candidate)
        candidate += 1
    return ids


# -- safety checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OkToStop:
    ok: bool
    osds: tuple[int, ...]
    num_ok_pgs: int
    num_not_ok_pgs: int
    bad_become_inactive: tuple[str, ...]
    ok_become_degraded: tuple[str, ...]

    def explain(self) -> str:
        total = self.num_ok_pgs + self.num_not_ok_pgs
        text = f"stopping {names(self.osds)} would make {self.num_not_ok_pgs} of {total} PG(s) inactive"
        if self.bad_become_inactive:
            text += ": " + ", ".join(self.bad_become_inactive)
        return text


def parse_ok_to_stop(stdout: str, rc: int) -> OkToStop:
    """``osd ok-to-stop -f json``: exit 0 when ok, 16 (EBUSY) with the same JSON when not."""
    if rc not in (0, OK_TO_STOP_NOT_OK):
        raise ActionError(f"'osd ok-to-stop' exited {rc}")
    doc = loads(stdout, "osd ok-to-stop")
    bad = tuple(str(p) for p in doc.get("bad_become_inactive") or [])
    return OkToStop(
        ok=rc == 0 and bool(doc.get("ok_to_stop")) and not bad,
        osds=tuple(int(o) for o in doc.get("osds") or []),
        num_ok_pgs=int(doc.get("num_ok_pgs", 0)),
        num_not_ok_pgs=int(doc.get("num_not_ok_pgs", 0)),
        bad_become_inactive=bad,
        ok_become_degraded=tuple(str(p) for p in doc.get("ok_become_degraded") or []),
    )


@dataclass(frozen=True)
class SafeToDestroy:
    safe: frozenset[int]
    active: frozenset[int]
    missing_stats: frozenset[int]
    stored_pgs: frozenset[int]

    def unsafe(self, osds: Iterable[int]) -> list[int]:
        return [o for o in osds if o not in self.safe]

    def explain(self, osds: Iterable[int]) -> str:
        unsafe = self.unsafe(osds)
        reasons = []
        for label, group in (
            ("still map PGs", self.active),
            ("have no reported stats", self.missing_stats),
            ("still store PG data", self.stored_pgs),
        ):
            hit = [o for o in unsafe if o in group]
            if hit:
                reasons.append(f"{names(hit)} {label}")
        explained = self.active | self.missing_stats | self.stored_pgs
        other = [o for o in unsafe if o not in explained]
        if other:
            reasons.append(f"{names(other)} not reported safe")
        return f"{len(unsafe)} OSD(s) not safe to destroy: " + "; ".join(reasons)


def parse_safe_to_destroy(stdout: str) -> SafeToDestroy:
    """``osd safe-to-destroy -f json`` exits 0 whatever the answer: the lists are the answer."""
    doc = loads(stdout, "osd safe-to-destroy")

    def ids(key: str) -> frozenset[int]:
        return frozenset(int(o) for o in doc.get(key) or [])

    return SafeToDestroy(ids("safe_to_destroy"), ids("active"), ids("missing_stats"), ids("stored_pgs"))


def pgs_in_listing(doc: Any) -> dict[str, str]:
    """pgid -> state from ``pg ls[-by-osd]``: a dict with ``pg_stats`` (absent when empty) or a bare list."""
    rows = doc if isinstance(doc, list) else (doc or {}).get("pg_stats") or []
    return {str(r["pgid"]): str(r.get("state", "")) for r in rows}


def not_up_error(rc: int, stderr: str) -> bool:
    """``pg ls-by-osd`` of a down OSD: exit 11 'osd N is not up' — it maps no PG."""
    return rc == EAGAIN and "is not up" in stderr


# -- utilization ------------------------------------------------------------------------------------


def utilization(df: Mapping[str, Any]) -> dict[str, Any]:
    """Per-OSD use from ``osd df`` and the spread between the fullest and emptiest in OSD with capacity."""
    per: dict[str, dict[str, Any]] = {}
    counted: list[tuple[float, int]] = []
    for node in df.get("nodes") or []:
        if node.get("type", "osd") != "osd":
            continue
        oid = int(node["id"])
        util = float(node.get("utilization", 0.0))
        per[str(oid)] = {
            "utilization": util,
            "pgs": int(node.get("pgs", 0)),
            "crush_weight": float(node.get("crush_weight", 0.0)),
            "reweight": float(node.get("reweight", 0.0)),
            "kb": int(node.get("kb", 0)),
            "kb_used": int(node.get("kb_used", 0)),
            "status": str(node.get("status", "")),
        }
        if float(node.get("reweight", 0.0)) > 0 and int(node.get("kb", 0)) > 0:
            counted.append((util, oid))
    summary = df.get("summary") or {}
    if not counted:
        return {"osds": per, "spread": 0.0, "max": None, "min": None,
                "average": float(summary.get("average_utilization", 0.0))}
    hi, lo = max(counted), min(counted)
    return {
        "osds": per,
        "spread": hi[0] - lo[0],
        "max": {"osd": hi[1], "utilization": hi[0]},
        "min": {"osd": lo[1], "utilization": lo[0]},
        "average": float(summary.get("average_utilization", sum(u for u, _ in counted) / len(counted))),
    }


# -- gradual reweight -------------------------------------------------------------------------------


def same_weight(a: float, b: float) -> bool:
    """CRUSH stores weights as 16.16 fixed point: 0.1 reads back as 0.099990844726562."""
    return math.isclose(a, b, abs_tol=2e-5)


def weight_arg(weight: float) -> str:
    """A CRUSH weight as a command argument, precise enough that the 16.16 fixed point CRUSH truncates it
    to lands on the same value (``0.0038909912109375`` printed as ``0.00389099`` is stored one unit lower)."""
    return f"{weight:.10g}"


def next_weight(current: float, target: float, step: float) -> float:
    """One step from ``current`` towards ``target``, never past it."""
    if step <= 0:
        raise ActionError(f"step must be positive, got {step}")
    if same_weight(current, target):
        return target
    if current > target:
        return target if current - step <= target else round(current - step, 6)
    return target if current + step >= target else round(current + step, 6)


def plan_weights(current: float, target: float, step: float) -> list[float]:
    """Every weight a gradual reweight goes through after ``current``, ending at ``target``."""
    plan: list[float] = []
    while not same_weight(current, target):
        current = next_weight(current, target, step)
        plan.append(current)
    return plan


def settle_blockers(
    summary: Summary,
    *,
    max_misplaced: float,
    max_backfilling: int,
    allowed_checks: Iterable[str],
) -> list[str]:
    """Why the cluster is not calm enough for the next reweight step ([] when it is)."""
    reasons: list[str] = []
    unexpected = summary.health.unexpected(allowed_checks)
    if unexpected:
        reasons.append(f"{summary.health.status}: {summary.health.describe(unexpected)}")
    if summary.misplaced_ratio > max_misplaced:
        reasons.append(f"misplaced {summary.misplaced_ratio:.1%} > {max_misplaced:.1%}")
    if summary.moving > max_backfilling:
        reasons.append(f"{summary.moving} PGs backfilling/recovering > {max_backfilling}")
    if summary.inactive:
        reasons.append(f"{summary.inactive} PG(s) not active")
    return reasons


def clean_blockers(summary: Summary, allowed_checks: Iterable[str]) -> list[str]:
    """Why the cluster is not done moving data ([] when health is allowed and every PG active+clean)."""
    reasons: list[str] = []
    unexpected = summary.health.unexpected(allowed_checks)
    if unexpected:
        reasons.append(f"{summary.health.status}: {summary.health.describe(unexpected)}")
    bad = unclean(summary.pg_states)
    if bad or not summary.pg_states:
        shown = ", ".join(f"{n} {s}" for s, n in sorted(bad.items())) or "no PG stats"
        reasons.append(f"PGs not active+clean: {shown}")
    if summary.misplaced_ratio > 0:
        reasons.append(f"misplaced {summary.misplaced_ratio:.1%}")
    return reasons


def stats_lag(mgr_stats_period: float) -> float:
    """How long ``ceph status`` may lag a change: 2 x mgr_stats_period + 1 s (measured 1.3-2.3 s at 1 s)."""
    return 2 * mgr_stats_period + 1


def parse_number(stdout: str, what: str) -> float:
    """A ``config get -f json`` value: a bare JSON number, or a string holding one."""
    value = loads(stdout, what)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ActionError(f"'{what}' printed {value!r}, not a number") from None


def osd_ids_in(text: str) -> list[int]:
    """OSD ids named ``osd.N`` in a health message or detail line."""
    return sorted({int(m) for m in re.findall(r"\bosd\.(\d+)\b", text)})


def names(osds: Iterable[int]) -> str:
    return ", ".join(f"osd.{o}" for o in osds)


# -- daemons: mons and mgrs -------------------------------------------------------------------------


def same_host(a: str | None, b: str | None) -> bool:
    """Host names compared by their short form: metadata may say ``node1.example.com``, CRUSH ``node1``."""
    if not a or not b:
        return False
    return a.split(".")[0].lower() == b.split(".")[0].lower()


def mon_hosts(mon_dump: Mapping[str, Any], mon_metadata: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """mon name -> the host it runs on: ``hostname`` of ``mon metadata``, else the mon's own name
    (a mon that never reported metadata is assumed to be named after its host, as cephadm names them)."""
    reported = {str(m.get("name")): str(m.get("hostname") or "") for m in mon_metadata}
    return {str(m["name"]): reported.get(str(m["name"])) or str(m["name"]) for m in mon_dump.get("mons") or []}


def mon_quorum(mon_dump: Mapping[str, Any]) -> list[str]:
    """Names of the mons in quorum (``mon dump`` lists quorum ranks)."""
    ranks = {int(r) for r in mon_dump.get("quorum") or []}
    return [str(m["name"]) for m in mon_dump.get("mons") or [] if int(m.get("rank", -1)) in ranks]


@dataclass(frozen=True)
class Mgrs:
    active: str | None
    available: bool
    standbys: tuple[str, ...]
    hosts: Mapping[str, str]
    """mgr name -> host (``mgr metadata`` hostname, else the mgr's name)."""

    def host_of(self, name: str) -> str:
        return self.hosts.get(name) or name


def parse_mgrs(mgr_dump: Mapping[str, Any], mgr_metadata: Iterable[Mapping[str, Any]]) -> Mgrs:
    reported = {str(m.get("name")): str(m.get("hostname") or "") for m in mgr_metadata}
    active = str(mgr_dump.get("active_name") or "") or None
    standbys = tuple(str(s.get("name")) for s in mgr_dump.get("standbys") or [])
    return Mgrs(active, bool(mgr_dump.get("available")), standbys, reported)


# -- pools, CRUSH rules and failure domains ----------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    erasure: bool
    size: int
    min_size: int
    rule: int

    def describe(self) -> str:
        kind = f"erasure-coded, k+m={self.size}" if self.erasure else f"replicated, size {self.size}"
        return f"pool '{self.name}' ({kind}, min_size {self.min_size})"


def parse_pools(detail: Iterable[Mapping[str, Any]]) -> list[Pool]:
    """``osd pool ls detail``: type 1 is replicated, 3 erasure (its size is k+m)."""
    return [Pool(int(p["pool_id"]), str(p["pool_name"]), int(p.get("type", 1)) == 3, int(p["size"]),
                 int(p["min_size"]), int(p["crush_rule"])) for p in detail]


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    root: str
    device_class: str | None
    domain: str
    """The bucket type replicas/chunks are spread over (the last choose step's type)."""


def parse_rules(dump: Iterable[Mapping[str, Any]]) -> dict[int, Rule]:
    """``osd crush rule dump``. ``take default~hdd`` means root ``default``, device class ``hdd``.
    With several choose steps the last one's type is taken: each replica needs its own bucket of it."""
    rules: dict[int, Rule] = {}
    for r in dump:
        root, cls, domain = "default", None, "osd"
        for step in r.get("steps") or []:
            op = str(step.get("op", ""))
            if op == "take":
                root, _, klass = str(step.get("item_name", "default")).partition("~")
                cls = klass or None
            elif op.startswith("choose"):
                domain = str(step.get("type", "osd"))
        rules[int(r["rule_id"])] = Rule(int(r["rule_id"]), str(r["rule_name"]), root, cls, domain)
    return rules


def failure_domains(
    tree: Mapping[str, Any], rule: Rule, without: Iterable[int] = ()
) -> dict[str, float]:
    """Buckets of the rule's failure-domain type under its root that hold CRUSH weight (OSDs of its
    device class, except ``without``), with that weight. An OSD counts as its own domain for type osd."""
    nodes = {int(n["id"]): n for n in tree.get("nodes") or []}
    gone = set(without)
    roots = [n for n in nodes.values() if n.get("name") == rule.root and int(n["id"]) < 0]
    weights: dict[str, float] = {}

    def walk(node: Mapping[str, Any], domain: str | None) -> None:
        nid = int(node["id"])
        if node.get("type") == rule.domain:
            domain = str(node.get("name"))
        if nid >= 0:
            if nid in gone or (rule.device_class and node.get("device_class") != rule.device_class):
                return
            weight = float(node.get("crush_weight", 0.0))
            if weight > 0 and domain is not None:
                weights[domain] = weights.get(domain, 0.0) + weight
            return
        for child in node.get("children") or []:
            if int(child) in nodes:
                walk(nodes[int(child)], domain)

    for root in roots:
        walk(root, None)
    return weights


def placement_problems(
    pools: Iterable[Pool], rules: Mapping[int, Rule], tree: Mapping[str, Any], leaving: Iterable[int], host: str
) -> list[str]:
    """Pools that could not place every replica (or every k+m chunk) in a distinct failure domain once
    the OSDs ``leaving`` hold no weight; worse when even ``min_size`` would not fit."""
    out = list(leaving)
    problems = []
    for pool in pools:
        rule = rules.get(pool.rule)
        if rule is None:
            problems.append(f"{pool.describe()} uses CRUSH rule {pool.rule}, which 'osd crush rule dump' lacks")
            continue
        left = len(failure_domains(tree, rule, out))
        if left >= pool.size:
            continue
        worst = "below min_size: its PGs would stop serving I/O" if left < pool.min_size else (
            "data could not be re-replicated, it would stay degraded")
        problems.append(
            f"{pool.describe()} needs {pool.size} {rule.domain}s under '{rule.root}' (rule '{rule.name}') and only "
            f"{left} would hold weight without {host} ({worst}): add a {rule.domain} first")
    return problems


def hosts_down_problems(
    pools: Iterable[Pool], rules: Mapping[int, Rule], tree: Mapping[str, Any], max_hosts_down: int
) -> list[str]:
    """``max_hosts_down`` hosts out at once must leave every host-domain pool room for all its replicas."""
    problems = []
    for pool in pools:
        rule = rules.get(pool.rule)
        if rule is None or rule.domain != "host":
            continue
        hosts = len(failure_domains(tree, rule))
        spare = hosts - pool.size
        if max_hosts_down > spare:
            problems.append(
                f"max_hosts_down {max_hosts_down} in the inventory lets {max_hosts_down} host(s) be out at once, "
                f"but {pool.describe()} spans {hosts} hosts, so at most {max(spare, 0)} may be: lower "
                f"max_hosts_down to {max(spare, 0)} or add hosts")
    return problems


GROUP_FLAGS = frozenset({"noout", "noin", "noup", "nodown"})
"""Flags ``ceph osd set-group`` can scope to a CRUSH node (host) instead of the whole cluster."""


def group_flags(dump: Mapping[str, Any], node: str) -> set[str]:
    """Flags set on CRUSH node ``node`` with ``osd set-group`` (``crush_node_flags`` of ``osd dump``)."""
    return {str(f) for f in (dump.get("crush_node_flags") or {}).get(node) or []}


def validate_group_flags(flags: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(flags))
    unknown = [f for f in chosen if f not in GROUP_FLAGS]
    if unknown or not chosen:
        raise ActionError(f"flag(s) {', '.join(unknown) or '(none)'} cannot be scoped to a host: use "
                          f"{', '.join(sorted(GROUP_FLAGS))}")
    return chosen


# -- the mon config database -------------------------------------------------------------------------


def config_entries(dump: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Options set without a mask in ``config dump``, keyed ``SECTION/NAME`` (``osd/osd_max_backfills``,
    ``osd.4/osd_crush_initial_weight``), values as text."""
    return {f"{e['section']}/{e['name']}": str(e["value"]) for e in dump if not e.get("mask")}


def config_key(key: str, who: str) -> tuple[str, str]:
    """(section, option) of ``SECTION/NAME``, or of a bare ``NAME`` for section ``who``."""
    section, _, name = key.rpartition("/")
    return (section or who), name


def same_config(a: str, b: str) -> bool:
    """Config values compared as numbers when both are (``config dump`` prints ``0.000000`` for ``0``)."""
    try:
        return math.isclose(float(a), float(b), abs_tol=1e-9)
    except ValueError:
        return a == b
