"""Client load during a scenario: start ``bin/lab-client-load`` against the lab, then read what it saw.

    load = clientload.start(lab)            # measures the idle p99 first (``idle_seconds``)
    with load.window("drain"):
        ...                                 # the scenario
    summary = load.stop()
    summary.errors, summary.p99_ms, summary.idle_p99_ms, summary.windows["drain"].p99_ms

The generator (lab/loadgen.py, run under /usr/bin/python3 for Debian's ``rados`` bindings) writes and
reads back 4 KiB objects at a modest steady rate on the replicated and the EC pool and records one JSON
line per second in ``DIR/log/client-load-*.jsonl``. Latencies are per op, wall-clock from issue to
completion; an op still blocked when the load stops is reported as ``stuck_ms`` (and by
``max_inflight_ms`` while it runs). ``lab down`` stops a generator that is still running.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.cluster import EC_POOL, POOL, SYSTEM_PYTHON
from lab.core import Lab
from lab.layout import LabError
from lab.procs import stop_pids, wait_until

DEFAULT_RATE = 10.0
"""Write+read pairs per second per pool: 40 ops/s over the two pools."""
READY_TIMEOUT = 60.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class WindowStats:
    """Client ops completed between two instants."""

    start: float
    end: float
    ops: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    max_inflight_ms: float
    """Age of the oldest op in flight at any per-second sample: a stall shows here before it completes."""
    min_ops_per_second: int
    """The fewest ops completed in one second of the window (0 = a second with no completed op)."""

    def describe(self) -> str:
        return (f"{self.ops} ops over {self.end - self.start:.0f} s, {self.errors} errors, p50 {self.p50_ms:.1f} ms, "
                f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms, longest in flight "
                f"{self.max_inflight_ms:.0f} ms, slowest second {self.min_ops_per_second} ops")


def window_stats(seconds: list[dict[str, Any]], start: float, end: float) -> WindowStats:
    """Stats of the per-second records whose second overlaps [start, end]."""
    rows = [r for r in seconds if r["t"] > start and r["t"] - 1.0 < end]
    lat = [v for r in rows for v in r["lat_ms"]]
    return WindowStats(
        start=start, end=end, ops=len(lat), errors=sum(r["errors"] for r in rows),
        p50_ms=percentile(lat, 0.50), p99_ms=percentile(lat, 0.99), max_ms=max(lat, default=0.0),
        max_inflight_ms=max((r["inflight_ms"] for r in rows), default=0.0),
        min_ops_per_second=min((r["ops"] for r in rows if r.get("span_s", 1.0) >= 0.9 and r["t"] - 1.0 >= start
                                and r["t"] <= end), default=0),
    )


@dataclass(frozen=True)
class LoadSummary:
    """What the client saw from ``start`` to ``stop``."""

    pools: list[str]
    overall: WindowStats
    idle: WindowStats
    windows: dict[str, WindowStats] = field(default_factory=dict)
    error_messages: list[str] = field(default_factory=list)
    stuck_ms: float = 0.0
    """Age of an op still in flight when the generator stopped (0 when none)."""
    path: Path | None = None

    @property
    def ops(self) -> int:
        return self.overall.ops

    @property
    def errors(self) -> int:
        return self.overall.errors

    @property
    def p99_ms(self) -> float:
        return self.overall.p99_ms

    @property
    def idle_p99_ms(self) -> float:
        return self.idle.p99_ms

    def describe(self) -> str:
        lines = [f"client load on {', '.join(self.pools)}: {self.overall.describe()}",
                 f"  idle: {self.idle.describe()}"]
        lines += [f"  {name}: {stats.describe()}" for name, stats in self.windows.items()]
        if self.error_messages:
            lines.append(f"  first errors: {'; '.join(self.error_messages[:5])}")
        if self.stuck_ms:
            lines.append(f"  an op was still in flight after {self.stuck_ms:.0f} ms when the load stopped")
        return "\n".join(lines)


class ClientLoad:
    """A running generator; see :func:`start`."""

    def __init__(self, lab: Lab, pools: list[str], rate: float, out: Path) -> None:
        self.lab = lab
        self.pools = pools
        self.rate = rate
        self.path = out
        self.marks: dict[str, list[float]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._summary: LoadSummary | None = None
        self.started_at = 0.0
        self.idle_until = 0.0

    def _launch(self) -> None:
        argv = [SYSTEM_PYTHON, str(self.lab.layout.client_load), "--conf", str(self.lab.conf_path),
                "--out", str(self.path), "--rate", f"{self.rate:g}"]
        for pool in self.pools:
            argv += ["--pool", pool]
        log = self.lab.layout.log / "client-load.log"
        with log.open("ab") as err:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                          start_new_session=True)
        wait_until(self._ready, READY_TIMEOUT, f"the client load generator to connect (see {log})", interval=0.2)

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise LabError(f"lab-client-load exited {self._proc.returncode} before connecting: see "
                           f"{self.lab.layout.log / 'client-load.log'}")
        return any("ready" in r for r in self.records())

    def records(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        rows = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
                rows.append(json.loads(line))
        return rows

    def seconds(self) -> list[dict[str, Any]]:
        """The per-second records so far."""
        return [r for r in self.records() if "t" in r]

    def mark(self, name: str) -> None:
        """Open window ``name`` now (close it with :meth:`end`)."""
        self.marks[name] = [time.time()]

    def end(self, name: str) -> None:
        self.marks[name].append(time.time())

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Time the block as window ``name`` of the summary."""
        self.mark(name)
        try:
            yield
        finally:
            self.end(name)

    def stats(self, start: float, end: float | None = None) -> WindowStats:
        """Stats between two ``time.time()`` instants, while the load runs or after."""
        return window_stats(self.seconds(), start, time.time() if end is None else end)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 60) -> LoadSummary:
        """Stop the generator (SIGTERM; it finishes the ops in flight) and summarize; idempotent."""
        if self._summary is not None:
            return self._summary
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_pids([self._proc.pid], 5)
                self._proc.wait(10)
        stopped = time.time()
        rows = self.seconds()
        last = rows[-1] if rows else {}
        messages = [m for r in rows for m in r.get("error_messages", [])]
        windows = {name: window_stats(rows, t[0], t[1] if len(t) > 1 else stopped) for name, t in self.marks.items()}
        self._summary = LoadSummary(
            pools=self.pools, overall=window_stats(rows, self.started_at, stopped),
            idle=window_stats(rows, self.started_at, self.idle_until), windows=windows,
            error_messages=messages, stuck_ms=float(last.get("inflight_ms", 0.0)), path=self.path,
        )
        return self._summary

    def __enter__(self) -> ClientLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(lab: Lab, *, pools: list[str] | None = None, rate: float = DEFAULT_RATE, idle_seconds: float = 5.0,
          out: Path | None = None) -> ClientLoad:
    """Start client load on ``pools`` (default: the replicated and the EC pool) and measure the idle
    latency for ``idle_seconds`` before returning, so the scenario that follows is compared to it."""
    if not lab.layout.client_load.exists():
        raise LabError(f"{lab.layout.client_load} is missing: the lab in {lab.root} predates the client load "
                       "generator; run 'python -m lab down' and 'python -m lab up'")
    path = out or lab.layout.log / f"client-load-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}.jsonl"
    load = ClientLoad(lab, pools or [POOL, EC_POOL], rate, path)
    load._launch()
    load.started_at = time.time()
    deadline = time.monotonic() + idle_seconds
    try:
        wait_until(lambda: time.monotonic() >= deadline and len(load.seconds()) >= 2, idle_seconds + 30,
                   "the idle client latency sample", interval=0.2)
    except BaseException:
        load.stop()
        raise
    load.idle_until = time.time()
    return load
