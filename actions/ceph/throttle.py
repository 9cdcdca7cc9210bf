"""Changing cluster settings for the length of a run and putting the exact previous ones back: the
recovery/backfill throttle of a drain or refill, and the initial CRUSH weight of OSDs being created.

With the wpq scheduler the throttle knobs are ``osd_max_backfills``, ``osd_recovery_max_active`` (and
the ``osd_recovery_sleep`` family); with mClock (``osd_op_queue = mclock_scheduler``) those are ignored
and ``osd_mclock_profile`` decides (``high_client_ops`` favours clients). What the mon config database
held before (a value, or nothing) is recorded before anything is set and kept in the step's memory and
result, keyed ``SECTION/OPTION``; ``ceph.restore_config`` — after the movement and in ``cleanup:`` —
sets each old value again or removes the option (``ceph config rm``). A retried or taken-over step
never records its own values as the old ones.
"""

from __future__ import annotations

import json
from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import read, run
from engine.errors import ActionError, CommandFailed

MCLOCK = "mclock_scheduler"


def config_value(ctx: ActionContext, cluster: Any, who: str, name: str) -> str:
    """``ceph config get WHO NAME``: the value the daemons get (plain text, even with ``-f json``)."""
    text = run(ctx, cluster, "config", "get", who, name, mutating=False).stdout.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return str(value)


def throttle_settings(
    scheduler: str, max_backfills: int, recovery_max_active: int, recovery_sleep: float | None, mclock_profile: str
) -> dict[str, str]:
    if scheduler == MCLOCK:
        return {"osd/osd_mclock_profile": mclock_profile}
    wanted = {"osd/osd_max_backfills": str(max_backfills), "osd/osd_recovery_max_active": str(recovery_max_active)}
    if recovery_sleep is not None:
        wanted["osd/osd_recovery_sleep"] = f"{recovery_sleep:g}"
    return wanted


def apply_settings(ctx: ActionContext, cluster: Any, wanted: dict[str, str]) -> dict[str, str | None]:
    """Record the current values of ``wanted`` (once per step, in ``ctx.memory``), then set them all.
    When a ``config set`` fails, what was already set is put back before the error is raised."""
    memory = ctx.memory
    if "previous" not in memory:
        stored = cj.config_entries(read(ctx, cluster, "config", "dump"))
        memory["wanted"] = dict(wanted)
        memory["previous"] = {key: stored.get(key) for key in wanted}
        ctx.save()
    previous: dict[str, str | None] = dict(memory["previous"])
    applied: list[str] = []
    try:
        for key, value in dict(memory["wanted"]).items():
            section, name = cj.config_key(key, "osd")
            run(ctx, cluster, "config", "set", section, name, value, mutating=True)
            applied.append(key)
    except (CommandFailed, ActionError):
        put_back(ctx, cluster, {k: previous[k] for k in applied})
        raise
    return previous


def put_back(ctx: ActionContext, cluster: Any, previous: dict[str, str | None]) -> list[str]:
    done = []
    for key, value in previous.items():
        section, name = cj.config_key(key, "osd")
        if value is None:
            run(ctx, cluster, "config", "rm", section, name, mutating=True)
            done.append(f"{key} removed")
        else:
            run(ctx, cluster, "config", "set", section, name, value, mutating=True)
            done.append(f"{key}={value}")
    return done


def describe(previous: dict[str, str | None]) -> str:
    return ", ".join(f"{k}={'(unset)' if v is None else v}" for k, v in previous.items())


@action("ceph.throttle_recovery")
def throttle_recovery(
    ctx: ActionContext,
    *,
    cluster: str,
    max_backfills: int = 1,
    recovery_max_active: int = 1,
    recovery_sleep: float | None = None,
    mclock_profile: str = "high_client_ops",
) -> dict[str, Any]:
    """Throttle recovery and backfill for the data movement of a run, recording what it replaces.

    Reads ``osd_op_queue``: with wpq sets ``osd_max_backfills`` and ``osd_recovery_max_active`` (and
    ``osd_recovery_sleep`` when given) for ``osd``; with mClock sets ``osd_mclock_profile`` instead.
    Returns ``applied`` and ``previous`` (``SECTION/OPTION`` -> the old value in the mon config
    database, null when it held none): give both to ``ceph.restore_config`` once the data has moved
    and in ``cleanup:``."""
    c = ctx.inventory.cluster(cluster)
    if "scheduler" not in ctx.memory:
        ctx.memory["scheduler"] = config_value(ctx, c, "osd", "osd_op_queue")
    scheduler = str(ctx.memory["scheduler"])
    wanted = throttle_settings(scheduler, max_backfills, recovery_max_active, recovery_sleep, mclock_profile)
    previous = apply_settings(ctx, c, wanted)
    ctx.log.info(f"recovery throttled ({scheduler}): {', '.join(f'{k}={v}' for k, v in wanted.items())}; "
                 f"previous {describe(previous)}")
    return {"scheduler": scheduler, "applied": dict(ctx.memory["wanted"]), "previous": previous}


@action("ceph.hold_new_osds_at_zero")
def hold_new_osds_at_zero(
    ctx: ActionContext, *, cluster: str, osds: list[int] | None = None, host: str | None = None,
    devices: list[str] | None = None,
) -> dict[str, Any]:
    """Make OSDs about to be created join CRUSH at weight 0 instead of their size: sets
    ``osd_crush_initial_weight 0`` for each of them only (section ``osd.N``; an OSD created by
    ceph-volume places itself in CRUSH at first start with that weight). ``osds`` are the ids to be
    (re)created; without them, the lowest free ids, one per device (``devices``, else ``host``'s
    inventory devices) — the ids ``ceph.add_node`` would pick. Returns ``osds``, ``applied`` and
    ``previous`` for ``ceph.restore_config`` (``ceph.add_node`` takes ``previous`` to restore it as
    soon as the OSDs sit at weight 0)."""
    c = ctx.inventory.cluster(cluster)
    if "osds" not in ctx.memory:
        if not osds:
            count = len(devices) if devices else len(ctx.inventory.host(host).devices) if host else 0
            if not count:
                raise ActionError("give osds, or a host (or devices) to count the OSDs to create")
            osds = cj.free_ids(read(ctx, c, "osd", "dump"), count)
        ctx.memory["osds"] = list(osds)
    osds = list(ctx.memory["osds"])
    wanted = {f"osd.{o}/osd_crush_initial_weight": "0" for o in osds}
    previous = apply_settings(ctx, c, wanted)
    return {"osds": list(osds), "applied": dict(ctx.memory["wanted"]), "previous": previous}


@action("ceph.restore_config")
def restore_config(
    ctx: ActionContext,
    *,
    cluster: str,
    previous: dict[str, str | None],
    applied: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Put back the options a step changed: ``previous`` maps ``SECTION/OPTION`` (a bare option means
    section ``osd``) to its old value in the mon config database (``ceph config set``) or to null when
    it held none (``ceph config rm``). With ``applied`` (what the step set), an option someone changed
    since is left alone, with a warning. Options already as they were count as done, so a retry or a
    second restore (success path, then cleanup) is harmless."""
    c = ctx.inventory.cluster(cluster)
    return restore_config_values(ctx, c, previous, applied)


def restore_config_values(
    ctx: ActionContext, c: Any, previous: dict[str, str | None], applied: dict[str, str] | None = None
) -> dict[str, Any]:
    """The body of ``ceph.restore_config``, for actions that restore what an earlier step changed."""
    stored = cj.config_entries(read(ctx, c, "config", "dump"))
    todo: dict[str, str | None] = {}
    kept: list[str] = []
    for key, old in previous.items():
        section, name = cj.config_key(key, "osd")
        current = stored.get(f"{section}/{name}")
        if current == old or (old is not None and current is not None and cj.same_config(current, old)):
            continue
        mine = (applied or {}).get(key)
        if mine is not None and current is not None and not cj.same_config(current, mine):
            ctx.log.warning(f"{key} is {current} now, not the {mine} the run set: someone changed it; leaving it")
            kept.append(key)
            continue
        todo[f"{section}/{name}"] = old
    if ctx.dry_run and not todo:
        ctx.would("put back what the run changed", options=", ".join(f"{k}={'(unset)' if v is None else v}"
                                                                 for k, v in previous.items()) or "(none)")
    done = put_back(ctx, c, todo)
    if done:
        ctx.log.info("restored: " + ", ".join(done))
    return {"restored": done, "already": sorted(k for k in previous if k not in todo and k not in kept),
            "left_alone": kept}
