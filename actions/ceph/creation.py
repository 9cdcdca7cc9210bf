"""Adding OSDs: create them, check they really boot, keep them at weight 0, then ramp them up."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    CREATE_TIMEOUT,
    DEFAULT_REWEIGHT_ALLOWED,
    now,
    osd_dump,
    read,
    run,
)
from actions.ceph.weights import Gentle, gradual, gradual_plan
from engine.errors import ActionError


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
        ids = list(osd_ids) if osd_ids else cj.free_ids(read(ctx, c, "osd", "dump"), len(devs))
        if len(ids) != len(devs):
            raise ActionError(f"{len(ids)} OSD id(s) for {len(devs)} device(s): give one id per device")
        memory["ids"], memory["devices"] = ids, devs
    ids = list(memory["ids"])
    _create_osds(ctx, c, h.name, ids, list(memory["devices"]))
    if ctx.dry_run:
        ctx.would("wait until the new OSDs are up and in", osds=cj.names(ids))
        # The OSDs are created at weight 0 (a destroyed one keeps its weight, 0 after a drain); an
        # earlier step of the same dry-run (drain, destroy) did not really happen, so do not read it.
        plan = gradual_plan(ctx, c, ids, target=gentle.target, step=gentle.step, assume_weight=0.0, start_at=0.0)
        return {**plan, "created": list(memory["created"])}
    _wait_up_and_in(ctx, c, h.name, ids, boot_timeout, interval)
    _place_in_crush(ctx, c, h.name, ids)
    result = gradual(ctx, c, memory.setdefault("reweight", {}), ids, gentle)
    return {**result, "created": list(memory["created"])}


def _create_osds(ctx: ActionContext, cluster: Any, host: str, ids: list[int], devices: list[str]) -> None:
    created: list[int] = ctx.memory.setdefault("created", [])
    if all(o in created for o in ids):
        return
    dump = osd_dump(ctx, cluster)
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
    ctx.memory["created_at"] = now()


def _wait_up_and_in(
    ctx: ActionContext, cluster: Any, host: str, ids: list[int], boot_timeout: float, interval: float
) -> None:
    dump = osd_dump(ctx, cluster)
    waiting = [dump[o].describe() if o in dump else f"osd.{o} absent" for o in ids
               if not (o in dump and dump[o].up_and_in)]
    if not waiting:
        return
    if now() - float(ctx.memory["created_at"]) > boot_timeout:
        raise ActionError(
            f"not up and in {boot_timeout:g}s after creation: {'; '.join(waiting)}. An OSD stuck "
            f"'exists,new' usually reuses an id on a device that was not wiped: zap it and recreate "
            f"(see the OSD log on {host})"
        )
    ctx.not_yet(interval, "waiting for the new OSDs to boot: " + "; ".join(waiting))


def _place_in_crush(ctx: ActionContext, cluster: Any, host: str, ids: list[int]) -> None:
    tree = read(ctx, cluster, "osd", "tree")
    known = cj.tree_osds(tree)
    outside = [o for o in ids if o not in known or known[o].host is None]
    for osd in ids:
        if osd in known and known[osd].host not in (None, host):
            ctx.log.warning(f"osd.{osd} sits under CRUSH host '{known[osd].host}', not '{host}'")
    if not outside:
        return
    if cj.host_bucket(tree, host) is None:
        run(ctx, cluster, "osd", "crush", "add-bucket", host, "host", mutating=True)
        run(ctx, cluster, "osd", "crush", "move", host, "root=default", mutating=True)
    for osd in outside:
        location = ("root=default", f"host={host}")
        run(ctx, cluster, "osd", "crush", "add", f"osd.{osd}", "0", *location, mutating=True)
