"""The domain benchmark's reading of a run: which commands change the cluster, where the time went, and
the bare script built from it (pure parts; tests/lab_e2e/test_bench_replace.py runs it on the lab)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.replace.bare import Run, Wait, script_from
from bench.replace.recording import Command, Interval, Recording, is_read_only, read_run, split_time
from engine.store import Store
from tests.support.redis_server import RedisServer

CEPH = ["ceph", "--connect-timeout", "10"]


@pytest.mark.parametrize(("line", "read_only"), [
    ("ceph --connect-timeout 10 status -f json", True),
    ("ceph --connect-timeout 10 pg ls-by-osd 4 -f json", True),
    ("ceph --connect-timeout 10 osd safe-to-destroy 4 5 -f json", True),
    ("ceph --connect-timeout 10 config get mgr mgr_stats_period -f json", True),
    ("ceph --connect-timeout 10 osd crush reweight osd.4 0.0029 -f json", False),
    ("ceph --connect-timeout 10 osd crush rm node3 -f json", False),
    ("ceph --connect-timeout 10 config set osd osd_max_backfills 1 -f json", False),
    ("ceph --connect-timeout 10 config rm osd osd_max_backfills -f json", False),
    ("ceph --connect-timeout 10 osd destroy 4 --yes-i-really-mean-it -f json", False),
    ("ceph --connect-timeout 10 osd set-group noout node3 -f json", False),
    ("ceph --connect-timeout 10 osd pool set lab size 3 -f json", False),
    ("/tmp/lab/bin/lab-osd stop 4", False),
    ("/tmp/lab/bin/lab-osd status 4", True),
    ("rados -p lab bench 5 write -b 4096 --no-cleanup", True),
    ("ledctl locate=/dev/sda", False),
])
def test_read_only_commands_are_told_from_mutating_ones(line: str, read_only: bool) -> None:
    assert is_read_only(shlex.split(line), CEPH) is read_only


def test_time_is_split_by_what_the_run_was_doing() -> None:
    intervals = [Interval("a", "running", 1, 3), Interval("a", "poll", 3, 8), Interval("b", "running", 7, 9),
                 Interval("g", "gate", 10, 12)]
    parts = split_time(0, 13, intervals)
    # running wins over a park it overlaps (7-8); 0-1, 9-10 and 12-13 nothing ran or was due: engine
    assert parts == {"actions": 4.0, "waiting": 4.0, "gate": 2.0, "engine": 3.0}
    assert sum(parts.values()) == 13


def cmd(t: float, line: str, *, mutating: bool, poll: bool = False) -> Command:
    return Command(t, "s", "admin", line, mutating, poll)


def test_bare_script_keeps_the_mutations_and_waits_where_hotswap_waited() -> None:
    rec = Recording("r", "succeeded", 0, 100)
    rec.commands = [cmd(1, "ceph status", mutating=False), cmd(2, "ceph osd crush reweight osd.4 0.5", mutating=True),
                    cmd(3, "ceph osd crush reweight osd.5 0.5", mutating=True),
                    cmd(20, "ceph pg stat", mutating=False, poll=True),
                    cmd(40, "ceph status", mutating=False), cmd(41, "ceph osd crush reweight osd.4 0", mutating=True)]
    rec.parks = [(4, 7, "s"), (21, 31, "s")]
    bare = script_from(rec, with_checks=False)
    assert bare == [Run("admin", "ceph osd crush reweight osd.4 0.5", 0, True),
                    Run("admin", "ceph osd crush reweight osd.5 0.5", 0, True), Wait(10),
                    Run("admin", "ceph osd crush reweight osd.4 0", 0, True)]
    checked = script_from(rec, with_checks=True)
    assert [i.line for i in checked if isinstance(i, Run)] == [
        "ceph status", "ceph osd crush reweight osd.4 0.5", "ceph osd crush reweight osd.5 0.5", "ceph status",
        "ceph osd crush reweight osd.4 0"]
    assert checked[3] == Wait(10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    client = redis.Redis.from_url(server.url)
    try:
        yield Store(client)
    finally:
        client.close()
        server.stop()


def test_a_run_is_read_back_from_its_events_and_step_logs(store: Store) -> None:
    """The events and log lines as the engine writes them (type=step status=running/waiting/...)."""
    run, ceph = "r1", "ceph --connect-timeout 10"
    started = time.time()

    def step(name: str, status: str, **extra: object) -> None:
        store.event(run, type="step", step=name, status=status, **extra)

    step("drain", "running", kind="running")
    store.log(run, "drain", "info", f"admin$ {ceph} status -f json")
    store.log(run, "drain", "info", 'admin: {"health": {}}')
    store.log(run, "drain", "info", f"admin$ {ceph} osd crush reweight osd.4 0.5 -f json")
    step("drain", "waiting", kind="poll", wake_at=time.time() + 3, reason="stats lag")
    step("drain", "running", kind="running")
    store.log(run, "drain", "info", f"admin$ {ceph} pg stat -f json")
    step("drain", "waiting", kind="poll", wake_at=time.time() + 10, reason="not calm")
    step("drain", "running", kind="running")
    store.log(run, "drain", "info", f"admin$ {ceph} pg stat -f json")
    step("drain", "succeeded")
    step("stop", "running", kind="running")
    store.log(run, "stop", "info", "node3$ /lab/bin/lab-osd stop 4")
    store.log(run, "stop", "warning", "node3: exited 2 after 0.5s")
    step("stop", "succeeded")
    store.event(run, type="run", status="succeeded")

    rec = read_run(store, run, started, ["admin", "node3"], CEPH)
    assert rec.status == "succeeded"
    shown = [(c.step, c.line.split(" 10 ")[-1], c.mutating, c.poll, c.exit_code) for c in rec.commands]
    assert shown == [
        ("drain", "status -f json", False, False, 0),
        ("drain", "osd crush reweight osd.4 0.5 -f json", True, False, 0),
        ("drain", "pg stat -f json", False, True, 0),  # an invocation that only looked and parked
        ("drain", "pg stat -f json", False, False, 0),  # the last one ended the step
        ("stop", "/lab/bin/lab-osd stop 4", True, False, 2),
    ]
    assert [round(wake - at) for at, wake, _ in rec.parks] == [3, 10]
    assert sum(rec.breakdown().values()) == pytest.approx(rec.wall)
    assert [r["step"] for r in rec.per_step()] == ["drain", "stop"]
    assert [(r["reads"], r["mutations"]) for r in rec.per_step()] == [(3, 1), (0, 1)]
