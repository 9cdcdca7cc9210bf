"""A real Prometheus Alertmanager for tests, bound to 127.0.0.1 with clustering off.

Needs the Debian package ``prometheus-alertmanager`` (binary ``/usr/bin/prometheus-alertmanager``);
``HOTSWAP_ALERTMANAGER`` may point to another binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

DEFAULT_BINARY = "/usr/bin/prometheus-alertmanager"
CONFIG = """\
route:
  receiver: void
receivers:
  - name: void
"""


def find_binary() -> str:
    candidate = os.environ.get("HOTSWAP_ALERTMANAGER") or DEFAULT_BINARY
    found = shutil.which(candidate) or shutil.which("prometheus-alertmanager")
    if not found:
        raise RuntimeError(
            f"Alertmanager binary not found ({candidate}): "
            "apt-get install -y --no-install-recommends prometheus-alertmanager"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Alertmanager:
    """One Alertmanager process. Use :func:`running_alertmanager` rather than this directly."""

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        self.workdir = workdir
        self.binary = binary or find_binary()
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "alertmanager.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        config = self.workdir / "alertmanager.yml"
        config.write_text(CONFIG)
        (self.workdir / "data").mkdir(exist_ok=True)
        for _ in range(3):
            self.port = free_port()
            if self._launch(config, timeout):
                return
        raise RuntimeError(f"Alertmanager did not start; see {self.log_path}:\n{self._log_tail()}")

    def _launch(self, config: Path, timeout: float) -> bool:
        """Start on ``self.port``; False when the process died (typically: port taken meanwhile)."""
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._answers():
                return True
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Alertmanager did not answer within {timeout:g}s:\n{self._log_tail()}")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/v2/status", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def silences(self) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v2/silences", timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def active_silences(self) -> list[dict[str, Any]]:
        return [s for s in self.silences() if s["status"]["state"] == "active"]


@contextmanager
def running_alertmanager(workdir: Path) -> Iterator[Alertmanager]:
    """An Alertmanager answering on ``.url`` for the duration of the ``with`` block."""
    server = Alertmanager(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
