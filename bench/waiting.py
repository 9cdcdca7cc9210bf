"""Waiting at fleet scale: do thousands of parked runs starve quick work?

``python -m bench.waiting [--parked 5000] [--interval 10] [--repeats 3]`` starts its own redis-server and one
``hotswap worker --concurrency 2``, then measures, side by side in one run, the wall time of a 50-step chain
of ``core.echo``:

1. idle (nothing else on the worker);
2. with ``--parked`` runs parked in ``core.wait_until`` polling every ``--interval`` seconds (polls above
   what two processes can serve: they lag, and their lateness is reported from the claim events);
3. with as many runs waiting at approval gates (they cost nothing until decided).

It prints a table (medians of ``--repeats`` chains) and exits 1 when a target fails: chain with polls within
3x idle; chain with gates within 1.5x idle (no measurable slowdown beyond this machine's noise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import HotswapWorker, RedisServer

CHAIN_STEPS = 50
POLL_TARGET = 3.0
GATE_TARGET = 1.5


@dataclass
class Phase:
    name: str
    chains: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.chains)


def chain_runbook(directory: Path) -> Path:
    steps = "\n".join(f"  - id: s{i}\n    action: core.echo\n    with: {{message: step {i}}}" for i in range(CHAIN_STEPS))
    path = directory / "chain.yaml"
    path.write_text(f"name: chain\nsteps:\n{steps}\n")
    return path


def poll_runbook(directory: Path, interval: float) -> Path:
    path = directory / "poll.yaml"
    path.write_text(f"""name: parked-poll
steps:
  - id: wait
    action: core.wait_until
    timeout: 2h
    with: {{condition: "{{{{ false }}}}", interval: {interval}, reason: parked for the benchmark}}
""")
    return path


def gate_runbook(directory: Path) -> Path:
    path = directory / "gate.yaml"
    path.write_text("""name: parked-gate
steps:
  - id: gate
    action: core.approve
    with: {message: parked for the benchmark}
""")
    return path


class Client:
    def __init__(self, url: str) -> None:
        from engine.celery_app import make_app, runtime
        from engine.service import Identity, Service

        self.rt = runtime(make_app(url))
        self.store = self.rt.store
        self.service = Service(self.store, self.rt.executor.registry, self.rt.publish)
        self.who = Identity("bench", "cli")

    def launch(self, path: Path) -> str:
        return self.service.launch(path, {}, self.who)

    def wait(self, run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.store.run(run_id)
            if record["status"] in ("succeeded", "failed", "cancelled"):
                return record
            time.sleep(0.005)
        raise TimeoutError(f"run {run_id} did not finish in {timeout:.0f}s")

    def chain(self, path: Path, timeout: float = 300) -> float:
        t0 = time.perf_counter()
        run = self.launch(path)
        record = self.wait(run, timeout)
        if record["status"] != "succeeded":
            raise RuntimeError(f"chain run {run} ended {record['status']}: {record.get('reason')}")
        return time.perf_counter() - t0

    def waiting_count(self, runs: list[str], step: str) -> int:
        pipe = self.store.r.pipeline(transaction=False)
        for run in runs:
            pipe.hget(self.store.keys.statuses(run), step)
        return sum(1 for s in pipe.execute() if s == b"waiting")

    def lateness(self, runs: list[str], since: float) -> list[float]:
        late: list[float] = []
        for run in runs:
            for _, ev in self.store.events(run):
                if ev.get("late") and float(ev.get("t", 0)) >= since:
                    late.append(float(ev["late"]))
        return late


def park(client: Client, path: Path, step: str, n: int, progress: str) -> list[str]:
    runs = []
    t0 = time.monotonic()
    for i in range(n):
        runs.append(client.launch(path))
        if (i + 1) % 1000 == 0:
            print(f"  {progress}: launched {i + 1}/{n} ({time.monotonic() - t0:.0f}s)", flush=True)
    deadline = time.monotonic() + 600
    while client.waiting_count(runs, step) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {client.waiting_count(runs, step)} of {n} runs parked in 600s")
        time.sleep(0.5)
    print(f"  {progress}: all {n} parked after {time.monotonic() - t0:.0f}s", flush=True)
    return runs


def cancel(client: Client, runs: list[str]) -> None:
    """Cancel the parked runs and wait until the worker has consumed their messages still in the queues, so
    the next phase does not measure the leftovers of this one."""
    from engine.celery_app import POLL_QUEUE, QUICK_QUEUE

    for run in runs:
        client.store.cancel(run, "bench")
    deadline = time.monotonic() + 600
    while client.store.r.llen(POLL_QUEUE) + client.store.r.llen(QUICK_QUEUE):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not consume the cancelled runs' messages in 600s")
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.waiting", description=__doc__.split("\n\n")[0])
    ap.add_argument("--parked", type=int, default=5000, help="runs parked in each waiting phase")
    ap.add_argument("--interval", type=float, default=10.0, help="poll interval of the parked runs (s)")
    ap.add_argument("--repeats", type=int, default=3, help="chains per phase (the median is reported)")
    opts = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hotswap-bench-waiting-") as tmp_name:
        tmp = Path(tmp_name)
        server = RedisServer(tmp / "redis").start()
        os.environ["HOTSWAP_REDIS_URL"] = server.url
        worker = HotswapWorker(server.url, tmp / "worker", concurrency=2).start()
        try:
            return measure(Client(server.url), tmp, opts)
        finally:
            worker.stop()
            server.stop()


def measure(client: Client, tmp: Path, opts: argparse.Namespace) -> int:
    chain = chain_runbook(tmp)
    print(f"idle: {opts.repeats} chains of {CHAIN_STEPS} steps", flush=True)
    client.chain(chain)  # warm up the worker's processes
    idle = Phase("idle", [client.chain(chain) for _ in range(opts.repeats)])

    polls = park(client, poll_runbook(tmp, opts.interval), "wait", opts.parked, f"{opts.parked} polling runs")
    time.sleep(opts.interval)  # steady state: every parked run has polled again at least once (not a race)
    since = time.time()
    polled = Phase(f"{opts.parked:,} runs polling every {opts.interval:g}s",
                   [client.chain(chain) for _ in range(opts.repeats)])
    time.sleep(opts.interval)  # let the polls due during the chains be claimed, so their lateness is recorded
    late = client.lateness(polls, since)
    polled.note = (f"poll lateness p50 {percentile(late, 0.5):.1f}s, p95 {percentile(late, 0.95):.1f}s "
                   f"over {len(late):,} polls")
    cancel(client, polls)

    gates = park(client, gate_runbook(tmp), "gate", opts.parked, f"{opts.parked} gated runs")
    gated = Phase(f"{opts.parked:,} runs at approval gates", [client.chain(chain) for _ in range(opts.repeats)])
    cancel(client, gates)
    # idle again at the end: on a shared machine the baseline drifts; the median of both sets is the reference
    idle.chains += [client.chain(chain) for _ in range(opts.repeats)]

    rows = [("phase", f"{CHAIN_STEPS}-step chain, median s", "x idle", "target", "met", "note")]
    ok = True
    for phase, target in ((idle, None), (polled, POLL_TARGET), (gated, GATE_TARGET)):
        ratio = phase.median / idle.median
        met = target is None or ratio <= target
        ok = ok and met
        rows.append((phase.name, f"{phase.median:.2f} ({', '.join(f'{c:.2f}' for c in phase.chains)})",
                     f"{ratio:.1f}x", f"<= {target:g}x" if target else "-", "yes" if met else "NO", phase.note))
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
    print(f"\nload average {os.getloadavg()[0]:.1f}; one hotswap worker --concurrency 2; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
