"""The command line, the alternation and the table (the design is in the package docstring)."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ROOT, HotswapWorker, RedisServer
from bench.replace.bare import BareResult, BareShell, describe, script_from
from bench.replace.hotswap import Hotswap
from bench.replace.recording import Recording
from bench.replace.state import settle_and_check, snapshot
from lab import Lab

TARGET = 1.2
RUNBOOK = ROOT / "runbooks" / "replace-node.yaml"
RUN_TIMEOUT = 3600.0


@dataclass
class Repetition:
    hotswap: Recording
    bare: BareResult
    checks: BareResult | None

    @property
    def ratio(self) -> float:
        return self.hotswap.wall / self.bare.wall


@dataclass
class Report:
    params: dict[str, Any]
    reps: list[Repetition] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    recovery_sleep: float | None = None

    @property
    def median_ratio(self) -> float:
        return statistics.median(r.ratio for r in self.reps)

    @property
    def met(self) -> bool:
        return self.median_ratio <= TARGET


def parse(argv: list[str] | None) -> argparse.Namespace:
    doc = (__import__("bench.replace", fromlist=["__doc__"]).__doc__ or "").split("\n\n")[0]
    ap = argparse.ArgumentParser(prog="python -m bench.replace", description=doc)
    ap.add_argument("--node", default="node3", help="the lab host to replace (default node3)")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of each contender (median reported)")
    ap.add_argument("--quick", action="store_true", help="one repetition of each, for a correctness check")
    ap.add_argument("--no-checks", action="store_true", help="skip the 'bare with the same checks' contender")
    ap.add_argument("--reuse", action="store_true", help="use the lab already up in $HOTSWAP_LAB_DIR, leave it up")
    ap.add_argument("--lab-dir", help="where to bring the lab up (default: a new temp dir under /tmp)")
    ap.add_argument("--recovery-sleep", type=float, metavar="S",
                    help="osd_recovery_sleep for the whole bench (both contenders; put back at the end): data "
                         "movement that takes longer, as on a cluster with real disks")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a runbook parameter for hotswap (the bare script follows what the run did)")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.repeats = 1
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    if opts.reuse:
        if not os.environ.get("HOTSWAP_LAB_DIR"):
            raise SystemExit("--reuse needs $HOTSWAP_LAB_DIR (eval \"$(python -m lab env --dir DIR)\")")
        lab = Lab(os.environ["HOTSWAP_LAB_DIR"])
    else:
        lab = Lab(opts.lab_dir or tempfile.mkdtemp(prefix="hs-bench-", dir="/tmp"))
        print(f"bringing the lab up in {lab.root} ...", flush=True)
        t = time.monotonic()
        lab.up()
        print(f"lab up in {time.monotonic() - t:.0f}s", flush=True)
    try:
        params = dict(p.split("=", 1) for p in opts.param)
        with recovery_sleep(lab, opts.recovery_sleep):
            report = measure(lab, opts.node, opts.repeats, not opts.no_checks, params, print_progress=True)
        report.recovery_sleep = opts.recovery_sleep
    finally:
        if not opts.reuse:
            lab.down()
    print_report(report)
    return 0 if report.met else 1


@contextlib.contextmanager
def recovery_sleep(lab: Lab, seconds: float | None) -> Iterator[None]:
    if seconds is None:
        yield
        return
    previous = next((e["value"] for e in lab.ceph_json("config", "dump")
                     if e["section"] == "osd" and e["name"] == "osd_recovery_sleep"), None)
    lab.ceph("config", "set", "osd", "osd_recovery_sleep", f"{seconds:g}")
    try:
        yield
    finally:
        if previous is None:
            lab.ceph("config", "rm", "osd", "osd_recovery_sleep")
        else:
            lab.ceph("config", "set", "osd", "osd_recovery_sleep", previous)


def measure(lab: Lab, node: str, repeats: int, checks: bool, extra: dict[str, str] | None = None,
            print_progress: bool = False) -> Report:
    """Alternate hotswap, bare (and bare with checks) ``repeats`` times on ``lab``; every contender must
    leave the lab as it found it. Starts and stops its own redis-server and ``hotswap worker``."""
    say = print if print_progress else (lambda *a, **k: None)
    params: dict[str, Any] = {"cluster": "lab", "node": node, "reason": "bench", **(extra or {})}
    report = Report(params)
    with tempfile.TemporaryDirectory(prefix="hs-bench-replace-") as tmp_name:
        tmp = Path(tmp_name)
        server = RedisServer(tmp / "redis").start()
        worker = HotswapWorker(server.url, tmp / "worker", concurrency=2,
                               env={"HOTSWAP_INVENTORY": str(lab.inventory_path)})
        try:
            worker.start()
            engine = Hotswap(lab, server.url, RUNBOOK)
            cluster = engine.inventory.cluster("lab")
            hosts = {h: lab.ssh_port(h) for h in engine.inventory.hosts}
            with BareShell(hosts, lab.user, lab.client_key_path, lab.known_hosts_path, cluster.ceph,
                           cluster.admin_host) as shell:
                lab.wait_settled(timeout=300)
                before = snapshot(lab)
                for i in range(repeats):
                    say(f"[{i + 1}/{repeats}] hotswap replace-node {node} ...", flush=True)
                    rec = engine.replace(params, RUN_TIMEOUT)
                    say(f"  hotswap {rec.wall:.1f}s (run {rec.run_id})", flush=True)
                    settle_and_check(lab, before, f"hotswap run {rec.run_id}")
                    bare = _bare(shell, rec, False, lab, before, say)
                    with_checks = _bare(shell, rec, True, lab, before, say) if checks else None
                    report.reps.append(Repetition(rec, bare, with_checks))
                    if not report.script:
                        report.script = describe(script_from(rec, with_checks=False))
        finally:
            worker.stop()
            server.stop()
    return report


def _bare(shell: BareShell, rec: Recording, with_checks: bool, lab: Lab, before: dict[str, Any],
          say: Any) -> BareResult:
    name = "bare + checks" if with_checks else "bare"
    items = script_from(rec, with_checks=with_checks)
    result = shell.play(items, RUN_TIMEOUT)
    say(f"  {name} {result.wall:.1f}s ({result.commands} commands, {result.waits} waits)", flush=True)
    settle_and_check(lab, before, f"the {name} script")
    return result


def print_steps(rec: Recording) -> None:
    """Where the first hotswap run's time went, step by step."""
    print(f"\nhotswap run {rec.run_id}, step by step (s; 'reads' are ceph/lab-osd reads, with their time):")
    print(f"  {'step':<24} {'in action':>9} {'parked':>7} {'reads':>12} {'mutations':>9}")
    total = {"actions": 0.0, "waiting": 0.0, "gate": 0.0, "reads": 0, "read_s": 0.0, "mutations": 0}
    for row in rec.per_step():
        for key in total:
            total[key] += row[key]
        print(f"  {row['step']:<24} {row['actions']:>9.1f} {row['waiting'] + row['gate']:>7.1f} "
              f"{row['reads']:>4} ({row['read_s']:>5.1f}) {row['mutations']:>9}")
    print(f"  {'total':<24} {total['actions']:>9.1f} {total['waiting'] + total['gate']:>7.1f} "
          f"{total['reads']:>4} ({total['read_s']:>5.1f}) {total['mutations']:>9}")


def _med(values: list[float]) -> float:
    return statistics.median(values)


def print_report(report: Report) -> None:
    reps = report.reps
    checks = all(r.checks is not None for r in reps)
    head = ["rep", "hotswap s", "bare s", "hotswap / bare"]
    if checks:
        head += ["bare + checks s", "hotswap / bare+checks"]
    head += ["hotswap: engine s", "waiting s", "actions s", "gate s", "bare: waiting s", "commands h / b / b+c"]
    rows: list[list[str]] = []

    def row(label: str, hs: float, bare: float, chk: float | None, parts: dict[str, float], bwait: float,
            counts: str) -> list[str]:
        cells = [label, f"{hs:.1f}", f"{bare:.1f}", f"{hs / bare:.2f}x"]
        if chk is not None:
            cells += [f"{chk:.1f}", f"{hs / chk:.2f}x"]
        cells += [f"{parts['engine']:.1f}", f"{parts['waiting']:.1f}", f"{parts['actions']:.1f}",
                  f"{parts['gate']:.1f}", f"{bwait:.1f}", counts]
        return cells

    for i, r in enumerate(reps, 1):
        c = r.checks
        counts = f"{len(r.hotswap.commands)} / {r.bare.commands}" + (f" / {c.commands}" if c else "")
        rows.append(row(str(i), r.hotswap.wall, r.bare.wall, c.wall if c else None, r.hotswap.breakdown(),
                        r.bare.waiting, counts))
    parts = {k: _med([r.hotswap.breakdown()[k] for r in reps]) for k in ("engine", "waiting", "actions", "gate")}
    med = row("median", _med([r.hotswap.wall for r in reps]), _med([r.bare.wall for r in reps]),
              _med([r.checks.wall for r in reps if r.checks]) if checks else None, parts,
              _med([r.bare.waiting for r in reps]), "")
    med[3] = f"{report.median_ratio:.2f}x"  # the median of the ratios, each measured side by side
    if checks:
        med[5] = f"{_med([r.hotswap.wall / r.checks.wall for r in reps if r.checks]):.2f}x"
    rows.append(med)
    print_steps(reps[0].hotswap)
    for name, result in (("bare", reps[0].bare), ("bare + checks", reps[0].checks)):
        if result is not None and result.timed:
            spent = sum(s for s, _ in result.timed)
            print(f"\n{name}, first repetition: {len(result.timed)} commands took {spent:.1f}s "
                  f"(mean {spent / len(result.timed):.2f}s), until-clean waits {result.waiting:.1f}s; slowest:")
            print("\n".join(f"  {s:5.1f}s {line}" for s, line in result.slowest(5)))
    print("\nthe bare sequence (from the first hotswap run; hotswap's own polls replaced by until-clean waits):")
    print("\n".join(report.script))
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    shown = " ".join(f"-p {k}={v}" for k, v in report.params.items())
    sleep = f"; osd_recovery_sleep {report.recovery_sleep:g}" if report.recovery_sleep is not None else ""
    print(f"\nreplace-node {shown}{sleep}; {len(reps)} repetition(s), alternating; load average "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    verdict = "met" if report.met else "NOT met"
    print(f"target: hotswap within {TARGET:g}x of the bare sequence (median of the ratios): {verdict} "
          f"({report.median_ratio:.2f}x)")
