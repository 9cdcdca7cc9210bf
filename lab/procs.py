"""Processes of the lab: running commands, polling with deadlines, finding and stopping daemons."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from lab.layout import LabError

T = TypeVar("T")

LAB_EXECUTABLES = ("ceph-mon", "ceph-mgr", "ceph-osd", "sshd", "prometheus-alertmanager", "python")
"""Only processes whose program name starts with one of these are ever signalled by ``down``."""
LAB_SCRIPTS = ("receiver.py", "/lab-osd", "/lab-write-objects", "/lab-client-load", "/ceph", "/rados")
"""Python programs of the lab (and lab clients: the ceph CLI is a Python script)."""


def run(argv: Sequence[str], *, timeout: float = 60, stdin: str | None = None,
        env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed: run lab/install.sh") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something other than None/False; LabError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def cmdline(pid: int) -> list[str] | None:
    """argv of a live (non-zombie) process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if "State:\tZ" in status or not raw:
        return None
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def belongs_to(pid: int, root: Path) -> bool:
    """True when ``pid`` is a lab program whose command line mentions the lab directory."""
    argv = cmdline(pid)
    if not argv:
        return False
    program = os.path.basename(argv[0])
    if not program.startswith(LAB_EXECUTABLES):
        return False
    if program.startswith("python") and not any(a.endswith(LAB_SCRIPTS) for a in argv[1:2]):
        return False
    prefix = str(root).rstrip("/")
    return any(a.rstrip("/") == prefix or prefix + "/" in a for a in argv)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def live_pid(pid_file: Path, root: Path) -> int | None:
    pid = read_pid(pid_file)
    if pid is not None and belongs_to(pid, root):
        return pid
    return None


def lab_processes(root: Path) -> list[int]:
    """Every lab daemon of this lab dir still alive, found by scanning /proc (for half-started labs)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and belongs_to(int(entry.name), root):
            found.append(int(entry.name))
    return sorted(found)


def gone(pid: int) -> bool:
    return cmdline(pid) is None


def stop_pids(pids: Sequence[int], timeout: float = 30) -> list[int]:
    """SIGTERM, wait, then SIGKILL what is left; returns the pids that survived even SIGKILL."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if not gone(p)]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0
