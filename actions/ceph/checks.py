"""The cluster's own safety checks as actions: ok-to-stop and safe-to-destroy."""

from __future__ import annotations

from typing import Any

from actions.base import ActionContext, action
from actions.ceph.common import (
    DEFAULT_OUTAGE_GRACE,
    ok_to_stop_verdict,
    refuse,
    require_known,
    ride_out,
    safe_to_destroy_verdict,
)


@action("ceph.ok_to_stop")
def ok_to_stop(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Check that stopping ``osds`` leaves every PG active (``ceph osd ok-to-stop``). Fails with the
    PG numbers when not. Ids are checked to exist first: ok-to-stop says yes to unknown ids."""
    c = ctx.inventory.cluster(cluster)
    require_known(ctx, c, osds)
    result = ok_to_stop_verdict(ctx, c, osds)
    if not result.ok:
        refuse(ctx, result.explain())
    return {
        "ok": result.ok,
        "osds": list(osds),
        "num_ok_pgs": result.num_ok_pgs,
        "num_not_ok_pgs": result.num_not_ok_pgs,
        "bad_become_inactive": list(result.bad_become_inactive),
        "become_degraded": len(result.ok_become_degraded),
    }


@action("ceph.safe_to_destroy", polling=True)
def safe_to_destroy(
    ctx: ActionContext, *, cluster: str, osds: list[int], wait: bool = False, interval: float = 10.0,
    outage_grace: float = DEFAULT_OUTAGE_GRACE,
) -> dict[str, Any]:
    """Check that no data would be lost by destroying ``osds`` (``ceph osd safe-to-destroy``; its JSON
    is read, since it exits 0 even when unsafe). Fails with the reasons when not safe; with
    ``wait: true`` polls every ``interval`` seconds until safe instead (bound it with ``timeout:``).
    Ids are checked to exist first: safe-to-destroy says yes to unknown ids. While waiting, a cluster
    that does not answer is waited for up to ``outage_grace`` seconds."""
    c = ctx.inventory.cluster(cluster)
    require_known(ctx, c, osds)
    if wait:
        result = ride_out(ctx, lambda: safe_to_destroy_verdict(ctx, c, osds), grace=outage_grace, interval=interval)
    else:
        result = safe_to_destroy_verdict(ctx, c, osds)
    unsafe = result.unsafe(osds)
    if unsafe:
        if wait and not ctx.dry_run:
            ctx.not_yet(interval, result.explain(osds))
        refuse(ctx, result.explain(osds))
    return {
        "safe": not unsafe,
        "osds": list(osds),
        "unsafe": unsafe,
        "active": sorted(result.active),
        "missing_stats": sorted(result.missing_stats),
        "stored_pgs": sorted(result.stored_pgs),
    }
