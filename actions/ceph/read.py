"""Read-only Ceph actions: status, health, a host's OSDs, utilization."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    read,
    read_summary,
)
from engine.errors import ActionError


@action("ceph.status")
def status(ctx: ActionContext, *, cluster: str) -> dict[str, Any]:
    """Summarize the cluster: health and its checks, PG counts by state, whether every PG is
    active+clean, misplaced/degraded ratios (absent in Ceph output means 0), OSD counts, and the
    OSD map flags (noout, norebalance...)."""
    c = ctx.inventory.cluster(cluster)
    summary = read_summary(ctx, c).as_dict()
    summary["flags"] = sorted(cj.osd_flags(read(ctx, c, "osd", "dump")) & cj.KNOWN_FLAGS)
    return summary


@action("ceph.health")
def health(ctx: ActionContext, *, cluster: str) -> dict[str, Any]:
    """Health status with every raised check: severity, message, count and detail lines."""
    c = ctx.inventory.cluster(cluster)
    h = cj.parse_health(read(ctx, c, "health", "detail"))
    return {"status": h.status, "ok": h.ok, "checks": {n: chk.as_dict() for n, chk in h.checks.items()}}


@action("ceph.osds_of")
def osds_of(ctx: ActionContext, *, cluster: str, host: str) -> dict[str, Any]:
    """The OSD ids under the CRUSH host bucket ``host`` and their CRUSH weights (keys are ids as text)."""
    c = ctx.inventory.cluster(cluster)
    tree = read(ctx, c, "osd", "tree")
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
    return cj.utilization(read(ctx, c, "osd", "df"))
