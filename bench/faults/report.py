"""The summary of a batch, its table, and the verdict: every way the batch fails, each named."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.faults.audit import RunReport
from bench.faults.kinds import FAULTS, HIT_TARGET, KILL_FAULTS, Injected


def summarize(seed: int, injected: list[Injected], reports: list[RunReport], crashes: list[str],
              drift: list[str]) -> dict[str, Any]:
    verdicts = Counter(r.verdict for r in reports)
    kills = [f for f in injected if f.kill]
    hit = [f for f in kills if f.hits]
    return {
        "seed": seed,
        "faults": {kind: sum(1 for f in injected if f.kind == kind) for kind in FAULTS},
        "kills": len(kills),
        "kills_on_running_steps": len(hit),
        "kill_hit_ratio": round(len(hit) / len(kills), 3) if kills else None,
        "kill_recovery_seconds": sorted(round(x, 1) for f in kills for x in f.recovered),
        "runs": len(reports),
        "completed": verdicts["ok"],
        "failed_correctly": verdicts["failed_ok"],
        "failed_wrongly": verdicts["wrong"],
        "stuck": verdicts["stuck"],
        "steps_reexecuted": sum(1 for r in reports for s in r.steps.values() if s.reexecuted),
        "steps_reexecuted_safe": sum(r.reexecuted_safe for r in reports),
        "takeovers": sum(s.takeovers for r in reports for s in r.steps.values()),
        "duplicate_executions": sum(s.duplicates for r in reports for s in r.steps.values()),
        "side_effects_repeated": sum(len(r.repeated_effects) for r in reports),
        "side_effects_repeated_after_redis_stall": after_redis_stall(injected, reports),
        "lost": sum(len(f.lost) for f in injected) + sum(len(r.lost) for r in reports) + len(drift),
        "worker_crashes": crashes,
        "by_fault": [{"kind": f.kind, "at": round(f.at, 1), "detail": f.detail, "lost": f.lost,
                      "hits": [vars(h) for h in f.hits], "evidence": f.evidence, "exposed": f.exposed,
                      "broken": f.broken}
                     for f in injected],
        "by_run": [{"run": r.run.run_id, "shape": r.run.shape.name, "status": r.status, "verdict": r.verdict,
                    "reason": r.reason, "problems": r.problems, "lost": r.lost, "repeated": r.repeated_effects,
                    "duplicated": r.duplicated} for r in reports],
        "lost_at_faults": [{"kind": f.kind, "at": round(f.at, 1), "lost": f.lost} for f in injected if f.lost],
        "lost_between_faults": drift,
    }


def after_redis_stall(injected: list[Injected], reports: list[RunReport]) -> list[str]:
    """Repeated side effects of steps that were running when Redis froze or refused writes (the engine gaps
    these faults expose: a lease lapses while its execution goes on; a progress save that fails is not retried)."""
    exposed = {e: f.kind for f in injected for e in f.exposed}
    return [f"{r.run.run_id}/{e} ({exposed[key]})" for r in reports for e in r.repeated_effects
            if (key := f"{r.run.run_id}/{e.split('/', 1)[0]}") in exposed]


def failures(s: dict[str, Any]) -> list[str]:
    """Why the batch fails; empty when it passes."""
    out = []
    if s["lost"]:
        out.append(f"{s['lost']} state record(s) lost or gone back in time")
    if s["failed_wrongly"]:
        out.append(f"{s['failed_wrongly']} run(s) ended wrongly")
    if s["stuck"]:
        out.append(f"{s['stuck']} run(s) stuck")
    if s["duplicate_executions"]:
        out.append(f"{s['duplicate_executions']} execution(s) of a step that had already finished")
    if s["side_effects_repeated"]:
        stall = s["side_effects_repeated_after_redis_stall"]
        out.append(f"{s['side_effects_repeated']} non-idempotent side effect(s) repeated"
                   + (f", {len(stall)} of them by a step running when Redis froze or refused writes: {stall}"
                      if stall else ""))
    if s["kills"] and s["kills_on_running_steps"] < HIT_TARGET * s["kills"]:
        out.append(f"only {s['kills_on_running_steps']} of {s['kills']} kill faults hit a running step "
                   f"(need {HIT_TARGET:.0%})")
    out.extend(f"{f['kind']} at {f['at']}s did not take: {f['broken']}" for f in s["by_fault"] if f["broken"])
    unconfirmed = [e for f in s["by_fault"] for e in f["evidence"] if not e.startswith("confirmed")]
    if unconfirmed:
        out.append(f"{len(unconfirmed)} hit(s) the store does not confirm: {unconfirmed}")
    return out


def table(s: dict[str, Any]) -> str:
    hits = Counter(f["kind"] for f in s["by_fault"] if f["hits"])
    lines = ["| fault | injected | hit a running step |", "|---|---:|---:|"]
    lines += [f"| {kind} | {n} | {hits[kind] if kind in KILL_FAULTS else 'n/a'} |" for kind, n in s["faults"].items()]
    lines += [f"| *(not injected)* a worker hit an unrecoverable error or exited by itself | {len(s['worker_crashes'])} | n/a |"]
    ratio = "n/a" if s["kill_hit_ratio"] is None else f"{s['kill_hit_ratio']:.0%}"
    lines += ["", "| runs | completed ok | failed with correct reason | failed wrongly | stuck "
              "| steps executed >1 (safe) | executed again after finishing | side effects repeated "
              "| records lost / back in time | kills on running steps |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| {s['runs']} | {s['completed']} | {s['failed_correctly']} | {s['failed_wrongly']} | {s['stuck']} "
              f"| {s['steps_reexecuted']} ({s['steps_reexecuted_safe']}) | {s['duplicate_executions']} "
              f"| {s['side_effects_repeated']} | {s['lost']} "
              f"| {s['kills_on_running_steps']}/{s['kills']} ({ratio}) |"]
    if rec := s["kill_recovery_seconds"]:
        lines += ["", f"A step hit by a kill was running again after {rec[len(rec) // 2]:.1f} s (median; "
                      f"{rec[0]:.1f} to {rec[-1]:.1f} s over {len(rec)} steps)."]
    return "\n".join(lines)
