"""Taking OSDs out of service: out, stop, destroy (keep the id), purge, remove the host bucket."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    failed,
    now,
    ok_to_stop_verdict,
    osd_dump,
    read,
    refuse,
    require_known,
    run,
    safe_to_destroy_verdict,
)
from engine.errors import ActionError, SafetyCheckFailed


@action("ceph.out")
def out(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Mark ``osds`` out (``ceph osd out``), then check the OSD map says so. Ids are checked first:
    ``osd out`` accepts unknown ids silently."""
    c = ctx.inventory.cluster(cluster)
    before = require_known(ctx, c, osds)
    already = [o for o in osds if not before[o].in_]
    run(ctx, c, "osd", "out", *map(str, osds), mutating=True)
    if not ctx.dry_run:
        still = [o for o, st in osd_dump(ctx, c).items() if o in osds and st.in_]
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
        dump = osd_dump(ctx, c)
        up = [o for o in ids if o in dump and dump[o].up]
        if check_ok_to_stop and up:
            verdict = ok_to_stop_verdict(ctx, c, up)
            if not verdict.ok:
                refuse(ctx, verdict.explain())
        stopped: list[int] = memory.setdefault("stopped", [])
        for osd in ids:
            if osd not in stopped:
                ctx.ssh.run(h.name, c.command("osd_stop", id=osd, host=h.name), mutating=True)
                stopped.append(osd)
        run(ctx, c, "osd", "down", *map(str, ids), mutating=True)
        memory["downed_at"] = now()
        if ctx.dry_run:
            return {"host": h.name, "stopped": ids, "dry_run": True}
    waited = now() - float(memory["downed_at"])
    if waited < verify_seconds:
        ctx.not_yet(verify_seconds - waited, f"checking that {cj.names(ids)} stay down")
    dump = osd_dump(ctx, c)
    back = [o for o in ids if o in dump and dump[o].up]
    if back:
        raise ActionError(
            f"{cj.names(back)} came back up after being stopped: the daemon on {h.name} is still running "
            f"(check the cluster's osd_stop command)"
        )
    return {"host": h.name, "stopped": ids}


def _osds_on_host(ctx: ActionContext, cluster: Any, host: str, osds: list[int] | None) -> list[int]:
    tree = read(ctx, cluster, "osd", "tree")
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
    dump = osd_dump(ctx, cluster)
    absent = cj.unknown_ids(dump, osds)
    present = [o for o in osds if o not in absent]
    if absent:
        ctx.log.info(f"{cj.names(absent)} not in the OSD map: nothing to {verb}")
    up = [o for o in present if dump[o].up]
    if up:
        refuse(ctx, f"{cj.names(up)} still up: stop them first (ceph.stop_osds) before you {verb} them")
    if present:
        verdict = safe_to_destroy_verdict(ctx, cluster, present)
        if verdict.unsafe(present):
            refuse(ctx, verdict.explain(present))
    return present, absent


def _run_removal(ctx: ActionContext, cluster: Any, verb: str, osd: int) -> None:
    result = run(ctx, cluster, "osd", verb, str(osd), "--yes-i-really-mean-it", mutating=True, check=False)
    if result.exit_code == cj.EBUSY and "is not `down`" in result.stderr:
        raise SafetyCheckFailed(f"osd.{osd} is not down: stop it (ceph.stop_osds) before you {verb} it")
    if result.exit_code != 0:
        raise failed(cluster, result)


@action("ceph.destroy_osds", destructive=True)
def destroy_osds(ctx: ActionContext, *, cluster: str, osds: list[int]) -> dict[str, Any]:
    """Destroy ``osds`` but keep their ids and CRUSH position and weight, to recreate them in place
    (``ceph osd destroy --yes-i-really-mean-it``). Refuses unless every OSD is down and
    ``safe-to-destroy``. Already destroyed and nonexistent OSDs count as done."""
    c = ctx.inventory.cluster(cluster)
    present, absent = _check_removable(ctx, c, osds, "destroy")
    dump = osd_dump(ctx, c)
    already = [o for o in present if dump[o].destroyed]
    todo = [o for o in present if o not in already]
    for osd in todo:
        _run_removal(ctx, c, "destroy", osd)
    if todo and not ctx.dry_run:
        after = osd_dump(ctx, c)
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
        left = [o for o in present if o in osd_dump(ctx, c)]
        if left:
            raise ActionError(f"{cj.names(left)} still in the OSD map after 'ceph osd purge'")
    return {"purged": present, "already_purged": absent}


@action("ceph.remove_host", destructive=True)
def remove_host(ctx: ActionContext, *, cluster: str, host: str) -> dict[str, Any]:
    """Remove the empty CRUSH host bucket ``host`` (``ceph osd crush rm``). Refuses while it still
    holds OSDs (purge them first); an already removed bucket counts as done."""
    c = ctx.inventory.cluster(cluster)
    tree = read(ctx, c, "osd", "tree")
    held = cj.host_osds(tree, host)
    if held is None:
        return {"host": host, "removed": False, "absent": True}
    if held:
        refuse(ctx, f"bucket not empty: CRUSH host '{host}' still holds {cj.names(held)}; purge them first")
    result = run(ctx, c, "osd", "crush", "rm", host, mutating=True, check=False)
    if result.exit_code == cj.ENOTEMPTY:
        raise SafetyCheckFailed(f"bucket not empty: CRUSH host '{host}' still holds items ('ceph osd tree')")
    if result.exit_code != 0:
        raise failed(c, result)
    if not ctx.dry_run and cj.host_bucket(read(ctx, c, "osd", "tree"), host) is not None:
        raise ActionError(f"CRUSH host '{host}' still present after 'ceph osd crush rm'")
    return {"host": host, "removed": True, "absent": False}
