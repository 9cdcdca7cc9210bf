"""Evening out utilization with override reweights, one OSD per round."""

from __future__ import annotations

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
)
from engine.errors import ActionError


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
        lag = stats_lag(ctx, c)
        changed = memory.get("changed_at")
        if changed is not None and now() - float(changed) < lag:
            ctx.not_yet(lag - (now() - float(changed)), "waiting out the mgr stats lag after the last round")
        summary = read_summary(ctx, c)
        stop_if_fatal(ctx, memory, summary.health, allowed)
        blockers = cj.clean_blockers(summary, allowed) or pg_stat_blockers(ctx, c)
        if blockers:
            if changed is None and not rounds:
                ctx.not_yet(interval, "before measuring: " + "; ".join(blockers))
            ctx.not_yet(interval, f"after round {len(rounds)}: " + "; ".join(blockers))
    df = read(ctx, c, "osd", "df")
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
    run(ctx, c, "osd", "reweight", str(osd), f"{weight:g}", mutating=True)
    rounds.append({"osd": osd, "reweight": weight, "spread": round(spread, 4)})
    memory["changed_at"] = now()
    ctx.save()
    ctx.log.info(f"round {len(rounds)}: spread {spread:.2f} points > {max_spread:g}: osd.{osd} reweight -> {weight:g}")
    if ctx.dry_run:
        ctx.would("wait for the data to settle, measure again and repeat", max_rounds=max_rounds)
        return {**result, "rounds": list(rounds), "converged": False, "dry_run": True}
    ctx.not_yet(stats_lag(ctx, c), f"round {len(rounds)} applied (osd.{osd} reweight {weight:g})")
