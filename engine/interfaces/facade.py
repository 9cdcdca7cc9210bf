"""Read-side helpers every way in needs, written against the Service/Store public API.

These belong on :class:`engine.service.Service` (they are here until they move): the runbook catalogue,
audit queries, active-run and lock lookups, one-shot markers (replay protection, single-use buttons),
action and inventory listings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.base import ActionRegistry
from engine.errors import HotswapError, ValidationError
from engine.service import Service

ACTIVE = ("pending", "running", "waiting")
AUDIT_SCAN_LIMIT = 10_000


class RunbookNotFound(HotswapError):
    exit_code = 3


@dataclass(frozen=True)
class RunbookEntry:
    name: str
    file: Path
    description: str = ""
    params: dict[str, dict[str, Any]] | None = None
    issues: list[dict[str, object]] | None = None


class RunbookCatalog:
    """The runbooks a server may launch: the YAML files of one directory, by runbook name or file stem.

    Remote callers name runbooks; they never pass paths, so nothing outside the directory can run.
    """

    def __init__(self, directory: Path, service: Service) -> None:
        self.directory = directory
        self.service = service

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted([*self.directory.glob("*.yaml"), *self.directory.glob("*.yml")])

    def entries(self) -> list[RunbookEntry]:
        out = []
        for file in self.files():
            try:
                rb = self.service.load(file)
            except ValidationError as e:
                out.append(RunbookEntry(file.stem, file, issues=[i.as_dict() for i in e.issues]))
                continue
            params = {p.name: {"type": p.type, "required": p.required, "default": p.default, "help": p.help,
                               "choices": list(p.choices) or None} for p in rb.params.values()}
            out.append(RunbookEntry(rb.name, file, rb.description, params))
        return out

    def path(self, ref: str) -> Path:
        """The file of a runbook named ``ref`` (its ``name:`` or its file stem)."""
        files = self.files()
        for file in files:
            if file.stem == ref:
                return file
        for entry in self.entries():
            if entry.name == ref and entry.issues is None:
                return entry.file
        known = ", ".join(sorted({f.stem for f in files})) or "none"
        raise RunbookNotFound(f"no runbook '{ref}' in {self.directory}: known runbooks are {known}")


def audit_query(service: Service, *, limit: int = 100, action: str | None = None, who: str | None = None,
                source: str | None = None, run: str | None = None, since: float | None = None) -> list[dict[str, str]]:
    """Audit entries, newest first, filtered. Scans at most AUDIT_SCAN_LIMIT entries."""
    out = []
    for entry in service.store.audit_log(count=AUDIT_SCAN_LIMIT):
        if since is not None and float(entry.get("t", 0)) < since:
            break
        if action and entry.get("action") != action:
            continue
        if who and entry.get("who") != who:
            continue
        if source and entry.get("source") != source:
            continue
        if run and entry.get("run") != run:
            continue
        out.append(entry)
        if len(out) >= limit:
            break
    return out


def active_runs(service: Service) -> list[dict[str, Any]]:
    """Every pending, running or waiting run (each status scanned fully, newest first)."""
    out: list[dict[str, Any]] = []
    for status in ACTIVE:
        out.extend(service.runs(limit=100_000, status=status))
    return out


def lock_conflict(service: Service, locks: Iterable[Any]) -> tuple[str, list[str]] | None:
    """(lock, holding run ids) when a run taking ``locks`` would be refused or made to wait, else None."""
    return service.store.lock_conflict([lk if isinstance(lk, dict) else {"name": str(lk)} for lk in locks])


def once(service: Service, key: str, ttl: int) -> bool:
    """True the first time ``key`` is seen within ``ttl`` seconds (shared by every process)."""
    return service.store.once(hashlib.sha256(key.encode()).hexdigest(), ttl)


def list_actions(registry: ActionRegistry) -> list[dict[str, Any]]:
    return [{"name": s.name, "summary": s.summary, "doc": s.doc, "destructive": s.destructive, "polling": s.polling,
             "params": {p.name: {"type": p.type_name, "required": p.required,
                                 "default": p.default if _plain(p.default) else repr(p.default)}
                        for p in s.params.values()}}
            for s in registry]


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def list_inventory(inventory: Any, **filters: str | None) -> list[dict[str, Any]]:
    if inventory is None:
        raise HotswapError("no inventory configured: set HOTSWAP_INVENTORY=path/to/inventory.yaml")
    hosts = inventory.select(**filters)
    table = inventory.as_dict()["hosts"]
    return [table[h.name] | {"name": h.name} for h in hosts]
