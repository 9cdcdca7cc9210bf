"""Run commands on inventory hosts over SSH (``ctx.ssh``).

Commands are argv lists: every item is shell-quoted, so a parameter such as ``node2; rm -rf /`` reaches
the remote program as one literal argument. Host keys are always verified (unknown keys are rejected
unless ``trust_on_first_use`` is set; changed keys are rejected always). Connections are pooled per
worker process and reused; a dropped connection is re-established once, transparently.

Dry-run: a command run with ``mutating=True`` (the default) is not run; the exact command line is
recorded with ``would("ssh", ...)``. A command run with ``mutating=False`` is read-only (``ceph status``,
``lsblk``) and runs for real even in dry-run, so a dry-run shows the real state of the cluster.

Timeouts and cancellation kill the remote process, not just the channel: the command runs as
``sh -c 'echo $$; exec "$@"' hotswap ARGV...`` so its pid is known, and is killed through a second channel
(SIGTERM to its process group and itself, SIGKILL after ``kill_grace`` seconds).
"""

from __future__ import annotations

import base64
import codecs
import fcntl
import hashlib
import json as jsonlib
import os
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paramiko

from actions.base import StepLogger
from actions.redact import redact
from engine.errors import ActionError, CommandFailed, CommandTimeout, ConnectionFailed, HostKeyError

WRAPPER = 'echo $$; exec "$@"'
"""Prints the pid of the command (the shell execs into it, keeping the pid) before running it."""

POLL_INTERVAL = 0.2
JUMP_DEPTH_LIMIT = 8


class HostLike(Protocol):
    """What the toolkit needs from an inventory host."""

    @property
    def name(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def jump(self) -> str | None: ...


@dataclass(frozen=True)
class SSHSettings:
    """Defaults for every host (the inventory's ``ssh:`` section)."""

    user: str = "root"
    port: int = 22
    known_hosts: str | Path | None = None
    """Host keys are verified against this file; None means ``~/.ssh/known_hosts``."""
    key_file: str | Path | None = None
    trust_on_first_use: bool = False
    connect_timeout: float = 10
    command_timeout: float = 600
    sudo: bool = False
    use_agent: bool = True

    def known_hosts_path(self) -> Path:
        if self.known_hosts is not None:
            return Path(self.known_hosts).expanduser()
        return Path.home() / ".ssh" / "known_hosts"


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    duration: float
    dry_run: bool = False
    redact_with: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def json(self) -> Any:
        """stdout parsed as JSON (None for a dry-run result, which has no output)."""
        if self.dry_run:
            return None
        try:
            return jsonlib.loads(self.stdout)
        except ValueError as e:
            command = redact(shlex.join(self.argv), self.redact_with)
            excerpt = redact(self.stdout.strip()[:200], self.redact_with)
            raise ActionError(
                f"{self.host}: '{command}' did not print valid JSON ({e}): {excerpt!r}"
            ) from None


PoolKey = tuple[str, int, str, str | None]


@dataclass(frozen=True)
class Endpoint:
    """A host with the settings' defaults applied."""

    name: str
    address: str
    port: int
    user: str
    jump: str | None

    @property
    def key(self) -> PoolKey:
        return (self.address, self.port, self.user, self.jump)

    def __str__(self) -> str:
        via = f" via {self.jump}" if self.jump else ""
        return f"{self.user}@{self.address}:{self.port}{via}"


def _alive(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


class ConnectionPool:
    """SSH connections of one worker process, keyed by (address, port, user, jump), reused across steps.

    Thread-safe: connecting to one host does not block other hosts. After a fork the child starts
    empty (the parent's transports belong to the parent).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[PoolKey, paramiko.SSHClient] = {}
        self._key_locks: dict[PoolKey, threading.Lock] = {}
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._clients = {}
            self._key_locks = {}
            self._pid = os.getpid()

    def _key_lock(self, key: PoolKey) -> threading.Lock:
        with self._lock:
            self._check_fork()
            return self._key_locks.setdefault(key, threading.Lock())

    def get(self, key: PoolKey, connect: Callable[[], paramiko.SSHClient]) -> paramiko.SSHClient:
        """The live connection for ``key``, made with ``connect()`` when there is none or it died."""
        with self._key_lock(key):
            with self._lock:
                client = self._clients.get(key)
            if client is not None and _alive(client):
                return client
            if client is not None:
                self.discard(key, client)
            client = connect()
            with self._lock:
                self._clients[key] = client
            return client

    def peek(self, key: PoolKey) -> paramiko.SSHClient | None:
        with self._lock:
            self._check_fork()
            return self._clients.get(key)

    def discard(self, key: PoolKey, client: paramiko.SSHClient) -> None:
        with self._lock:
            if self._clients.get(key) is client:
                del self._clients[key]
        client.close()

    def close_all(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)


_default_pool: ConnectionPool | None = None
_default_pool_lock = threading.Lock()


def default_pool() -> ConnectionPool:
    """The pool shared by every toolkit of this process that was not given one."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None:
            _default_pool = ConnectionPool()
        return _default_pool


def fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def _keyscan_hint(ep: Endpoint, known_hosts: Path) -> str:
    port = f"-p {ep.port} " if ep.port != 22 else ""
    where = f" (from a machine that reaches it, e.g. jump host {ep.jump})" if ep.jump else ""
    return f"ssh-keyscan {port}{ep.address} >> {known_hosts}{where}"


_known_hosts_lock = threading.Lock()


def _record_host_key(path: Path, hostname: str, key: paramiko.PKey) -> None:
    line = paramiko.hostkeys.HostKeyEntry([hostname], key).to_line()
    if line is None:
        raise HostKeyError(f"cannot record the host key of {hostname}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _known_hosts_lock, path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host key: refuse with instructions, or record it when trust-on-first-use is on."""

    def __init__(self, ep: Endpoint, known_hosts: Path, tofu: bool, log: StepLogger) -> None:
        self.ep = ep
        self.known_hosts = known_hosts
        self.tofu = tofu
        self.log = log

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.tofu:
            raise HostKeyError(
                f"{self.ep.name}: unknown host key for {hostname} ({fingerprint(key)}), "
                f"not in {self.known_hosts}. "
                f"Check the fingerprint, then add it: {_keyscan_hint(self.ep, self.known_hosts)} "
                "(or set ssh.trust_on_first_use: true in the inventory to accept and record unknown keys)"
            )
        _record_host_key(self.known_hosts, hostname, key)
        self.log.warning(
            f"{self.ep.name}: trusted new host key {fingerprint(key)} on first use, "
            f"recorded in {self.known_hosts}"
        )


class _Stream:
    """Decodes one output stream, keeps all of it, and hands complete lines to ``emit`` as they arrive.

    With ``pid_line`` the first line is the wrapper's pid, kept apart from the output.
    """

    def __init__(self, emit: Callable[[str], None], *, pid_line: bool = False) -> None:
        self._emit = emit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._pending = ""
        self._awaiting_pid = pid_line
        self._head = ""
        self.pid: int | None = None

    def feed(self, data: bytes, *, final: bool = False) -> None:
        text = self._decoder.decode(data, final=final)
        if self._awaiting_pid:
            self._head += text
            if "\n" not in self._head and not final:
                return
            first, sep, text = self._head.partition("\n")
            self._awaiting_pid = False
            if sep and first.strip().isdigit():
                self.pid = int(first)
            else:
                text = first + sep + text
        self._parts.append(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line)
        if final and self._pending:
            self._emit(self._pending)
            self._pending = ""

    @property
    def text(self) -> str:
        return "".join(self._parts)


class SSHToolkit:
    """``ctx.ssh``: run argv commands on hosts. See the module docstring for the rules."""

    kill_grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when a command is killed."""

    def __init__(
        self,
        settings: SSHSettings,
        resolve: Callable[[str], HostLike],
        *,
        log: StepLogger,
        dry_run: bool,
        would: Callable[..., None],
        secrets: Iterable[str] = (),
        cancelled: Callable[[], bool] = lambda: False,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.settings = settings
        self.resolve = resolve
        self.log = log
        self.dry_run = dry_run
        self.would = would
        self.secrets = tuple(s for s in secrets if s)
        self.cancelled = cancelled
        self.pool = pool if pool is not None else default_pool()

    # -- public --------------------------------------------------------------------------------------

    def run(
        self,
        host: str | HostLike,
        argv: list[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        sudo: bool | None = None,
        stdin: str | None = None,
        mutating: bool = True,
    ) -> CommandResult:
        """Run ``argv`` on ``host``; ``mutating=False`` marks a read-only command that runs in dry-run too."""
        argv = _checked_argv(argv)
        with_nul = next((a for a in argv if "\x00" in a), None)
        if with_nul is not None:
            raise ActionError(self._redact(f"command arguments must not contain NUL bytes, got {with_nul!r}"))
        ep = self.endpoint(host)
        use_sudo = self.settings.sudo if sudo is None else sudo
        shown = self._redact(self.command_line(argv, sudo=use_sudo))
        if self.dry_run and mutating:
            self.would("ssh", host=ep.name, command=shown)
            return CommandResult(ep.name, list(argv), 0, "", "", 0.0, dry_run=True, redact_with=self.secrets)
        if self.cancelled():
            raise ActionError(f"{ep.name}: '{shown}' not started: the run was cancelled")
        self.log.info(f"{ep.name}$ {shown}")
        limit = self.settings.command_timeout if timeout is None else timeout
        started = time.monotonic()
        channel = self._open_session(ep)
        try:
            code, out, err = self._execute(ep, channel, argv, use_sudo, stdin, limit, started)
        finally:
            channel.close()
        duration = time.monotonic() - started
        result = CommandResult(ep.name, list(argv), code, out, err, duration, redact_with=self.secrets)
        if code != 0:
            self.log.warning(f"{ep.name}: exited {code} after {duration:.1f}s")
            if check:
                raise CommandFailed(ep.name, [self._redact(a) for a in argv], code, self._redact(err))
        return result

    def command_line(self, argv: list[str], *, sudo: bool = False) -> str:
        """The shell command line for ``argv``, as shown to the operator and recorded in dry-run."""
        return shlex.join((["sudo", "-n", "--"] if sudo else []) + list(argv))

    def endpoint(self, host: str | HostLike) -> Endpoint:
        h = self.resolve(host) if isinstance(host, str) else host
        return Endpoint(
            name=h.name,
            address=h.address,
            port=h.port or self.settings.port,
            user=h.user or self.settings.user,
            jump=h.jump,
        )

    def client(self, host: str | HostLike) -> paramiko.SSHClient:
        """The pooled, live connection to ``host`` (connecting when needed)."""
        return self._client(self.endpoint(host), ())

    # -- connecting ----------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def _client(self, ep: Endpoint, chain: tuple[str, ...]) -> paramiko.SSHClient:
        return self.pool.get(ep.key, lambda: self._connect(ep, chain))

    def _connect(self, ep: Endpoint, chain: tuple[str, ...]) -> paramiko.SSHClient:
        sock = self._jump_channel(ep, chain) if ep.jump else None
        known_hosts = self.settings.known_hosts_path()
        client = paramiko.SSHClient()
        try:
            if known_hosts.exists():
                client.load_host_keys(str(known_hosts))
            client.set_missing_host_key_policy(
                _HostKeyPolicy(ep, known_hosts, self.settings.trust_on_first_use, self.log)
            )
            key_file = self.settings.key_file
            timeout = self.settings.connect_timeout
            client.connect(
                hostname=ep.address,
                port=ep.port,
                username=ep.user,
                key_filename=str(Path(key_file).expanduser()) if key_file else None,
                allow_agent=self.settings.use_agent,
                look_for_keys=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                sock=sock,
            )
        except (ActionError, paramiko.SSHException, OSError, EOFError) as e:
            _close(client, sock)
            raise self._connect_error(ep, known_hosts, e) from None
        except BaseException:
            _close(client, sock)
            raise
        self.log.info(f"{ep.name}: connected to {ep}")
        return client

    def _connect_error(self, ep: Endpoint, known_hosts: Path, e: Exception) -> Exception:
        if isinstance(e, ActionError):
            return e
        if isinstance(e, paramiko.BadHostKeyException):
            name = f"[{ep.address}]:{ep.port}" if ep.port != 22 else ep.address
            return HostKeyError(
                f"{ep.name}: host key for {ep.name} ({ep.address}:{ep.port}) CHANGED: {known_hosts} has "
                f"{fingerprint(e.expected_key)} but the host offered {fingerprint(e.key)}. This is either a "
                "reinstalled host or an attack: verify the new key out of band, then replace the entry "
                f"(ssh-keygen -R '{name}' -f {known_hosts}; {_keyscan_hint(ep, known_hosts)})"
            )
        if isinstance(e, paramiko.AuthenticationException):
            return ActionError(
                f"{ep.name}: authentication as {ep.user} failed ({e}): check ssh.key_file, the SSH agent "
                f"and the host's authorized_keys"
            )
        if isinstance(e, OSError | EOFError | paramiko.SSHException):
            reason = str(e) or type(e).__name__
            return ConnectionFailed(self._redact(f"{ep.name}: cannot connect to {ep}: {reason}"))
        return e

    def _jump_channel(self, ep: Endpoint, chain: tuple[str, ...]) -> paramiko.Channel:
        assert ep.jump is not None
        if ep.jump in chain or ep.jump == ep.name or len(chain) >= JUMP_DEPTH_LIMIT:
            raise ActionError(f"{ep.name}: jump hosts loop: {' -> '.join((*chain, ep.name, ep.jump))}")
        jump = self.endpoint(ep.jump)
        jump_client = self._client(jump, (*chain, ep.name))
        transport = jump_client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("jump host transport closed")
            return transport.open_channel(
                "direct-tcpip",
                dest_addr=(ep.address, ep.port),
                src_addr=("127.0.0.1", 0),
                timeout=self.settings.connect_timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.pool.discard(jump.key, jump_client)
            raise ConnectionFailed(
                f"{ep.name}: cannot reach {ep.address}:{ep.port} through jump host {jump.name}: {e}"
            ) from None

    def _open_session(self, ep: Endpoint) -> paramiko.Channel:
        """A session channel on the pooled connection; a dead connection is replaced once."""
        for attempt in (1, 2):
            client = self._client(ep, ())
            try:
                transport = client.get_transport()
                if transport is None or not transport.is_active():
                    raise paramiko.SSHException("transport closed")
                return transport.open_session(timeout=self.settings.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as e:
                self.pool.discard(ep.key, client)
                if attempt == 2:
                    raise ConnectionFailed(
                        f"{ep.name}: connection to {ep} failed again after reconnecting: {e}"
                    ) from None
                self.log.warning(f"{ep.name}: connection lost ({e or type(e).__name__}), reconnecting")
        raise AssertionError("unreachable")

    # -- running -------------------------------------------------------------------------------------

    def _wire_command(self, argv: list[str], sudo: bool) -> str:
        return self.command_line(["sh", "-c", WRAPPER, "hotswap", *argv], sudo=sudo)

    def _execute(
        self,
        ep: Endpoint,
        channel: paramiko.Channel,
        argv: list[str],
        sudo: bool,
        stdin: str | None,
        limit: float,
        started: float,
    ) -> tuple[int, str, str]:
        out = _Stream(lambda line: self.log.info(self._redact(f"{ep.name}: {line}")), pid_line=True)
        err = _Stream(lambda line: self.log.warning(self._redact(f"{ep.name}: {line}")))
        try:
            channel.exec_command(self._wire_command(argv, sudo))
        except (paramiko.SSHException, OSError, EOFError) as e:
            command = self._redact(shlex.join(argv))
            raise ConnectionFailed(f"{ep.name}: could not start '{command}': {e}") from None
        feeder = self._feed_stdin(channel, stdin)
        deadline = started + limit
        while not self._finished(channel):
            self._drain(channel, out, err)
            stop = self._stop_reason(ep, argv, limit, deadline)
            if stop is not None:
                self._kill(ep, channel, out, err, sudo)
                raise stop
            wait = max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
            if channel.eof_received:  # the channel's pipe stays readable after EOF: wait for the status
                channel.status_event.wait(wait)
            else:
                select.select([channel], [], [], wait)
        self._drain(channel, out, err)
        out.feed(b"", final=True)
        err.feed(b"", final=True)
        if feeder is not None:
            feeder.join(timeout=self.settings.connect_timeout)
        if channel.exit_status_ready():
            return channel.recv_exit_status(), out.text, err.text
        transport = channel.get_transport()
        if transport is None or not transport.is_active():
            command = self._redact(shlex.join(argv))
            raise ConnectionFailed(
                f"{ep.name}: connection lost while running '{command}'; it may or may not have completed"
            )
        return -1, out.text, err.text + "\n(killed by a signal)"

    def _stop_reason(
        self, ep: Endpoint, argv: list[str], limit: float, deadline: float
    ) -> ActionError | None:
        redacted = [self._redact(a) for a in argv]
        if self.cancelled():
            command = shlex.join(redacted)
            return ActionError(f"{ep.name}: '{command}' cancelled; the remote process was killed")
        if time.monotonic() >= deadline:
            return CommandTimeout(ep.name, redacted, limit)
        return None

    @staticmethod
    def _finished(channel: paramiko.Channel) -> bool:
        """All output received and the exit status known (or the channel is gone)."""
        if channel.closed:
            return True
        if not (channel.eof_received and channel.exit_status_ready()):
            return False
        return not (channel.recv_ready() or channel.recv_stderr_ready())

    @staticmethod
    def _drain(channel: paramiko.Channel, out: _Stream, err: _Stream) -> None:
        while channel.recv_ready():
            out.feed(channel.recv(65536))
        while channel.recv_stderr_ready():
            err.feed(channel.recv_stderr(65536))

    def _feed_stdin(self, channel: paramiko.Channel, stdin: str | None) -> threading.Thread | None:
        if stdin is None:
            channel.shutdown_write()
            return None

        def feed() -> None:
            try:
                channel.sendall(stdin.encode())
                channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException) as e:
                self.log.warning(f"could not send all of stdin: {e}")

        thread = threading.Thread(target=feed, name="hotswap-ssh-stdin", daemon=True)
        thread.start()
        return thread

    def _kill(self, ep: Endpoint, channel: paramiko.Channel, out: _Stream, err: _Stream, sudo: bool) -> None:
        """Kill the remote command: SIGTERM, then SIGKILL after ``kill_grace``; wait for it to be gone."""
        if out.pid is None:
            self._wait_exit(channel, out, err, lambda: out.pid is not None)
        if out.pid is None:
            self.log.warning(f"{ep.name}: the remote pid is unknown; closing the channel without killing it")
            return
        for signal_name in ("TERM", "KILL"):
            self._signal(ep, channel, out.pid, signal_name, sudo)
            if self._wait_exit(channel, out, err, lambda: channel.exit_status_ready() or channel.closed):
                self.log.warning(f"{ep.name}: killed remote process {out.pid} (SIG{signal_name})")
                return
        self.log.error(f"{ep.name}: remote process {out.pid} still runs after SIGKILL")

    def _wait_exit(
        self, channel: paramiko.Channel, out: _Stream, err: _Stream, done: Callable[[], bool]
    ) -> bool:
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            self._drain(channel, out, err)
            if done():
                return True
            channel.status_event.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return done()

    def _signal(
        self, ep: Endpoint, channel: paramiko.Channel, pid: int, signal_name: str, sudo: bool
    ) -> None:
        # The group first (pid leads it when the login shell exec'ed the wrapper), then the pid itself.
        command = f"kill -s {signal_name} -- -{pid} {pid} 2>/dev/null"
        if sudo:
            command = self.command_line(["sh", "-c", command], sudo=True)
        transport = channel.get_transport()
        try:
            if transport is None or not transport.is_active():
                raise paramiko.SSHException("the connection is gone")
            killer = transport.open_session(timeout=self.settings.connect_timeout)
            try:
                killer.exec_command(command)
                killer.shutdown_write()
                killer.status_event.wait(self.settings.connect_timeout)
            finally:
                killer.close()
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.log.error(f"{ep.name}: could not send SIG{signal_name} to remote process {pid}: {e}")


def _close(client: paramiko.SSHClient, sock: paramiko.Channel | None) -> None:
    client.close()
    if sock is not None:
        sock.close()


def _checked_argv(argv: list[str]) -> list[str]:
    if isinstance(argv, str) or not argv:
        raise ActionError(f"a command must be a non-empty list of arguments, got {argv!r}")
    bad = [a for a in argv if not isinstance(a, str)]
    if bad:
        raise ActionError(f"command arguments must be strings, got {bad[0]!r} in {argv!r}")
    return list(argv)


__all__ = [
    "CommandResult",
    "ConnectionPool",
    "Endpoint",
    "HostLike",
    "SSHSettings",
    "SSHToolkit",
    "default_pool",
    "fingerprint",
]
