#!/usr/bin/python3
"""lab-osd: manage the ceph-osd daemons of the lab the way systemctl and ceph-volume do on real hosts.

Installed as ``<labdir>/bin/lab-osd`` and run over SSH by the runbooks. Standard library only: it runs
under the system Python, outside the project's virtualenv. The lab is found through ``CEPH_CONF``
(set by each lab sshd) or, failing that, ``<labdir>/ceph.conf`` next to this script's ``bin/``.

    lab-osd stop ID                 stop osd.ID, wait until the process is gone (no-op when stopped)
    lab-osd start ID                start osd.ID (no-op when running)
    lab-osd create ID [HOST] [--weight W] [--device DEV]
                                    wipe, register (`ceph osd new`, reusing a destroyed id), mkfs and
                                    start as a daemon of HOST (default $LAB_HOST); like ceph-volume on
                                    a package install, the OSD places itself in CRUSH when it starts
                                    (osd_crush_update_on_start: host=HOST, root=default) at
                                    osd_crush_initial_weight (default: its size), or at W for this
                                    first start when --weight is given
    lab-osd zap ID                  remove the data dir of a stopped osd.ID
    lab-osd status ID               print running/stopped (exit 0/3)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

AS_HOST = 'hostname "$0" && exec "$@"'
"""The daemon gets a UTS namespace whose hostname is its lab host: Pacific's OSD takes its CRUSH
location (host=...) and its metadata hostname from gethostname() (later releases read $NODE_NAME).
Without root (no namespace) the CRUSH location is given explicitly; the metadata hostname stays the
machine's."""
STOP_TIMEOUT = 60.0
START_TIMEOUT = 30.0
CEPH_TIMEOUT = 60.0


class LabOsdError(Exception):
    """A failure with a message for the operator; exit code 1."""


def lab_dir() -> Path:
    conf = os.environ.get("CEPH_CONF")
    if conf:
        return Path(conf).resolve().parent
    return Path(__file__).resolve().parent.parent


def conf_path() -> Path:
    return lab_dir() / "ceph.conf"


def data_dir(osd_id: int) -> Path:
    return lab_dir() / "data" / f"osd.{osd_id}"


def pid_file(osd_id: int) -> Path:
    return lab_dir() / "run" / f"osd.{osd_id}.pid"


def host_file(osd_id: int) -> Path:
    """The lab host an OSD belongs to (its daemon runs with NODE_NAME=host), kept beside its data dir."""
    return lab_dir() / "data" / f"osd.{osd_id}.host"


def keyring_file(osd_id: int) -> Path:
    return lab_dir() / "keyrings" / f"osd.{osd_id}.keyring"


def ceph(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ceph", "--conf", str(conf_path()), "--connect-timeout", "10", *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=CEPH_TIMEOUT)
    if check and proc.returncode != 0:
        raise LabOsdError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def ceph_json(*args: str) -> object:
    return json.loads(ceph(*args, "-f", "json").stdout)


def osd_process(pid: int, osd_id: int, conf: str | None = None) -> bool:
    """True when ``pid`` is a live ceph-osd -i OSD_ID (and, if ``conf`` is given, of that lab's conf)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if "State:\tZ" in status:
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    if not args or not args[0].endswith("ceph-osd") or "-i" not in args:
        return False
    if args[args.index("-i") + 1 : args.index("-i") + 2] != [str(osd_id)]:
        return False
    return conf is None or conf in args


def running_pid(osd_id: int) -> int | None:
    """The pid of the running ceph-osd for this id: by its pid file, checked against /proc so a reused
    pid is ignored, else found in /proc by its command line (a daemon that has not written its pid file
    yet, right after ``start``, must still be found by ``stop``)."""
    try:
        pid = int(pid_file(osd_id).read_text().strip())
    except (FileNotFoundError, ValueError):
        pid = None
    if pid is not None and osd_process(pid, osd_id):
        return pid
    conf = str(conf_path())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and osd_process(int(entry.name), osd_id, conf):
            return int(entry.name)
    return None


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "State:\tZ" in status:
            return True
        time.sleep(0.1)
    return False


def stop(osd_id: int, quiet: bool = False) -> None:
    pid = running_pid(osd_id)
    if pid is None:
        if not quiet:
            print(f"osd.{osd_id} is not running")
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, STOP_TIMEOUT):
        os.kill(pid, signal.SIGKILL)
        if not wait_gone(pid, 10):
            raise LabOsdError(f"osd.{osd_id} (pid {pid}) did not exit after SIGKILL")
    pid_file(osd_id).unlink(missing_ok=True)
    print(f"osd.{osd_id} stopped")


def start(osd_id: int, initial_weight: float | None = None) -> None:
    """Start ceph-osd as a daemon of its host; ``initial_weight`` overrides osd_crush_initial_weight."""
    if running_pid(osd_id) is not None:
        print(f"osd.{osd_id} is already running")
        return
    if not (data_dir(osd_id) / "fsid").exists():
        raise LabOsdError(f"osd.{osd_id} has no data dir at {data_dir(osd_id)}: create it first")
    try:
        host = host_file(osd_id).read_text().strip()
    except FileNotFoundError:
        raise LabOsdError(f"osd.{osd_id} has no host file {host_file(osd_id)}: recreate it with "
                          f"'lab-osd create {osd_id} HOST'") from None
    argv = ["ceph-osd", "--conf", str(conf_path()), "-i", str(osd_id)]
    if initial_weight is not None:
        argv += ["--osd_crush_initial_weight", f"{initial_weight:g}"]
    if os.geteuid() == 0:
        argv = ["unshare", "--uts", "/bin/sh", "-c", AS_HOST, host, *argv]
    else:
        argv += ["--crush_location", f"host={host} root=default"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CEPH_TIMEOUT,
                          env={**os.environ, "NODE_NAME": host})
    if proc.returncode != 0:
        raise LabOsdError(f"ceph-osd -i {osd_id} exited {proc.returncode}: {proc.stderr.strip()}")
    deadline = time.monotonic() + START_TIMEOUT
    while not pid_written(osd_id):
        if time.monotonic() > deadline:
            raise LabOsdError(f"osd.{osd_id} did not write {pid_file(osd_id)} within {START_TIMEOUT:g} s after "
                              f"starting: see {lab_dir() / 'log' / f'osd.{osd_id}.log'}")
        time.sleep(0.05)
    print(f"osd.{osd_id} started")


def pid_written(osd_id: int) -> bool:
    """The daemon has written its pid file and that pid is the running ceph-osd."""
    try:
        return osd_process(int(pid_file(osd_id).read_text().strip()), osd_id)
    except (FileNotFoundError, ValueError):
        return False


def osd_entry(osd_id: int) -> dict[str, Any] | None:
    dump = ceph_json("osd", "dump")
    assert isinstance(dump, dict)
    for osd in dump["osds"]:
        if osd["osd"] == osd_id:
            return dict(osd)
    return None


def create(osd_id: int, host: str, weight: float | None) -> None:
    entry = osd_entry(osd_id)
    if entry is not None and "destroyed" not in entry.get("state", []):
        fsid = data_dir(osd_id) / "fsid"
        if fsid.exists() and fsid.read_text().strip() == entry["uuid"]:
            print(f"osd.{osd_id} already exists")
            start(osd_id)
            return
        raise LabOsdError(
            f"osd.{osd_id} exists in the OSD map and is not destroyed: "
            f"run 'ceph osd destroy {osd_id}' or 'ceph osd purge {osd_id}' first"
        )
    stop(osd_id, quiet=True)
    zap(osd_id, quiet=True)
    osd_uuid = str(uuid.uuid4())
    secret = subprocess.run(
        ["ceph-authtool", "--gen-print-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    ceph("osd", "new", osd_uuid, str(osd_id), "-i", "-", stdin=json.dumps({"cephx_secret": secret}))
    data_dir(osd_id).mkdir(parents=True)
    keyring_file(osd_id).parent.mkdir(parents=True, exist_ok=True)
    keyring_file(osd_id).write_text(f"[osd.{osd_id}]\n\tkey = {secret}\n")
    keyring_file(osd_id).chmod(0o600)
    mkfs = subprocess.run(
        ["ceph-osd", "--conf", str(conf_path()), "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid],
        capture_output=True, text=True, timeout=CEPH_TIMEOUT,
    )
    if mkfs.returncode != 0:
        raise LabOsdError(f"ceph-osd --mkfs for osd.{osd_id} exited {mkfs.returncode}: {mkfs.stderr.strip()}")
    host_file(osd_id).write_text(f"{host}\n")
    print(f"osd.{osd_id} created on host {host} (uuid {osd_uuid})")
    start(osd_id, initial_weight=weight)


def zap(osd_id: int, quiet: bool = False) -> None:
    if running_pid(osd_id) is not None:
        raise LabOsdError(f"osd.{osd_id} is running: stop it before zapping its data")
    if data_dir(osd_id).exists():
        shutil.rmtree(data_dir(osd_id))
    keyring_file(osd_id).unlink(missing_ok=True)
    host_file(osd_id).unlink(missing_ok=True)
    if not quiet:
        print(f"osd.{osd_id} zapped")


def status(osd_id: int) -> int:
    pid = running_pid(osd_id)
    print(f"osd.{osd_id} running pid {pid}" if pid else f"osd.{osd_id} stopped")
    return 0 if pid else 3


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lab-osd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("stop", "start", "zap", "status"):
        sub.add_parser(name).add_argument("id", type=int)
    create_parser = sub.add_parser("create")
    create_parser.add_argument("id", type=int)
    create_parser.add_argument("host", nargs="?", default=os.environ.get("LAB_HOST"))
    create_parser.add_argument("--weight", type=float, default=None,
                               help="CRUSH weight at first start if the OSD is not in CRUSH yet "
                                    "(osd_crush_initial_weight for this start); default: the device size")
    create_parser.add_argument("--device", default=None, help="accepted like ceph-volume's; unused")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "stop":
            stop(args.id)
        elif args.command == "start":
            start(args.id)
        elif args.command == "zap":
            zap(args.id)
        elif args.command == "status":
            return status(args.id)
        else:
            if not args.host:
                raise LabOsdError("create needs a HOST argument (or LAB_HOST in the environment)")
            create(args.id, args.host, args.weight)
    except (LabOsdError, subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
        print(f"lab-osd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
