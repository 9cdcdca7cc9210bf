"""Waiting until the cluster is really done moving data."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    DEFAULT_OUTAGE_GRACE,
    drained_blockers,
    now,
    pg_stat_blockers,
    read_summary,
    ride_out,
    stats_lag,
    stop_if_fatal,
)


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
    outage_grace: float = DEFAULT_OUTAGE_GRACE,
) -> dict[str, Any]:
    """Wait until the cluster is really done moving data.

    First waits ``settle_seconds`` after the step started (default 2 x mgr_stats_period + 1 s, read
    from the cluster): right after a change ``ceph status`` still shows the old, clean state. Then
    requires, on ``consecutive`` polls in a row ``interval`` seconds apart: health OK or only
    ``allowed_checks`` raised, every PG active+clean in both ``status`` and ``pg stat``, no misplaced
    objects, and ``pg ls-by-osd`` empty for every OSD of ``drained_osds``. HEALTH_OK alone is not
    enough (PGs can be remapped or recovering under it). Fails at once on checks waiting cannot fix
    (damaged or unfound data, full OSDs, slow ops, a mon down) unless allowed, and when PGs stay
    unavailable for more than 60 s. A cluster that does not answer (mon election, seconds without
    quorum, a connect timeout) or reports MON_DOWN is waited for up to ``outage_grace`` seconds, then the
    step fails with the reason. Bound the whole wait with the step's ``timeout:``.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(allowed_checks or [])
    drained = list(drained_osds or [])
    memory = ctx.memory
    started = float(memory.setdefault("started_at", now()))
    lag = settle_seconds if settle_seconds is not None else stats_lag(ctx, c)
    if not ctx.dry_run and now() - started < lag:
        ctx.not_yet(lag - (now() - started), "waiting out the mgr stats lag before trusting ceph status")

    def poll() -> tuple[cj.Summary, list[str]]:
        summary = read_summary(ctx, c)
        stop_if_fatal(ctx, memory, summary.health, allowed, outage_grace)
        blockers = cj.clean_blockers(summary, allowed) or pg_stat_blockers(ctx, c)
        return summary, blockers + drained_blockers(ctx, c, drained)

    summary, blockers = ride_out(ctx, poll, grace=outage_grace, interval=interval)
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
