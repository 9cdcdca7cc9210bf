"""A thread sampling every PG's state and acting set about once a second during a run.

It reads ``ceph pg dump pgs_brief`` (the mgr's view, refreshed every ``mgr_stats_period``: 1 s in the
lab), so a state that lasts less than about a second can be missed: the sampler proves properties of
what the mgr reported, at that resolution, not of every instant.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lab import Lab, LabError

CRUSH_ITEM_NONE = 2**31 - 1
"""An EC PG's missing shard in an acting set (replicated PGs just list fewer OSDs)."""
BAD_COMPONENTS = frozenset({"down", "incomplete", "stale", "unknown", "inconsistent", "recovery_unfound",
                            "backfill_unfound"})


@dataclass(frozen=True)
class Sample:
    at: float
    total: int
    inactive: dict[str, str]
    """pgid -> state for PGs whose state lacks ``active``."""
    below_min_size: dict[str, list[int]]
    """pgid -> acting set, for PGs with fewer acting OSDs than their pool's min_size."""
    undersized: int
    degraded: int
    bad: dict[str, str]
    min_acting: int
    states: Counter[str]


@dataclass
class Findings:
    samples: int = 0
    errors: int = 0
    seconds: float = 0.0
    max_gap: float = 0.0
    inactive_samples: int = 0
    inactive_pgs: dict[str, set[str]] = field(default_factory=dict)
    """pgid -> every inactive state it was seen in."""
    below_min_size_samples: int = 0
    bad_samples: int = 0
    max_undersized: int = 0
    max_degraded: int = 0
    min_acting: int = 99
    states: set[str] = field(default_factory=set)
    longest_inactive: float = 0.0
    """Longest time one PG was seen inactive: from the first to the last of consecutive inactive samples."""

    def describe(self) -> str:
        inactive = ", ".join(f"{pg}: {'/'.join(sorted(s))}" for pg, s in sorted(self.inactive_pgs.items())) or "none"
        return (f"{self.samples} samples over {self.seconds:.0f} s (largest gap {self.max_gap:.1f} s, "
                f"{self.errors} failed reads); min acting replicas {self.min_acting}; samples with a PG below "
                f"min_size: {self.below_min_size_samples}; with down/incomplete/stale/unknown PGs: "
                f"{self.bad_samples}; with an inactive PG: {self.inactive_samples} ({inactive}); longest a PG stayed "
                f"inactive across consecutive samples: {self.longest_inactive:.1f} s; max "
                f"undersized {self.max_undersized}, max degraded {self.max_degraded}; states seen: "
                f"{', '.join(sorted(self.states))}")


def parse(doc: Any, min_size: dict[int, int], at: float) -> Sample:
    rows = doc.get("pg_stats") if isinstance(doc, dict) else doc
    rows = rows or []
    inactive: dict[str, str] = {}
    below: dict[str, list[int]] = {}
    bad: dict[str, str] = {}
    states: Counter[str] = Counter()
    undersized = degraded = 0
    min_acting = 99
    for row in rows:
        pgid, state = str(row["pgid"]), str(row["state"])
        parts = set(state.split("+"))
        acting = [int(o) for o in row.get("acting") or [] if 0 <= int(o) < CRUSH_ITEM_NONE]
        states[state] += 1
        min_acting = min(min_acting, len(acting))
        if "active" not in parts:
            inactive[pgid] = state
        if len(acting) < min_size.get(int(pgid.split(".")[0]), 1):
            below[pgid] = acting
        if parts & BAD_COMPONENTS:
            bad[pgid] = state
        undersized += "undersized" in parts
        degraded += "degraded" in parts
    return Sample(at, len(rows), inactive, below, undersized, degraded, bad, min_acting, states)


class PgSampler:
    """``with PgSampler(lab) as sampler: ...`` then ``sampler.findings``."""

    def __init__(self, lab: Lab, interval: float = 1.0) -> None:
        self.lab = lab
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pg-sampler", daemon=True)
        pools = lab.ceph_json("osd", "pool", "ls", "detail")
        self.min_size = {int(p["pool_id"]): int(p["min_size"]) for p in pools}

    def __enter__(self) -> PgSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                doc = self.lab.ceph_json("pg", "dump", "pgs_brief", timeout=20)
                self.samples.append(parse(doc, self.min_size, time.time()))
            except (LabError, ValueError, KeyError) as exc:
                self.errors.append(str(exc))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    @property
    def findings(self) -> Findings:
        f = Findings(samples=len(self.samples), errors=len(self.errors))
        if self.samples:
            f.seconds = self.samples[-1].at - self.samples[0].at
            f.max_gap = max((b.at - a.at for a, b in zip(self.samples, self.samples[1:], strict=False)), default=0.0)
        since: dict[str, float] = {}
        for s in self.samples:
            since = {pg: since.get(pg, s.at) for pg in s.inactive}
            f.longest_inactive = max([f.longest_inactive, *(s.at - t for t in since.values())])
            if s.inactive:
                f.inactive_samples += 1
                for pg, state in s.inactive.items():
                    f.inactive_pgs.setdefault(pg, set()).add(state)
            f.below_min_size_samples += bool(s.below_min_size)
            f.bad_samples += bool(s.bad)
            f.max_undersized = max(f.max_undersized, s.undersized)
            f.max_degraded = max(f.max_degraded, s.degraded)
            f.min_acting = min(f.min_acting, s.min_acting)
            f.states.update(s.states)
        return f
