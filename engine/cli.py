"""``hotswap``: the command line. Every command is a thin call into :mod:`engine.service`.

Commands import what they need when they run, so `hotswap validate` or `plan` does not pay for loading
Celery (about 1.5 s on a busy machine) or the HTTP server's libraries; everything else is imported here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.durations import format_duration
from engine.errors import HotswapError, ValidationError
from engine.states import run_settled

_ICON = {"pending": "·", "running": "▶", "waiting": "…", "succeeded": "✓", "failed": "✗", "cancelled": "⊘",
         "skipped": "↷"}


# ---- wiring: engine/interfaces/client.py (imported when a command needs it: it loads Celery) ------------
def connect(need_worker: bool = False) -> Any:
    """The service over the configured Redis (engine.interfaces.client.Client)."""
    from engine.interfaces.client import Client

    return Client(need_worker)


def identity() -> Any:
    from engine.interfaces.client import identity as _identity

    return _identity()


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HotswapError(f"parameter {pair!r} must look like key=value")
        out[key.strip()] = value
    return out


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _registry() -> Any:
    from actions import default_registry

    return default_registry()


# ---- commands --------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from engine.service import validate_paths

    paths: list[Path] = []
    for p in args.paths or ["runbooks"]:
        path = Path(p)
        paths.extend(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path])
    if not paths:
        raise HotswapError("no runbooks found: pass files or a directory of *.yaml")
    results = validate_paths(paths, _registry())
    bad = [(p, e) for p, e in results if e]
    if args.json:
        _print_json([{"file": str(p), "ok": e is None, "issues": [i.as_dict() for i in e.issues] if e else []}
                     for p, e in results])
    else:
        for p, e in results:
            if e is None:
                print(f"ok      {p}")
            else:
                for issue in e.issues:
                    print(f"error   {issue}")
        print(f"{len(results) - len(bad)} valid, {len(bad)} invalid")
    return 2 if bad else 0


def _load_plan(args: argparse.Namespace) -> tuple[Any, Any]:
    from engine.context import load_inventory
    from engine.service import prepare

    return prepare(args.runbook, parse_params(args.param), _registry(), load_inventory())


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.plan import describe

    _runbook, plan = _load_plan(args)
    if args.dry_run:
        return _dry_run(plan, args)
    if args.executor == "canvas":
        from engine.canvas import compile_canvas, describe_canvas
        from engine.celery_app import make_app

        print("\n".join(describe_canvas(compile_canvas(make_app("memory://"), "RUN", plan))))
        return 0
    if args.json:
        _print_json(plan.to_dict())
    else:
        print("\n".join(describe(plan)))
        if plan.locks:
            print("  locks: " + ", ".join(f"{lk['name']} (at most {lk['limit']})" if lk["limit"] > 1 else lk["name"]
                                          for lk in plan.locks))
    return 0


def _dry_run(plan: Any, args: argparse.Namespace) -> int:
    from engine.context import toolkit_factory
    from engine.dryrun import dry_run, format_dry_run

    steps = dry_run(plan, _registry(), toolkit_factory(), {"launched_by": identity().name})
    if args.json:
        _print_json([s.__dict__ for s in steps])
    else:
        print("\n".join(format_dry_run(steps)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        _runbook, plan = _load_plan(args)
        return _dry_run(plan, args)
    client = connect(need_worker=True)
    run_id = client.ops.launch(args.runbook, parse_params(args.param), by_path=True, executor=args.executor)
    if args.json and not args.follow:
        _print_json({"run": run_id})
        return 0
    print(f"run {run_id} started ({args.runbook}); follow with: hotswap status {run_id} / hotswap logs {run_id} --follow")
    if args.follow:
        return follow(client, run_id, show_logs=True)
    return 0


def follow(client: Any, run_id: str, show_logs: bool) -> int:
    """Print every transition and log line of a run until it ends. Ctrl-C stops following, not the run."""
    service = client.service
    record = service.run(run_id)
    total = record.get("n_steps") or 0
    done = 0
    last = "0-0"
    try:
        while True:
            for eid, ev in service.events(run_id, last, block_ms=1000):
                last = eid
                stamp = time.strftime("%H:%M:%S", time.localtime(float(ev.get("t", time.time()))))
                kind = ev.get("type")
                if kind == "step":
                    status = ev.get("status", "")
                    if status in ("succeeded", "skipped"):
                        done += 1
                    extra = ev.get("error") or ev.get("reason") or ""
                    attempt = f" attempt {ev['attempt']}" if ev.get("attempt") and ev.get("attempt") != "1" else ""
                    print(f"{stamp} [{done}/{total}] {_ICON.get(status, '?')} {ev.get('step')} {status}{attempt}"
                          + (f": {extra}" if extra else ""))
                elif kind == "log" and show_logs:
                    print(f"{stamp}          {ev.get('step')} | {ev.get('msg')}")
                elif kind == "run":
                    reason = f": {ev['reason']}" if ev.get("reason") else ""
                    print(f"{stamp} run {run_id} {ev.get('status')}{reason}")
                elif kind == "cleanup":
                    print(f"{stamp} cleanup {ev.get('status')}")
                elif kind == "approval_requested":
                    print(f"{stamp} ? {ev.get('step')} needs approval: {ev.get('message')}  "
                          f"-> hotswap approve {run_id} {ev.get('step')}")
            record = service.run(run_id)
            status = record["status"]
            if run_settled(record) and not service.events(run_id, last):
                return 0 if status == "succeeded" else 1
    except KeyboardInterrupt:
        print(f"\nstopped following; run {run_id} goes on (hotswap status {run_id})")
        return 130


def cmd_status(args: argparse.Namespace) -> int:
    client = connect()
    data = client.ops.status(args.run)
    if args.json:
        _print_json(data)
        return 0
    run = data["run"]
    dur = _duration(run.get("started"), run.get("finished"))
    print(f"run {run['id']}  {run['runbook']}  {run['status'].upper()}  by {run.get('launched_by')} via "
          f"{run.get('source')}  {dur}")
    if run.get("reason"):
        print(f"reason: {run['reason']}")
    counts: dict[str, int] = {}
    for s in data["steps"]:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    print("steps: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    shown = data["steps"] if args.all or len(data["steps"]) <= 60 else [
        s for s in data["steps"] if s["status"] not in ("succeeded", "pending")][:60]
    _step_table(run["id"], shown)
    if len(shown) < len(data["steps"]):
        print(f"({len(data['steps']) - len(shown)} succeeded/pending steps hidden; --all shows them)")
    cleanup = data.get("cleanup") or []
    if cleanup:
        phase = run.get("cleanup") or ("not needed" if run["status"] == "succeeded" else "not started")
        print(f"cleanup ({phase}):")
        _step_table(run["id"], cleanup)
    return 0


POLL_LATE_SHOWN = 5.0
"""A poll that got a worker this many seconds after its due time says so in status (workers are saturated)."""


def _step_table(run_id: str, steps: Sequence[dict[str, Any]]) -> None:
    rows = [("STEP", "ACTION", "STATUS", "TRY", "TIME", "NOTE")]
    for s in steps:
        note = s["error"] or s["waiting_reason"]
        if s.get("poll_late") and s["poll_late"] >= POLL_LATE_SHOWN and s["status"] in ("waiting", "running"):
            note = f"(poll {format_duration(s['poll_late'])} late) {note}"
        if s["needs_approval"]:
            note = f"approve: hotswap approve {run_id} {s['id']}"
        rows.append((s["id"], s["action"], f"{_ICON.get(s['status'], '?')} {s['status']}", str(s["attempt"] or ""),
                     _duration(s["started"], s["finished"]) if s["started"] else "", note[:80]))
    _table(rows)


def _duration(start: float | None, end: float | None) -> str:
    if not start:
        return ""
    return format_duration((end or time.time()) - start)


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def cmd_runs(args: argparse.Namespace) -> int:
    client = connect()
    runs = client.ops.runs(args.limit, args.status, args.runbook)
    if args.json:
        _print_json(runs)
        return 0
    rows = [("RUN", "RUNBOOK", "STATUS", "STEPS", "BY", "STARTED", "TIME")]
    for r in runs:
        started = time.strftime("%m-%d %H:%M", time.localtime(r["created"])) if r.get("created") else ""
        rows.append((r["id"], r["runbook"], r["status"], f"{r.get('n_done', 0)}/{r.get('n_steps', 0)}",
                     f"{r.get('launched_by')}@{r.get('source')}", started, _duration(r.get("started"), r.get("finished"))))
    _table(rows)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = connect()
    if args.follow:
        client.ops.run(args.run)
        return follow(client, args.run, show_logs=True)
    lines = client.ops.logs(args.run, args.step)
    if args.json:
        _print_json(lines)
        return 0
    for line in sorted(lines, key=lambda x: x["t"]):
        stamp = time.strftime("%H:%M:%S", time.localtime(line["t"]))
        print(f"{stamp} {line['step']} {line['level']:7} {line['msg']}")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    client = connect(need_worker=True)
    first = client.ops.approve(args.run, args.step, approved=not args.reject, comment=args.comment)
    verb = "rejected" if args.reject else "approved"
    print(f"{args.step} {verb}" if first else f"{args.step} was already decided; nothing changed")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client = connect()
    running = client.ops.cancel(args.run)
    print(f"run {args.run} cancelled" + (f"; still finishing: {', '.join(running)}" if running else ""))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    client = connect(need_worker=True)
    ready = client.ops.resume(args.run)
    print(f"run {args.run} resumed; restarting from: {', '.join(ready) or '(waiting steps)'}")
    if args.follow:
        return follow(client, args.run, show_logs=True)
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    registry = _registry()
    if args.json:
        _print_json([{"name": s.name, "summary": s.summary, "doc": s.doc, "destructive": s.destructive,
                      "polling": s.polling,
                      "params": {p.name: {"type": p.type_name, "required": p.required, "default": p.default}
                                 for p in s.params.values()}} for s in registry])
        return 0
    for spec in registry:
        flags = " [destructive]" if spec.destructive else ""
        flags += " [polling]" if spec.polling else ""
        if args.name and args.name != spec.name:
            continue
        print(f"{spec.name}{flags}: {spec.summary}")
        for p in spec.params.values():
            req = "required" if p.required else f"default {p.default!r}"
            print(f"    {p.name}: {p.type_name} ({req})")
        if args.name:
            print("\n" + spec.doc)
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    from engine.context import load_inventory

    inv = load_inventory()
    if inv is None:
        raise HotswapError("no inventory configured: set HOTSWAP_INVENTORY=path/to/inventory.yaml")
    hosts = inv.select(cluster=args.cluster, role=args.role, rack=args.rack, datacenter=args.datacenter,
                       pattern=args.name)
    if args.json:
        _print_json([inv.as_dict()["hosts"][h.name] | {"name": h.name} for h in hosts])
        return 0
    rows = [("HOST", "ADDRESS", "CLUSTER", "DC", "RACK", "ROLES", "SERIAL")]
    for h in hosts:
        addr = f"{h.address}:{h.port}" if h.port else h.address
        rows.append((h.name, addr, h.cluster or "", h.datacenter or "", h.rack or "", ",".join(h.roles), h.serial or ""))
    _table(rows)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.celery_app import make_app, run_worker
    from engine.config import load_config
    from engine.embedded import ensure_redis

    cfg = load_config()
    url = cfg.redis_url or ensure_redis(cfg.state_dir)
    app = make_app(url, cfg.replication)
    if args.pidfile:
        Path(args.pidfile).write_text(str(os.getpid()))
    if not args.no_supervise:
        from engine.celery_app import runtime
        from engine.supervisor import supervise

        argv = [sys.executable, "-m", "engine.cli", "worker", "--no-supervise", "--concurrency", str(args.concurrency),
                "--queues", args.queues, "--loglevel", args.loglevel,
                *(["-n", args.hostname] if args.hostname else [])]
        store = runtime(app).store

        return supervise(argv, idle=lambda: not store.any_unsettled_run(), idle_exit=args.idle_exit)
    extra = ["-n", args.hostname] if args.hostname else []
    run_worker(app, concurrency=args.concurrency, queues=args.queues, loglevel=args.loglevel, extra=extra)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from engine.config import load_config
    from engine.embedded import stop

    stopped = stop(load_config().state_dir)
    print("stopped: " + (", ".join(stopped) or "nothing was running"))
    return 0


# ---- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hotswap", description="Runbook engine for storage hardware replacement.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True)

    def runbook_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("runbook", help="path to a runbook YAML file")
        sp.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
        sp.add_argument("--dry-run", action="store_true", help="show every command and request; change nothing")
        sp.add_argument("--executor", choices=["hotswap", "canvas"], default="hotswap",
                        help="hotswap (default, durable) or canvas (native Celery chains/groups/chords)")

    sp = sub.add_parser("run", help="launch a runbook")
    runbook_args(sp)
    sp.add_argument("-f", "--follow", action="store_true", help="show live progress until the run ends")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("plan", help="show the plan (DAG) a runbook would execute")
    runbook_args(sp)
    sp.set_defaults(func=cmd_plan)

    sp = sub.add_parser("validate", help="check runbooks without running anything")
    sp.add_argument("paths", nargs="*")
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("status", help="a run and its steps, as a table")
    sp.add_argument("run")
    sp.add_argument("--all", action="store_true", help="show every step")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("runs", help="recent runs")
    sp.add_argument("--limit", type=int, default=20)
    sp.add_argument("--status")
    sp.add_argument("--runbook")
    sp.set_defaults(func=cmd_runs)

    sp = sub.add_parser("logs", help="a run's step logs")
    sp.add_argument("run")
    sp.add_argument("step", nargs="?")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.set_defaults(func=cmd_logs)

    sp = sub.add_parser("approve", help="approve (or --reject) a step's approval gate")
    sp.add_argument("run")
    sp.add_argument("step")
    sp.add_argument("--reject", action="store_true")
    sp.add_argument("-m", "--comment", default="")
    sp.set_defaults(func=cmd_approve)

    sp = sub.add_parser("cancel", help="cancel a run")
    sp.add_argument("run")
    sp.set_defaults(func=cmd_cancel)

    sp = sub.add_parser("resume", help="retry a failed or cancelled run from its failed steps")
    sp.add_argument("run")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.set_defaults(func=cmd_resume)

    sp = sub.add_parser("actions", help="list actions and their parameters")
    sp.add_argument("name", nargs="?")
    sp.set_defaults(func=cmd_actions)

    sp = sub.add_parser("inventory", help="list inventory hosts")
    for flag in ("cluster", "role", "rack", "datacenter"):
        sp.add_argument(f"--{flag}")
    sp.add_argument("--name", help="glob on the host name")
    sp.set_defaults(func=cmd_inventory)

    sp = sub.add_parser("worker", help="run a worker (Celery prefork + hotswap ticker)")
    sp.add_argument("--concurrency", type=int, default=2)
    sp.add_argument("--queues", default="hotswap,hotswap.poll")
    sp.add_argument("--loglevel", default="WARNING")
    sp.add_argument("--idle-exit", type=float, default=0, help="exit after this many idle seconds (embedded mode)")
    sp.add_argument("--pidfile")
    sp.add_argument("-n", "--hostname", help="Celery node name, e.g. w1@%%h")
    sp.add_argument("--no-supervise", action="store_true",
                    help="run the Celery worker in this process (default: a supervisor restarts it if it exits)")
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser("down", help="stop the embedded Redis and worker")
    sp.set_defaults(func=cmd_down)

    from engine.interfaces.commands import register

    register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ValidationError as e:
        if args.json:
            _print_json({"error": "validation", "issues": [i.as_dict() for i in e.issues]})
        else:
            for issue in e.issues:
                print(f"error: {issue}", file=sys.stderr)
        return e.exit_code
    except HotswapError as e:
        if args.json:
            _print_json({"error": type(e).__name__, "message": str(e)})
        else:
            print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
