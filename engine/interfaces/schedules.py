"""Periodic runbooks: declared in YAML, fired by Celery beat (``hotswap scheduler``).

Each schedule has a cron expression or an interval, parameters and optionally clusters: one entry per
cluster, e.g. ``rebalance@ceph-a``. A fire launches through the policy as ``schedule:<name>``; it is
skipped (and audited) when the previous run of the same entry is still active (overlap: skip) or when
another active run holds one of the locks the new run would take.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine import celery_beat
from engine.celery_beat import beat_schedule, cron_ok, parse_cron
from engine.durations import format_duration, parse_duration
from engine.errors import ConfigError, HotswapError, LockHeld, ValidationError
from engine.interfaces.facade import RunbookCatalog, active_runs, audit_query, lock_conflict
from engine.interfaces.guard import GuardedService
from engine.interfaces.policy import PermissionDenied, Policy
from engine.service import Identity, Service
from engine.yamlload import load_yaml

log = logging.getLogger("hotswap.schedules")
FIRE_TASK = "hotswap.schedule.fire"
SCHEDULE_KEYS = {"name", "runbook", "cron", "every", "params", "clusters", "cluster_param", "overlap", "enabled",
                 "description"}
OVERLAP = ("skip", "allow")


@dataclass(frozen=True)
class ScheduleDef:
    name: str
    runbook: str
    cron: str | None = None
    every: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    clusters: tuple[str, ...] = ()
    cluster_param: str = "cluster"
    overlap: str = "skip"
    enabled: bool = True
    description: str = ""

    def entries(self) -> list[tuple[str, str | None]]:
        """(entry key, cluster) for each cluster, or one entry without a cluster."""
        if not self.clusters:
            return [(self.name, None)]
        return [(f"{self.name}@{c}", c) for c in self.clusters]

    def celery_schedule(self) -> Any:
        return beat_schedule(self.cron, self.every)

    def when(self) -> str:
        return f"cron '{self.cron}'" if self.cron else f"every {format_duration(self.every or 0)}"


@dataclass(frozen=True)
class FireOutcome:
    entry: str
    outcome: str
    """launched, skipped, denied or invalid."""
    run: str | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "outcome": self.outcome, "run": self.run, "reason": self.reason}


# ---- loading ------------------------------------------------------------------------------------------
def load_schedules(path: str | Path) -> list[ScheduleDef]:
    file = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{file}: cannot read the schedules file: {e.strerror}") from None
    return parse_schedules(text, file)


def parse_schedules(text: str | bytes, file: str) -> list[ScheduleDef]:
    try:
        doc, positions = load_yaml(text, file)
    except ValidationError as e:
        raise ConfigError(str(e)) from None
    errors: list[str] = []

    def error(path: tuple[str | int, ...], message: str) -> None:
        errors.append(f"{positions.at(path)}: {message}")

    raw = doc.get("schedules") if isinstance(doc, dict) else None
    if not isinstance(raw, list):
        raise ConfigError(f"{positions.at(())}: a schedules file is a mapping with 'schedules': a list")
    out: list[ScheduleDef] = []
    names: set[str] = set()
    for i, s in enumerate(raw):
        where: tuple[str | int, ...] = ("schedules", i)
        if not isinstance(s, dict):
            error(where, "a schedule is a mapping with name, runbook and cron or every")
            continue
        for key in s:
            if key not in SCHEDULE_KEYS:
                error((*where, key), f"unknown key '{key}': expected one of {', '.join(sorted(SCHEDULE_KEYS))}")
        name = s.get("name")
        if not isinstance(name, str) or not name or "@" in name:
            error((*where, "name"), "'name' is required (a string without '@')")
            continue
        if name in names:
            error((*where, "name"), f"duplicate schedule name '{name}'")
        names.add(name)
        if not isinstance(s.get("runbook"), str):
            error((*where, "runbook"), "'runbook' is required: a runbook name from the runbooks directory")
        cron, every = s.get("cron"), s.get("every")
        seconds: float | None = None
        if (cron is None) == (every is None):
            error(where, "give exactly one of 'cron' (e.g. \"0 */6 * * *\") or 'every' (e.g. 6h)")
        elif cron is not None:
            if not isinstance(cron, str) or not cron_ok(cron):
                error((*where, "cron"), f"'{cron}' is not a 5-field cron expression (minute hour day month weekday)")
        else:
            try:
                seconds = parse_duration(every)
            except ValueError as e:
                error((*where, "every"), f"'every': {e}")
            if seconds is not None and seconds <= 0:
                error((*where, "every"), "'every' must be positive")
        params = s.get("params") or {}
        if not isinstance(params, dict):
            error((*where, "params"), "'params' must be a mapping of parameter values")
            params = {}
        clusters = s.get("clusters") or []
        if not isinstance(clusters, list) or not all(isinstance(c, str) for c in clusters):
            error((*where, "clusters"), "'clusters' must be a list of cluster names")
            clusters = []
        overlap = s.get("overlap", "skip")
        if overlap not in OVERLAP:
            error((*where, "overlap"), f"'overlap' must be one of {', '.join(OVERLAP)}")
        out.append(ScheduleDef(name, str(s.get("runbook")), cron if isinstance(cron, str) else None, seconds,
                               dict(params), tuple(clusters), str(s.get("cluster_param", "cluster")), str(overlap),
                               bool(s.get("enabled", True)), str(s.get("description", ""))))
    if errors:
        raise ConfigError("invalid schedules:\n" + "\n".join(errors))
    return out


# ---- firing -------------------------------------------------------------------------------------------
class ScheduleBook:
    def __init__(self, defs: list[ScheduleDef], service: Service, policy: Policy, catalog: RunbookCatalog,
                 inventory: Callable[[], Any] | None = None) -> None:
        self.defs = {d.name: d for d in defs}
        self.service = service
        self.policy = policy
        self.catalog = catalog
        self.inventory = inventory

    def get(self, name: str) -> ScheduleDef:
        d = self.defs.get(name.partition("@")[0])
        if d is None:
            raise HotswapError(f"no schedule '{name}': known are {', '.join(sorted(self.defs)) or 'none'}")
        return d

    def fire(self, name: str, cluster: str | None = None, manual_by: Identity | None = None) -> list[FireOutcome]:
        """Fire a schedule now: every cluster entry, or only ``cluster`` (or the entry in ``name@cluster``)."""
        d = self.get(name)
        _, _, at = name.partition("@")
        cluster = cluster or at or None
        entries = [(k, c) for k, c in d.entries() if cluster is None or c == cluster]
        if not entries:
            raise HotswapError(f"schedule '{d.name}' has no cluster '{cluster}': it runs on {', '.join(d.clusters)}")
        return [self.fire_entry(d, key, c, manual_by) for key, c in entries]

    def fire_entry(self, d: ScheduleDef, key: str, cluster: str | None,
                   manual_by: Identity | None = None) -> FireOutcome:
        who = Identity(f"schedule:{d.name}", "schedule", {"principal": f"schedule:{d.name}", "schedule": d.name,
                                                          "entry": key, "cluster": cluster or "",
                                                          **({"manual_by": manual_by.name} if manual_by else {})})
        params = {**d.params, **({d.cluster_param: cluster} if cluster else {})}
        audit = {"who": who.name, "source": "schedule", "schedule": d.name, "entry": key,
                 "manual_by": manual_by.name if manual_by else ""}
        store = self.service.store
        if d.overlap == "skip":
            previous = [r["id"] for r in active_runs(self.service)
                        if (r.get("launched_by_detail") or {}).get("entry") == key]
            if previous:
                reason = f"overlap: the previous run {previous[0]} of {key} is still active"
                store.audit(action="schedule_skipped", reason=reason, run=previous[0], **audit)
                return FireOutcome(key, "skipped", previous[0], reason)
        try:
            _rb, plan = self.service.plan(self.catalog.path(d.runbook), params)
        except HotswapError as e:
            store.audit(action="schedule_invalid", reason=str(e), **audit)
            return FireOutcome(key, "invalid", None, str(e))
        held = lock_conflict(self.service, plan.locks)
        if held is not None:
            reason = f"lock '{held[0]}' is held by run {', '.join(held[1])}"
            store.audit(action="schedule_skipped", reason=reason, run=held[1][0], **audit)
            return FireOutcome(key, "skipped", held[1][0], reason)
        try:
            run = GuardedService(self.service, self.policy, who, self.catalog, self.inventory).launch(d.runbook, params)
        except PermissionDenied as e:
            return FireOutcome(key, "denied", None, str(e))
        except LockHeld as e:
            store.audit(action="schedule_skipped", reason=str(e), run=e.holder, **audit)
            return FireOutcome(key, "skipped", e.holder, str(e))
        except HotswapError as e:
            store.audit(action="schedule_invalid", reason=str(e), **audit)
            return FireOutcome(key, "invalid", None, str(e))
        store.audit(action="schedule_fired", run=run, **audit)
        return FireOutcome(key, "launched", run)

    # ---- listing ----
    def last_fire(self, key: str) -> float | None:
        for action in ("schedule_fired", "schedule_skipped"):
            for entry in audit_query(self.service, limit=1000, action=action):
                if entry.get("entry") == key and not entry.get("manual_by"):
                    return float(entry["t"])
        return None

    def describe(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        out = []
        for d in self.defs.values():
            for key, cluster in d.entries():
                last = self.last_fire(key)
                nxt = next_fire(d, now, last) if d.enabled else None
                out.append({"entry": key, "schedule": d.name, "cluster": cluster, "runbook": d.runbook,
                            "when": d.when(), "enabled": d.enabled, "overlap": d.overlap, "last_fire": last,
                            "next_fire": nxt, "next_fire_iso": _iso(nxt) if nxt else None})
        return out

    # ---- beat ----
    def beat_schedule(self) -> dict[str, dict[str, Any]]:
        return {key: {"task": FIRE_TASK, "schedule": d.celery_schedule(), "args": (d.name, cluster or "")}
                for d in self.defs.values() if d.enabled for key, cluster in d.entries()}


def next_fire(d: ScheduleDef, now: float, last: float | None) -> float:
    """When an entry fires next. Interval entries count from their last fire (or from now, when the
    scheduler has not fired them yet: beat's first fire comes one interval after it starts)."""
    if d.every is not None:
        return max(now, last + d.every) if last else now + d.every
    return next_cron(parse_cron(d.cron or "* * * * *"), datetime.fromtimestamp(now, UTC)).timestamp()


def next_cron(sched: Any, after: datetime) -> datetime:
    """The first minute after ``after`` (UTC) that a Celery crontab matches (its fields are sets; as in
    Celery, day of month and day of week must both match)."""
    start = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    day = start.date()
    for _ in range(366 * 8):
        if day.month in sched.month_of_year and day.day in sched.day_of_month and \
                day.isoweekday() % 7 in sched.day_of_week:
            for hour in sorted(sched.hour):
                for minute in sorted(sched.minute):
                    t = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if t >= start:
                        return t
        day += timedelta(days=1)
    raise HotswapError("this cron expression never fires")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def run_beat(book: ScheduleBook, app: Any, state_dir: Path, max_interval: float = 5.0) -> None:
    """Run Celery beat in this process, firing the book's entries (see engine/celery_beat.py)."""

    def fire(name: str, cluster: str) -> list[dict[str, Any]]:
        outcomes = book.fire(name, cluster or None)
        for o in outcomes:
            log.info("schedule %s: %s %s %s", o.entry, o.outcome, o.run or "", o.reason)
        return [o.as_dict() for o in outcomes]

    celery_beat.run_beat(app, book.beat_schedule(), FIRE_TASK, fire, state_dir, max_interval)
