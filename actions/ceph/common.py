"""Plumbing every Ceph action shares: the ``ceph`` call on the admin host, reads, refusals, the
stats lag, fatal health checks, and riding out a short loss of the cluster.

Every ``ceph`` call runs ``cluster.ceph + args + -f json`` on the cluster's admin host through
``ctx.ssh``; read-only calls pass ``mutating=False`` so a dry-run shows the real state, mutating ones
are only recorded in dry-run. Decisions are made by the pure functions of :mod:`actions.cephjson`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from actions import cephjson as cj
from actions.base import ActionContext, NotYet
from actions.ssh import CommandResult
from engine.errors import ActionError, CommandFailed, CommandTimeout, ConnectionFailed, SafetyCheckFailed

CEPH_TIMEOUT = 60.0
"""Outer limit of one ceph CLI call. ``--connect-timeout`` in the inventory's prefix bounds only the
connection: a client connected to a mon that then loses quorum waits forever (seen on the lab: a
``crush reweight`` hung until this limit killed it)."""
CEPH_READ_TIMEOUT = 30.0
"""Outer limit of a read-only call: a status read takes well under a second, and a wait riding out an
outage should learn of it in seconds, not minutes."""

CREATE_TIMEOUT = 900.0
DEFAULT_MGR_STATS_PERIOD = 5.0
DEFAULT_REWEIGHT_ALLOWED = ("OSDMAP_FLAGS", "PG_DEGRADED")
DEFAULT_OUTAGE_GRACE = 120.0
"""Seconds a long wait keeps polling a cluster that does not answer (mon election, lost quorum)."""

TRANSIENT_MARKERS = (
    "error connecting to the cluster",
    "timed out",
    "etimedout",
    "no quorum",
    "connection refused",
    "errno 110",
    "errno 111",
)
"""stderr of a ``ceph`` call that failed because the cluster did not answer, not because it said no."""

T = TypeVar("T")


class ClusterUnreachable(ActionError):
    """The cluster did not answer for longer than the step's outage grace."""


def now() -> float:
    return time.time()  # wall clock: ctx.memory timestamps are compared across workers


def run(
    ctx: ActionContext,
    cluster: Any,
    *args: str,
    mutating: bool,
    check: bool = True,
    timeout: float | None = None,
) -> CommandResult:
    """Run ``ceph ARGS -f json`` on the cluster's admin host (default limit: 30 s to read, 60 s to change)."""
    argv = [*cluster.ceph, *args, "-f", "json"]
    limit = timeout if timeout is not None else (CEPH_TIMEOUT if mutating else CEPH_READ_TIMEOUT)
    result: CommandResult = ctx.ssh.run(
        cluster.admin_host, argv, timeout=limit, check=check, mutating=mutating
    )
    return result


def read(ctx: ActionContext, cluster: Any, *args: str) -> Any:
    return cj.loads(run(ctx, cluster, *args, mutating=False).stdout, "ceph " + " ".join(args))


def failed(cluster: Any, result: CommandResult) -> CommandFailed:
    return CommandFailed(cluster.admin_host, list(result.argv), result.exit_code, result.stderr)


def osd_dump(ctx: ActionContext, cluster: Any) -> dict[int, cj.OsdState]:
    return cj.dump_osds(read(ctx, cluster, "osd", "dump"))


def read_summary(ctx: ActionContext, cluster: Any) -> cj.Summary:
    return cj.summarize_status(read(ctx, cluster, "status"))


def refuse(ctx: ActionContext, message: str) -> None:
    """A failed safety check: raise, or in dry-run record it and go on so the whole plan is shown."""
    if ctx.dry_run:
        ctx.log.warning(f"[dry-run] a real run would stop here: {message}")
        ctx.would("refuse", reason=message)
        return
    raise SafetyCheckFailed(message)


def require_known(ctx: ActionContext, cluster: Any, osds: list[int]) -> dict[int, cj.OsdState]:
    """ok-to-stop, safe-to-destroy and out say yes to ids that do not exist: check them first."""
    if not osds:
        raise ActionError("no OSD ids given")
    dump = osd_dump(ctx, cluster)
    unknown = cj.unknown_ids(dump, osds)
    if unknown:
        raise ActionError(f"{cj.names(unknown)} not in the OSD map: check the ids ('ceph osd dump')")
    return dump


def stats_lag(ctx: ActionContext, cluster: Any) -> float:
    """2 x mgr_stats_period + 1 s, the period read once from the cluster (default 5 s if unreadable)."""
    if "stats_lag" not in ctx.memory:
        result = run(ctx, cluster, "config", "get", "mgr", "mgr_stats_period", mutating=False, check=False)
        period = DEFAULT_MGR_STATS_PERIOD
        if result.exit_code == 0:
            period = cj.parse_number(result.stdout, "ceph config get mgr mgr_stats_period")
        else:
            ctx.log.warning(f"cannot read mgr_stats_period (exit {result.exit_code}): assuming {period:g}s")
        ctx.memory["stats_lag"] = cj.stats_lag(period)
    return float(ctx.memory["stats_lag"])


def stop_if_fatal(
    ctx: ActionContext, memory: dict[str, Any], health: cj.Health, allowed: list[str],
    outage_grace: float = DEFAULT_OUTAGE_GRACE,
) -> None:
    """Fail on checks waiting cannot fix, on PGs unavailable for longer than a peering blip, and on a
    mon down for longer than ``outage_grace`` (a mon restarting or an election is ridden out)."""
    fatal = health.fatal(allowed)
    if fatal:
        raise SafetyCheckFailed(f"{health.status}: {health.describe(fatal)}: fix this before resuming")
    _grace(memory, health, allowed, "PG_AVAILABILITY", "unavailable_since", cj.PG_AVAILABILITY_GRACE, "PGs unavailable")
    _grace(memory, health, allowed, "MON_DOWN", "mon_down_since", outage_grace, "a monitor down")


def _grace(
    memory: dict[str, Any], health: cj.Health, allowed: list[str], check: str, key: str, grace: float, what: str
) -> None:
    if check in health.checks and check not in allowed:
        since = float(memory.setdefault(key, now()))
        if now() - since > grace:
            raise SafetyCheckFailed(f"{what} for more than {grace:g}s: {health.describe([check])}: fix this "
                                    "before resuming")
    else:
        memory.pop(key, None)


def target_osds(ctx: ActionContext, cluster: Any, host: str | None, osds: list[int] | None) -> list[int]:
    if (host is None) == (osds is None):
        raise ActionError("give either 'host' or 'osds'")
    if osds is not None:
        if not osds:
            raise ActionError("no OSD ids given")
        return list(osds)
    assert host is not None
    found = cj.host_osds(read(ctx, cluster, "osd", "tree"), host)
    if found is None:
        raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster.name}: check 'ceph osd tree'")
    if not found:
        raise ActionError(f"CRUSH host bucket '{host}' holds no OSD")
    return found


def pg_stat_blockers(ctx: ActionContext, cluster: Any) -> list[str]:
    """``pg stat`` is a second view of the PG states: refreshed at a different moment than ``status``."""
    bad = cj.unclean(cj.pg_states(read(ctx, cluster, "pg", "stat")))
    return ["pg stat: " + ", ".join(f"{n} {s}" for s, n in sorted(bad.items()))] if bad else []


def drained_blockers(ctx: ActionContext, cluster: Any, osds: list[int]) -> list[str]:
    """PGs still mapped to OSDs that should hold none. A down OSD maps none (ceph answers EAGAIN)."""
    reasons = []
    for osd in osds:
        result = run(ctx, cluster, "pg", "ls-by-osd", str(osd), mutating=False, check=False)
        if result.exit_code != 0:
            if cj.not_up_error(result.exit_code, result.stderr):
                continue
            raise failed(cluster, result)
        pgs = cj.pgs_in_listing(cj.loads(result.stdout, f"ceph pg ls-by-osd {osd}"))
        if pgs:
            shown = ", ".join(sorted(pgs)[:8]) + (" ..." if len(pgs) > 8 else "")
            reasons.append(f"osd.{osd} still maps {len(pgs)} PG(s): {shown}")
    return reasons

def ok_to_stop_verdict(ctx: ActionContext, cluster: Any, osds: list[int]) -> cj.OkToStop:
    result = run(ctx, cluster, "osd", "ok-to-stop", *map(str, osds), mutating=False, check=False)
    if result.exit_code not in (0, cj.OK_TO_STOP_NOT_OK):
        raise failed(cluster, result)
    return cj.parse_ok_to_stop(result.stdout, result.exit_code)


def safe_to_destroy_verdict(ctx: ActionContext, cluster: Any, osds: list[int]) -> cj.SafeToDestroy:
    result = run(ctx, cluster, "osd", "safe-to-destroy", *map(str, osds), mutating=False)
    return cj.parse_safe_to_destroy(result.stdout)


def transient_reason(exc: Exception) -> str | None:
    """Why ``exc`` looks like a passing loss of the cluster (None when the cluster really answered no)."""
    if isinstance(exc, ConnectionFailed | CommandTimeout):
        return str(exc)
    if isinstance(exc, CommandFailed) and any(m in exc.stderr.lower() for m in TRANSIENT_MARKERS):
        return str(exc)
    return None


def ride_out(ctx: ActionContext, poll: Callable[[], T], *, grace: float, interval: float) -> T:
    """Run one poll of a long wait; when the cluster does not answer (a mon election, seconds without
    quorum, an SSH or ``ceph`` connect timeout) wait and poll again instead of failing, for at most
    ``grace`` seconds of consecutive failures, then fail with the last reason. Progress in
    ``ctx.memory`` is kept, so the poll resumes where it was."""
    memory = ctx.memory
    try:
        value = poll()
    except NotYet:
        _answered(ctx)
        raise
    except (CommandFailed, CommandTimeout, ConnectionFailed) as exc:
        reason = transient_reason(exc)
        if reason is None or ctx.dry_run or grace <= 0:
            raise
        since = float(memory.setdefault("unreachable_since", now()))
        memory["unreachable_reason"] = reason
        down = now() - since
        if down > grace:
            raise ClusterUnreachable(
                f"the cluster has not answered for {down:.0f}s (outage_grace {grace:g}s): {reason}. Check the "
                f"monitors' quorum ('ceph -s' on the admin host), then resume the run"
            ) from None
        ctx.log.warning(f"cluster not answering for {down:.0f}s, riding it out (up to {grace:g}s): {reason}")
        ctx.not_yet(min(interval, 5.0), f"cluster not answering for {down:.0f}s (riding it out up to {grace:g}s): "
                    f"{reason}")
    _answered(ctx)
    return value


def _answered(ctx: ActionContext) -> None:
    if "unreachable_since" in ctx.memory:
        ctx.log.info(f"cluster answering again after {now() - float(ctx.memory.pop('unreachable_since')):.0f}s")
        ctx.memory.pop("unreachable_reason", None)
