"""A real OpenSSH sshd for tests: 127.0.0.1, a free port, a generated host key and client key.

Needs the ``openssh-server`` package (``/usr/sbin/sshd``) and ``ssh-keygen`` (openssh-client).

    with running_sshd(tmp_path / "sshd") as server:
        server.port, server.client_key, server.known_hosts, server.user

The server logs in as the user running the tests (root in CI), with public-key auth only.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
START_TIMEOUT = 10.0


class SshdUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (best effort: free_port just released it)."""
    return free_port()


def generate_key(path: Path, comment: str = "hotswap-test") -> Path:
    if not shutil.which("ssh-keygen"):
        raise SshdUnavailable("ssh-keygen not found: apt-get install openssh-client")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path


class Sshd:
    """One sshd process. ``start()``/``stop()`` may be called repeatedly; keys and port are kept."""

    def __init__(self, directory: Path, *, port: int | None = None, client_key: Path | None = None) -> None:
        if not SSHD.exists():
            raise SshdUnavailable(
                f"{SSHD} not found: apt-get install -y --no-install-recommends openssh-server"
            )
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = generate_key(self.dir / "ssh_host_ed25519_key", "host")
        self.client_key = client_key or generate_key(self.dir / "id_ed25519", "client")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line() + "\n")
        self.pid_file = self.dir / "sshd.pid"
        self.log_file = self.dir / "sshd.log"
        self.config = self.dir / "sshd_config"
        self.proc: subprocess.Popen[bytes] | None = None

    def known_hosts_line(self) -> str:
        keytype, key = (self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {keytype} {key}"

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pid_file}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "MaxSessions 50",
                    "MaxStartups 50",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("sshd already started")
        self._write_config()
        if os.geteuid() == 0:
            # sshd refuses to start as root without its privilege separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(self.config), "-E", str(self.log_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_file.read_text() if self.log_file.exists() else ""
                self.proc = None
                raise SshdUnavailable(f"sshd exited at start:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SshdUnavailable(f"sshd on port {self.port} not ready after {START_TIMEOUT}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.kill_connections()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def connection_pids(self) -> list[int]:
        """Every process below the listening sshd: per-connection sshd processes and the commands they run."""
        if self.proc is None:
            return []
        return _descendants(self.proc.pid)

    def kill_connections(self) -> int:
        """Drop every client connection from the server side (the listener keeps running)."""
        pids = self.connection_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        return len(pids)

    def __enter__(self) -> Sshd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree = _children()
    found: list[int] = []
    todo = list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


@contextmanager
def running_sshd(directory: Path, *, client_key: Path | None = None) -> Iterator[Sshd]:
    """Start an sshd in ``directory`` (created if needed) and stop it on exit.

    ``client_key`` (a private key with its ``.pub`` next to it) is authorized instead of a new one,
    so several servers can accept the same client."""
    with Sshd(directory, client_key=client_key) as server:
        yield server
