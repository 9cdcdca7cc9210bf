"""Gradual CRUSH reweight (CERN gentle-reweight), shared by draining and refilling.

A step is applied only when the stats lag since the previous one has passed, the cluster is calm
(allowed health, misplaced and backfilling under limits, every PG active) and clients do not suffer
(:mod:`actions.ceph.gate`: window, SLOW_OPS, latency probe). A cluster that stops answering for a
moment is waited for (``outage_grace``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    DEFAULT_OUTAGE_GRACE,
    DEFAULT_REWEIGHT_ALLOWED,
    now,
    pg_stat_blockers,
    read,
    read_summary,
    ride_out,
    run,
    stats_lag,
    stop_if_fatal,
    target_osds,
)
from actions.ceph.gate import ClientGate, client_blockers, note_pause, resume
from engine.errors import ActionError


def apply_weights(ctx: ActionContext, cluster: Any, weights: dict[int, float]) -> None:
    for osd, weight in sorted(weights.items()):
        run(ctx, cluster, "osd", "crush", "reweight", f"osd.{osd}", cj.weight_arg(weight), mutating=True)


@dataclass(frozen=True)
class Gentle:
    """The limits of a gradual reweight."""

    target: float
    step: float
    max_misplaced: float
    max_backfilling: int
    allowed_checks: list[str]
    interval: float
    step_fraction: float | None = None
    """When set, each OSD moves by this fraction of max(its starting weight, target) per step, so the
    number of steps does not depend on the disks' sizes; ``step`` is then ignored."""
    gate: ClientGate = field(default_factory=ClientGate)
    outage_grace: float = DEFAULT_OUTAGE_GRACE

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ActionError(f"target weight must be >= 0, got {self.target}")
        if self.step <= 0:
            raise ActionError(f"step must be positive, got {self.step}")
        if self.step_fraction is not None and not 0 < self.step_fraction <= 1:
            raise ActionError(f"step_fraction must be in (0, 1], got {self.step_fraction}")

    def step_of(self, start: float) -> float:
        if self.step_fraction is None:
            return self.step
        return max(self.step_fraction * max(start, self.target), 1e-4)


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

    It finishes when every weight is ``target`` and every PG is active+clean. ``memory`` keeps the
    starting weights, the step count, the weights of the current round, when it was applied and since
    when the next step has been held back.
    """
    if ctx.dry_run:
        return gradual_plan(ctx, cluster, osds, target=gentle.target, step=gentle.step, assume_weight=assume_weight,
                            gentle=gentle)
    lag = stats_lag(ctx, cluster)
    changed = memory.get("changed_at")
    if changed is not None and now() - float(changed) < lag:
        ctx.not_yet(lag - (now() - float(changed)), "waiting out the mgr stats lag after the last step")
    return ride_out(ctx, lambda: _poll(ctx, cluster, memory, osds, gentle, lag),
                    grace=gentle.outage_grace, interval=gentle.interval)


def _poll(ctx: ActionContext, cluster: Any, memory: dict[str, Any], osds: list[int], gentle: Gentle,
          lag: float) -> dict[str, Any]:
    target, interval = gentle.target, gentle.interval
    allowed = list(gentle.allowed_checks)
    weights = cj.crush_weights(read(ctx, cluster, "osd", "tree"), osds)
    memory.setdefault("from", {str(o): w for o, w in weights.items()})
    memory.setdefault("steps", 0)
    result = {"osds": list(osds), "from": memory["from"], "to": target}
    summary = read_summary(ctx, cluster)
    fatal_allowed = [*allowed, "SLOW_OPS"] if gentle.gate.pause_on_slow_ops else allowed
    stop_if_fatal(ctx, memory, summary.health, fatal_allowed, gentle.outage_grace)

    planned = {int(k): float(v) for k, v in (memory.get("planned") or {}).items()}
    behind = {o: w for o, w in planned.items() if o in weights and not cj.same_weight(weights[o], w)}
    if behind:  # the previous invocation stopped half way through its round
        apply_weights(ctx, cluster, behind)
        memory["changed_at"] = now()
        ctx.not_yet(lag, f"finished step {memory['steps']} for {cj.names(behind)}")

    if all(cj.same_weight(w, target) for w in weights.values()):
        blockers = cj.clean_blockers(summary, allowed)
        if not blockers:
            blockers = pg_stat_blockers(ctx, cluster)
        if blockers:
            ctx.not_yet(interval, f"all at weight {target:g}; data still settling: " + "; ".join(blockers))
        resume(memory)
        return {**result, "steps": memory["steps"], "max_latency_ms": memory.get("max_latency_ms"),
                **({"first_step": memory["first_step"]} if "first_step" in memory else {})}

    what = f"before step {memory['steps'] + 1}"
    blockers = cj.settle_blockers(summary, max_misplaced=gentle.max_misplaced,
                                  max_backfilling=gentle.max_backfilling, allowed_checks=allowed)
    held: list[int] = []
    if blockers:
        held = _osds_named_by(ctx, cluster, summary.health, allowed)
    else:
        blockers, held, latency = client_blockers(ctx, cluster, gentle.gate, summary.health)
        if latency is not None:
            memory["max_latency_ms"] = round(max(float(memory.get("max_latency_ms") or 0), latency), 3)
    if blockers:
        ctx.not_yet(interval, note_pause(ctx, cluster, memory, gentle.gate, blockers, held, what))
    resume(memory)
    if memory["steps"] == 0:
        memory["first_step"] = {"at": now(), "misplaced_ratio": summary.misplaced_ratio,
                                "remapped_pgs": summary.num_remapped_pgs}
    start = {int(k): float(v) for k, v in memory["from"].items()}
    # Step k lands at start ± k x step, not at what CRUSH read back ± step: CRUSH stores weights in 16.16
    # fixed point, truncated, and stepping from the read-back value would drift into an extra step.
    k = memory["steps"] + 1
    round_ = {o: cj.next_weight(start.get(o, w), target, k * gentle.step_of(start.get(o, w)))
              for o, w in weights.items() if not cj.same_weight(w, target)}
    memory["planned"] = {str(o): w for o, w in round_.items()}
    apply_weights(ctx, cluster, round_)
    memory["steps"] += 1
    memory["changed_at"] = now()
    ctx.save()
    shown = ", ".join(f"osd.{o}={w:g}" for o, w in sorted(round_.items()))
    ctx.log.info(f"step {memory['steps']}: {shown}")
    ctx.not_yet(lag, f"step {memory['steps']} applied ({shown}); waiting out the stats lag")


def _osds_named_by(ctx: ActionContext, cluster: Any, health: cj.Health, allowed: list[str]) -> list[int]:
    """The OSDs the unexpected health checks name in their detail (``health detail``)."""
    unexpected = health.unexpected(allowed)
    if not unexpected:
        return []
    detail = cj.parse_health(read(ctx, cluster, "health", "detail"))
    text = " ".join(" ".join([c.message, *c.detail]) for n, c in detail.checks.items() if n in unexpected)
    return cj.osd_ids_in(text)


def gradual_plan(
    ctx: ActionContext,
    cluster: Any,
    osds: list[int],
    *,
    target: float,
    step: float,
    assume_weight: float | None,
    start_at: float | None = None,
    gentle: Gentle | None = None,
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
    plans = {o: cj.plan_weights(w, target, gentle.step_of(w) if gentle else step) for o, w in start.items()}
    rounds = max((len(p) for p in plans.values()), default=0)
    for i in range(rounds):
        apply_weights(ctx, cluster, {o: p[i] for o, p in plans.items() if i < len(p)})
        ctx.would("wait for the cluster to settle", after=f"step {i + 1} of {rounds}")
    return {"osds": list(osds), "from": {str(o): w for o, w in start.items()}, "to": target,
            "steps": rounds, "dry_run": True}


def gentle_of(target: float, allowed: list[str], params: dict[str, Any]) -> Gentle:
    """The Gentle of an action's keyword parameters (shared by ceph.reweight and ceph.add_node)."""
    gate = ClientGate(
        pause_on_slow_ops=params["pause_on_slow_ops"], max_write_latency_ms=params["max_write_latency_ms"],
        probe_pool=params["probe_pool"], probe_seconds=params["probe_seconds"], window=params["window"],
        notify_after=params["notify_after"], max_pause=params["max_pause"],
    )
    return Gentle(target, params["step"], params["max_misplaced"], params["max_backfilling"], allowed,
                  params["interval"], params["step_fraction"], gate, params["outage_grace"])


@action("ceph.reweight", polling=True)
def reweight(
    ctx: ActionContext,
    *,
    cluster: str,
    target: float,
    host: str | None = None,
    osds: list[int] | None = None,
    step: float = 0.25,
    step_fraction: float | None = None,
    max_misplaced: float = 0.05,
    max_backfilling: int = 4,
    allowed_checks: list[str] | None = None,
    interval: float = 10.0,
    pause_on_slow_ops: bool = True,
    max_write_latency_ms: float = 0.0,
    probe_pool: str | None = None,
    probe_seconds: int = 5,
    window: str | None = None,
    notify_after: float = 0.0,
    max_pause: float = 0.0,
    outage_grace: float = DEFAULT_OUTAGE_GRACE,
) -> dict[str, Any]:
    """Move the CRUSH weight of ``osds`` (or of every OSD of CRUSH host ``host``) to ``target`` in steps
    of ``step`` — or of ``step_fraction`` of each OSD's weight — (``target: 0`` drains them), in the
    manner of CERN's gentle-reweight.

    Each poll either waits or applies one step. A step is applied only when the mgr stats lag has
    passed since the previous one (2 x mgr_stats_period + 1 s), the cluster is calm (misplaced ratio
    <= ``max_misplaced``, at most ``max_backfilling`` PGs backfilling or recovering, every PG active,
    no health check raised except ``allowed_checks``, default OSDMAP_FLAGS and PG_DEGRADED) and
    clients do not suffer: inside ``window`` (``HH:MM-HH:MM`` UTC) if given, no SLOW_OPS (it pauses
    instead of failing unless ``pause_on_slow_ops: false``), and with ``max_write_latency_ms`` > 0 a
    ``probe_seconds`` 4 KiB ``rados bench`` write on ``probe_pool`` under that latency. Held back
    longer than ``notify_after`` seconds, it logs (and posts to the cluster's chat) which check and
    which OSDs hold it; longer than ``max_pause`` it fails. A cluster not answering is waited for up
    to ``outage_grace`` seconds. Finishes when every weight is ``target`` and every PG is
    active+clean; re-running resumes. Returns the OSDs, their starting weights (``from``, keyed by id
    as text), ``to``, the number of steps applied and the highest probed latency.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(DEFAULT_REWEIGHT_ALLOWED if allowed_checks is None else allowed_checks)
    if "osds" not in ctx.memory:
        ctx.memory["osds"] = target_osds(ctx, c, host, osds)
    memory = ctx.memory.setdefault("reweight", {})
    gentle = gentle_of(target, allowed, locals())
    return gradual(ctx, c, memory, list(ctx.memory["osds"]), gentle)
