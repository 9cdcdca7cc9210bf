"""OSD map flags: cluster-wide (set/unset, undone exactly) and scoped to one host (set-group noout)."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    read,
    run,
)


@action("ceph.set_flags")
def set_flags(ctx: ActionContext, *, cluster: str, flags: list[str]) -> dict[str, Any]:
    """Set OSD map flags (noout, norebalance, nobackfill, norecover, noscrub, nodeep-scrub, noup,
    nodown, noin). Flags already set are left alone; ``set`` lists the ones this step set, so a later
    ``ceph.unset_flags`` can undo exactly those."""
    c = ctx.inventory.cluster(cluster)
    wanted = cj.validate_flags(flags)
    current = cj.osd_flags(read(ctx, c, "osd", "dump"))
    mine: list[str] = ctx.memory.setdefault("set", [])
    for flag in wanted:
        if flag not in current:
            run(ctx, c, "osd", "set", flag, mutating=True)
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
    current = cj.osd_flags(read(ctx, c, "osd", "dump"))
    mine: list[str] = ctx.memory.setdefault("unset", [])
    for flag in wanted:
        if flag in current:
            run(ctx, c, "osd", "unset", flag, mutating=True)
            if flag not in mine:
                mine.append(flag)
        elif ctx.dry_run:  # an earlier step of the same dry-run would have set it
            ctx.would("unset the flag if it is set by then", flag=flag)
    return {
        "unset": list(mine),
        "already_unset": [f for f in wanted if f not in current and f not in mine],
        "flags": sorted((current - set(wanted)) & cj.KNOWN_FLAGS),
    }
