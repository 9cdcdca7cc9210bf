"""Ceph actions: read the cluster, guard destructive steps, move data gradually.

One module per phase of a replacement; each registers its own ``ceph.*`` actions, and
:func:`modules` lists them (``actions.default_registry`` loads every module of this package).
Every action is idempotent: re-running it after a crash or a retry finishes the job instead of
redoing it (already set flags, already destroyed or purged OSDs, an already removed host bucket are
success). Polling actions keep their progress in ``ctx.memory``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from actions.ceph.checks import ok_to_stop, safe_to_destroy
from actions.ceph.creation import add_node
from actions.ceph.flags import set_flags, set_host_flags, unset_flags, unset_host_flags
from actions.ceph.health import wait_healthy
from actions.ceph.preflight import preflight, projected_utilization
from actions.ceph.read import health, osds_of, status, utilization
from actions.ceph.rebalance import rebalance_choice, rebalance_step
from actions.ceph.removal import destroy_osds, out, purge_osds, remove_host, stop_osds
from actions.ceph.swap import prepare_spare, swap_bucket
from actions.ceph.throttle import hold_new_osds_at_zero, restore_config, throttle_recovery
from actions.ceph.weights import reweight


def modules() -> list[ModuleType]:
    """Every module of this package, for :meth:`ActionRegistry.from_modules`."""
    return [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]


__all__ = [
    "add_node",
    "destroy_osds",
    "health",
    "hold_new_osds_at_zero",
    "modules",
    "ok_to_stop",
    "osds_of",
    "out",
    "preflight",
    "prepare_spare",
    "projected_utilization",
    "purge_osds",
    "rebalance_choice",
    "rebalance_step",
    "remove_host",
    "restore_config",
    "reweight",
    "safe_to_destroy",
    "set_flags",
    "set_host_flags",
    "status",
    "stop_osds",
    "swap_bucket",
    "throttle_recovery",
    "unset_flags",
    "unset_host_flags",
    "utilization",
    "wait_healthy",
]
