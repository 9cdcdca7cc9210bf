"""Keeps a worker process alive: ``hotswap worker`` runs the Celery worker as a child and starts it
again when it exits without being asked to (kombu can exit a worker with status 0 when Redis restarts
under it). SIGTERM/SIGINT are passed on and end supervision."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

log = logging.getLogger("hotswap.supervisor")

MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0
"""A child that ran this long resets the restart backoff."""


def supervise(argv: Sequence[str], *, idle: Callable[[], bool] | None = None, idle_exit: float = 0,
              poll: float = 1.0) -> int:
    """Run ``argv`` until told to stop; restart it when it exits on its own. With ``idle_exit``, stop after
    ``idle()`` has been true for that many seconds (embedded mode). Returns the last exit code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    backoff = 1.0
    code = 0
    try:
        while not stopping:
            started = time.monotonic()
            child = subprocess.Popen(list(argv))
            quiet_since = time.monotonic()
            while child.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=poll)
                if idle_exit and idle is not None and not stopping:
                    if not idle():
                        quiet_since = time.monotonic()
                    elif time.monotonic() - quiet_since > idle_exit:
                        log.warning("no active run for %.0fs: stopping the worker", idle_exit)
                        stopping = True
                        child.terminate()
            code = child.returncode
            if stopping:
                break
            backoff = 1.0 if time.monotonic() - started > HEALTHY_AFTER else min(backoff * 2, MAX_BACKOFF)
            log.warning("worker exited with status %s without being asked to; restarting in %.0fs", code, backoff)
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code
