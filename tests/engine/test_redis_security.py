"""Redis AUTH and TLS (rediss://), end to end through a real worker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from engine.config import redis_client
from tests.engine.conftest import Harness
from tests.support.redis_server import RedisServer, make_tls_files
from tests.support.workers import Worker

pytestmark = pytest.mark.slow

RUNBOOK = """
name: secure
steps:
  - id: a
    action: core.echo
    with: {message: over a protected connection}
"""


def run_once(url: str, tmp: Path) -> str:
    worker = Worker(url, tmp / "w", concurrency=1).start()
    try:
        harness = Harness(url, tmp)
        run = harness.launch(RUNBOOK)
        return str(harness.wait(run)["status"])
    finally:
        worker.stop()


def test_password_protected_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="correct-horse-battery").start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis_client(server.url.replace("correct-horse-battery", "wrong")).ping()
        assert run_once(server.url, tmp_path) == "succeeded"
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None or shutil.which("openssl") is None,
                    reason="needs Debian's redis-server (built with TLS) and openssl: scripts/bootstrap --with-system")
def test_tls_redis(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis", tls=tls, binary=shutil.which("redis-server")).start()
    try:
        assert server.url.startswith("rediss://")
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2).ping()  # plain text is refused
        assert run_once(server.url, tmp_path) == "succeeded"
    finally:
        server.stop()
