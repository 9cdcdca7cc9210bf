"""CLI subcommands of the ways in: ``server``, ``scheduler``, ``schedules``, ``audit`` and ``token``.

``engine.cli`` calls :func:`register`; ``python -m engine.interfaces.commands ...`` runs them alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from engine.errors import HotswapError, ValidationError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser("server", help="serve the HTTP API and the chat endpoints")
    sp.add_argument("--listen", help="HOST:PORT (default: the server config's listen, else 127.0.0.1:8080)")
    sp.add_argument("--print-openapi", action="store_true", help="print the OpenAPI document and exit")
    sp.set_defaults(func=cmd_server)

    sp = sub.add_parser("scheduler", help="run Celery beat for the declared schedules")
    sp.add_argument("--file", help="schedules YAML (default: $HOTSWAP_SCHEDULES or the server config's)")
    sp.add_argument("--max-interval", type=float, default=5.0, help="longest sleep between checks, seconds")
    sp.set_defaults(func=cmd_scheduler)

    sp = sub.add_parser("schedules", help="list schedules and their next fire times, or fire one now")
    sp.add_argument("action", nargs="?", choices=["list", "fire"], default="list")
    sp.add_argument("name", nargs="?", help="with fire: the schedule (or schedule@cluster)")
    sp.add_argument("--cluster", help="with fire: only this cluster's entry")
    sp.add_argument("--file", help="schedules YAML (default: $HOTSWAP_SCHEDULES or the server config's)")
    sp.set_defaults(func=cmd_schedules)

    sp = sub.add_parser("audit", help="the audit trail, newest first")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--action", help="launch, approve, reject, denied, cancel, resume, schedule_fired, ...")
    sp.add_argument("--who")
    sp.add_argument("--source", choices=["cli", "api", "chat", "schedule"])
    sp.add_argument("--run")
    sp.add_argument("--since", help="only entries newer than this long ago, e.g. 2h")
    sp.set_defaults(func=cmd_audit)

    sp = sub.add_parser("token", help="create an API token: prints it once, and the hash line for the tokens file")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_token)


def _client(need_worker: bool = False) -> Any:
    from engine.interfaces.client import Client

    return Client(need_worker=need_worker)


def _cli_identity() -> Any:
    from engine.interfaces.client import identity

    return identity()


def _settings(client: Any) -> Any:
    from engine.interfaces.settings import load_settings

    return load_settings(client.config)


def _book(client: Any, file: str | None) -> Any:
    from pathlib import Path

    from engine.interfaces.facade import RunbookCatalog
    from engine.interfaces.schedules import ScheduleBook, load_schedules

    settings = _settings(client)
    path = Path(file) if file else settings.schedules
    if path is None:
        raise HotswapError("no schedules file: pass --file, set HOTSWAP_SCHEDULES or 'schedules:' in the server config")
    policy = settings.require_policy()
    catalog = RunbookCatalog(client.config.runbooks_dir, client.service)
    return ScheduleBook(load_schedules(path), client.service, policy, catalog, client.service.inventory_loader)


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def cmd_server(args: argparse.Namespace) -> int:
    from engine.interfaces.api import openapi_document
    from engine.interfaces.server import build

    if args.print_openapi:
        print(json.dumps(openapi_document(), indent=2))
        return 0
    client = _client()
    settings = _settings(client)
    host = port = None
    if args.listen:
        h, _, p = args.listen.rpartition(":")
        if not p.isdigit():
            raise HotswapError("--listen must look like HOST:PORT")
        host, port = h or "127.0.0.1", int(p)
    server = build(client.service, settings, client.config, host=host, port=port)
    print(f"hotswap server on http://{host or settings.host}:{port or settings.port} "
          f"(OpenAPI: /openapi.json; chat: {'on' if settings.slack else 'off'})", flush=True)
    try:
        server.uv.run()
    finally:
        for closer in server.closers:
            closer.close()
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from engine.interfaces.schedules import run_beat

    client = _client()
    book = _book(client, args.file)
    entries = book.beat_schedule()
    print(f"hotswap scheduler: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: {', '.join(entries)}",
          flush=True)
    run_beat(book, client.app, client.config.state_dir, args.max_interval)
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from engine.interfaces.guard import GuardedService
    from engine.interfaces.policy import Request

    client = _client(need_worker=args.action == "fire")
    book = _book(client, args.file)
    if args.action == "fire":
        if not args.name:
            raise HotswapError("usage: hotswap schedules fire NAME [--cluster C]")
        g = GuardedService(client.service, book.policy, _cli_identity(), book.catalog)
        g.require(Request("launch", runbook=book.get(args.name).runbook))
        outcomes = book.fire(args.name, args.cluster, manual_by=g.who)
        if _json(args):
            print(json.dumps([o.as_dict() for o in outcomes], indent=2))
        for o in outcomes if not _json(args) else []:
            print(f"{o.entry}: {o.outcome}" + (f" run {o.run}" if o.run else "") + (f" ({o.reason})" if o.reason else ""))
        return 0 if all(o.outcome in ("launched", "skipped") for o in outcomes) else 1
    rows = book.describe()
    if _json(args):
        print(json.dumps(rows, indent=2))
        return 0
    table = [("ENTRY", "RUNBOOK", "WHEN", "OVERLAP", "LAST", "NEXT")]
    for r in rows:
        last = time.strftime("%m-%d %H:%M:%S", time.localtime(r["last_fire"])) if r["last_fire"] else "-"
        nxt = time.strftime("%m-%d %H:%M:%S", time.localtime(r["next_fire"])) if r["next_fire"] else "disabled"
        table.append((r["entry"], r["runbook"], r["when"], r["overlap"], last, nxt))
    _table(table)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from engine.durations import parse_duration
    from engine.interfaces.facade import audit_query
    from engine.interfaces.guard import GuardedService
    from engine.interfaces.policy import Request

    client = _client()
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as e:
            raise HotswapError(f"--since: {e}") from None
    settings = _settings(client)
    if settings.policy is not None:
        from engine.interfaces.facade import RunbookCatalog

        g = GuardedService(client.service, settings.policy, _cli_identity(),
                           RunbookCatalog(client.config.runbooks_dir, client.service))
        g.require(Request("audit"))
    entries = audit_query(client.service, limit=args.limit, action=args.action, who=args.who, source=args.source,
                          run=args.run, since=since)
    if _json(args):
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("t", 0))))
        rest = {k: v for k, v in entry.items() if k not in ("t", "id", "action", "who", "source") and v}
        extra = " ".join(f"{k}={v}" for k, v in rest.items())
        print(f"{stamp}  {entry.get('action', '?'):17} {entry.get('who', '?')}@{entry.get('source', '?')}  {extra}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from engine.interfaces.settings import hash_token, new_token

    token = new_token()
    print(f"token for {args.name} (shown once; give it to the client):\n  {token}\n"
          f"add to the tokens file:\n  - name: {args.name}\n    sha256: {hash_token(token)}")
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hotswap")
    parser.add_argument("--json", action="store_true")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ValidationError as invalid:
        for issue in invalid.issues:
            print(f"error: {issue}", file=sys.stderr)
        return invalid.exit_code
    except HotswapError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
