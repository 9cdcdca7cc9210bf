"""Pre-flight of a host replacement or drain: what the cluster must allow before anything moves."""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import (
    ok_to_stop_verdict,
    read,
    read_summary,
    refuse,
)
from engine.errors import ActionError


def _max_pool_size(dump: dict[str, Any]) -> int:
    return max((int(p.get("size", 0)) for p in dump.get("pools") or []), default=0)


def _weighted_hosts(tree: dict[str, Any]) -> dict[str, float]:
    """CRUSH host buckets and the sum of their OSDs' CRUSH weights."""
    osds = cj.tree_osds(tree)
    hosts: dict[str, float] = {}
    for osd in osds.values():
        if osd.host is not None:
            hosts[osd.host] = hosts.get(osd.host, 0.0) + osd.crush_weight
    for node in tree.get("nodes") or []:
        if node.get("type") == "host":
            hosts.setdefault(str(node["name"]), 0.0)
    return hosts


def projected_utilization(df: dict[str, Any], leaving: list[int]) -> dict[int, float]:
    """Utilization (fraction) each remaining OSD would reach if the data of ``leaving`` spread over
    the remaining in OSDs in proportion to their CRUSH weight x reweight."""
    nodes = [n for n in df.get("nodes") or [] if n.get("type", "osd") == "osd"]
    moving = sum(int(n.get("kb_used", 0)) for n in nodes if int(n["id"]) in leaving)
    stay = [n for n in nodes if int(n["id"]) not in leaving and float(n.get("reweight", 0)) > 0
            and int(n.get("kb", 0)) > 0]
    total = sum(float(n.get("crush_weight", 0)) * float(n.get("reweight", 0)) for n in stay)
    out: dict[int, float] = {}
    for n in stay:
        share = float(n.get("crush_weight", 0)) * float(n.get("reweight", 0)) / total if total else 0.0
        out[int(n["id"])] = (int(n.get("kb_used", 0)) + moving * share) / int(n["kb"])
    return out


def _preflight_problems(
    summary: cj.Summary, dump: dict[str, Any], tree: dict[str, Any], df: dict[str, Any],
    host: str, osds: list[int], allowed: list[str],
) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    unexpected = summary.health.unexpected(allowed)
    if unexpected:
        problems.append(f"{summary.health.status}: {summary.health.describe(unexpected)}")
    if not summary.all_clean or summary.misplaced_ratio > 0:
        bad = ", ".join(f"{n} {s}" for s, n in sorted(cj.unclean(summary.pg_states).items()))
        problems.append(f"data is moving or degraded ({bad or f'misplaced {summary.misplaced_ratio:.1%}'}): "
                        "wait until every PG is active+clean")
    osd_states = cj.dump_osds(dump)
    others_down = [o for o, st in osd_states.items() if o not in osds and st.in_ and not st.up]
    if others_down:
        problems.append(f"{cj.names(others_down)} down on other hosts: fix them first")
    hosts = _weighted_hosts(tree)
    remaining = sorted(h for h, w in hosts.items() if h != host and w > 0)
    size = _max_pool_size(dump)
    if len(remaining) < size:
        problems.append(f"only {len(remaining)} host(s) with weight would remain for pools of size {size}: "
                        "the data could not be re-replicated")
    nearfull = float(dump.get("nearfull_ratio", 0.85) or 0.85)
    projected = projected_utilization(df, osds)
    fullest = max(projected.items(), key=lambda kv: kv[1], default=(None, 0.0))
    if fullest[0] is not None and fullest[1] >= nearfull:
        problems.append(f"osd.{fullest[0]} would reach {fullest[1]:.1%} used (nearfull ratio {nearfull:.1%}): "
                        "add capacity first")
    facts = {
        "remaining_hosts": remaining,
        "max_pool_size": size,
        "nearfull_ratio": nearfull,
        "projected_max_utilization": round(fullest[1], 4),
    }
    return problems, facts


@action("ceph.preflight")
def preflight(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    allowed_checks: list[str] | None = None,
    check_ok_to_stop: bool = True,
) -> dict[str, Any]:
    """Check that the OSDs of CRUSH host ``host`` may be drained and taken out now, and record them.

    Refuses unless: health is OK (or only ``allowed_checks`` are raised); every PG is active+clean
    with nothing misplaced (no recovery running); no OSD of another host is down; enough hosts with
    weight remain for the largest pool size; the remaining OSDs can absorb the host's data below the
    nearfull ratio; and ``ceph osd ok-to-stop`` agrees for the host's OSDs. Returns ``osds``, their
    CRUSH ``weights`` (keyed by id as text), ``weight`` (the largest, to restore them like for like),
    the host's inventory ``devices`` and the facts checked.
    """
    c = ctx.inventory.cluster(cluster)
    allowed = list(allowed_checks or [])
    tree = read(ctx, c, "osd", "tree")
    osds = cj.host_osds(tree, host)
    if osds is None:
        raise ActionError(f"no CRUSH host bucket '{host}' in cluster {cluster}: check 'ceph osd tree'")
    if not osds:
        raise ActionError(f"CRUSH host bucket '{host}' holds no OSD")
    dump = read(ctx, c, "osd", "dump")
    problems, facts = _preflight_problems(
        read_summary(ctx, c), dump, tree, read(ctx, c, "osd", "df"), host, osds, allowed
    )
    states = cj.dump_osds(dump)
    up = [o for o in osds if o in states and states[o].up]
    if check_ok_to_stop and up:
        verdict = ok_to_stop_verdict(ctx, c, up)
        if not verdict.ok:
            problems.append(verdict.explain())
    if problems:
        refuse(ctx, f"pre-flight of {host} failed: " + "; ".join(problems))
    weights = cj.crush_weights(tree, osds)
    known = ctx.inventory.hosts.get(host)
    ctx.log.info(f"{host}: {cj.names(osds)}, weights {', '.join(f'{w:g}' for w in weights.values())}; "
                 f"{len(facts['remaining_hosts'])} host(s) remain; projected max use "
                 f"{facts['projected_max_utilization']:.1%}")
    return {
        "host": host,
        "osds": osds,
        "weights": {str(o): w for o, w in weights.items()},
        "weight": max(weights.values()),
        "devices": list(known.devices) if known is not None else [],
        "ok": not problems,
        "problems": problems,
        **facts,
    }
