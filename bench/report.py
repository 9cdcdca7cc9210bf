"""Rows, the table, the targets from the issue, and results.md."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.runbooks import SHAPES

CONTENDER_NAMES = {
    "ceiling": "plain Celery noop.delay() (ceiling)",
    "hotswap": "hotswap",
    "canvas": "native canvas",
    "dyrygent": "celery-dyrygent (tick 0.1 s)",
}


@dataclass
class Sample:
    """One measurement of one contender."""

    finished: bool
    wall_s: float
    steps: int
    client_mib: float
    worker_mib: float
    redis_mib: float
    ran: int
    duplicates: int
    missing: int
    error: str = ""
    note: str = ""


@dataclass
class Row:
    shape: str
    steps: int
    contender: str
    cap: float
    plan_s: float | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.samples) and all(s.finished for s in self.samples)

    def median(self, attr: str) -> float:
        return statistics.median(float(getattr(s, attr)) for s in self.samples)

    @property
    def steps_per_s(self) -> float | None:
        return self.steps / self.median("wall_s") if self.finished else None

    def exactly_once(self) -> str:
        dups = max(s.duplicates for s in self.samples)
        if self.contender == "ceiling":
            return "count = N" if self.finished and dups == 0 else f"count {self.samples[-1].ran:,}"
        if self.finished:
            missing = max(s.missing for s in self.samples)
            if dups == 0 and missing == 0:
                return "yes"
            return f"NO: {dups} duplicated, {missing} not run"
        last = self.samples[-1]
        note = f" ({last.note})" if last.note else ""
        return f"ran {last.ran:,}/{self.steps:,}, {dups} duplicated{note}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


HEADER = ["shape", "steps", "contender", "plan s", "client MiB", "wall s", "steps/s", "% of ceiling",
          "worker MiB", "Redis traffic MiB", "exactly-once"]


def table(rows: Sequence[Row], ceiling: float | None) -> list[str]:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        if row.finished:
            wall = _num(row.median("wall_s"))
        elif row.samples and row.samples[-1].error:
            wall = f"error: {row.samples[-1].error}"
        else:
            wall = f"did not finish in {row.cap:g} s"
        rate = row.steps_per_s
        pct = f"{100 * rate / ceiling:.0f} %" if rate is not None and ceiling else "-"
        shape = f"{row.shape} {SHAPES[row.shape]}" if row.shape in SHAPES else "-"
        cells = [shape, f"{row.steps:,}", CONTENDER_NAMES[row.contender], _num(row.plan_s, 2),
                 _num(row.median("client_mib"), 0), wall, _num(rate, 0), pct, _num(row.median("worker_mib"), 0),
                 _num(row.median("redis_mib"), 0), row.exactly_once()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(rows: Sequence[Row], ceiling: float | None) -> list[str]:
    """The issue's targets, each marked met / NOT met / not measured."""
    out: list[str] = []

    def find(shape: str, contender: str) -> list[Row]:
        return sorted((r for r in rows if r.shape == shape and r.contender == contender), key=lambda r: r.steps)

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    big = 9_000
    for shape in ("A", "B"):
        hot = [r for r in find(shape, "hotswap") if r.steps >= big]
        if not hot or ceiling is None:
            out.append(f"- hotswap at 10,000 steps >= 50 % of the ceiling, shape {shape}: not measured")
            continue
        r = hot[-1]
        rate = r.steps_per_s
        pct = 100 * rate / ceiling if rate else 0.0
        out.append(f"- hotswap at {r.steps:,} steps >= 50 % of the ceiling, shape {shape}: "
                   f"{mark(pct >= 50)} ({pct:.0f} %: {_num(rate, 0)} of {ceiling:,.0f} steps/s)")
    dyr = [r for r in find("A", "dyrygent") if r.finished]
    if dyr:
        d = dyr[-1]
        hot = [r for r in find("A", "hotswap") if r.steps == d.steps and r.finished]
        if hot and d.steps_per_s and hot[0].steps_per_s:
            ratio = hot[0].steps_per_s / d.steps_per_s
            out.append(f"- chain of chords, >= 10x celery-dyrygent at the largest size it finishes ({d.steps:,}): "
                       f"{mark(ratio >= 10)} ({ratio:.1f}x: {hot[0].steps_per_s:,.0f} vs {d.steps_per_s:,.0f} steps/s)")
        else:
            out.append("- chain of chords, >= 10x celery-dyrygent: hotswap did not finish at that size")
    else:
        out.append("- chain of chords, >= 10x celery-dyrygent: dyrygent finished no size (or was not run)")
    for shape in ("A", "B"):
        hot = [r for r in find(shape, "hotswap") if r.steps >= big]
        if not hot:
            out.append(f"- plan < 2 s and client < 150 MB at 10,000 steps, shape {shape}: not measured")
            continue
        r = hot[-1]
        plan_ok = r.plan_s is not None and r.plan_s < 2
        client = r.median("client_mib") * 1.048576  # MiB -> MB
        out.append(f"- plan < 2 s at {r.steps:,} steps, shape {shape}: {mark(plan_ok)} ({_num(r.plan_s, 2)} s); "
                   f"client < 150 MB: {mark(client < 150)} ({client:.0f} MB)")
    return out


def machine(redis_version: str) -> list[str]:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return [
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {mem_kib / 1024 / 1024:.1f} GiB memory, "
        f"Linux {platform.release()}",
        f"- versions: Python {platform.python_version()}, celery {version('celery')}, kombu {version('kombu')}, "
        f"redis-py {version('redis')}, Redis server {redis_version}, celery-dyrygent {version('celery-dyrygent')}",
    ]


def write_results(path: Path, command: str, machine_lines: list[str], notes: list[str], table_lines: list[str],
                  target_lines: list[str]) -> None:
    text = "\n".join([
        "# Benchmark results", "",
        f"`{command}`", "",
        *machine_lines, "",
        *table_lines, "",
        "Targets from the issue:", "",
        *target_lines, "",
        "Notes:", "",
        *notes, "",
    ])
    path.write_text(text)
