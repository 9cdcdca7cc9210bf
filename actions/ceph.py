"""Ceph actions: read the cluster, guard destructive steps, move data gradually.

Every ``ceph`` call runs ``cluster.ceph + args + -f json`` on the cluster's admin host through
``ctx.ssh``; read-only calls pass ``mutating=False`` so a dry-run shows the real state, mutating ones
are only recorded in dry-run. Decisions are made by the pure functions of :mod:`actions.cephjson`.

Every action is idempotent: re-running it after a crash or a retry finishes the job instead of
redoing it (already set flags, already destroyed or purged OSDs, an already removed host bucket are
success). Polling actions keep their progress in ``ctx.memory``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ssh import CommandResult
from engine.errors import ActionError, CommandFailed, SafetyCheckFailed

CEPH_TIMEOUT = 120.0
"""Outer limit of one ceph CLI call (the inventory's prefix should carry ``--connect-timeout`` too)."""

CREATE_TIMEOUT = 900.0
DEFAULT_MGR_STATS_PERIOD = 5.0
DEFAULT_REWEIGHT_ALLOWED = ("OSDMAP_FLAGS", "PG_DEGRADED")


def _now() -> float:
    return time.time()  # wall clock: ctx.memory timestamps are compared across workers


def _ceph(
    ctx: ActionContext,
    cluster: Any,
    *args: str,
    mutating: bool,
    check: bool = True,
    timeout: float | None = CEPH_TIMEOUT,
) -> CommandResult:
    """Run ``ceph ARGS -f json`` on the cluster's admin host."""
    argv = [*cluster.ceph, *args, "-f", "json"]
    result: CommandResult = ctx.ssh.run(
        cluster.admin_host, argv, timeout=timeout, check=check, mutating=mutating
    )
    return result


def _read(ctx: ActionContext, cluster: Any, *args: str) -> Any:
    return cj.loads(_ceph(ctx, cluster, *args, mutating=False).stdout, "ceph " + " ".join(args))


def _failed(cluster: Any, result: CommandResult) -> CommandFailed:
    return CommandFailed(cluster.admin_host, list(result.argv), result.exit_code, result.stderr)


def _dump(ctx: ActionContext, cluster: Any) -> dict[int, cj.OsdState]:
    return cj.dump_osds(_read(ctx, cluster, "osd", "dump"))


def _summary(ctx: ActionContext, cluster: Any) -> cj.Summary:
    return cj.summarize_status(_read(ctx, cluster, "status"))


def _refuse(ctx: ActionContext, message: str) -> None:
    """A failed safety check: raise, or in dry-run record it and go on so the whole plan is shown."""
    if ctx.dry_run:
        ctx.log.warning(f"[dry-run] a real run would stop here: {message}")
        ctx.would("refuse", reason=message)
        return
    raise SafetyCheckFailed(message)


def _require_known(ctx: ActionContext, cluster: Any, osds: list[int]) -> dict[int, cj.OsdState]:
    """ok-to-stop, safe-to-destroy and out say yes to ids that do not exist: check them first."""
    if not osds:
        raise ActionError("no OSD ids given")
    dump = _dump(ctx, cluster)
    unknown = cj.unknown_ids(dump, osds)
    if unknown:
        raise ActionError(f"{cj.names(unknown)} not in the OSD map: check the ids ('ceph osd dump')")
    return dump


def _stats_lag(ctx: ActionContext, cluster: Any) -> float:
    """2 x mgr_stats_period + 1 s, the period read once from the cluster (default 5 s if unreadable)."""
    if "stats_lag" not in ctx.memory:
        result = _ceph(ctx, cluster, "config", "get", "mgr", "mgr_stats_period", mutating=False, check=False)
        period = DEFAULT_MGR_STATS_PERIOD
        if result.exit_code == 0:
            period = cj.parse_number(result.stdout, "ceph config get mgr mgr_stats_period")
        else:
            ctx.log.warning(f"cannot read mgr_stats_period (exit {result.exit_code}): assuming {period:g}s")
        ctx.memory["stats_lag"] = cj.stats_lag(period)
    return float(ctx.memory["stats_lag"])


def _stop_if_fatal(ctx: ActionContext, memory: dict[str, Any], health: cj.Health, allowed: list[str]) -> None:
    """Fail on checks waiting cannot fix, and on PGs unavailable for longer than a peering blip."""
    fatal = health.fatal(allowed)
    if fatal:
        raise SafetyCheckFailed(f"{health.status}: {health.describe(fatal)}: fix this before resuming")
    if "PG_AVAILABILITY" in health.checks and "PG_AVAILABILITY" not in allowed:
        since = float(memory.setdefault("unavailable_since", _now()))
        if _now() - since > cj.PG_AVAILABILITY_GRACE:
            raise SafetyCheckFailed(
                f"PGs unavailable for more than {cj.PG_AVAILABILITY_GRACE:g}s: "
                f"{health.describe(['PG_AVAILABILITY'])}"
            )
    else:
        memory.pop("unavailable_since", None)


def _target_osds(ctx: ActionContext, cluster: Any, host: str | None, osds: list[int] | None) -> list[int]:
    if (host is None) == (osds is None):
        raise ActionError("give either 'host' or 'osds'")
    if osds is not None:
        if not osds:
            raise ActionError("no OSD ids given")
        return list(osds)
    assert host is not None
    found = cj.host_osds(_read(ctx, cluster, "osd", "tree"), host)
    if found is None:
        raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster.name}: check 'ceph osd tree'")
    if not found:
        raise ActionError(f"CRUSH host bucket '{host}' holds no OSD")
    return found


# -- read-only actions ------------------------------------------------------------------------------


@action("ceph.status")
def status(ctx: ActionContext, *, cluster: str) -> dict[str, Any]:
    """Summarize the cluster: health and its checks, PG counts by state, whether every PG is
    active+clean, misplaced/degraded ratios (absent in Ceph output means 0), OSD counts, and the
    OSD map flags (noout, norebalance...)."""
    c = ctx.inventory.cluster(cluster)
    summary = _summary(ctx, c).as_dict()
    summary["flags"] = sorted(cj.osd_flags(_read(ctx, c, "osd", "dump")) & cj.KNOWN_FLAGS)
    return summary


@action("ceph.health")
def health(ctx: ActionContext, *, cluster: str) -> dict[str, Any]:
    """Health status with every raised check: severity, message, count and detail lines."""
    c = ctx.inventory.cluster(cluster)
    h = cj.parse_health(_read(ctx, c, "health", "detail"))
    return {"status": h.status, "ok": h.ok, "checks": {n: chk.as_dict() for n, chk in h.checks.items()}}


@action("ceph.osds_of")
def osds_of(ctx: ActionContext, *, cluster: str, host: str) -> dict[str, Any]:
    """The OSD ids under the CRUSH host bucket ``host`` and their CRUSH weights (keys are ids as text)."""
    c = ctx.inventory.cluster(cluster)
    tree = _read(ctx, c, "osd", "tree")
    found = cj.host_osds(tree, host)
    if found is None:
        raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster}: check 'ceph osd tree'")
    weights = cj.crush_weights(tree, found)
    return {"host": host, "osds": found, "weights": {str(o): w for o, w in weights.items()}}


@action("ceph.utilization")
def utilization(ctx: ActionContext, *, cluster: str) -> dict[str, Any]:
    """Per-OSD utilization (percent), PG count and weights from ``osd df``, and the spread between the
    fullest and the emptiest in OSD."""
    c = ctx.inventory.cluster(cluster)
    return cj.utilization(_read(ctx, c, "osd", "df"))


# -- flags ------------------------------------------------------------------------------------------


@action("ceph.set_flags")
def set_flags(ctx: ActionContext, *, cluster: str, flags: list[str]) -> dict[str, Any]:
    """Set OSD map flags (noout, norebalance, nobackfill, norecover, noscrub, nodeep-scrub, noup,
    nodown, noin). Flags already set are left alone; ``set`` lists the ones this step set, so a later
    ``ceph.unset_flags`` can undo exactly those."""
    c = ctx.inventory.cluster(cluster)
    wanted = cj.validate_flags(flags)
    current = cj.osd_flags(_read(ctx, c, "osd", "dump"))
    mine: list[str] = ctx.memory.setdefault("set", [])
    for flag in wanted:
        if flag not in current:
            _ceph(ctx, c, "osd", "set", flag, mutating=True)
            if flag not in mine:
                mine.append(flag)
    return {
        "set": list(mine),
        "already_set": [f for f in wanted if f in current and f not in mine],
        "flags": sorted((current | set(wanted)) & cj.KNOWN_FLAGS),
    }


@action("ceph.unset_flags")
def unset_flags(ctx: ActionContext, *, cluster: str, flags: list[str]) -> dict[str, Any]:
    """Unset OSD map flags; flags not set are left alone. ``unset`` lists the ones this step unset."""
    c = ctx.inventory.cluster(cluster)
    wanted = cj.validate_flags(flags)
    current = cj.osd_flags(_read(ctx, c, "osd", "dump"))
    mine: list[str] = ctx.memory.setdefault("unset", [])
    for flag in wanted:
        if flag in current:
            _ceph(ctx, c, "osd", "unset", flag, mutating=True)
            if flag not in mine:
                mine.append(flag)
        elif ctx.dry_run:  # an earlier step of the same dry-run would have set it
            ctx.would("unset the flag if it is set by then", flag=flag)
    return {
        "unset": list(mine),
        "already_unset": [f for f in wanted if f not in current and f not in mine],
        "flags": sorted((current - set(wanted)) & cj.KNOWN_FLAGS),
    }


# -- safety checks ----------------------------------------------------------------------------------


@action("ceph.ok_to_stop")
def ok_to_stop(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Check that stopping ``osds`` leaves every PG active (``ceph osd ok-to-stop``). Fails with the
    PG numbers when not. Ids are checked to exist first: ok-to-stop says yes to unknown ids."""
    c = ctx.inventory.cluster(cluster)
    _require_known(ctx, c, osds)
    result = _ok_to_stop(ctx, c, osds)
    if not result.ok:
        _refuse(ctx, result.explain())
    return {
        "ok": result.ok,
        "osds": list(osds),
        "num_ok_pgs": result.num_ok_pgs,
        "num_not_ok_pgs": result.num_not_ok_pgs,
        "bad_become_inactive": list(result.bad_become_inactive),
        "become_degraded": len(result.ok_become_degraded),
    }


def _ok_to_stop(ctx: ActionContext, cluster: Any, osds: list[int]) -> cj.OkToStop:
    result = _ceph(ctx, cluster, "osd", "ok-to-stop", *map(str, osds), mutating=False, check=False)
    if result.exit_code not in (0, cj.OK_TO_STOP_NOT_OK):
        raise _failed(cluster, result)
    return cj.parse_ok_to_stop(result.stdout, result.exit_code)


def _safe_to_destroy(ctx: ActionContext, cluster: Any, osds: list[int]) -> cj.SafeToDestroy:
    result = _ceph(ctx, cluster, "osd", "safe-to-destroy", *map(str, osds), mutating=False)
    return cj.parse_safe_to_destroy(result.stdout)


@action("ceph.safe_to_destroy", polling=True)
def safe_to_destroy(
    ctx: ActionContext, *, cluster: str, osds: list[int], wait: bool = False, interval: float = 10.0
) -> dict[str, Any]:
    """Check that no data would be lost by destroying ``osds`` (``ceph osd safe-to-destroy``; its JSON
    is read, since it exits 0 even when unsafe). Fails with the reasons when not safe; with
    ``wait: true`` polls every ``interval`` seconds until safe instead (bound it with ``timeout:``).
    Ids are checked to exist first: safe-to-destroy says yes to unknown ids."""
    c = ctx.inventory.cluster(cluster)
    _require_known(ctx, c, osds)
    result = _safe_to_destroy(ctx, c, osds)
    unsafe = result.unsafe(osds)
    if unsafe:
        if wait and not ctx.dry_run:
            ctx.not_yet(interval, result.explain(osds))
        _refuse(ctx, result.explain(osds))
    return {
        "safe": not unsafe,
        "osds": list(osds),
        "unsafe": unsafe,
        "active": sorted(result.active),
        "missing_stats": sorted(result.missing_stats),
        "stored_pgs": sorted(result.stored_pgs),
    }


# -- waiting for the cluster ------------------------------------------------------------------------


def _pg_stat_blockers(ctx: ActionContext, cluster: Any) -> list[str]:
    """``pg stat`` is a second view of the PG states: refreshed at a different moment than ``status``."""
    bad = cj.unclean(cj.pg_states(_read(ctx, cluster, "pg", "stat")))
    return ["pg stat: " + ", ".join(f"{n} {s}" for s, n in sorted(bad.items()))] if bad else []


def _drained_blockers(ctx: ActionContext, cluster: Any, osds: list[int]) -> list[str]:
    """PGs still mapped to OSDs that should hold none. A down OSD maps none (ceph answers EAGAIN)."""
    reasons = []
    for osd in osds:
        result = _ceph(ctx, cluster, "pg", "ls-by-osd", str(osd), mutating=False, check=False)
        if result.exit_code != 0:
            if cj.not_up_error(result.exit_code, result.stderr):
                continue
            raise _failed(cluster, result)
        pgs = cj.pgs_in_listing(cj.loads(result.stdout, f"ceph pg ls-by-osd {osd}"))
        if pgs:
            shown = ", ".join(sorted(pgs)[:8]) + (" ..." if len(pgs) > 8 else "")
            reasons.append(f"osd.{osd} still maps {len(pgs)} PG(s): {shown}")
    return reasons


@action("ceph.wait_healthy", polling=True)
def wait_healthy(
    ctx: ActionContext,
    *,
    cluster: str,
    allowed_checks: list[str] | None = None,
    drained_osds: list[int] | None = None,
    consecutive: int = 2,
    settle_seconds: float | None = None,
    interval: float = 5.0,
) -> dict[str, Any]:
    """Wait until the cluster is really done moving data.

    First waits ``settle_seconds`` after the step started (default 2 x mgr_stats_period + 1 s, read
    from the cluster): right after a change ``ceph status`` still shows the old, clean state. Then
    requires, on ``consecutive`` polls in a row ``interval`` seconds apart: health OK or only
    ``allowed_checks`` raised, every PG active+clean in both ``status`` and ``pg stat``, no misplaced
    objects, and ``pg ls-by-osd`` empty for every OSD of ``drained_osds``. HEALTH_OK alone is not
    enough (PGs can be remapped or recovering under it). Fails at once on checks waiting cannot fix
    (damaged or unfound data, full OSDs, slow ops, a mon down) unless allowed, and when PGs stay
    unavailable for more than 60 s. Bound the wait with the step's ``timeout:``.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(allowed_checks or [])
    drained = list(drained_osds or [])
    memory = ctx.memory
    started = float(memory.setdefault("started_at", _now()))
    lag = settle_seconds if settle_seconds is not None else _stats_lag(ctx, c)
    if not ctx.dry_run and _now() - started < lag:
        ctx.not_yet(lag - (_now() - started), "waiting out the mgr stats lag before trusting ceph status")

    summary = _summary(ctx, c)
    _stop_if_fatal(ctx, memory, summary.health, allowed)
    blockers = cj.clean_blockers(summary, allowed) or _pg_stat_blockers(ctx, c)
    blockers += _drained_blockers(ctx, c, drained)
    memory["polls"] = int(memory.get("polls", 0)) + 1
    good = 0 if blockers else int(memory.get("good", 0)) + 1
    memory["good"] = good
    result = {**summary.as_dict(), "polls": memory["polls"], "drained_osds": drained}
    if ctx.dry_run:
        ctx.would("wait until healthy", consecutive=consecutive, now="; ".join(blockers) or "healthy")
        return {**result, "dry_run": True, "waiting_for": blockers}
    if blockers:
        ctx.not_yet(interval, "; ".join(blockers))
    if good < consecutive:
        ctx.not_yet(interval, f"healthy on {good} of {consecutive} consecutive polls")
    return result


# -- gradual CRUSH reweight (shared by ceph.reweight and ceph.add_node) -----------------------------


def _apply_weights(ctx: ActionContext, cluster: Any, weights: dict[int, float]) -> None:
    for osd, weight in sorted(weights.items()):
        _ceph(ctx, cluster, "osd", "crush", "reweight", f"osd.{osd}", f"{weight:g}", mutating=True)


@dataclass(frozen=True)
class Gentle:
    """The limits of a gradual reweight."""

    target: float
    step: float
    max_misplaced: float
    max_backfilling: int
    allowed_checks: list[str]
    interval: float

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ActionError(f"target weight must be >= 0, got {self.target}")
        if self.step <= 0:
            raise ActionError(f"step must be positive, got {self.step}")


def _gradual(
    ctx: ActionContext,
    cluster: Any,
    memory: dict[str, Any],
    osds: list[int],
    gentle: Gentle,
    *,
    assume_weight: float | None = None,
) -> dict[str, Any]:
    """One invocation of a gradual reweight: wait, apply one step, or finish (CERN gentle-reweight).

    A step is applied only when the stats lag since the previous step has passed and the cluster is
    calm (allowed health, misplaced and backfilling under limits, every PG active). It finishes when
    every weight is ``target`` and every PG is active+clean. ``memory`` keeps the starting weights,
    the step count, the weights of the current round and when it was applied.
    """
    target, allowed_checks, interval = gentle.target, gentle.allowed_checks, gentle.interval
    if ctx.dry_run:
        return _gradual_plan(ctx, cluster, osds, target=target, step=gentle.step, assume_weight=assume_weight)
    lag = _stats_lag(ctx, cluster)
    changed = memory.get("changed_at")
    if changed is not None and _now() - float(changed) < lag:
        ctx.not_yet(lag - (_now() - float(changed)), "waiting out the mgr stats lag after the last step")

    weights = cj.crush_weights(_read(ctx, cluster, "osd", "tree"), osds)
    memory.setdefault("from", {str(o): w for o, w in weights.items()})
    memory.setdefault("steps", 0)
    result = {"osds": list(osds), "from": memory["from"], "to": target}
    summary = _summary(ctx, cluster)
    _stop_if_fatal(ctx, memory, summary.health, allowed_checks)

    planned = {int(k): float(v) for k, v in (memory.get("planned") or {}).items()}
    behind = {o: w for o, w in planned.items() if o in weights and not cj.same_weight(weights[o], w)}
    if behind:  # the previous invocation stopped half way through its round
        _apply_weights(ctx, cluster, behind)
        memory["changed_at"] = _now()
        ctx.not_yet(lag, f"finished step {memory['steps']} for {cj.names(behind)}")

    if all(cj.same_weight(w, target) for w in weights.values()):
        blockers = cj.clean_blockers(summary, allowed_checks)
        if not blockers:
            blockers = _pg_stat_blockers(ctx, cluster)
        if blockers:
            ctx.not_yet(interval, f"all at weight {target:g}; data still settling: " + "; ".join(blockers))
        return {**result, "steps": memory["steps"]}

    blockers = cj.settle_blockers(
        summary,
        max_misplaced=gentle.max_misplaced,
        max_backfilling=gentle.max_backfilling,
        allowed_checks=allowed_checks,
    )
    if blockers:
        ctx.not_yet(interval, "before step {}: {}".format(memory["steps"] + 1, "; ".join(blockers)))
    round_ = {
        o: cj.next_weight(w, target, gentle.step) for o, w in weights.items() if not cj.same_weight(w, target)
    }
    memory["planned"] = {str(o): w for o, w in round_.items()}
    _apply_weights(ctx, cluster, round_)
    memory["steps"] += 1
    memory["changed_at"] = _now()
    shown = ", ".join(f"osd.{o}={w:g}" for o, w in sorted(round_.items()))
    ctx.log.info(f"step {memory['steps']}: {shown}")
    ctx.not_yet(lag, f"step {memory['steps']} applied ({shown}); waiting out the stats lag")


def _gradual_plan(
    ctx: ActionContext,
    cluster: Any,
    osds: list[int],
    *,
    target: float,
    step: float,
    assume_weight: float | None,
    start_at: float | None = None,
) -> dict[str, Any]:
    """Dry-run: record every reweight command of every step, from the real current weights (or from
    ``start_at`` for every OSD)."""
    known = cj.tree_osds(_read(ctx, cluster, "osd", "tree"))
    start: dict[int, float] = {}
    for osd in osds:
        if start_at is not None:
            start[osd] = start_at
        elif osd in known:
            start[osd] = known[osd].crush_weight
        elif assume_weight is not None:
            start[osd] = assume_weight
        else:
            raise ActionError(f"osd.{osd} not in the OSD tree: check the ids ('ceph osd tree')")
    plans = {o: cj.plan_weights(w, target, step) for o, w in start.items()}
    rounds = max((len(p) for p in plans.values()), default=0)
    for i in range(rounds):
        _apply_weights(ctx, cluster, {o: p[i] for o, p in plans.items() if i < len(p)})
        ctx.would("wait for the cluster to settle", after=f"step {i + 1} of {rounds}")
    return {"osds": list(osds), "from": {str(o): w for o, w in start.items()}, "to": target,
            "steps": rounds, "dry_run": True}


@action("ceph.reweight", polling=True)
def reweight(
    ctx: ActionContext,
    *,
    cluster: str,
    target: float,
    host: str | None = None,
    osds: list[int] | None = None,
    step: float = 0.25,
    max_misplaced: float = 0.05,
    max_backfilling: int = 4,
    allowed_checks: list[str] | None = None,
    interval: float = 10.0,
) -> dict[str, Any]:
    """Move the CRUSH weight of ``osds`` (or of every OSD of CRUSH host ``host``) to ``target`` in steps
    of ``step`` (``target: 0`` drains them), in the manner of CERN's gentle-reweight.

    Each poll either waits or applies one step. A step is applied only when the mgr stats lag has
    passed since the previous one (2 x mgr_stats_period + 1 s) and the cluster is calm: misplaced
    ratio <= ``max_misplaced``, at most ``max_backfilling`` PGs backfilling or recovering, every PG
    active, and no health check raised except ``allowed_checks`` (default: OSDMAP_FLAGS and
    PG_DEGRADED, which a planned reweight raises). Finishes when every weight is ``target`` and every
    PG is active+clean. Re-running resumes where it stopped. Returns the OSDs, their starting
    weights (``from``, keyed by id as text), ``to`` and the number of steps applied.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(DEFAULT_REWEIGHT_ALLOWED if allowed_checks is None else allowed_checks)
    if "osds" not in ctx.memory:
        ctx.memory["osds"] = _target_osds(ctx, c, host, osds)
    memory = ctx.memory.setdefault("reweight", {})
    gentle = Gentle(target, step, max_misplaced, max_backfilling, allowed, interval)
    return _gradual(ctx, c, memory, list(ctx.memory["osds"]), gentle)


# -- taking OSDs out of service ---------------------------------------------------------------------


@action("ceph.out")
def out(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Mark ``osds`` out (``ceph osd out``), then check the OSD map says so. Ids are checked first:
    ``osd out`` accepts unknown ids silently."""
    c = ctx.inventory.cluster(cluster)
    before = _require_known(ctx, c, osds)
    already = [o for o in osds if not before[o].in_]
    _ceph(ctx, c, "osd", "out", *map(str, osds), mutating=True)
    if not ctx.dry_run:
        still = [o for o, st in _dump(ctx, c).items() if o in osds and st.in_]
        if still:
            raise ActionError(f"{cj.names(still)} still in after 'ceph osd out': is the noin flag set?")
    return {"out": list(osds), "already_out": already}


@action("ceph.stop_osds", polling=True)
def stop_osds(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    osds: list[int] | None = None,
    check_ok_to_stop: bool = True,
    verify_seconds: float = 5.0,
) -> dict[str, Any]:
    """Stop OSD daemons on ``host`` (default: every OSD of its CRUSH bucket) with the cluster's
    ``osd_stop`` command over SSH, mark them down (``ceph osd down``), then check they are still down
    ``verify_seconds`` later (a daemon that did not stop marks itself up again). Refuses when
    ``ceph osd ok-to-stop`` says no for the OSDs still up, unless ``check_ok_to_stop: false``."""
    c = ctx.inventory.cluster(cluster)
    h = ctx.inventory.host(host)
    memory = ctx.memory
    if "osds" not in memory:
        memory["osds"] = _osds_on_host(ctx, c, h.name, osds)
    ids: list[int] = list(memory["osds"])
    if "downed_at" not in memory:
        dump = _dump(ctx, c)
        up = [o for o in ids if o in dump and dump[o].up]
        if check_ok_to_stop and up:
            verdict = _ok_to_stop(ctx, c, up)
            if not verdict.ok:
                _refuse(ctx, verdict.explain())
        stopped: list[int] = memory.setdefault("stopped", [])
        for osd in ids:
            if osd not in stopped:
                ctx.ssh.run(h.name, c.command("osd_stop", id=osd, host=h.name), mutating=True)
                stopped.append(osd)
        _ceph(ctx, c, "osd", "down", *map(str, ids), mutating=True)
        memory["downed_at"] = _now()
        if ctx.dry_run:
            return {"host": h.name, "stopped": ids, "dry_run": True}
    waited = _now() - float(memory["downed_at"])
    if waited < verify_seconds:
        ctx.not_yet(verify_seconds - waited, f"checking that {cj.names(ids)} stay down")
    dump = _dump(ctx, c)
    back = [o for o in ids if o in dump and dump[o].up]
    if back:
        raise ActionError(
            f"{cj.names(back)} came back up after being stopped: the daemon on {h.name} is still running "
            f"(check the cluster's osd_stop command)"
        )
    return {"host": h.name, "stopped": ids}


def _osds_on_host(ctx: ActionContext, cluster: Any, host: str, osds: list[int] | None) -> list[int]:
    tree = _read(ctx, cluster, "osd", "tree")
    found = cj.host_osds(tree, host)
    if found is None:
        raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster.name}: check 'ceph osd tree'")
    if osds is None:
        if not found:
            raise ActionError(f"CRUSH host bucket '{host}' holds no OSD")
        return found
    elsewhere = [o for o in osds if o not in found]
    if elsewhere:
        raise ActionError(f"{cj.names(elsewhere)} not under CRUSH host '{host}' (it holds {cj.names(found)})")
    return list(osds)


def _check_removable(
    ctx: ActionContext, cluster: Any, osds: list[int], verb: str
) -> tuple[list[int], list[int]]:
    """Split ``osds`` into (present, absent) and refuse unless the present ones are down and safe."""
    if not osds:
        raise ActionError("no OSD ids given")
    dump = _dump(ctx, cluster)
    absent = cj.unknown_ids(dump, osds)
    present = [o for o in osds if o not in absent]
    if absent:
        ctx.log.info(f"{cj.names(absent)} not in the OSD map: nothing to {verb}")
    up = [o for o in present if dump[o].up]
    if up:
        _refuse(ctx, f"{cj.names(up)} still up: stop them first (ceph.stop_osds) before you {verb} them")
    if present:
        verdict = _safe_to_destroy(ctx, cluster, present)
        if verdict.unsafe(present):
            _refuse(ctx, verdict.explain(present))
    return present, absent


def _run_removal(ctx: ActionContext, cluster: Any, verb: str, osd: int) -> None:
    result = _ceph(ctx, cluster, "osd", verb, str(osd), "--yes-i-really-mean-it", mutating=True, check=False)
    if result.exit_code == cj.EBUSY and "is not `down`" in result.stderr:
        raise SafetyCheckFailed(f"osd.{osd} is not down: stop it (ceph.stop_osds) before you {verb} it")
    if result.exit_code != 0:
        raise _failed(cluster, result)


@action("ceph.destroy_osds", destructive=True)
def destroy_osds(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Destroy ``osds`` but keep their ids and CRUSH position and weight, to recreate them in place
    (``ceph osd destroy --yes-i-really-mean-it``). Refuses unless every OSD is down and
    ``safe-to-destroy``. Already destroyed and nonexistent OSDs count as done."""
    c = ctx.inventory.cluster(cluster)
    present, absent = _check_removable(ctx, c, osds, "destroy")
    dump = _dump(ctx, c)
    already = [o for o in present if dump[o].destroyed]
    todo = [o for o in present if o not in already]
    for osd in todo:
        _run_removal(ctx, c, "destroy", osd)
    if todo and not ctx.dry_run:
        after = _dump(ctx, c)
        missed = [o for o in todo if not (o in after and after[o].destroyed)]
        if missed:
            raise ActionError(f"{cj.names(missed)} not marked destroyed after 'ceph osd destroy'")
    return {"destroyed": todo, "already_destroyed": already, "absent": absent}


@action("ceph.purge_osds", destructive=True)
def purge_osds(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Remove ``osds`` entirely: CRUSH entry, auth key and id (``ceph osd purge --yes-i-really-mean-it``).
    Refuses unless every OSD is down and ``safe-to-destroy``. Already purged OSDs count as done."""
    c = ctx.inventory.cluster(cluster)
    present, absent = _check_removable(ctx, c, osds, "purge")
    for osd in present:
        _run_removal(ctx, c, "purge", osd)
    if present and not ctx.dry_run:
        left = [o for o in present if o in _dump(ctx, c)]
        if left:
            raise ActionError(f"{cj.names(left)} still in the OSD map after 'ceph osd purge'")
    return {"purged": present, "already_purged": absent}


@action("ceph.remove_host", destructive=True)
def remove_host(ctx: ActionContext, *, cluster: str, host: str) -> dict[str, Any]:
    """Remove the empty CRUSH host bucket ``host`` (``ceph osd crush rm``). Refuses while it still
    holds OSDs (purge them first); an already removed bucket counts as done."""
    c = ctx.inventory.cluster(cluster)
    tree = _read(ctx, c, "osd", "tree")
    held = cj.host_osds(tree, host)
    if held is None:
        return {"host": host, "removed": False, "absent": True}
    if held:
        _refuse(ctx, f"bucket not empty: CRUSH host '{host}' still holds {cj.names(held)}; purge them first")
    result = _ceph(ctx, c, "osd", "crush", "rm", host, mutating=True, check=False)
    if result.exit_code == cj.ENOTEMPTY:
        raise SafetyCheckFailed(f"bucket not empty: CRUSH host '{host}' still holds items ('ceph osd tree')")
    if result.exit_code != 0:
        raise _failed(c, result)
    if not ctx.dry_run and cj.host_bucket(_read(ctx, c, "osd", "tree"), host) is not None:
        raise ActionError(f"CRUSH host '{host}' still present after 'ceph osd crush rm'")
    return {"host": host, "removed": True, "absent": False}


# -- adding OSDs ------------------------------------------------------------------------------------


@action("ceph.add_node", polling=True)
def add_node(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    osd_ids: list[int] | None = None,
    devices: list[str] | None = None,
    target_weight: float = 1.0,
    step: float = 0.25,
    max_misplaced: float = 0.05,
    max_backfilling: int = 4,
    allowed_checks: list[str] | None = None,
    boot_timeout: float = 300.0,
    interval: float = 10.0,
) -> dict[str, Any]:
    """Create OSDs on ``host``, check they really run, then bring their CRUSH weight up gradually.

    One OSD per device (default: the host's inventory devices) is created with the cluster's
    ``osd_create`` command over SSH; ``osd_ids`` reuses ids (those of destroyed OSDs when replacing
    like for like), else the lowest free ids are taken. Then waits until every new OSD is up AND in
    in the OSD map (health does not tell: a reused id whose device was not wiped stays ``exists,new``
    under HEALTH_OK), failing after ``boot_timeout`` seconds. An OSD left outside CRUSH is added to
    host ``host`` at weight 0. Finally the weights move to ``target_weight`` exactly like
    ``ceph.reweight`` (same limits). Re-running resumes: created OSDs are not created again.
    """
    c = ctx.inventory.cluster(cluster)
    h = ctx.inventory.host(host)
    allowed = list(DEFAULT_REWEIGHT_ALLOWED if allowed_checks is None else allowed_checks)
    gentle = Gentle(target_weight, step, max_misplaced, max_backfilling, allowed, interval)
    memory = ctx.memory
    if "ids" not in memory:
        devs = list(devices if devices is not None else h.devices)
        if not devs:
            raise ActionError(f"no devices given and host {h.name} lists none in the inventory")
        ids = list(osd_ids) if osd_ids else cj.free_ids(_read(ctx, c, "osd", "dump"), len(devs))
        if len(ids) != len(devs):
            raise ActionError(f"{len(ids)} OSD id(s) for {len(devs)} device(s): give one id per device")
        memory["ids"], memory["devices"] = ids, devs
    ids = list(memory["ids"])
    _create_osds(ctx, c, h.name, ids, list(memory["devices"]))
    if ctx.dry_run:
        ctx.would("wait until the new OSDs are up and in", osds=cj.names(ids))
        # The OSDs are created at weight 0 (a destroyed one keeps its weight, 0 after a drain); an
        # earlier step of the same dry-run (drain, destroy) did not really happen, so do not read it.
        plan = _gradual_plan(ctx, c, ids, target=gentle.target, step=gentle.step, assume_weight=0.0, start_at=0.0)
        return {**plan, "created": list(memory["created"])}
    _wait_up_and_in(ctx, c, h.name, ids, boot_timeout, interval)
    _place_in_crush(ctx, c, h.name, ids)
    result = _gradual(ctx, c, memory.setdefault("reweight", {}), ids, gentle)
    return {**result, "created": list(memory["created"])}


def _create_osds(ctx: ActionContext, cluster: Any, host: str, ids: list[int], devices: list[str]) -> None:
    created: list[int] = ctx.memory.setdefault("created", [])
    if all(o in created for o in ids):
        return
    dump = _dump(ctx, cluster)
    for osd, device in zip(ids, devices, strict=True):
        if osd in created:
            continue
        state = dump.get(osd)
        if ctx.dry_run and state is not None and not state.destroyed:
            ctx.log.info(f"[dry-run] {state.describe()} now: a real run creates it only once an earlier "
                         f"step destroyed it")
            ctx.ssh.run(host, cluster.command("osd_create", id=osd, device=device, host=host), mutating=True)
        elif state is not None and state.up_and_in:
            ctx.log.info(f"osd.{osd} already exists, up and in: not creating it again")
        elif state is not None and not state.destroyed:
            raise ActionError(
                f"{state.describe()} exists and is not destroyed: destroy it first (ceph.destroy_osds) "
                f"or give other osd_ids"
            )
        else:
            argv = cluster.command("osd_create", id=osd, device=device, host=host)
            ctx.ssh.run(host, argv, mutating=True, timeout=CREATE_TIMEOUT)
        created.append(osd)
    ctx.memory["created_at"] = _now()


def _wait_up_and_in(
    ctx: ActionContext, cluster: Any, host: str, ids: list[int], boot_timeout: float, interval: float
) -> None:
    dump = _dump(ctx, cluster)
    waiting = [dump[o].describe() if o in dump else f"osd.{o} absent" for o in ids
               if not (o in dump and dump[o].up_and_in)]
    if not waiting:
        return
    if _now() - float(ctx.memory["created_at"]) > boot_timeout:
        raise ActionError(
            f"not up and in {boot_timeout:g}s after creation: {'; '.join(waiting)}. An OSD stuck "
            f"'exists,new' usually reuses an id on a device that was not wiped: zap it and recreate "
            f"(see the OSD log on {host})"
        )
    ctx.not_yet(interval, "waiting for the new OSDs to boot: " + "; ".join(waiting))


def _place_in_crush(ctx: ActionContext, cluster: Any, host: str, ids: list[int]) -> None:
    tree = _read(ctx, cluster, "osd", "tree")
    known = cj.tree_osds(tree)
    outside = [o for o in ids if o not in known or known[o].host is None]
    for osd in ids:
        if osd in known and known[osd].host not in (None, host):
            ctx.log.warning(f"osd.{osd} sits under CRUSH host '{known[osd].host}', not '{host}'")
    if not outside:
        return
    if cj.host_bucket(tree, host) is None:
        _ceph(ctx, cluster, "osd", "crush", "add-bucket", host, "host", mutating=True)
        _ceph(ctx, cluster, "osd", "crush", "move", host, "root=default", mutating=True)
    for osd in outside:
        location = ("root=default", f"host={host}")
        _ceph(ctx, cluster, "osd", "crush", "add", f"osd.{osd}", "0", *location, mutating=True)


# -- pre-flight and rebalancing ---------------------------------------------------------------------


def _max_pool_size(dump: dict[str, Any]) -> int:
    return max((int(p.get("size", 0)) for p in dump.get("pools") or []), default=0)


def _weighted_hosts(tree: dict[str, Any]) -> dict[str, float]:
    """CRUSH host buckets and the sum of their OSDs' CRUSH weights."""
    osds = cj.tree_osds(tree)
    hosts: dict[str, float] = {}
    for osd in osds.values():
        if osd.host is not None:
            hosts[osd.host] = hosts.get(osd.host, 0.0) + osd.crush_weight
    for node in tree.get("nodes") or []:
        if node.get("type") == "host":
            hosts.setdefault(str(node["name"]), 0.0)
    return hosts


def projected_utilization(df: dict[str, Any], leaving: list[int]) -> dict[int, float]:
    """Utilization (fraction) each remaining OSD would reach if the data of ``leaving`` spread over
    the remaining in OSDs in proportion to their CRUSH weight x reweight."""
    nodes = [n for n in df.get("nodes") or [] if n.get("type", "osd") == "osd"]
    moving = sum(int(n.get("kb_used", 0)) for n in nodes if int(n["id"]) in leaving)
    stay = [n for n in nodes if int(n["id"]) not in leaving and float(n.get("reweight", 0)) > 0
            and int(n.get("kb", 0)) > 0]
    total = sum(float(n.get("crush_weight", 0)) * float(n.get("reweight", 0)) for n in stay)
    out: dict[int, float] = {}
    for n in stay:
        share = float(n.get("crush_weight", 0)) * float(n.get("reweight", 0)) / total if total else 0.0
        out[int(n["id"])] = (int(n.get("kb_used", 0)) + moving * share) / int(n["kb"])
    return out


def _preflight_problems(
    summary: cj.Summary, dump: dict[str, Any], tree: dict[str, Any], df: dict[str, Any],
    host: str, osds: list[int], allowed: list[str],
) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    unexpected = summary.health.unexpected(allowed)
    if unexpected:
        problems.append(f"{summary.health.status}: {summary.health.describe(unexpected)}")
    if not summary.all_clean or summary.misplaced_ratio > 0:
        bad = ", ".join(f"{n} {s}" for s, n in sorted(cj.unclean(summary.pg_states).items()))
        problems.append(f"data is moving or degraded ({bad or f'misplaced {summary.misplaced_ratio:.1%}'}): "
                        "wait until every PG is active+clean")
    osd_states = cj.dump_osds(dump)
    others_down = [o for o, st in osd_states.items() if o not in osds and st.in_ and not st.up]
    if others_down:
        problems.append(f"{cj.names(others_down)} down on other hosts: fix them first")
    hosts = _weighted_hosts(tree)
    remaining = sorted(h for h, w in hosts.items() if h != host and w > 0)
    size = _max_pool_size(dump)
    if len(remaining) < size:
        problems.append(f"only {len(remaining)} host(s) with weight would remain for pools of size {size}: "
                        "the data could not be re-replicated")
    nearfull = float(dump.get("nearfull_ratio", 0.85) or 0.85)
    projected = projected_utilization(df, osds)
    fullest = max(projected.items(), key=lambda kv: kv[1], default=(None, 0.0))
    if fullest[0] is not None and fullest[1] >= nearfull:
        problems.append(f"osd.{fullest[0]} would reach {fullest[1]:.1%} used (nearfull ratio {nearfull:.1%}): "
                        "add capacity first")
    facts = {
        "remaining_hosts": remaining,
        "max_pool_size": size,
        "nearfull_ratio": nearfull,
        "projected_max_utilization": round(fullest[1], 4),
    }
    return problems, facts


@action("ceph.preflight")
def preflight(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    allowed_checks: list[str] | None = None,
    check_ok_to_stop: bool = True,
) -> dict[str, Any]:
    """Check that the OSDs of CRUSH host ``host`` may be drained and taken out now, and record them.

    Refuses unless: health is OK (or only ``allowed_checks`` are raised); every PG is active+clean
    with nothing misplaced (no recovery running); no OSD of another host is down; enough hosts with
    weight remain for the largest pool size; the remaining OSDs can absorb the host's data below the
    nearfull ratio; and ``ceph osd ok-to-stop`` agrees for the host's OSDs. Returns ``osds``, their
    CRUSH ``weights`` (keyed by id as text), ``weight`` (the largest, to restore them like for like),
    the host's inventory ``devices`` and the facts checked.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(allowed_checks or [])
    tree = _read(ctx, c, "osd", "tree")
    osds = cj.host_osds(tree, host)
    if osds is None:
        raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster}: check 'ceph osd tree'")
    if not osds:
        raise ActionError(f"CRUSH host bucket '{host}' holds no OSD")
    dump = _read(ctx, c, "osd", "dump")
    problems, facts = _preflight_problems(
        _summary(ctx, c), dump, tree, _read(ctx, c, "osd", "df"), host, osds, allowed
    )
    states = cj.dump_osds(dump)
    up = [o for o in osds if o in states and states[o].up]
    if check_ok_to_stop and up:
        verdict = _ok_to_stop(ctx, c, up)
        if not verdict.ok:
            problems.append(verdict.explain())
    if problems:
        _refuse(ctx, f"pre-flight of {host} failed: " + "; ".join(problems))
    weights = cj.crush_weights(tree, osds)
    known = ctx.inventory.hosts.get(host)
    ctx.log.info(f"{host}: {cj.names(osds)}, weights {', '.join(f'{w:g}' for w in weights.values())}; "
                 f"{len(facts['remaining_hosts'])} host(s) remain; projected max use "
                 f"{facts['projected_max_utilization']:.1%}")
    return {
        "host": host,
        "osds": osds,
        "weights": {str(o): w for o, w in weights.items()},
        "weight": max(weights.values()),
        "devices": list(known.devices) if known is not None else [],
        "ok": not problems,
        "problems": problems,
        **facts,
    }


def rebalance_choice(
    df: dict[str, Any], *, max_spread: float, step: float, min_reweight: float
) -> tuple[float, int | None, float | None]:
    """(spread, osd to lower, its new reweight) from ``osd df``; osd None when balanced enough or
    when no over-full OSD can be lowered further. Spread is in percentage points between the fullest
    and the emptiest in OSD."""
    util = cj.utilization(df)
    spread = float(util["spread"])
    if spread <= max_spread or util["max"] is None:
        return spread, None, None
    average = float(util["average"])
    candidates = sorted(
        ((float(v["utilization"]), int(k), float(v["reweight"])) for k, v in util["osds"].items()
         if float(v["reweight"]) > 0 and int(v["kb"]) > 0 and float(v["utilization"]) > average),
        reverse=True,
    )
    for _, osd, reweight in candidates:
        lowered = round(max(min_reweight, reweight - step), 4)
        if lowered < reweight - 1e-4:
            return spread, osd, lowered
    return spread, None, None


@action("ceph.rebalance_step", polling=True)
def rebalance_step(
    ctx: ActionContext,
    *,
    cluster: str,
    max_spread: float,
    step: float = 0.05,
    min_reweight: float = 0.5,
    max_rounds: int = 10,
    max_misplaced: float = 0.05,
    max_backfilling: int = 4,
    allowed_checks: list[str] | None = None,
    interval: float = 10.0,
) -> dict[str, Any]:
    """Even out OSD utilization gently: lower the override reweight (``ceph osd reweight``) of the
    fullest OSD by ``step``, one OSD per round, until the spread between the fullest and the emptiest
    in OSD is at most ``max_spread`` percentage points (as in ``ceph.utilization``).

    Every round waits for the mgr stats lag and for the data to settle (every PG active+clean, nothing
    misplaced, health OK or only ``allowed_checks``) before measuring again, so each decision sees
    the effect of the previous one. Never lowers a reweight below ``min_reweight``; stops after
    ``max_rounds`` rounds or when no over-full OSD can be lowered, with ``converged: false`` (the
    spread reached is in the result). Re-running resumes: rounds done are kept in memory.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(DEFAULT_REWEIGHT_ALLOWED if allowed_checks is None else allowed_checks)
    if not 0 < step <= 1 or not 0 < min_reweight <= 1:
        raise ActionError("step and min_reweight must be in (0, 1]")
    memory = ctx.memory
    rounds: list[dict[str, Any]] = memory.setdefault("rounds", [])
    if not ctx.dry_run:
        lag = _stats_lag(ctx, c)
        changed = memory.get("changed_at")
        if changed is not None and _now() - float(changed) < lag:
            ctx.not_yet(lag - (_now() - float(changed)), "waiting out the mgr stats lag after the last round")
        summary = _summary(ctx, c)
        _stop_if_fatal(ctx, memory, summary.health, allowed)
        blockers = cj.clean_blockers(summary, allowed) or _pg_stat_blockers(ctx, c)
        if blockers:
            if changed is None and not rounds:
                ctx.not_yet(interval, "before measuring: " + "; ".join(blockers))
            ctx.not_yet(interval, f"after round {len(rounds)}: " + "; ".join(blockers))
    df = _read(ctx, c, "osd", "df")
    spread, osd, weight = rebalance_choice(df, max_spread=max_spread, step=step, min_reweight=min_reweight)
    memory.setdefault("spread_before", spread)
    result = {"spread_before": memory["spread_before"], "spread": spread, "max_spread": max_spread,
              "rounds": list(rounds)}
    if osd is None or len(rounds) >= max_rounds:
        converged = spread <= max_spread
        if not converged:
            why = f"{max_rounds} rounds done" if osd is not None else "no over-full OSD can be lowered further"
            ctx.log.warning(f"spread {spread:.2f} points still above {max_spread:g}: {why}")
        return {**result, "converged": converged}
    assert weight is not None
    _ceph(ctx, c, "osd", "reweight", str(osd), f"{weight:g}", mutating=True)
    rounds.append({"osd": osd, "reweight": weight, "spread": round(spread, 4)})
    memory["changed_at"] = _now()
    ctx.save()
    ctx.log.info(f"round {len(rounds)}: spread {spread:.2f} points > {max_spread:g}: osd.{osd} reweight -> {weight:g}")
    if ctx.dry_run:
        ctx.would("wait for the data to settle, measure again and repeat", max_rounds=max_rounds)
        return {**result, "rounds": list(rounds), "converged": False, "dry_run": True}
    ctx.not_yet(_stats_lag(ctx, c), f"round {len(rounds)} applied (osd.{osd} reweight {weight:g})")
