"""Pre-flight of a host replacement or drain: what the cluster must allow before anything moves.

Each refusal names the reason and what to do. Everything is read from the cluster's own maps (mon
map and metadata, mgr map, pools and CRUSH rules, OSD tree/dump/df); inventory roles are only a hint.
"""

from __future__ import annotations

from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext, action
from actions.ceph.common import ok_to_stop_verdict, read, read_summary, refuse, run
from engine.errors import ActionError


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


def data_problems(
    summary: cj.Summary, dump: dict[str, Any], df: dict[str, Any], osds: list[int], allowed: list[str]
) -> tuple[list[str], dict[str, Any]]:
    """Health, data movement, OSDs down elsewhere and the nearfull projection."""
    problems: list[str] = []
    unexpected = summary.health.unexpected(allowed)
    if unexpected:
        problems.append(f"{summary.health.status}: {summary.health.describe(unexpected)}")
    if not summary.all_clean or summary.misplaced_ratio > 0:
        bad = ", ".join(f"{n} {s}" for s, n in sorted(cj.unclean(summary.pg_states).items()))
        problems.append(f"data is moving or degraded ({bad or f'misplaced {summary.misplaced_ratio:.1%}'}): "
                        "wait until every PG is active+clean")
    others_down = [o for o, st in cj.dump_osds(dump).items() if o not in osds and st.in_ and not st.up]
    if others_down:
        problems.append(f"{cj.names(others_down)} down on other hosts: fix them first")
    nearfull = float(dump.get("nearfull_ratio", 0.85) or 0.85)
    projected = projected_utilization(df, osds)
    fullest = max(projected.items(), key=lambda kv: kv[1], default=(None, 0.0))
    if fullest[0] is not None and fullest[1] >= nearfull:
        problems.append(f"osd.{fullest[0]} would reach {fullest[1]:.1%} used (nearfull ratio {nearfull:.1%}): "
                        "add capacity first")
    return problems, {"nearfull_ratio": nearfull, "projected_max_utilization": round(fullest[1], 4)}


def placement_facts(
    pools: list[cj.Pool], rules: dict[int, cj.Rule], tree: dict[str, Any], host: str, osds: list[int],
    max_hosts_down: int,
) -> tuple[list[str], dict[str, Any]]:
    problems = cj.placement_problems(pools, rules, tree, osds, host)
    problems += cj.hosts_down_problems(pools, rules, tree, max_hosts_down)
    domains = {p.name: len(cj.failure_domains(tree, rules[p.rule], osds)) for p in pools if p.rule in rules}
    return problems, {"pools": [p.describe() for p in pools], "domains_left": domains,
                      "max_hosts_down": max_hosts_down}


def daemon_problems(
    ctx: ActionContext, cluster: Any, host: str, mon_ok_to_stop: bool
) -> tuple[list[str], dict[str, Any]]:
    """The admin endpoint, monitors and the only active mgr must not sit on the host."""
    problems: list[str] = []
    if cj.same_host(cluster.admin_host, host):
        problems.append(f"{host} is the admin endpoint of cluster {cluster.name} (its 'admin_host' in the "
                        f"inventory): every ceph command of the run goes through it; move admin_host to another "
                        f"host with a client.admin keyring first")
    mon_dump = read(ctx, cluster, "mon", "dump")
    mons = cj.mon_hosts(mon_dump, read(ctx, cluster, "mon", "metadata"))
    here = sorted(m for m, h in mons.items() if cj.same_host(h, host))
    for mon in here:
        why = ""
        if mon_ok_to_stop:
            verdict = run(ctx, cluster, "mon", "ok-to-stop", mon, mutating=False, check=False)
            stderr = verdict.stderr.strip().splitlines()
            why = (f"; 'ceph mon ok-to-stop {mon}': " + (stderr[-1] if stderr else f"exit {verdict.exit_code}")
                   if verdict.exit_code != 0 else f"; ok-to-stop says {mon} may stop, but the quorum would "
                   f"shrink to {len(mons) - 1} for the whole replacement")
        problems.append(f"{host} carries monitor mon.{mon} ({len(mons)} mons, quorum "
                        f"{', '.join(cj.mon_quorum(mon_dump))}){why}: move the monitor to another host first "
                        f"(add a mon elsewhere, then 'ceph mon remove {mon}')")
    mgrs = cj.parse_mgrs(read(ctx, cluster, "mgr", "dump"), read(ctx, cluster, "mgr", "metadata"))
    standbys = [s for s in mgrs.standbys if not cj.same_host(mgrs.host_of(s), host)]
    if mgrs.active and cj.same_host(mgrs.host_of(mgrs.active), host) and not standbys:
        problems.append(f"{host} runs the only active mgr (mgr.{mgrs.active}) and no standby mgr runs elsewhere: "
                        f"without a mgr 'pg stat', 'osd df', ok-to-stop and safe-to-destroy stop answering; "
                        f"start a standby mgr on another host first")
    facts = {"mons": mons, "mons_on_host": here, "mgr_active": mgrs.active, "mgr_standbys": list(mgrs.standbys)}
    return problems, facts


@action("ceph.preflight")
def preflight(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    allowed_checks: list[str] | None = None,
    check_ok_to_stop: bool = True,
    check_daemons: bool = True,
    max_hosts_down: int | None = None,
) -> dict[str, Any]:
    """Check that the OSDs of CRUSH host ``host`` may be drained and taken out now, and record them.

    Refuses, naming the reason and what to do, when: ``host`` is the cluster's admin endpoint, carries
    a monitor (from the mon map and ``mon metadata``; ``ceph mon ok-to-stop`` is quoted), or runs the
    only active mgr with no standby elsewhere (``check_daemons: false`` skips these three); a pool
    could not place ``size`` replicas or ``k+m`` chunks in distinct failure domains of its CRUSH rule
    without the host (or would drop below ``min_size``); ``max_hosts_down`` (default: the inventory's)
    hosts out at once would exceed what the pools allow; health is not OK (beyond ``allowed_checks``);
    a PG is not active+clean or objects are misplaced; an OSD of another host is down; the remaining
    OSDs would pass the nearfull ratio with the host's data; ``ceph osd ok-to-stop`` says no. Returns
    ``osds``, their CRUSH ``weights`` (keyed by id as text), ``weight`` (the largest, to restore them
    like for like), the host's inventory ``devices`` and the facts checked.
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
    problems: list[str] = []
    facts: dict[str, Any] = {}
    if check_daemons:
        found, facts = daemon_problems(ctx, c, host, check_ok_to_stop)
        problems += found
    pools = cj.parse_pools(read(ctx, c, "osd", "pool", "ls", "detail"))
    rules = cj.parse_rules(read(ctx, c, "osd", "crush", "rule", "dump"))
    limit = c.max_hosts_down if max_hosts_down is None else max_hosts_down
    found, more = placement_facts(pools, rules, tree, host, osds, limit)
    problems += found
    facts.update(more)
    found, more = data_problems(read_summary(ctx, c), dump, read(ctx, c, "osd", "df"), osds, allowed)
    problems += found
    facts.update(more)
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
                 f"failure domains left per pool {facts['domains_left']}; projected max use "
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
