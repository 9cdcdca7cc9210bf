"""The bare sequence: the commands of a hotswap run replayed as a plain script over the same SSH, with
the script's own "poll until clean" loop wherever hotswap waited for the cluster.

:func:`script_from` turns a :class:`~bench.replace.recording.Recording` into a list of :class:`Run` and
:class:`Wait` items; :class:`BareShell` runs them (one paramiko connection per lab host, the lab's key,
strict host key checking, the command line exactly as hotswap logged it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from bench.replace.recording import Recording


class BareFailed(RuntimeError):
    """A command of the bare script did not do what it did in the hotswap run (see the message)."""


@dataclass(frozen=True)
class Run:
    host: str
    line: str
    expect: int
    """The exit status the command had in the hotswap run."""
    mutating: bool


@dataclass(frozen=True)
class Wait:
    interval: float
    """Seconds between two looks at the cluster: the interval hotswap parked for at that point."""


Item = Run | Wait


def script_from(rec: Recording, *, with_checks: bool) -> list[Item]:
    """Hotswap's mutating commands in order (``with_checks``: also every read-only command that was not
    a pure "not yet" poll, i.e. its preflight and per-step checks), with a :class:`Wait` after each
    command that hotswap followed by parking for the cluster before its next kept command."""
    kept = [c for c in rec.commands if c.mutating or (with_checks and not c.poll)]
    items: list[Item] = []
    first = kept[0].t if kept else rec.ended
    if (interval := rec.waited_between(rec.started, first)) is not None:
        items.append(Wait(interval))
    for i, cmd in enumerate(kept):
        items.append(Run(cmd.host, cmd.line, cmd.exit_code, cmd.mutating))
        until = kept[i + 1].t if i + 1 < len(kept) else rec.ended
        if (interval := rec.waited_between(cmd.t, until)) is not None:
            items.append(Wait(interval))
    return items


def describe(items: Sequence[Item]) -> list[str]:
    lines = []
    for item in items:
        if isinstance(item, Wait):
            lines.append(f"    until clean (ceph pg stat + ceph osd stat every {item.interval:.1f} s)")
        else:
            lines.append(f"  {item.host}$ {item.line}" + (f"   # exits {item.expect}" if item.expect else ""))
    return lines


@dataclass
class BareResult:
    wall: float
    commands: int
    waits: int
    waiting: float
    """Seconds spent in the until-clean loops (their sleeps and polls)."""
    timed: list[tuple[float, str]] = field(default_factory=list)
    """(seconds, HOST$ COMMAND) of every command run, in order."""

    def slowest(self, n: int) -> list[tuple[float, str]]:
        return sorted(self.timed, reverse=True)[:n]


class BareShell:
    """SSH to the lab's hosts as a plain script would: key auth, known_hosts, one connection per host."""

    def __init__(self, ports: dict[str, int], user: str, key: Path, known_hosts: Path, ceph: Sequence[str],
                 admin: str) -> None:
        self.ports, self.user, self.key, self.known_hosts = ports, user, key, known_hosts
        self.ceph, self.admin = list(ceph), admin
        self.clients: dict[str, paramiko.SSHClient] = {}
        self.lag: float | None = None

    def __enter__(self) -> BareShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()

    def client(self, host: str) -> paramiko.SSHClient:
        if host not in self.clients:
            c = paramiko.SSHClient()
            c.load_host_keys(str(self.known_hosts))
            c.set_missing_host_key_policy(paramiko.RejectPolicy())
            c.connect("127.0.0.1", port=self.ports[host], username=self.user, key_filename=str(self.key),
                      look_for_keys=False, allow_agent=False, timeout=10)
            self.clients[host] = c
        return self.clients[host]

    def run(self, host: str, line: str, timeout: float = 900) -> tuple[int, str, str]:
        _, out, err = self.client(host).exec_command(line, timeout=timeout)
        stdout, stderr = out.read().decode(), err.read().decode()
        return out.channel.recv_exit_status(), stdout, stderr

    def ceph_json(self, *args: str) -> Any:
        line = " ".join([*self.ceph, *args, "-f", "json"])
        code, out, err = self.run(self.admin, line, timeout=120)
        if code != 0:
            raise BareFailed(f"{self.admin}$ {line} exited {code}: {err.strip()}")
        return json.loads(out)

    def stats_lag(self) -> float:
        """How long ``pg stat`` lags behind a change: 2 x mgr_stats_period + 1 s (what hotswap waits too)."""
        if self.lag is None:
            period = float(self.ceph_json("config", "get", "mgr", "mgr_stats_period"))
            self.lag = 2 * period + 1
        return self.lag

    def clean(self) -> bool:
        pg = self.ceph_json("pg", "stat")["pg_summary"]
        states = {s["name"]: s["num"] for s in pg["num_pg_by_state"]}
        osd = self.ceph_json("osd", "stat")
        return set(states) == {"active+clean"} and int(osd["num_up_osds"]) == int(osd["num_in_osds"])

    def until_clean(self, interval: float, timeout: float) -> None:
        """The plain SRE wait: let the stats catch up, then look every ``interval`` s until every PG is
        active+clean and every OSD that is in is up."""
        time.sleep(self.stats_lag())
        deadline = time.monotonic() + timeout
        while not self.clean():
            if time.monotonic() > deadline:
                raise BareFailed(f"the cluster was not clean {timeout:g}s after the last command")
            time.sleep(interval)

    def play(self, items: Iterable[Item], timeout: float) -> BareResult:
        self.stats_lag()  # read before the clock starts: a script would have it as a constant
        started = time.monotonic()
        commands = waits = 0
        waiting = 0.0
        timed: list[tuple[float, str]] = []
        for item in items:
            if isinstance(item, Wait):
                t = time.monotonic()
                self.until_clean(item.interval, timeout)
                waiting += time.monotonic() - t
                waits += 1
                continue
            t = time.monotonic()
            code, _, err = self.run(item.host, item.line)
            timed.append((time.monotonic() - t, f"{item.host}$ {item.line}"))
            commands += 1
            if item.mutating and code != item.expect:
                raise BareFailed(f"{item.host}$ {item.line} exited {code} (in the hotswap run: {item.expect}): "
                                 f"{err.strip()[-400:]}")
        return BareResult(time.monotonic() - started, commands, waits, waiting, timed)
