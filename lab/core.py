"""The Lab object: bring the whole lab up, query it, tear it down."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import cluster, services
from lab.cluster import CephCli
from lab.inventory import write_inventory
from lab.layout import (
    ADMIN_HOST,
    ALL_HOSTS,
    HOSTS,
    MAX_DIR_LEN,
    MGRS,
    MONS,
    SPARE_HOSTS,
    LabError,
    Layout,
    Ports,
    State,
    allocate_ports,
    default_dir,
)
from lab.procs import lab_processes, live_pid, rss_mib, run, stop_pids

REQUIRED_PROGRAMS = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph", "ceph-authtool", "monmaptool",
                     services.SSHD, services.ALERTMANAGER, "ssh-keygen", "unshare", cluster.SYSTEM_PYTHON)
STRAGGLER_ROUNDS = 5
"""A lab-osd killed with an interrupted ``up`` may have started a ceph-osd meanwhile: scan again."""


@dataclass(frozen=True)
class Daemon:
    name: str
    pid: int | None
    rss_mib: float

    @property
    def running(self) -> bool:
        return self.pid is not None


class Lab:
    """One lab, living entirely in ``root`` (default: $HOTSWAP_LAB_DIR or /tmp/hotswap-lab)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root if root is not None else default_dir()).absolute()
        self.layout = Layout(self.root)

    # -- facts ------------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        state = State.load(self.layout.state_file)
        if state is None:
            raise LabError(f"no lab in {self.root}: run 'python -m lab up --dir {self.root}'")
        return state

    @property
    def ports(self) -> Ports:
        return self.state.ports

    @property
    def conf_path(self) -> Path:
        return self.layout.conf

    @property
    def inventory_path(self) -> Path:
        return self.layout.inventory

    @property
    def known_hosts_path(self) -> Path:
        return self.layout.known_hosts

    @property
    def client_key_path(self) -> Path:
        return self.layout.client_key

    @property
    def lab_osd_path(self) -> Path:
        return self.layout.lab_osd

    @property
    def received_path(self) -> Path:
        return self.layout.received

    @property
    def user(self) -> str:
        return self.state.user

    @property
    def alertmanager_url(self) -> str:
        return services.alertmanager_url(self.state)

    @property
    def receiver_url(self) -> str:
        return services.receiver_url(self.state)

    @property
    def smtp_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports.receiver_smtp)

    def ssh_port(self, host: str) -> int:
        try:
            return self.ports.ssh[host]
        except KeyError:
            raise LabError(f"the lab has no host '{host}'; hosts: {', '.join(self.ports.ssh)}") from None

    @property
    def hosts(self) -> dict[str, int]:
        """Host name -> sshd port, including the spare host(s) without OSDs."""
        return dict(self.ports.ssh)

    @property
    def osd_hosts(self) -> dict[int, str]:
        """The initial OSD id -> host bucket layout."""
        return cluster.osd_ids()

    admin_host = ADMIN_HOST
    """Where the inventory runs ``ceph``: a mon and the active mgr, no OSDs."""
    storage_hosts = HOSTS
    spare_hosts = SPARE_HOSTS
    mons = MONS
    """Mon names, which are also the names of the hosts carrying them."""
    mgrs = MGRS
    """Active first, then the standby."""
    pool = cluster.POOL
    ec_pool = cluster.EC_POOL

    @property
    def objectstore(self) -> str:
        return self.state.objectstore

    def env(self) -> dict[str, str]:
        """Variables for a shell that talks to this lab."""
        state = self.state
        return {
            "CEPH_CONF": str(self.conf_path),
            "HOTSWAP_LAB_DIR": str(self.root),
            "HOTSWAP_LAB_INVENTORY": str(self.inventory_path),
            "HOTSWAP_LAB_ALERTMANAGER_URL": services.alertmanager_url(state),
            "HOTSWAP_LAB_RECEIVER_URL": services.receiver_url(state),
        }

    # -- ceph -------------------------------------------------------------------------------------

    @property
    def cli(self) -> CephCli:
        return CephCli(self.conf_path)

    def ceph(self, *args: str, timeout: float = 60) -> str:
        """stdout of the local ``ceph`` CLI with the lab conf; LabError on a non-zero exit."""
        return self.cli(*args, timeout=timeout)

    def ceph_json(self, *args: str, timeout: float = 60) -> Any:
        """``ceph ARGS -f json`` parsed (a dict for most commands, a list for some)."""
        return self.cli.json(*args, timeout=timeout)

    def ceph_rc(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The raw result, for commands whose exit code matters (ok-to-stop exits 16 when not ok)."""
        return run(self.cli.argv(*args), timeout=timeout, check=False)

    def lab_osd(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``<labdir>/bin/lab-osd ARGS`` locally, as the runbooks do over SSH."""
        return run([str(self.lab_osd_path), *args], timeout=timeout, env=cluster.lab_env(self.layout))

    def stop_daemon(self, name: str, timeout: float = 30) -> None:
        """Stop ``mon.X``, ``mgr.X`` or ``osd.N`` by its pid file (SIGTERM, SIGKILL after ``timeout``);
        a no-op when it is not running. For failover and quorum-loss scenarios."""
        kind = self._daemon_kind(name)
        if kind == "osd":
            self.lab_osd("stop", name.split(".", 1)[1])
            return
        pid = live_pid(self.layout.pid_file(name), self.root)
        if pid is not None and stop_pids([pid], timeout):
            raise LabError(f"{name} (pid {pid}) survived SIGKILL")

    def start_daemon(self, name: str) -> None:
        """Start a stopped ``mon.X``, ``mgr.X`` or ``osd.N`` as a daemon of its host; no-op when running."""
        kind = self._daemon_kind(name)
        if kind == "osd":
            self.lab_osd("start", name.split(".", 1)[1])
        elif live_pid(self.layout.pid_file(name), self.root) is None:
            cluster.start_daemon(self.layout, kind, name.split(".", 1)[1])

    @staticmethod
    def _daemon_kind(name: str) -> str:
        kind, _, ident = name.partition(".")
        if (kind == "mon" and ident in MONS) or (kind == "mgr" and ident in MGRS) or (kind == "osd" and ident.isdigit()):
            return kind
        raise LabError(f"no lab daemon {name!r}: mons {', '.join(MONS)}, mgrs {', '.join(MGRS)}, or osd.N")

    def wait_settled(self, timeout: float = 120) -> None:
        """HEALTH_OK and every PG active+clean on two consecutive polls (after the status lag)."""
        cluster.wait_settled(self.cli, timeout)

    # -- receiver ---------------------------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.receiver_url}/received", timeout=10) as response:  # noqa: S310
            data: list[dict[str, Any]] = json.loads(response.read())
        return data

    def clear_received(self) -> None:
        request = urllib.request.Request(f"{self.receiver_url}/received", method="DELETE")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback URL we built
            pass

    # -- lifecycle --------------------------------------------------------------------------------

    def daemons(self) -> list[Daemon]:
        names = [f"mon.{m}" for m in MONS] + [f"mgr.{m}" for m in MGRS]
        run_dir = self.layout.run
        if run_dir.exists():
            names += sorted((p.stem for p in run_dir.glob("osd.*.pid")), key=lambda n: int(n.split(".")[1]))
        names += [f"sshd.{h}" for h in self.ports.ssh] + ["alertmanager", "receiver"]
        result = []
        for name in names:
            pid = live_pid(self.layout.pid_file(name), self.root)
            result.append(Daemon(name, pid, rss_mib(pid) if pid else 0.0))
        return result

    def is_up(self) -> bool:
        """The lab's daemons (all but OSDs, which tests stop on purpose) run and the mon answers."""
        try:
            if State.load(self.layout.state_file) is None:
                return False
        except LabError:
            return False
        if not all(d.running for d in self.daemons() if not d.name.startswith("osd.")):
            return False
        return self.cli.answers()

    def up(self, timeout: float = 300, objectstore: str = "memstore") -> bool:
        """Bring the whole lab up and wait until it is HEALTH_OK; False when it was already up.

        A lab already up is reused as it is, whatever its objectstore.
        """
        if self.is_up():
            return False
        if objectstore not in cluster.OBJECTSTORES:
            raise LabError(f"unknown objectstore {objectstore!r}: choose one of {', '.join(cluster.OBJECTSTORES)}")
        self.check_prerequisites()
        self.down()
        self.wipe()
        self.layout.make_dirs()
        state = State(fsid=str(uuid.uuid4()), ports=allocate_ports(self.root), user=getpass.getuser(),
                      objectstore=objectstore)
        state.save(self.layout.state_file)
        deadline = time.monotonic() + timeout
        try:
            services.start_receiver(self.layout, state)
            services.start_alertmanager(self.layout, state)
            services.start_sshds(self.layout, state)
            cluster.bootstrap(self.layout, state, timeout)
            remaining = max(deadline - time.monotonic(), 5)
            services.wait_receiver(state, remaining)
            services.wait_alertmanager(state, remaining)
            write_inventory(self.layout, state)
        except BaseException:
            self.down()
            raise
        return True

    def check_prerequisites(self) -> None:
        if len(str(self.root)) > MAX_DIR_LEN:
            raise LabError(
                f"lab dir {self.root} is longer than {MAX_DIR_LEN} characters; Unix admin sockets "
                "under it would exceed 107 bytes: choose a shorter --dir"
            )
        missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
        if missing:
            raise LabError(f"missing programs {', '.join(missing)}: run lab/install.sh (as root)")
        if run([cluster.SYSTEM_PYTHON, "-c", "import rados"], check=False).returncode != 0:
            raise LabError(f"{cluster.SYSTEM_PYTHON} cannot import rados (python3-rados): run lab/install.sh")

    def down(self, timeout: float = 30) -> None:
        """Stop every daemon of this lab (by pid file, then any straggler found in /proc); keeps logs."""
        if not self.root.exists():
            return
        run_dir = self.layout.run
        pid_files = sorted(run_dir.glob("*.pid")) if run_dir.exists() else []
        pids = {f.stem: live_pid(f, self.root) for f in pid_files}
        first = [pid for name, pid in pids.items() if pid and not name.startswith("mon.")]
        survivors = stop_pids(first, timeout)
        mons = [pid for name, pid in pids.items() if pid and name.startswith("mon.")]
        survivors += stop_pids(mons, timeout)
        for _ in range(STRAGGLER_ROUNDS):
            stragglers = lab_processes(self.root)
            if not stragglers:
                break
            survivors += stop_pids(stragglers, timeout)
        if survivors:
            raise LabError(f"lab processes {survivors} survived SIGKILL; check 'ps -p {survivors[0]}'")
        for pid_file in pid_files:
            pid_file.unlink(missing_ok=True)
        shutil.rmtree(self.layout.data, ignore_errors=True)

    def wipe(self) -> None:
        """Remove everything the lab wrote (call after :meth:`down`)."""
        for child in ("lab.json", "ceph.conf", "keyrings", "data", "run", "log", "bin", "ssh",
                      "alertmanager", "received.jsonl", "inventory.yaml"):
            path = self.root / child
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        state = self.state
        daemons = self.daemons()
        health: str | None = None
        if any(d.name.startswith("mon.") and d.running for d in daemons):
            proc = run(self.cli.argv("health", "-f", "json"), timeout=20, check=False)
            if proc.returncode == 0:
                health = json.loads(proc.stdout).get("status")
        return {
            "dir": str(self.root),
            "health": health,
            "daemons": [{"name": d.name, "pid": d.pid, "rss_mib": round(d.rss_mib, 1)} for d in daemons],
            "rss_mib_total": round(sum(d.rss_mib for d in daemons), 1),
            "objectstore": state.objectstore,
            "ports": {
                "mon": dict(state.ports.mons),
                "alertmanager": state.ports.alertmanager,
                "receiver_http": state.ports.receiver_http,
                "receiver_smtp": state.ports.receiver_smtp,
                "ssh": dict(state.ports.ssh),
            },
            "hosts": list(ALL_HOSTS),
        }
