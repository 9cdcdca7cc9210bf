"""Run the benchmark: ``python -m bench [--sizes 100,1000] [--quick] ...``; prints a table, writes results.md."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.dyrygent_worker import QUEUE as DYRYGENT_QUEUE
from bench.procs import ROOT, PeakMemory, RedisServer, Worker, clean, traffic_bytes
from bench.report import Row, Sample
from bench.runbooks import SHAPES, Generated, generate
from engine.celery_app import QUICK_QUEUE
from engine.config import redis_client
from engine.keys import Keys

MIB = 1024 * 1024
CAP_GRACE = 3.0
"""A client is killed this long after its cap (it stops polling at the cap by itself)."""
BIG = 10_000
"""Sizes from here on run once whatever --repeats says (to keep the full run near 10 minutes)."""


@dataclass
class Options:
    sizes: list[int]
    shapes: list[str]
    contenders: list[str]
    repeats: int
    cap: float
    ceiling_tasks: int
    output: Path | None
    keep: bool
    command: str


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--sizes", default="100,1000,10000", help="approximate steps per runbook (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="sizes 100,1000, 3,000 ceiling tasks, 60 s cap")
    p.add_argument("--shapes", default="A,B", help="A = chain of 10-wide chords, B = one wide fan-out + join")
    p.add_argument("--contenders", default="hotswap,canvas,dyrygent")
    p.add_argument("--repeats", type=int, default=1, help=f"runs per contender below {BIG:,} steps (median shown)")
    p.add_argument("--cap", type=float, default=120.0, help="time cap per run in seconds (default %(default)s)")
    p.add_argument("--ceiling-tasks", type=int, default=10_000)
    p.add_argument("--output", default=str(ROOT / "bench" / "results.md"), help="where to write the table")
    p.add_argument("--no-write", action="store_true", help="print only; do not write results.md")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (runbooks, worker and Redis logs)")
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.quick:
        sizes, a.ceiling_tasks, a.cap = [s for s in sizes if s < BIG] or [100, 1000], 3000, min(a.cap, 60.0)
    contenders = [c for c in a.contenders.split(",") if c]
    unknown = set(contenders) - {"hotswap", "canvas", "dyrygent"}
    shapes = [s for s in a.shapes.split(",") if s]
    if unknown or set(shapes) - set(SHAPES):
        p.error(f"unknown contender or shape: {sorted(unknown | (set(shapes) - set(SHAPES)))}")
    return Options(sizes, shapes, contenders, max(1, a.repeats), a.cap, a.ceiling_tasks,
                   None if a.no_write else Path(a.output), a.keep, "python -m bench " + shlex.join(argv))


def progress(t0: float, message: str) -> None:
    print(f"[{time.monotonic() - t0:6.0f}s] {message}", file=sys.stderr, flush=True)


def client(spec: dict[str, Any], timeout: float, peaks: PeakMemory) -> dict[str, Any]:
    """Run one client process, killed after ``timeout`` s; its last JSON line, or what it said before the kill
    (``killed`` set). ``peaks`` samples its memory meanwhile."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.client", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks.pids = lambda: [proc.pid] if proc.poll() is None else []
    killed = False
    with peaks:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            killed = True
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    out: dict[str, Any] = {k: v for line in lines for k, v in line.items()}
    if killed:
        out["killed"] = True
    elif proc.returncode != 0:
        print(stderr[-3000:], file=sys.stderr)
        out["error"] = (stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])[0][:80]
    return out


class Bench:
    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts, self.tmp = opts, tmp
        self.t0 = time.monotonic()
        self.redis = RedisServer(tmp / "redis").start()
        self.r = redis_client(self.redis.url)
        self.keys = Keys()
        self.rows: list[Row] = []
        self.ceiling: float | None = None
        self.started: list[Worker] = []

    def start(self, worker: Worker) -> Worker:
        self.started.append(worker)
        return worker.start()

    def hotswap_worker(self) -> Worker:
        return Worker("hotswap-worker", ["-m", "engine.cli", "worker", "--concurrency", "2"], self.redis.url,
                      self.tmp / "home", QUICK_QUEUE)

    def dyrygent_worker(self) -> Worker:
        return Worker("dyrygent-worker", ["-m", "bench.dyrygent_worker", "--concurrency", "2"], self.redis.url,
                      self.tmp / "home", DYRYGENT_QUEUE)

    # ---- one measurement ------------------------------------------------------------------------
    def measure(self, worker: Worker, spec: dict[str, Any], steps: int) -> tuple[Sample, Worker]:
        clean(self.r)
        before = traffic_bytes(self.r)
        cap = float(spec["cap"])
        client_peak = PeakMemory(lambda: [])
        with PeakMemory(worker.pids) as peaks:
            out = client({**spec, "url": self.redis.url}, cap + CAP_GRACE, client_peak)
        redis_mib = (traffic_bytes(self.r) - before) / MIB
        run_id = out.get("run_id") or out.get("launched")
        client_mib = max(client_peak.mib, out.get("maxrss_kib", 0) / 1024)
        note = ""
        if out.get("killed"):
            note = "launch had not returned" if "launched" not in out else "killed at the cap"
        finished = out.get("status") == "succeeded"
        if spec["mode"] == "ceiling":
            raw: Any = self.r.get(spec["counter"])
            count = int(out.get("count", raw or 0))
            sample = Sample(finished, out.get("wall_s", cap), steps, client_mib, peaks.mib,
                            redis_mib, count, max(0, count - steps), max(0, steps - count), out.get("error", ""), note)
        else:
            ran, dups, missing = self.exactly_once(run_id)
            sample = Sample(finished, out.get("wall_s", cap), steps, client_mib, peaks.mib,
                            redis_mib, ran, dups, missing, out.get("error", ""), note)
        if not finished:
            self.diagnose(worker, run_id)
            progress(self.t0, f"  {worker.name}: restarting after an unfinished run")
            worker.stop()
            clean(self.r)
            worker = self.start(Worker(worker.name, worker.argv, worker.redis_url, worker.home, worker.queue))
        return sample, worker

    def diagnose(self, worker: Worker, run_id: str | None) -> None:
        """Why a run did not finish: its step statuses, Celery result states, the worker log's tail."""
        if run_id is not None:
            statuses: Any = self.r.hvals(self.keys.statuses(run_id))
            progress(self.t0, f"  steps by status: {dict(Counter(_text(s) for s in statuses))}")
        states: Counter[str] = Counter()
        for key in self.r.scan_iter(match="celery-task-meta-*", count=2000):
            raw: Any = self.r.get(key)
            if raw:
                states[str(json.loads(raw).get("status"))] += 1
        progress(self.t0, f"  Celery result states: {dict(states)}")
        tail = worker.log.read_text(errors="replace").splitlines()[-15:]
        progress(self.t0, "  worker log tail:\n    " + "\n    ".join(tail))

    def exactly_once(self, run_id: str | None) -> tuple[int, int, int]:
        """(steps claimed at least once, steps claimed more than once, steps never claimed)."""
        if run_id is None:
            newest: Any = self.r.zrevrange(self.keys.runs, 0, 0)
            if not newest:
                return 0, 0, 0
            run_id = _text(newest[0])
        claims: Counter[str] = Counter()
        key, after = self.keys.events(run_id), "-"
        while True:
            page: Any = self.r.xrange(key, min=after, count=10_000)
            if not page:
                break
            for _eid, fields in page:
                if fields.get(b"type") == b"step" and fields.get(b"status") == b"running":
                    claims[_text(fields[b"step"])] += 1
            after = "(" + _text(page[-1][0])
        keys: Any = self.r.hkeys(self.keys.statuses(run_id))
        all_steps = {_text(k) for k in keys}
        return len(claims), sum(1 for c in claims.values() if c > 1), len(all_steps - set(claims))

    def repeat(self, row: Row, worker: Worker, spec: dict[str, Any]) -> Worker:
        times = 1 if row.steps >= BIG else self.opts.repeats
        for _ in range(times):
            sample, worker = self.measure(worker, spec, row.steps)
            row.samples.append(sample)
            what = f"{sample.wall_s:.1f} s" if sample.finished else f"unfinished ({sample.ran:,} ran)"
            progress(self.t0, f"{row.shape} {row.steps:,} {row.contender}: {what}")
        return worker

    # ---- the whole run --------------------------------------------------------------------------
    def run(self) -> None:
        o = self.opts
        books = [generate(shape, size, self.tmp) for shape in o.shapes for size in o.sizes]
        plans = {b.path: self.plan_time(b) for b in books}
        worker = self.start(self.hotswap_worker())
        progress(self.t0, f"worker up (pids {worker.pids()})")
        try:
            ceiling = Row("-", o.ceiling_tasks, "ceiling", o.cap)
            worker = self.repeat(ceiling, worker, {"mode": "ceiling", "n": o.ceiling_tasks, "counter": "bench:noop",
                                                   "cap": o.cap})
            self.rows.append(ceiling)
            if ceiling.finished:
                self.ceiling = o.ceiling_tasks / ceiling.median("wall_s")
            for contender in ("hotswap", "canvas"):
                if contender in o.contenders:
                    worker = self.launches(books, plans, contender, worker)
        finally:
            worker.stop()
        if "dyrygent" in o.contenders:
            worker = self.start(self.dyrygent_worker())
            try:
                worker = self.launches(books, plans, "dyrygent", worker)
            finally:
                worker.stop()

    def launches(self, books: list[Generated], plans: dict[Path, float], contender: str, worker: Worker) -> Worker:
        for book in books:
            row = Row(book.shape, book.steps, contender, self.opts.cap, plans[book.path])
            spec = {"mode": "launch", "executor": contender, "path": str(book.path), "cap": self.opts.cap}
            worker = self.repeat(row, worker, spec)
            self.rows.append(row)
        return worker

    def plan_time(self, book: Generated) -> float:
        out = client({"mode": "plan", "path": str(book.path), "repeats": 3}, 600, PeakMemory(lambda: []))
        if "error" in out or "killed" in out:
            raise RuntimeError(f"planning {book.path} failed: {out}")
        total = statistics.median(float(a) + float(b) for a, b in zip(out["load_s"], out["build_s"], strict=True))
        progress(self.t0, f"plan {book.shape} {book.steps:,}: {total:.2f} s (load {statistics.median(out['load_s']):.2f}"
                          f" + build {statistics.median(out['build_s']):.2f}), peak {out['maxrss_kib'] / 1024:.0f} MiB")
        return total

    def close(self) -> None:
        for worker in self.started:
            worker.stop()
        self.redis.stop()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def order(rows: list[Row]) -> list[Row]:
    rank = {"ceiling": 0, "hotswap": 1, "canvas": 2, "dyrygent": 3}
    return sorted(rows, key=lambda r: (r.shape != "-", r.shape, r.steps, rank[r.contender]))


def notes(o: Options) -> list[str]:
    big = [s for s in o.sizes if s >= BIG]
    return [
        "- One redis-server (no persistence, 127.0.0.1) and one `hotswap worker --concurrency 2` (Celery prefork, "
        "prefetch 1) for the ceiling, hotswap and native canvas; the client runs in its own process. Redis is "
        "cleaned (all keys but kombu's bindings) before every run; a worker that ran an unfinished run is restarted.",
        "- celery-dyrygent 0.8.0 runs on its own worker (`bench/dyrygent_worker.py`: hotswap's Celery app with "
        "dyrygent's processor task, same concurrency, own queue; the hotswap worker is stopped meanwhile). Its "
        "processor tick is forced to 0.1 s by overriding `Workflow.get_retry_countdown` (default: 2 s after an "
        "active tick, 10-30 s otherwise).",
        "- native canvas and dyrygent run the plan compiled by `engine.canvas.compile_canvas`; every step, in all "
        "three, is executed by hotswap's executor (claim, render, core.echo logs one line, complete).",
        "- ceiling: `noop.delay()` x N from one client; time from the first publish until the worker's INCR counter "
        "reaches N.",
        "- plan s: load_runbook + resolve_params + build_plan, median of 3, in a separate process. client MiB: peak "
        "RSS of the launching client process (launch + status polling; sampled VmHWM and its own ru_maxrss). wall s: from calling Service.launch until the run "
        "is seen succeeded. worker MiB: summed VmHWM of the worker's main and pool processes during the run. "
        "Redis traffic: bytes in + out of redis-server during the run. exactly-once: every step has exactly one "
        "'running' claim event in the run's event stream.",
        f"- time cap per run: {o.cap:g} s from calling Service.launch (the client is killed {CAP_GRACE:g} s later); "
        "'launch had not returned' means Service.launch (planning, compile_canvas, publishing) was still running at "
        f"the cap. Runs per contender: {o.repeats} below {BIG:,} steps"
        + (f", 1 at {', '.join(f'{s:,}' for s in big)} steps" if big else "")
        + " (medians shown when more than 1). Runs vary by ±20-30 % on this machine, more when other work shares it "
        "(see the load average above).",
    ]


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="hotswap-bench-"))
    bench = Bench(opts, tmp)
    try:
        bench.run()
        redis_version = bench.redis.version()
    finally:
        bench.close()
        if opts.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    rows = order(bench.rows)
    table = report.table(rows, bench.ceiling)
    goals = report.targets(rows, bench.ceiling)
    print("\n".join(["", *table, "", "Targets:", *goals, "", *notes(opts)]))
    if opts.output is not None:
        machine = [*report.machine(redis_version),
                   f"- 1-minute load average before / after the run: {load_before:.1f} / {load_after:.1f}"]
        report.write_results(opts.output, opts.command, machine, notes(opts), table, goals)
        print(f"\nwritten to {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
