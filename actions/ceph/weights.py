"""Gradual CRUSH reweight (CERN gentle-reweight), shared by draining and refilling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    DEFAULT_REWEIGHT_ALLOWED,
    now,
    pg_stat_blockers,
    read,
    read_summary,
    run,
    stats_lag,
    stop_if_fatal,
    target_osds,
)
from engine.errors import ActionError


def apply_weights(ctx: ActionContext, cluster: Any, weights: dict[int, float]) -> None:
    for osd, weight in sorted(weights.items()):
        run(ctx, cluster, "osd", "crush", "reweight", f"osd.{osd}", f"{weight:g}", mutating=True)


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


def gradual(
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
        return gradual_plan(ctx, cluster, osds, target=target, step=gentle.step, assume_weight=assume_weight)
    lag = stats_lag(ctx, cluster)
    changed = memory.get("changed_at")
    if changed is not None and now() - float(changed) < lag:
        ctx.not_yet(lag - (now() - float(changed)), "waiting out the mgr stats lag after the last step")

    weights = cj.crush_weights(read(ctx, cluster, "osd", "tree"), osds)
    memory.setdefault("from", {str(o): w for o, w in weights.items()})
    memory.setdefault("steps", 0)
    result = {"osds": list(osds), "from": memory["from"], "to": target}
    summary = read_summary(ctx, cluster)
    stop_if_fatal(ctx, memory, summary.health, allowed_checks)

    planned = {int(k): float(v) for k, v in (memory.get("planned") or {}).items()}
    behind = {o: w for o, w in planned.items() if o in weights and not cj.same_weight(weights[o], w)}
    if behind:  # the previous invocation stopped half way through its round
        apply_weights(ctx, cluster, behind)
        memory["changed_at"] = now()
        ctx.not_yet(lag, f"finished step {memory['steps']} for {cj.names(behind)}")

    if all(cj.same_weight(w, target) for w in weights.values()):
        blockers = cj.clean_blockers(summary, allowed_checks)
        if not blockers:
            blockers = pg_stat_blockers(ctx, cluster)
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
    apply_weights(ctx, cluster, round_)
    memory["steps"] += 1
    memory["changed_at"] = now()
    shown = ", ".join(f"osd.{o}={w:g}" for o, w in sorted(round_.items()))
    ctx.log.info(f"step {memory['steps']}: {shown}")
    ctx.not_yet(lag, f"step {memory['steps']} applied ({shown}); waiting out the stats lag")


def gradual_plan(
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
    known = cj.tree_osds(read(ctx, cluster, "osd", "tree"))
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
        apply_weights(ctx, cluster, {o: p[i] for o, p in plans.items() if i < len(p)})
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
        ctx.memory["osds"] = target_osds(ctx, c, host, osds)
    memory = ctx.memory.setdefault("reweight", {})
    gentle = Gentle(target, step, max_misplaced, max_backfilling, allowed, interval)
    return gradual(ctx, c, memory, list(ctx.memory["osds"]), gentle)
