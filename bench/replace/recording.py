"""What a finished hotswap run did, read back from its step logs and events: every remote command in
order (read-only or mutating, and whether it was a pure poll), where the run waited for the cluster, and
where its wall time went.

The step log has one ``HOST$ COMMAND`` line per remote command (actions/ssh.py), written just before it
starts. Whether a command changes something is read from the command itself (:func:`is_read_only`): the
log does not say, and the bench must not depend on how the actions are written.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

EXITED = re.compile(r"^(\S+): exited (-?\d+) after [\d.]+s$")

READ_ONLY_CEPH = (
    "status", "-s", "health", "df", "versions", "fsid", "quorum_status", "report", "time-sync-status",
    "pg stat", "pg dump", "pg ls", "pg ls-by-osd", "pg ls-by-pool", "pg ls-by-primary", "pg map", "pg query",
    "osd tree", "osd dump", "osd df", "osd stat", "osd ls", "osd metadata", "osd perf", "osd find", "osd map",
    "osd ok-to-stop", "osd safe-to-destroy", "osd getcrushmap", "osd versions", "osd utilization",
    "osd pool ls", "osd pool get", "osd pool stats", "osd pool autoscale-status",
    "osd crush rule dump", "osd crush rule ls", "osd crush tree", "osd crush dump", "osd crush ls",
    "osd crush class ls", "osd crush get-device-class", "osd crush show-tunables",
    "osd erasure-code-profile get", "osd erasure-code-profile ls", "osd blocklist ls",
    "config get", "config dump", "config show", "config log",
    "mon dump", "mon stat", "mon metadata", "mon ok-to-stop", "mon ok-to-add-offline", "mon ok-to-rm",
    "mgr dump", "mgr stat", "mgr metadata", "mgr services", "mgr versions",
    "device ls", "device ls-by-daemon", "device ls-by-host", "device info", "auth get", "auth ls",
)
"""``ceph`` subcommands that only read (the first words after the CLI's own options)."""


def ceph_words(argv: Sequence[str], prefix: Sequence[str]) -> list[str] | None:
    """The subcommand words of a ``ceph`` call (prefix, ``-f json`` and option values removed), or None
    when ``argv`` is not a call of the cluster's ``ceph`` prefix."""
    if list(argv[: len(prefix)]) != list(prefix):
        return None
    words: list[str] = []
    rest = list(argv[len(prefix):])
    while rest:
        word = rest.pop(0)
        if word in ("-f", "--format", "--connect-timeout", "-c", "--conf", "--cluster", "--id", "-n", "--name"):
            if rest:
                rest.pop(0)
        elif not word.startswith("--"):
            words.append(word)
    return words


def is_read_only(argv: Sequence[str], ceph_prefix: Sequence[str]) -> bool:
    """A command that changes nothing: a read-only ``ceph`` subcommand, ``lab-osd status``, a ``rados``
    latency probe (writes its own benchmark objects, removes them, and changes no cluster setting)."""
    words = ceph_words(argv, ceph_prefix)
    if words is not None:
        said = " ".join(words)
        return any(said == r or said.startswith(r + " ") for r in READ_ONLY_CEPH)
    if not argv:
        return True
    program = argv[0].rsplit("/", 1)[-1]
    if program == "lab-osd":
        return len(argv) > 1 and argv[1] == "status"
    return program == "rados" and "bench" in argv


@dataclass(frozen=True)
class Command:
    t: float
    step: str
    host: str
    line: str
    """The command line exactly as the step log shows it (``shlex.join`` of the argv)."""
    mutating: bool
    poll: bool
    """Ran in an invocation of its step that changed nothing and ended parked: a "not yet" poll."""
    exit_code: int = 0
    """Its exit status (the ``HOST: exited N after`` line that follows a failed command in the log)."""
    seconds: float = 0.0
    """Until the next command of its invocation started or the invocation ended: the command plus the
    action's own work on its output (parsing, deciding)."""

    @property
    def argv(self) -> list[str]:
        return _argv(self.line)


@dataclass
class Interval:
    step: str
    kind: str
    """``running`` (an action runs), ``poll`` (parked until its next look at the cluster), ``gate``
    (at an approval gate, undecided)."""
    start: float
    end: float


@dataclass
class Recording:
    """One finished run: commands, what each step was doing when, and the run's start and end."""

    run_id: str
    status: str
    started: float
    ended: float
    commands: list[Command] = field(default_factory=list)
    intervals: list[Interval] = field(default_factory=list)
    parks: list[tuple[float, float, str]] = field(default_factory=list)
    """Every poll park: (parked at, wake at, step)."""
    gate_latency: float = 0.0
    """Seconds from a gate being reached to its decision (the bench's reaction, not the engine's)."""

    @property
    def wall(self) -> float:
        return self.ended - self.started

    def breakdown(self) -> dict[str, float]:
        """Wall time split by what the run was doing: ``actions`` (a step's action running: SSH commands,
        HTTP calls, decisions), ``waiting`` (parked until the next look at the cluster: waiting for
        data), ``gate`` (at the approval gate before the decision) and ``engine`` (nothing running and
        nothing due: dispatch between steps, the claim after a timer fired, the launch)."""
        return split_time(self.started, self.ended, self.intervals)

    def per_step(self) -> list[dict[str, Any]]:
        """For each step, in the order it first ran: seconds in its action and parked for the cluster,
        its reads (count, seconds) and mutations."""
        rows: dict[str, dict[str, Any]] = {}
        for i in sorted(self.intervals, key=lambda i: i.start):
            row = rows.setdefault(i.step, {"step": i.step, "actions": 0.0, "waiting": 0.0, "gate": 0.0,
                                           "reads": 0, "read_s": 0.0, "mutations": 0})
            row[{"running": "actions", "poll": "waiting", "gate": "gate"}[i.kind]] += i.end - i.start
        for c in self.commands:
            row = rows[c.step]
            if c.mutating:
                row["mutations"] += 1
            else:
                row["reads"] += 1
                row["read_s"] += c.seconds
        return list(rows.values())

    def waited_between(self, a: float, b: float) -> float | None:
        """The longest poll park that began in [a, b): the poll interval hotswap used there (None: no wait)."""
        waits = [wake - at for at, wake, _ in self.parks if a <= at < b]
        return max(waits) if waits else None


PRECEDENCE = ("actions", "waiting", "gate")


def split_time(start: float, end: float, intervals: Iterable[Interval]) -> dict[str, float]:
    spans = [(i.start, i.end, {"running": "actions", "poll": "waiting", "gate": "gate"}[i.kind])
             for i in intervals if i.end > i.start]
    cuts = sorted({start, end, *(max(start, min(end, t)) for s, e, _ in spans for t in (s, e))})
    out = dict.fromkeys([*PRECEDENCE, "engine"], 0.0)
    for a, b in itertools.pairwise(cuts):
        mid = (a + b) / 2
        active = {kind for s, e, kind in spans if s <= mid < e}
        out[next((k for k in PRECEDENCE if k in active), "engine")] += b - a
    return out


def read_run(store: Any, run_id: str, started: float, hosts: Iterable[str], ceph_prefix: Sequence[str]) -> Recording:
    """Rebuild a :class:`Recording` of a finished run from the store (``started``: when it was launched)."""
    events = [ev for _, ev in _all_events(store, run_id)]
    end = next((float(ev["t"]) for ev in reversed(events) if ev.get("type") == "run"
                and ev.get("status") in ("succeeded", "failed", "cancelled")), None)
    if end is None:
        raise ValueError(f"run {run_id} has not ended: record it after its run event")
    status = next(ev["status"] for ev in reversed(events) if ev.get("type") == "run")
    rec = Recording(run_id, status, started, end)
    decisions = {ev["step"]: float(ev["t"]) for ev in events if ev.get("type") == "approval"}
    invocations: dict[str, list[tuple[float, float, str]]] = {}  # step -> (start, end, how it ended)
    open_: dict[str, tuple[str, float, dict[str, str]]] = {}
    for ev in events:
        if ev.get("type") != "step":
            continue
        step, status_, t = ev["step"], ev["status"], float(ev["t"])
        previous = open_.pop(step, None)
        if previous is not None:
            kind, since, info = previous
            if kind == "running":
                rec.intervals.append(Interval(step, "running", since, t))
                invocations.setdefault(step, []).append((since, t, status_))
            elif kind == "waiting" and info.get("kind") == "approval":
                decided = decisions.get(step, t)
                rec.intervals.append(Interval(step, "gate", since, min(decided, t)))
                rec.gate_latency += max(0.0, min(decided, t) - since)
            elif kind == "waiting":
                wake = float(info.get("wake_at") or t)
                rec.intervals.append(Interval(step, "poll", since, min(wake, t)))
                rec.parks.append((since, wake, step))
        if status_ in ("running", "waiting"):
            open_[step] = (status_, t, ev)
    known = set(hosts)
    for step, spans in invocations.items():
        lines = [(float(e["t"]), str(e["msg"])) for e in store.logs(run_id, step)]
        for start, stop, ended in spans:
            inside = [(t, msg) for t, msg in lines if start <= t <= stop]
            cmds = _commands(inside, known)
            mutating = [not is_read_only(_argv(line), ceph_prefix) for _, _, line, _ in cmds]
            pure_poll = ended == "waiting" and not any(mutating)
            ends = [t for t, *_ in cmds[1:]] + [stop] if cmds else []
            rec.commands.extend(Command(t, step, host, line, m, pure_poll, code, end - t)
                                for (t, host, line, code), m, end in zip(cmds, mutating, ends, strict=True))
    rec.commands.sort(key=lambda c: c.t)
    return rec


def _commands(lines: list[tuple[float, str]], hosts: set[str]) -> list[tuple[float, str, str, int]]:
    """(t, host, command line, exit status) of every ``HOST$ COMMAND`` line of one invocation."""
    out: list[tuple[float, str, str, int]] = []
    for t, msg in lines:
        host, sep, line = msg.partition("$ ")
        if sep and host in hosts:
            out.append((t, host, line, 0))
        elif out and (m := EXITED.match(msg)) and m.group(1) == out[-1][1]:
            out[-1] = (*out[-1][:3], int(m.group(2)))
    return out


def _argv(line: str) -> list[str]:
    words = shlex.split(line)
    return words[3:] if words[:3] == ["sudo", "-n", "--"] else words


def _all_events(store: Any, run_id: str) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    after = "0-0"
    while True:
        batch = store.events(run_id, after=after, count=1000)
        if not batch:
            return out
        out.extend(batch)
        after = batch[-1][0]
