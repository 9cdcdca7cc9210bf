"""Bootstrapping the lab's Ceph cluster without systemd: conf, keyrings, mon, mgr, OSDs, pool, data."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.layout import HOSTS, OSDS_PER_HOST, LabError, Layout, State
from lab.procs import run, wait_until

POOL = "lab"
POOL_PG_NUM = 32
OBJECT_COUNT = 64
OBJECT_MIN_MIB = 1
OBJECT_MAX_MIB = 4
OSD_DEVICE_BYTES = 4 * 1024**3
"""Memstore only caps at this size; the RAM used is the data written (~160 MiB x 2 replicas)."""
CEPH_CONNECT_TIMEOUT = 10
SYSTEM_PYTHON = "/usr/bin/python3"
"""Debian's rados bindings import only under the system Python."""

MON_KNOBS: dict[str, dict[str, str]] = {
    "global": {
        "mon_data_avail_warn": "2",
        "mon_data_avail_crit": "1",
        "auth_allow_insecure_global_id_reclaim": "false",
        "mon_allow_pool_delete": "true",
        "mon_warn_on_pool_no_redundancy": "false",
        "osd_pool_default_pg_autoscale_mode": "off",
    },
    "mgr": {"mgr_stats_period": "1"},
    "osd": {
        "osd_recovery_sleep": "0",
        "osd_recovery_sleep_hdd": "0",
    },
}
"""Lab knobs, put in the mon config database (ceph.conf would override later ``ceph config set``)."""

WRITE_OBJECTS = '''
import random, sys, rados
conf, pool, count, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(42)
with rados.Rados(conffile=conf, conf={"client_mount_timeout": "30", "rados_osd_op_timeout": "120"}) as cluster:
    with cluster.open_ioctx(pool) as io:
        for i in range(count):
            size = rng.randint(lo * 1024 * 1024, hi * 1024 * 1024)
            io.write_full(f"obj-{i:03d}", rng.randbytes(size))
'''


def osd_ids() -> dict[int, str]:
    """osd id -> host bucket of the initial layout."""
    return {h * OSDS_PER_HOST + i: host for h, host in enumerate(HOSTS) for i in range(OSDS_PER_HOST)}


def ceph_conf(layout: Layout, state: State) -> str:
    root = layout.root
    p = state.ports
    return f"""[global]
fsid = {state.fsid}
mon host = [v2:127.0.0.1:{p.mon_v2},v1:127.0.0.1:{p.mon_v1}]
mon initial members = a
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {layout.keyrings}/$name.keyring
run dir = {layout.run}
log file = {layout.log}/$name.log
pid file = {layout.run}/$name.pid
admin socket = {layout.run}/$name.asok
mon data = {layout.data}/mon.$id
mgr data = {layout.data}/mgr.$id
osd data = {layout.data}/osd.$id
osd pool default size = 2
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 1
osd crush update on start = false
osd objectstore = memstore
memstore device bytes = {OSD_DEVICE_BYTES}
osd op num shards = 2
osd op num threads per shard = 1
mon osd down out interval = 600

[mon]
keyring = {layout.data}/mon.$id/keyring

[client]
admin socket = {layout.run}/$name.$pid.asok
log file = {root}/log/client.log
"""


class CephCli:
    """The local ``ceph`` CLI bound to one lab conf, with a connect timeout and an outer timeout."""

    def __init__(self, conf: Path) -> None:
        self.conf = conf

    def argv(self, *args: str) -> list[str]:
        return ["ceph", "--conf", str(self.conf), "--connect-timeout", str(CEPH_CONNECT_TIMEOUT), *args]

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        return run(self.argv(*args), stdin=stdin, timeout=timeout).stdout

    def json(self, *args: str, timeout: float = 60) -> Any:
        out = self(*args, "-f", "json", timeout=timeout)
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise LabError(f"ceph {' '.join(args)} -f json did not print JSON: {out[:200]!r}") from exc

    def answers(self) -> bool:
        proc = run(["ceph", "--conf", str(self.conf), "--connect-timeout", "3", "mon", "stat"],
                   timeout=10, check=False)
        return proc.returncode == 0


def write_keyrings(layout: Layout) -> Path:
    """mon. and client.admin keyrings; returns the keyring to give ``ceph-mon --mkfs``."""
    mon_keyring = layout.keyrings / "mon-bootstrap.keyring"
    admin = layout.keyrings / "client.admin.keyring"
    run(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.",
         "--cap", "mon", "allow *"])
    run(["ceph-authtool", "--create-keyring", str(admin), "--gen-key", "-n", "client.admin",
         "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *",
         "--cap", "mgr", "allow *"])
    run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin)])
    return mon_keyring


def start_mon(layout: Layout, state: State) -> None:
    mon_keyring = write_keyrings(layout)
    monmap = layout.run / "monmap"
    p = state.ports
    run(["monmaptool", "--create", "--clobber", "--fsid", state.fsid, "--addv", "a",
         f"[v2:127.0.0.1:{p.mon_v2},v1:127.0.0.1:{p.mon_v1}]", str(monmap)])
    shutil.rmtree(layout.data / "mon.a", ignore_errors=True)
    run(["ceph-mon", "--conf", str(layout.conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
         "--keyring", str(mon_keyring)])
    run(["ceph-mon", "--conf", str(layout.conf), "-i", "a"])
    cli = CephCli(layout.conf)
    wait_until(cli.answers, 60, "the mon to answer 'ceph mon stat'", interval=0.5)


def set_knobs(layout: Layout) -> None:
    """All lab knobs in one ``config assimilate-conf`` call (each CLI call costs ~0.4 s)."""
    lines = []
    for section, knobs in MON_KNOBS.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in knobs.items())
    CephCli(layout.conf)("config", "assimilate-conf", "-i", "-", stdin="\n".join(lines) + "\n")


def start_mgr(layout: Layout) -> None:
    cli = CephCli(layout.conf)
    keyring = layout.keyrings / "mgr.x.keyring"
    keyring.write_text(cli("auth", "get-or-create", "mgr.x", "mon", "allow profile mgr",
                           "osd", "allow *", "mds", "allow *"))
    (layout.data / "mgr.x").mkdir(parents=True, exist_ok=True)
    run(["ceph-mgr", "--conf", str(layout.conf), "-i", "x"])


def create_osds(layout: Layout) -> None:
    cli = CephCli(layout.conf)
    for host in HOSTS:
        cli("osd", "crush", "add-bucket", host, "host")
        cli("osd", "crush", "move", host, "root=default")

    def create(item: tuple[int, str]) -> None:
        osd_id, host = item
        run([str(layout.lab_osd), "create", str(osd_id), host, "--weight", "1.0"],
            env=lab_env(layout), timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, sorted(osd_ids().items())))


def lab_env(layout: Layout) -> dict[str, str]:
    return {**os.environ, "CEPH_CONF": str(layout.conf)}


def osds_up_in(cli: CephCli, count: int) -> bool:
    stat = cli.json("osd", "stat")
    return bool(stat.get("num_up_osds") == count and stat.get("num_in_osds") == count)


def create_pool_with_data(layout: Layout) -> None:
    cli = CephCli(layout.conf)
    cli("osd", "pool", "create", POOL, str(POOL_PG_NUM), str(POOL_PG_NUM), "replicated")
    cli("osd", "pool", "set", POOL, "size", "2")
    cli("osd", "pool", "set", POOL, "min_size", "1")
    cli("osd", "pool", "application", "enable", POOL, "rados")
    writer = layout.bin / "lab-write-objects"
    writer.write_text(WRITE_OBJECTS)
    run([SYSTEM_PYTHON, str(writer), str(layout.conf), POOL, str(OBJECT_COUNT),
         str(OBJECT_MIN_MIB), str(OBJECT_MAX_MIB)], timeout=300)


def settled(cli: CephCli) -> bool:
    """HEALTH_OK and every PG active+clean, per ``ceph status``."""
    status = cli.json("status")
    if status.get("health", {}).get("status") != "HEALTH_OK":
        return False
    pgmap = status.get("pgmap", {})
    total = pgmap.get("num_pgs", 0)
    clean = sum(s["count"] for s in pgmap.get("pgs_by_state", []) if s["state_name"] == "active+clean")
    return bool(total) and clean == total


def wait_settled(cli: CephCli, timeout: float, stats_period: float = 1.0) -> None:
    """Wait for two consecutive settled polls, after letting ``ceph status`` catch up (it lags ~2 periods)."""
    time.sleep(2 * stats_period + 1)
    streak = 0

    def twice() -> bool:
        nonlocal streak
        streak = streak + 1 if settled(cli) else 0
        return streak >= 2

    try:
        wait_until(twice, timeout, "HEALTH_OK with all PGs active+clean", interval=0.5)
    except LabError as exc:
        detail = cli("health", "detail")
        raise LabError(f"{exc}; ceph health detail:\n{detail}") from exc


def install_lab_osd(layout: Layout) -> None:
    source = Path(__file__).with_name("osdctl.py")
    shutil.copyfile(source, layout.lab_osd)
    layout.lab_osd.chmod(0o755)


def bootstrap(layout: Layout, state: State, timeout: float) -> None:
    """Mon, mgr, 8 OSDs, a pool with data; returns when the cluster is HEALTH_OK and clean."""
    deadline = time.monotonic() + timeout
    layout.conf.write_text(ceph_conf(layout, state))
    install_lab_osd(layout)
    start_mon(layout, state)
    set_knobs(layout)
    start_mgr(layout)
    create_osds(layout)
    cli = CephCli(layout.conf)
    wait_until(lambda: osds_up_in(cli, len(osd_ids())), max(deadline - time.monotonic(), 1),
               f"{len(osd_ids())} OSDs up and in", interval=0.5)
    create_pool_with_data(layout)
    wait_settled(cli, max(deadline - time.monotonic(), 1))
