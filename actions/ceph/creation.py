"""Adding OSDs: create them, check they really boot, keep them at weight 0, then ramp them up."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    CREATE_TIMEOUT,
    DEFAULT_OUTAGE_GRACE,
    DEFAULT_REWEIGHT_ALLOWED,
    now,
    osd_dump,
    read,
    ride_out,
    run,
)
from actions.ceph.throttle import restore_config_values
from actions.ceph.weights import gentle_of, gradual, gradual_plan
from engine.errors import ActionError, SafetyCheckFailed


@action("ceph.add_node", polling=True)
def add_node(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    osd_ids: list[int] | None = None,
    devices: list[str] | None = None,
    target_weight: float | None = 1.0,
    restore_initial_weight: dict[str, str | None] | None = None,
    step: float = 0.25,
    step_fraction: float | None = None,
    max_misplaced: float = 0.05,
    max_backfilling: int = 4,
    allowed_checks: list[str] | None = None,
    boot_timeout: float = 300.0,
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
    """Create OSDs on ``host``, check they really run and sit at weight 0, then ramp their CRUSH weight.

    One OSD per device (default: the host's inventory devices) is created with the cluster's
    ``osd_create`` command over SSH; ``osd_ids`` reuses ids (those of destroyed OSDs when replacing
    like for like), else the lowest free ids are taken. Then waits until every new OSD is up AND in
    in the OSD map (health does not tell: a reused id whose device was not wiped stays ``exists,new``
    under HEALTH_OK), failing after ``boot_timeout`` seconds. An OSD left outside CRUSH is added to
    host ``host`` at weight 0; one that placed itself in CRUSH at its size (``osd_crush_update_on_start``
    with ``osd_crush_initial_weight`` not 0; see ``ceph.hold_new_osds_at_zero``) is set to 0 at once,
    and ``osd tree`` must show every new OSD at 0 before the first ramp step. ``restore_initial_weight``
    (the ``previous`` of ``ceph.hold_new_osds_at_zero``) is put back at that point. Finally the weights
    move to ``target_weight`` — null: each OSD's device size in TiB, as Ceph itself would weigh it —
    exactly like ``ceph.reweight`` (same limits and client gate). Re-running resumes: created OSDs are
    not created again.
    """
    c = ctx.inventory.cluster(cluster)
    h = ctx.inventory.host(host)
    allowed = list(DEFAULT_REWEIGHT_ALLOWED if allowed_checks is None else allowed_checks)
    params = dict(locals())
    memory = ctx.memory
    if "ids" not in memory:
        memory["ids"], memory["devices"] = ids_for_devices(ctx, c, h, devices, osd_ids)
    ids = list(memory["ids"])
    create_osds(ctx, c, h.name, ids, list(memory["devices"]))
    if ctx.dry_run:
        ctx.would("wait until the new OSDs are up and in, at CRUSH weight 0", osds=cj.names(ids))
        if restore_initial_weight:
            ctx.would("restore osd_crush_initial_weight", options=", ".join(restore_initial_weight))
        # The OSDs are created at weight 0 (a destroyed one keeps its weight, 0 after a drain); an
        # earlier step of the same dry-run (drain, destroy) did not really happen, so do not read it.
        gentle = gentle_of(target_weight if target_weight is not None else 1.0, allowed, params)
        plan = gradual_plan(ctx, c, ids, target=gentle.target, step=gentle.step, assume_weight=0.0, start_at=0.0,
                            gentle=gentle)
        return {**plan, "created": list(memory["created"])}
    if "zero_verified" not in memory:
        ride_out(ctx, lambda: wait_up_and_in(ctx, c, h.name, ids, boot_timeout, interval),
                 grace=outage_grace, interval=interval)
        _place_in_crush(ctx, c, h.name, ids)
        _verify_zero(ctx, c, ids, interval)
        if restore_initial_weight:
            restore_config_values(ctx, c, restore_initial_weight)
        memory["zero_verified"] = now()
        ctx.save()
    if "target" not in memory:
        memory["target"] = _targets(ctx, c, ids) if target_weight is None else dict.fromkeys(map(str, ids),
                                                                                              target_weight)
    targets = {int(k): float(v) for k, v in memory["target"].items()}
    gentle = gentle_of(max(targets.values()), allowed, params)
    result = gradual(ctx, c, memory.setdefault("reweight", {}), ids, gentle)
    return {**result, "created": list(memory["created"]), "targets": memory["target"],
            "zero_verified_at": memory["zero_verified"]}


def _targets(ctx: ActionContext, cluster: Any, ids: list[int]) -> dict[str, float]:
    """Each OSD's device size in TiB (``osd df`` kb / 2^30): the CRUSH weight Ceph would give it."""
    df = {int(n["id"]): n for n in read(ctx, cluster, "osd", "df").get("nodes") or []}
    sizes = {str(o): round(int(df[o].get("kb", 0)) / 2**30, 6) for o in ids if o in df}
    missing = [o for o in ids if float(sizes.get(str(o), 0)) <= 0]
    if missing:
        ctx.not_yet(5.0, f"waiting for {cj.names(missing)} to report their size in 'osd df'")
    return sizes


def create_osds(ctx: ActionContext, cluster: Any, host: str, ids: list[int], devices: list[str]) -> None:
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
        elif state is not None and state.new and not state.up:
            raise SafetyCheckFailed(
                f"{state.describe()} is registered but never booted: its disk was probably reused without "
                f"being wiped (an old store makes the OSD clash with its new id). Zap the disk "
                f"(ceph-volume lvm zap --destroy), 'ceph osd destroy {osd} --yes-i-really-mean-it', then resume"
            )
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


def wait_up_and_in(
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
    """Put every new OSD under CRUSH host ``host`` at weight 0, whether Ceph left it outside CRUSH or
    placed it itself at its size (as ``osd_crush_update_on_start`` does with a non-zero initial weight)."""
    tree = read(ctx, cluster, "osd", "tree")
    known = cj.tree_osds(tree)
    outside = [o for o in ids if o not in known or known[o].host is None]
    for osd in ids:
        if osd in known and known[osd].host not in (None, host):
            ctx.log.warning(f"osd.{osd} sits under CRUSH host '{known[osd].host}', not '{host}'")
    heavy = {o: known[o].crush_weight for o in ids if o in known and known[o].host is not None
             and not cj.same_weight(known[o].crush_weight, 0.0)}
    if heavy:
        ctx.log.warning("joined CRUSH with weight before the ramp (osd_crush_initial_weight not 0 for them?): "
                        + ", ".join(f"osd.{o}={w:g}" for o, w in sorted(heavy.items())) + "; setting them to 0")
        for osd in sorted(heavy):
            run(ctx, cluster, "osd", "crush", "reweight", f"osd.{osd}", "0", mutating=True)
        ctx.memory["self_placed"] = {str(o): w for o, w in heavy.items()}
    if not outside:
        return
    if cj.host_bucket(tree, host) is None:
        run(ctx, cluster, "osd", "crush", "add-bucket", host, "host", mutating=True)
        run(ctx, cluster, "osd", "crush", "move", host, "root=default", mutating=True)
    for osd in outside:
        location = ("root=default", f"host={host}")
        run(ctx, cluster, "osd", "crush", "add", f"osd.{osd}", "0", *location, mutating=True)


def _verify_zero(ctx: ActionContext, cluster: Any, ids: list[int], interval: float) -> None:
    """``osd tree`` must show every new OSD at CRUSH weight 0 before the first ramp step."""
    known = cj.tree_osds(read(ctx, cluster, "osd", "tree"))
    not_zero = [f"osd.{o} {'outside CRUSH' if o not in known or known[o].host is None else known[o].crush_weight}"
                for o in ids if o not in known or known[o].host is None
                or not cj.same_weight(known[o].crush_weight, 0.0)]
    if not_zero:
        ctx.not_yet(interval, "waiting for osd tree to show the new OSDs at weight 0: " + ", ".join(not_zero))


def ids_for_devices(ctx: ActionContext, c: Any, h: Any, devices: list[str] | None,
                    osd_ids: list[int] | None) -> tuple[list[int], list[str]]:
    """One OSD id per device of host ``h``: the ids given, or the cluster's free ids."""
    devs = list(devices if devices is not None else h.devices)
    if not devs:
        raise ActionError(f"no devices given and host {h.name} lists none in the inventory")
    ids = list(osd_ids) if osd_ids else cj.free_ids(read(ctx, c, "osd", "dump"), len(devs))
    if len(ids) != len(devs):
        raise ActionError(f"{len(ids)} OSD id(s) for {len(devs)} device(s): give one id per device")
    return ids, devs
