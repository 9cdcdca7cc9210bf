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


@action("ceph.set_host_flags")
def set_host_flags(ctx: ActionContext, *, cluster: str, host: str, flags: list[str] | None = None) -> dict[str, Any]:
    """Set flags on CRUSH host ``host`` only (``ceph osd set-group noout HOST``; default ``noout``): for
    a short planned down window of that host, without stopping recovery of any other OSD that fails
    meanwhile as a cluster-wide flag would. ``set`` lists the ones this step set (already set ones are
    left alone), for ``ceph.unset_host_flags``. Health shows OSD_FLAGS while they are set."""
    c = ctx.inventory.cluster(cluster)
    wanted = cj.validate_group_flags(flags or ["noout"])
    current = cj.group_flags(read(ctx, c, "osd", "dump"), host)
    mine: list[str] = ctx.memory.setdefault("set", [])
    todo = [f for f in wanted if f not in current and f not in mine]
    if todo:
        run(ctx, c, "osd", "set-group", ",".join(todo), host, mutating=True)
        mine.extend(todo)
        ctx.save()
    return {"host": host, "set": list(mine), "already_set": [f for f in wanted if f in current and f not in mine]}


@action("ceph.unset_host_flags")
def unset_host_flags(ctx: ActionContext, *, cluster: str, host: str, flags: list[str] | None = None) -> dict[str, Any]:
    """Unset flags of CRUSH host ``host`` (``ceph osd unset-group noout HOST``; default ``noout``).
    Flags not set and a host bucket that no longer exists count as done."""
    c = ctx.inventory.cluster(cluster)
    wanted = cj.validate_group_flags(flags or ["noout"])
    dump = read(ctx, c, "osd", "dump")
    current = cj.group_flags(dump, host)
    todo = [f for f in wanted if f in current]
    if todo:
        run(ctx, c, "osd", "unset-group", ",".join(todo), host, mutating=True)
    elif ctx.dry_run:
        ctx.would("unset the host's flags if they are set by then", host=host, flags=",".join(wanted))
    return {"host": host, "unset": todo, "already_unset": [f for f in wanted if f not in current]}
