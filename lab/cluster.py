"""Bootstrapping the lab's Ceph cluster without systemd: conf, keyrings, mon, mgr, OSDs, pool, data."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.layout import HOSTS, MGRS, MONS, OSDS_PER_HOST, LabError, Layout, State
from lab.procs import live_pid, run, wait_until

POOL = "lab"
"""Replicated, size 3 / min_size 2, failure domain host (the default replicated rule)."""
EC_POOL = "lab-ec"
EC_PROFILE = "lab-ec-2-1"
EC_PROFILE_SPEC = ("k=2", "m=1", "crush-failure-domain=host")
"""Erasure-coded 2+1 (min_size 2 = k): needs 3 of the 4 storage hosts."""
POOL_PG_NUM = 32
POOL_DATA: dict[str, tuple[int, int, int]] = {POOL: (48, 1, 4), EC_POOL: (40, 1, 4)}
"""pool -> (objects, min MiB, max MiB): ~120 MiB x 3 replicas + ~100 MiB x 1.5 = ~510 MiB raw in RAM."""
OSD_DEVICE_BYTES = 4 * 1024**3
"""Memstore only caps at this size; the RAM used is the data written. Also the bluestore file size
(sparse). An OSD's initial CRUSH weight is this size in TiB: 0.0039."""
OBJECTSTORES = ("memstore", "bluestore")
BLUESTORE_MEMORY_TARGET = 939524096
"""The lowest ``osd memory target`` Pacific accepts."""
CEPH_CONNECT_TIMEOUT = 10
SYSTEM_PYTHON = "/usr/bin/python3"
"""Debian's rados bindings import only under the system Python."""

MON_KNOBS: dict[str, dict[str, str]] = {
    "global": {
        "mon_data_avail_warn": "2",
        "mon_data_avail_crit": "1",
        "auth_allow_insecure_global_id_reclaim": "false",
        "mon_allow_pool_delete": "true",
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
conf, specs = sys.argv[1], sys.argv[2:]
rng = random.Random(42)
with rados.Rados(conffile=conf, conf={"client_mount_timeout": "30", "rados_osd_op_timeout": "120"}) as cluster:
    for spec in specs:
        pool, count, lo, hi = spec.split(":")
        with cluster.open_ioctx(pool) as io:
            for i in range(int(count)):
                size = rng.randint(int(lo) * 1024 * 1024, int(hi) * 1024 * 1024)
                io.write_full(f"obj-{i:03d}", rng.randbytes(size))
'''


def osd_ids() -> dict[int, str]:
    """osd id -> host bucket of the initial layout."""
    return {h * OSDS_PER_HOST + i: host for h, host in enumerate(HOSTS) for i in range(OSDS_PER_HOST)}


def objectstore_conf(objectstore: str) -> str:
    if objectstore == "memstore":
        return f"osd objectstore = memstore\nmemstore device bytes = {OSD_DEVICE_BYTES}\n"
    if objectstore == "bluestore":
        return (f"osd objectstore = bluestore\nbluestore block create = true\n"
                f"bluestore block size = {OSD_DEVICE_BYTES}\nosd memory target = {BLUESTORE_MEMORY_TARGET}\n"
                "bluestore cache autotune = false\nbluestore cache size = 134217728\n")
    raise LabError(f"unknown objectstore {objectstore!r}: choose one of {', '.join(OBJECTSTORES)}")


def ceph_conf(layout: Layout, state: State) -> str:
    root = layout.root
    mon_host = ",".join(state.ports.mon_addrs(m) for m in MONS)
    return f"""[global]
fsid = {state.fsid}
mon host = {mon_host}
mon initial members = {", ".join(MONS)}
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
osd pool default size = 3
osd pool default min size = 2
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 1
{objectstore_conf(state.objectstore)}osd op num shards = 2
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


AS_HOST = 'hostname "$0" && exec "$@"'
"""Run inside a new UTS namespace whose hostname is the lab host."""


def as_host(host: str, argv: list[str]) -> list[str]:
    """``argv`` run as a daemon of lab host ``host``: its hostname (so ``mon/mgr/osd metadata`` and the
    OSD's CRUSH location ``host=...``) is ``host``, though every daemon listens on 127.0.0.1.

    Pacific's ceph_get_hostname() is gethostname() (it does not read $NODE_NAME yet, later releases do),
    so each daemon gets a UTS namespace of its own (root only; otherwise the machine's hostname stays).
    """
    if os.geteuid() != 0:
        return argv
    return ["unshare", "--uts", "/bin/sh", "-c", AS_HOST, host, *argv]


def daemon_env(host: str) -> dict[str, str]:
    """NODE_NAME too: what later Ceph releases read for the hostname (harmless on Pacific)."""
    return {**os.environ, "NODE_NAME": host}


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


def quorum(cli: CephCli) -> list[str]:
    proc = run(cli.argv("quorum_status", "-f", "json"), timeout=20, check=False)
    if proc.returncode != 0:
        return []
    return sorted(json.loads(proc.stdout).get("quorum_names", []))


def start_mons(layout: Layout, state: State) -> None:
    """One mon map naming all three mons, each mon mkfs'd from it, then all started; waits for quorum."""
    mon_keyring = write_keyrings(layout)
    monmap = layout.run / "monmap"
    addv = [a for m in MONS for a in ("--addv", m, state.ports.mon_addrs(m))]
    run(["monmaptool", "--create", "--clobber", "--fsid", state.fsid, *addv, str(monmap)])
    for mon in MONS:
        shutil.rmtree(layout.data / f"mon.{mon}", ignore_errors=True)
        run(["ceph-mon", "--conf", str(layout.conf), "--mkfs", "-i", mon, "--monmap", str(monmap),
             "--keyring", str(mon_keyring)])
    for mon in MONS:
        start_daemon(layout, "mon", mon)
    cli = CephCli(layout.conf)
    wait_until(lambda: quorum(cli) == sorted(MONS), 60, f"mons {', '.join(MONS)} to form a quorum",
               interval=0.5)


def start_daemon(layout: Layout, kind: str, name: str) -> None:
    """(Re)start an existing mon or mgr as a daemon of its host (they are named after their hosts); returns
    once the daemon has written its pid file, so a ``stop`` right after finds it."""
    run(as_host(name, [f"ceph-{kind}", "--conf", str(layout.conf), "-i", name]), env=daemon_env(name))
    pid_file = layout.pid_file(f"{kind}.{name}")
    wait_until(lambda: live_pid(pid_file, layout.root), 30, f"{kind}.{name} to write {pid_file}", interval=0.05)


def set_knobs(layout: Layout) -> None:
    """All lab knobs in one ``config assimilate-conf`` call (each CLI call costs ~0.4 s)."""
    lines = []
    for section, knobs in MON_KNOBS.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in knobs.items())
    CephCli(layout.conf)("config", "assimilate-conf", "-i", "-", stdin="\n".join(lines) + "\n")


def start_mgr(layout: Layout, name: str) -> None:
    cli = CephCli(layout.conf)
    keyring = layout.keyrings / f"mgr.{name}.keyring"
    keyring.write_text(cli("auth", "get-or-create", f"mgr.{name}", "mon", "allow profile mgr",
                           "osd", "allow *", "mds", "allow *"))
    (layout.data / f"mgr.{name}").mkdir(parents=True, exist_ok=True)
    start_daemon(layout, "mgr", name)


def mgr_stat(cli: CephCli) -> dict[str, Any]:
    stat: dict[str, Any] = cli.json("mgr", "stat")
    return stat


def active_mgr(cli: CephCli) -> str | None:
    stat = mgr_stat(cli)
    return str(stat["active_name"]) if stat.get("available") else None


def standby_mgrs(cli: CephCli) -> list[str]:
    dump = cli.json("mgr", "dump")
    return sorted(str(s["name"]) for s in dump.get("standbys", []))


def create_osds(layout: Layout) -> None:
    """``lab-osd create`` for every initial OSD, 4 at a time: each places itself at start (like ceph-volume)."""
    def create(item: tuple[int, str]) -> None:
        osd_id, host = item
        run([str(layout.lab_osd), "create", str(osd_id), host], env=lab_env(layout), timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, sorted(osd_ids().items())))


def lab_env(layout: Layout) -> dict[str, str]:
    return {**os.environ, "CEPH_CONF": str(layout.conf)}


def osds_up_in(cli: CephCli, count: int) -> bool:
    stat = cli.json("osd", "stat")
    return bool(stat.get("num_up_osds") == count and stat.get("num_in_osds") == count)


def create_pools(layout: Layout) -> None:
    cli = CephCli(layout.conf)
    cli("osd", "pool", "create", POOL, str(POOL_PG_NUM), str(POOL_PG_NUM), "replicated")
    cli("osd", "pool", "set", POOL, "size", "3")
    cli("osd", "pool", "set", POOL, "min_size", "2")
    cli("osd", "erasure-code-profile", "set", EC_PROFILE, *EC_PROFILE_SPEC)
    cli("osd", "pool", "create", EC_POOL, str(POOL_PG_NUM), str(POOL_PG_NUM), "erasure", EC_PROFILE)
    for pool in (POOL, EC_POOL):
        cli("osd", "pool", "application", "enable", pool, "rados")


def write_data(layout: Layout) -> None:
    writer = layout.bin / "lab-write-objects"
    writer.write_text(WRITE_OBJECTS)
    specs = [f"{pool}:{n}:{lo}:{hi}" for pool, (n, lo, hi) in POOL_DATA.items()]
    run([SYSTEM_PYTHON, str(writer), str(layout.conf), *specs], timeout=300)


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


def install_scripts(layout: Layout) -> None:
    """``bin/lab-osd`` and ``bin/lab-client-load``: standard library (and rados) only, for /usr/bin/python3."""
    for source, target in (("osdctl.py", layout.lab_osd), ("loadgen.py", layout.client_load)):
        shutil.copyfile(Path(__file__).with_name(source), target)
        target.chmod(0o755)


def remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 1)


def bootstrap(layout: Layout, state: State, timeout: float) -> None:
    """3 mons, active + standby mgr, 8 OSDs, two pools with data; returns when HEALTH_OK and clean."""
    deadline = time.monotonic() + timeout
    layout.conf.write_text(ceph_conf(layout, state))
    install_scripts(layout)
    start_mons(layout, state)
    set_knobs(layout)
    cli = CephCli(layout.conf)
    start_mgr(layout, MGRS[0])
    with ThreadPoolExecutor(max_workers=1) as background:
        osds: Future[None] = background.submit(create_osds, layout)
        wait_until(lambda: active_mgr(cli) == MGRS[0], remaining(deadline), f"mgr.{MGRS[0]} to be active",
                   interval=0.5)
        for standby in MGRS[1:]:
            start_mgr(layout, standby)
        osds.result(timeout=remaining(deadline))
    wait_until(lambda: osds_up_in(cli, len(osd_ids())), remaining(deadline),
               f"{len(osd_ids())} OSDs up and in", interval=0.5)
    create_pools(layout)
    write_data(layout)
    wait_until(lambda: standby_mgrs(cli) == sorted(MGRS[1:]), remaining(deadline),
               f"standby mgr {', '.join(MGRS[1:])}", interval=0.5)
    wait_settled(cli, remaining(deadline))
