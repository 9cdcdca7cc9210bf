"""A spare host takes the old one's place in CRUSH (``ceph osd crush swap-bucket``), so the old host's
data moves once, straight onto the spare, instead of draining to the rest of the cluster and filling
back (Ceph's bluestore-migration procedure).

The spare's OSDs are created in a host bucket outside the CRUSH root, with
``osd_crush_update_on_start false`` for them (an OSD restarting with it would link its bucket under the
root and take data early); ``swap-bucket NEW OLD`` then swaps the two buckets' items, weights and names:
the spare's OSDs sit where the old host was, and the old host's OSDs end up in an orphan bucket that
receives nothing, until safe-to-destroy says they can go.
"""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import DEFAULT_OUTAGE_GRACE, now, read, ride_out, run
from actions.ceph.creation import create_osds, ids_for_devices, wait_up_and_in
from actions.ceph.throttle import apply_settings
from engine.errors import ActionError, SafetyCheckFailed


def parent_of(tree: dict[str, Any], bucket_id: int) -> str | None:
    for node in tree.get("nodes") or []:
        if bucket_id in (node.get("children") or []):
            return str(node["name"])
    return None


@action("ceph.prepare_spare", polling=True)
def prepare_spare(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    weight: float,
    osd_ids: list[int] | None = None,
    devices: list[str] | None = None,
    boot_timeout: float = 300.0,
    interval: float = 10.0,
    outage_grace: float = DEFAULT_OUTAGE_GRACE,
) -> dict[str, Any]:
    """Create the OSDs of spare host ``host`` in a CRUSH host bucket outside the root, at CRUSH weight
    ``weight`` each, so that no data moves to them until ``ceph.swap_bucket``.

    One OSD per device (default: the host's inventory devices), ids ``osd_ids`` or the lowest free ones.
    ``osd_crush_update_on_start false`` is set for those ids first (recorded: restore ``previous`` with
    ``ceph.restore_config`` once the swap is done, and in ``cleanup:``). Refuses a spare whose bucket is
    already under a CRUSH root. Waits until every OSD is up and in. Re-running resumes."""
    c = ctx.inventory.cluster(cluster)
    h = ctx.inventory.host(host)
    memory = ctx.memory
    if "ids" not in memory:
        memory["ids"], memory["devices"] = ids_for_devices(ctx, c, h, devices, osd_ids)
        ctx.save()
    ids = list(memory["ids"])
    tree = read(ctx, c, "osd", "tree")
    bucket = cj.host_bucket(tree, h.name)
    if bucket is not None and parent_of(tree, int(bucket["id"])) is not None and not memory.get("placed"):
        raise SafetyCheckFailed(f"CRUSH host '{h.name}' is already under '{parent_of(tree, int(bucket['id']))}': a "
                                f"spare must be outside the CRUSH root until the swap (remove it or use add-node)")
    previous = apply_settings(ctx, c, {f"osd.{o}/osd_crush_update_on_start": "false" for o in ids})
    if bucket is None:
        run(ctx, c, "osd", "crush", "add-bucket", h.name, "host", mutating=True)
    create_osds(ctx, c, h.name, ids, list(memory["devices"]))
    if ctx.dry_run:
        for osd in ids:
            run(ctx, c, "osd", "crush", "add", f"osd.{osd}", cj.weight_arg(weight), f"host={h.name}", mutating=True)
        return {"host": h.name, "osds": ids, "weight": weight, "previous": previous, "dry_run": True}
    ride_out(ctx, lambda: wait_up_and_in(ctx, c, h.name, ids, boot_timeout, interval), grace=outage_grace,
             interval=interval)
    known = cj.tree_osds(read(ctx, c, "osd", "tree"))
    for osd in ids:
        if osd in known and known[osd].host == h.name:
            continue
        if osd in known and known[osd].host is not None:
            raise SafetyCheckFailed(f"osd.{osd} placed itself under CRUSH host '{known[osd].host}': is "
                                    f"osd_crush_update_on_start forced on in its ceph.conf?")
        run(ctx, c, "osd", "crush", "add", f"osd.{osd}", cj.weight_arg(weight), f"host={h.name}", mutating=True)
    memory["placed"] = now()
    return {"host": h.name, "osds": ids, "weight": weight, "previous": previous,
            "applied": dict(memory["wanted"])}


@action("ceph.swap_bucket")
def swap_bucket(ctx: ActionContext, *, cluster: str, new_host: str, old_host: str) -> dict[str, Any]:
    """Put CRUSH host ``new_host`` (outside the root, holding weighted OSDs) in the place of ``old_host``
    with ``ceph osd crush swap-bucket``: the two buckets swap items, weights and names, so afterwards
    ``new_host`` holds the spare's OSDs where the old host was, and the old OSDs sit in an orphan bucket
    named ``old_host`` (their data starts moving to the spare at once, once). Already swapped counts
    as done."""
    c = ctx.inventory.cluster(cluster)
    tree = read(ctx, c, "osd", "tree")
    new, old = cj.host_bucket(tree, new_host), cj.host_bucket(tree, old_host)
    if new is None or old is None:
        raise ActionError(f"no CRUSH host bucket '{new_host if new is None else old_host}': check 'ceph osd tree'")
    new_parent, old_parent = parent_of(tree, int(new["id"])), parent_of(tree, int(old["id"]))
    moving = cj.host_osds(tree, old_host) or []
    if new_parent is not None and old_parent is None:
        return {"swapped": False, "already": True, "old_osds": moving, "root": new_parent}
    if new_parent is not None:
        raise SafetyCheckFailed(f"CRUSH host '{new_host}' is already under '{new_parent}': the spare must be outside "
                                "the root until the swap")
    spare = cj.host_osds(tree, new_host) or []
    weights = cj.crush_weights(tree, spare) if spare else {}
    if not spare or not any(w > 0 for w in weights.values()):
        raise SafetyCheckFailed(f"CRUSH host '{new_host}' holds no weighted OSD: prepare the spare first "
                                "(ceph.prepare_spare)")
    run(ctx, c, "osd", "crush", "swap-bucket", new_host, old_host, "--yes-i-really-mean-it", mutating=True)
    if not ctx.dry_run:
        after = read(ctx, c, "osd", "tree")
        moved = cj.host_bucket(after, new_host)
        if moved is None or parent_of(after, int(moved["id"])) is None:
            raise ActionError(f"'{new_host}' is not under a CRUSH root after 'ceph osd crush swap-bucket'")
    ctx.log.info(f"{new_host} ({cj.names(spare)}) now stands where {old_host} was; {cj.names(moving)} are in the "
                 f"orphan bucket {old_host} and drain onto it")
    return {"swapped": True, "already": False, "old_osds": moving, "new_osds": spare, "root": old_parent}
