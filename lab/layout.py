"""Where everything of one lab lives (all under one directory) and which loopback ports it uses."""

from __future__ import annotations

import json
import os
import socket
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import HotswapError

ADMIN_HOST = "admin"
"""The cluster's admin endpoint (where `ceph` runs): a mon and the active mgr, no OSDs."""
HOSTS = ("node1", "node2", "node3", "node4")
"""Storage hosts: CRUSH host buckets of the lab, two OSDs each."""
SPARE_HOSTS = ("node5", "node6")
"""Hosts with an sshd but no OSDs yet (add-node and spare-host swap scenarios)."""
ALL_HOSTS = (ADMIN_HOST, *HOSTS, *SPARE_HOSTS)
"""Every lab host, each with its own sshd."""
MONS = (ADMIN_HOST, "node1", "node2")
"""Monitor names, each named after (and reporting the hostname of) the host that carries it."""
MGRS = (ADMIN_HOST, "node1")
"""Manager names = hosts: the first is started first and becomes active, the second is the standby."""
OSDS_PER_HOST = 2
DEFAULT_DIR = "/tmp/hotswap-lab"  # noqa: S108 - a disposable lab, root-owned, on loopback
PORT_BLOCK = 24
PORT_RANGE = (20000, 40000)
MAX_DIR_LEN = 60
"""Admin sockets live under the lab dir and Unix socket paths are limited to 107 bytes."""


class LabError(HotswapError):
    """The lab could not be brought up, queried or torn down; the message says what to look at."""


def default_dir() -> Path:
    return Path(os.environ.get("HOTSWAP_LAB_DIR") or DEFAULT_DIR)


@dataclass(frozen=True)
class Ports:
    """Every TCP port the lab listens on, all on 127.0.0.1 (OSDs and the mgr pick theirs in 6800-7300)."""

    mons: dict[str, list[int]]
    """mon name -> [v2 port, v1 port]."""
    alertmanager: int
    receiver_http: int
    receiver_smtp: int
    ssh: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_block(cls, base: int) -> Ports:
        return cls(
            mons={m: [base + 2 * i, base + 2 * i + 1] for i, m in enumerate(MONS)},
            alertmanager=base + 6, receiver_http=base + 7, receiver_smtp=base + 8,
            ssh={h: base + 10 + i for i, h in enumerate(ALL_HOSTS)},
        )

    def mon_addrs(self, mon: str) -> str:
        """The mon's address vector, as in ``mon host`` and the mon map."""
        v2, v1 = self.mons[mon]
        return f"[v2:127.0.0.1:{v2},v1:127.0.0.1:{v1}]"

    def all(self) -> list[int]:
        return [*(p for pair in self.mons.values() for p in pair), self.alertmanager, self.receiver_http,
                self.receiver_smtp, *self.ssh.values()]


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate_ports(lab_dir: Path) -> Ports:
    """A block of free ports; the first block tried depends on the lab dir so parallel labs rarely collide."""
    blocks = (PORT_RANGE[1] - PORT_RANGE[0]) // PORT_BLOCK
    first = zlib.crc32(str(lab_dir).encode()) % blocks
    for i in range(blocks):
        ports = Ports.for_block(PORT_RANGE[0] + ((first + i) % blocks) * PORT_BLOCK)
        if all(port_free(p) for p in ports.all()):
            return ports
    raise LabError(f"no free block of {PORT_BLOCK} ports on 127.0.0.1 in {PORT_RANGE[0]}-{PORT_RANGE[1]}")


@dataclass(frozen=True)
class Layout:
    """Paths inside the lab directory."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def keyrings(self) -> Path:
        return self.root / "keyrings"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def lab_osd(self) -> Path:
        return self.bin / "lab-osd"

    @property
    def client_load(self) -> Path:
        return self.bin / "lab-client-load"

    @property
    def ssh(self) -> Path:
        return self.root / "ssh"

    @property
    def client_key(self) -> Path:
        return self.ssh / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh / "authorized_keys"

    @property
    def alertmanager(self) -> Path:
        return self.root / "alertmanager"

    @property
    def received(self) -> Path:
        return self.root / "received.jsonl"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yaml"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def make_dirs(self) -> None:
        for path in (self.root, self.keyrings, self.data, self.run, self.log, self.bin, self.ssh,
                     self.alertmanager / "data"):
            path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class State:
    """What ``up`` decided and must be remembered for ``down``/``status``: lab.json."""

    fsid: str
    ports: Ports
    user: str
    objectstore: str = "memstore"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise LabError(f"{path} is not valid JSON ({exc}): remove it and run 'python -m lab up'") from exc
        try:
            return cls(fsid=raw["fsid"], ports=Ports(**raw["ports"]), user=raw["user"],
                       objectstore=raw.get("objectstore", "memstore"))
        except (KeyError, TypeError) as exc:
            raise LabError(f"{path} was written by an older lab ({exc}): run 'python -m lab down --dir "
                           f"{path.parent}', remove it and run 'python -m lab up' again") from exc
