"""The lab's non-Ceph daemons: one sshd per host, Alertmanager, and the technicians' receiver."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

from lab.layout import LabError, Layout, State
from lab.procs import live_pid, run, wait_until

SSHD = "/usr/sbin/sshd"
ALERTMANAGER = "prometheus-alertmanager"
PRIVSEP_DIR = Path("/run/sshd")


def ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError):
        return False


def write_client_key(layout: Layout) -> None:
    if not layout.client_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hotswap-lab-client",
             "-f", str(layout.client_key)])
    layout.authorized_keys.write_text(layout.client_key.with_suffix(".pub").read_text())
    layout.authorized_keys.chmod(0o600)


def host_key(layout: Layout, host: str) -> Path:
    key = layout.ssh / host / "ssh_host_ed25519_key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host}.lab", "-f", str(key)])
    return key


def sshd_config(layout: Layout, state: State, host: str) -> Path:
    config = layout.ssh / host / "sshd_config"
    config.write_text(f"""# sshd of lab host {host}
Port {state.ports.ssh[host]}
ListenAddress 127.0.0.1
HostKey {host_key(layout, host)}
PidFile {layout.pid_file(f"sshd.{host}")}
AuthorizedKeysFile {layout.authorized_keys}
AllowUsers {state.user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 50
SetEnv CEPH_CONF={layout.conf} LAB_HOST={host} LAB_DIR={layout.root}
Subsystem sftp internal-sftp
""")
    return config


def start_sshd(layout: Layout, state: State, host: str) -> None:
    if live_pid(layout.pid_file(f"sshd.{host}"), layout.root) is not None:
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    except PermissionError as exc:
        raise LabError(f"sshd needs its privilege separation dir {PRIVSEP_DIR}: create it as root") from exc
    config = sshd_config(layout, state, host)
    run([SSHD, "-t", "-f", str(config)])
    run([SSHD, "-f", str(config), "-E", str(layout.log / f"sshd.{host}.log")])


def start_sshds(layout: Layout, state: State) -> None:
    write_client_key(layout)
    for host in state.ports.ssh:
        start_sshd(layout, state, host)
    lines = []
    for host, port in state.ports.ssh.items():
        public = (layout.ssh / host / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    layout.known_hosts.write_text("".join(lines))
    for host, port in state.ports.ssh.items():
        wait_until(partial(ssh_banner, port), 20, f"sshd of {host} on port {port}")


def alertmanager_url(state: State) -> str:
    return f"http://127.0.0.1:{state.ports.alertmanager}"


def receiver_url(state: State) -> str:
    return f"http://127.0.0.1:{state.ports.receiver_http}"


def spawn(argv: list[str], log: Path, pid_file: Path | None) -> int:
    """Start a foreground daemon detached from us (own session), its output in ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    if pid_file is not None:
        pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def start_alertmanager(layout: Layout, state: State) -> None:
    pid_file = layout.pid_file("alertmanager")
    if live_pid(pid_file, layout.root) is not None:
        return
    config = layout.alertmanager / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {
            "receiver": "lab-receiver",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{
            "name": "lab-receiver",
            "webhook_configs": [{"url": f"{receiver_url(state)}/hooks/alertmanager", "send_resolved": True}],
        }],
    }, indent=2) + "\n")
    spawn([
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={layout.alertmanager / 'data'}",
        f"--web.listen-address=127.0.0.1:{state.ports.alertmanager}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ], layout.log / "alertmanager.log", pid_file)


def wait_alertmanager(state: State, timeout: float) -> None:
    wait_until(lambda: http_ok(f"{alertmanager_url(state)}/api/v2/status"), timeout,
               f"Alertmanager at {alertmanager_url(state)}/api/v2/status")


def start_receiver(layout: Layout, state: State) -> None:
    pid_file = layout.pid_file("receiver")
    if live_pid(pid_file, layout.root) is not None:
        return
    pid_file.unlink(missing_ok=True)
    source = Path(__file__).with_name("receiver.py")
    spawn([sys.executable, str(source), "--dir", str(layout.root),
           "--http-port", str(state.ports.receiver_http), "--smtp-port", str(state.ports.receiver_smtp)],
          layout.log / "receiver.log", None)


def wait_receiver(state: State, timeout: float) -> None:
    wait_until(lambda: http_ok(f"{receiver_url(state)}/health"), timeout,
               f"the receiver at {receiver_url(state)}")
