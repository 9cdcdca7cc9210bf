"""SSHToolkit against a real OpenSSH sshd on 127.0.0.1 (see tests/support/sshd.py)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest

from actions.redact import redact
from actions.ssh import CommandResult, ConnectionPool, SSHSettings, SSHToolkit
from engine.errors import ActionError, CommandFailed, CommandTimeout, ConnectionFailed, HostKeyError
from tests.support.sshd import Sshd, closed_port, generate_key, running_sshd


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int | None
    user: str | None
    jump: str | None = None


class ListLog:
    def __init__(self, on_line: Callable[[str], None] = lambda line: None) -> None:
        self.records: list[tuple[str, str]] = []
        self.on_line = on_line

    def _add(self, level: str, message: str) -> None:
        self.records.append((level, message))
        self.on_line(message)

    def info(self, message: str) -> None:
        self._add("info", message)

    def warning(self, message: str) -> None:
        self._add("warning", message)

    def error(self, message: str) -> None:
        self._add("error", message)

    def text(self) -> str:
        return "\n".join(m for _, m in self.records)


class Harness:
    """Builds toolkits for a set of hosts, each with its own pool, closed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.hosts: dict[str, Host] = {}
        self.pools: list[ConnectionPool] = []
        self.planned: list[dict[str, Any]] = []

    def add(
        self, name: str, server: Sshd | None = None, *, port: int | None = None, jump: str | None = None
    ) -> Host:
        if server is not None:
            port = server.port
        host = Host(name, "127.0.0.1", port, server.user if server else "root", jump)
        self.hosts[name] = host
        return host

    def would(self, kind: str, **details: Any) -> None:
        self.planned.append({"kind": kind, **details})

    def toolkit(
        self,
        *,
        log: ListLog | None = None,
        dry_run: bool = False,
        secrets: tuple[str, ...] = (),
        cancelled: Callable[[], bool] = lambda: False,
        pool: ConnectionPool | None = None,
        **settings: Any,
    ) -> tuple[SSHToolkit, ListLog]:
        log = log or ListLog()
        if pool is None:
            pool = ConnectionPool()
            self.pools.append(pool)
        settings.setdefault("connect_timeout", 5)
        toolkit = SSHToolkit(
            SSHSettings(**settings),
            self.hosts.__getitem__,
            log=log,
            dry_run=dry_run,
            would=self.would,
            secrets=secrets,
            cancelled=cancelled,
            pool=pool,
        )
        return toolkit, log

    def close(self) -> None:
        for pool in self.pools:
            pool.close_all()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


Node = Callable[..., tuple[SSHToolkit, ListLog]]


@pytest.fixture
def node(harness: Harness, sshd: Sshd) -> Node:
    """A toolkit that reaches host 'n1' (the sshd fixture) with verified keys."""
    harness.add("n1", sshd)

    def make(**kwargs: Any) -> tuple[SSHToolkit, ListLog]:
        kwargs.setdefault("known_hosts", sshd.known_hosts)
        kwargs.setdefault("key_file", sshd.client_key)
        kwargs.setdefault("use_agent", False)
        return harness.toolkit(**kwargs)

    return make


def processes_with_args(*args: str) -> list[int]:
    """Pids of local processes whose argv ends with ``args`` (the sshd is local, so remote == local)."""
    wanted = list(args)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [a.decode(errors="replace") for a in argv[-len(wanted) :]] == wanted:
            found.append(int(entry.name))
    return found


def unique_seconds() -> str:
    """A sleep duration no other process on this machine uses, to find our remote sleep."""
    return f"{300 + os.getpid() % 1000}.{threading.get_ident() % 997}"


# -- running commands ------------------------------------------------------------------------------


def test_run_returns_stdout_stderr_and_exit_code(node: Node) -> None:
    toolkit, log = node()
    result = toolkit.run("n1", ["sh", "-c", "echo out; echo more; echo err >&2; exit 3"], check=False)
    assert (result.host, result.exit_code, result.stdout, result.stderr) == ("n1", 3, "out\nmore\n", "err\n")
    assert not result.dry_run
    assert ("info", "n1: out") in log.records
    assert ("info", "n1: more") in log.records
    assert ("warning", "n1: err") in log.records


def test_check_raises_command_failed_with_stderr_tail(node: Node) -> None:
    toolkit, _ = node()
    with pytest.raises(CommandFailed) as info:
        toolkit.run("n1", ["sh", "-c", "echo first >&2; echo disk on fire >&2; exit 2"])
    assert info.value.host == "n1"
    assert info.value.exit_code_value == 2
    assert "exited 2: disk on fire" in str(info.value)


def test_arguments_arrive_literally_and_nothing_is_injected(node: Node, tmp_path: Path) -> None:
    toolkit, _ = node()
    marker = tmp_path / "injected"
    hostile = [
        f"node2; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"x && touch {marker} || touch {marker}",
        f"a'b\"c | touch {marker}",
        "*",
        "",
        "line1\nline2",
    ]
    result = toolkit.run("n1", ["printf", "[%s]\\n", *hostile])
    assert result.stdout == "".join(f"[{item}]\n" for item in hostile)
    assert not marker.exists()


def test_stdin_is_passed(node: Node) -> None:
    toolkit, _ = node()
    assert toolkit.run("n1", ["cat"], stdin="hello\nworld").stdout == "hello\nworld"
    assert toolkit.run("n1", ["cat"]).stdout == ""


def test_json_output(node: Node) -> None:
    toolkit, _ = node()
    assert toolkit.run("n1", ["echo", '{"health": "HEALTH_OK"}']).json() == {"health": "HEALTH_OK"}
    with pytest.raises(ActionError, match="n1: 'echo not-json' did not print valid JSON"):
        toolkit.run("n1", ["echo", "not-json"]).json()


def test_large_output_is_captured_fully(node: Node) -> None:
    toolkit, log = node()
    result = toolkit.run("n1", ["seq", "1", "20000"])
    assert result.stdout.splitlines() == [str(i) for i in range(1, 20001)]
    assert sum(1 for level, m in log.records if level == "info" and m.startswith("n1: ")) >= 20000


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo not installed")
def test_sudo_prefix(node: Node) -> None:
    toolkit, log = node(sudo=True)
    assert toolkit.run("n1", ["id", "-u"]).stdout == "0\n"
    assert ("info", "n1$ sudo -n -- id -u") in log.records


def test_rejects_non_list_commands(node: Node) -> None:
    toolkit, _ = node()
    with pytest.raises(ActionError, match="non-empty list"):
        toolkit.run("n1", "echo hi")  # type: ignore[arg-type]
    with pytest.raises(ActionError, match="must be strings"):
        toolkit.run("n1", ["echo", 3])  # type: ignore[list-item]


# -- host keys -------------------------------------------------------------------------------------


def test_unknown_host_key_is_rejected_with_instructions(node: Node, sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "empty_known_hosts"
    known_hosts.write_text("")
    toolkit, _ = node(known_hosts=known_hosts)
    with pytest.raises(HostKeyError) as info:
        toolkit.run("n1", ["true"])
    message = str(info.value)
    assert "unknown host key" in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known_hosts}" in message
    assert "trust_on_first_use" in message
    assert known_hosts.read_text() == ""


def test_changed_host_key_is_rejected_even_with_trust_on_first_use(
    node: Node, sshd: Sshd, tmp_path: Path
) -> None:
    other = generate_key(tmp_path / "other_host_key")
    keytype, key = Path(f"{other}.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {keytype} {key}\n")
    for tofu in (False, True):
        toolkit, _ = node(known_hosts=known_hosts, trust_on_first_use=tofu)
        with pytest.raises(HostKeyError, match=r"host key for n1 .* CHANGED"):
            toolkit.run("n1", ["true"])
    assert known_hosts.read_text() == f"[127.0.0.1]:{sshd.port} {keytype} {key}\n"


def test_trust_on_first_use_records_the_key(node: Node, sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "new" / "known_hosts"
    toolkit, log = node(known_hosts=known_hosts, trust_on_first_use=True)
    assert toolkit.run("n1", ["echo", "ok"]).stdout == "ok\n"
    assert known_hosts.read_text().split() == sshd.known_hosts_line().split()
    assert any(level == "warning" and "trusted new host key" in m for level, m in log.records)
    strict, _ = node(known_hosts=known_hosts)
    assert strict.run("n1", ["echo", "ok"]).stdout == "ok\n"


# -- connection errors -----------------------------------------------------------------------------


def test_closed_port_raises_connection_failed(harness: Harness, tmp_path: Path) -> None:
    harness.add("gone", port=closed_port())
    toolkit, _ = harness.toolkit(known_hosts=tmp_path / "known_hosts", use_agent=False)
    with pytest.raises(ConnectionFailed, match=r"gone: cannot connect to root@127\.0\.0\.1"):
        toolkit.run("gone", ["true"])


def test_wrong_key_is_an_authentication_error(node: Node, tmp_path: Path) -> None:
    toolkit, _ = node(key_file=generate_key(tmp_path / "stranger"))
    with pytest.raises(ActionError, match=r"authentication as .* failed"):
        toolkit.run("n1", ["true"])


# -- timeouts and cancellation ---------------------------------------------------------------------


def test_timeout_kills_the_remote_process(node: Node) -> None:
    toolkit, log = node()
    seconds = unique_seconds()
    with pytest.raises(CommandTimeout, match="did not finish in 1s and was killed"):
        toolkit.run("n1", ["sh", "-c", 'echo started; exec sleep "$1"', "sh", seconds], timeout=1)
    assert ("info", "n1: started") in log.records
    assert processes_with_args("sleep", seconds) == []
    assert any("killed remote process" in m and "SIGTERM" in m for _, m in log.records)


def test_timeout_kills_children_and_escalates_to_sigkill(
    node: Node,
) -> None:
    toolkit, log = node()
    toolkit.kill_grace = 0.5
    seconds = unique_seconds()
    script = 'trap "" TERM; echo started; sleep "$1" & wait'
    with pytest.raises(CommandTimeout):
        toolkit.run("n1", ["sh", "-c", script, "sh", seconds], timeout=1)
    assert ("info", "n1: started") in log.records
    assert processes_with_args("sleep", seconds) == []
    assert any("killed remote process" in m and "SIGKILL" in m for _, m in log.records)


@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo not installed")
def test_timeout_kills_a_sudo_command(node: Node) -> None:
    toolkit, log = node(sudo=True)
    seconds = unique_seconds()
    with pytest.raises(CommandTimeout):
        toolkit.run("n1", ["sh", "-c", 'echo started; exec sleep "$1"', "sh", seconds], timeout=1)
    assert ("info", "n1: started") in log.records
    assert processes_with_args("sleep", seconds) == []


def test_cancel_kills_the_remote_process(node: Node) -> None:
    started = threading.Event()
    log = ListLog(on_line=lambda line: started.set() if line == "n1: started" else None)
    toolkit, _ = node(log=log, cancelled=started.is_set)
    seconds = unique_seconds()
    with pytest.raises(ActionError, match="cancelled; the remote process was killed"):
        toolkit.run("n1", ["sh", "-c", 'echo started; exec sleep "$1"', "sh", seconds], timeout=60)
    assert processes_with_args("sleep", seconds) == []


# -- connection pool -------------------------------------------------------------------------------


def test_connection_is_reused(node: Node) -> None:
    toolkit, log = node()
    toolkit.run("n1", ["true"])
    transport = toolkit.client("n1").get_transport()
    toolkit.run("n1", ["true"])
    assert toolkit.client("n1").get_transport() is transport
    assert sum("connected to" in m for _, m in log.records) == 1


def test_pool_is_shared_between_toolkits(node: Node) -> None:
    first, _ = node()
    second, second_log = node(pool=first.pool)
    first.run("n1", ["true"])
    second.run("n1", ["true"])
    assert first.client("n1") is second.client("n1")
    assert not any("connected to" in m for _, m in second_log.records)


def test_concurrent_commands_share_one_connection(node: Node) -> None:
    toolkit, log = node()
    results: list[CommandResult] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(toolkit.run("n1", ["echo", str(i)]))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.stdout for r in results) == sorted(f"{i}\n" for i in range(8))
    assert sum("connected to" in m for _, m in log.records) == 1
    assert len(toolkit.pool) == 1


def test_reconnects_after_the_server_drops_the_connection(node: Node, sshd: Sshd) -> None:
    toolkit, log = node()
    toolkit.run("n1", ["true"])
    before = toolkit.pool.peek(toolkit.endpoint("n1").key)
    assert before is not None
    assert sshd.kill_connections() > 0
    assert toolkit.run("n1", ["echo", "again"]).stdout == "again\n"
    assert toolkit.client("n1") is not before
    assert sum("connected to" in m for _, m in log.records) == 2


def test_reconnects_when_the_connection_hangs(node: Node, sshd: Sshd) -> None:
    """A transport that still looks alive but does not answer: opening a channel times out, reconnect."""
    toolkit, log = node(connect_timeout=1)
    toolkit.run("n1", ["true"])
    before = toolkit.client("n1")
    stopped = sshd.connection_pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    assert toolkit.run("n1", ["echo", "again"]).stdout == "again\n"
    assert toolkit.client("n1") is not before
    assert any(level == "warning" and "connection lost" in m for level, m in log.records)
    for pid in stopped:
        os.kill(pid, signal.SIGKILL)


def test_cancelled_before_start_runs_nothing(node: Node, tmp_path: Path) -> None:
    toolkit, _ = node(cancelled=lambda: True)
    with pytest.raises(ActionError, match="not started: the run was cancelled"):
        toolkit.run("n1", ["touch", str(tmp_path / "ran")])
    assert not (tmp_path / "ran").exists()


def test_no_file_descriptor_leak(node: Node) -> None:
    toolkit, _ = node()
    toolkit.run("n1", ["true"])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        toolkit.run("n1", ["echo", "x"])
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_reconnects_after_sshd_restart(node: Node, sshd: Sshd) -> None:
    toolkit, _ = node()
    toolkit.run("n1", ["true"])
    sshd.restart()
    assert toolkit.run("n1", ["echo", "again"]).stdout == "again\n"


def test_one_reconnect_then_connection_failed(node: Node, sshd: Sshd) -> None:
    toolkit, _ = node()
    toolkit.run("n1", ["true"])
    sshd.stop()
    with pytest.raises(ConnectionFailed, match="n1: cannot connect"):
        toolkit.run("n1", ["true"])


# -- jump host -------------------------------------------------------------------------------------


@pytest.fixture
def bastion(tmp_path: Path, sshd: Sshd) -> Iterator[Sshd]:
    with running_sshd(tmp_path / "bastion", client_key=sshd.client_key) as server:
        yield server


def test_jump_host(harness: Harness, sshd: Sshd, bastion: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "both_known_hosts"
    known_hosts.write_text(f"{bastion.known_hosts_line()}\n{sshd.known_hosts_line()}\n")
    harness.add("bastion", bastion)
    harness.add("target", sshd, jump="bastion")
    toolkit, _ = harness.toolkit(known_hosts=known_hosts, key_file=sshd.client_key, use_agent=False)
    assert toolkit.run("target", ["echo", "through"]).stdout == "through\n"
    target_transport = toolkit.client("target").get_transport()
    assert target_transport is not None
    assert isinstance(target_transport.sock, paramiko.Channel)
    assert target_transport.sock.get_transport() is toolkit.client("bastion").get_transport()


def test_jump_host_target_key_is_verified(
    harness: Harness, sshd: Sshd, bastion: Sshd, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "bastion_only"
    known_hosts.write_text(f"{bastion.known_hosts_line()}\n")
    harness.add("bastion", bastion)
    harness.add("target", sshd, jump="bastion")
    toolkit, _ = harness.toolkit(known_hosts=known_hosts, key_file=sshd.client_key, use_agent=False)
    with pytest.raises(HostKeyError, match="target: unknown host key"):
        toolkit.run("target", ["true"])


def test_jump_loop_is_reported(harness: Harness, tmp_path: Path) -> None:
    harness.add("a", port=closed_port(), jump="b")
    harness.add("b", port=closed_port(), jump="a")
    toolkit, _ = harness.toolkit(known_hosts=tmp_path / "kh", use_agent=False)
    with pytest.raises(ActionError, match="jump hosts loop"):
        toolkit.run("a", ["true"])


# -- dry-run ---------------------------------------------------------------------------------------


def test_dry_run_does_not_connect_and_records_the_command(harness: Harness, tmp_path: Path) -> None:
    harness.add("n9", port=closed_port())
    toolkit, _ = harness.toolkit(known_hosts=tmp_path / "kh", dry_run=True, use_agent=False)
    result = toolkit.run("n9", ["systemctl", "stop", "ceph-osd@3"])
    assert result == CommandResult("n9", ["systemctl", "stop", "ceph-osd@3"], 0, "", "", 0.0, dry_run=True)
    assert result.json() is None
    toolkit.run("n9", ["ceph", "osd", "out", "osd.3; reboot"], sudo=True)
    assert harness.planned == [
        {"kind": "ssh", "host": "n9", "command": "systemctl stop ceph-osd@3"},
        {"kind": "ssh", "host": "n9", "command": "sudo -n -- ceph osd out 'osd.3; reboot'"},
    ]
    assert len(toolkit.pool) == 0


def test_dry_run_still_runs_read_only_commands(node: Node) -> None:
    toolkit, _ = node(dry_run=True)
    result = toolkit.run("n1", ["echo", "real state"], mutating=False)
    assert (result.stdout, result.dry_run) == ("real state\n", False)


def test_dry_run_read_only_command_really_connects(harness: Harness, tmp_path: Path) -> None:
    harness.add("n9", port=closed_port())
    toolkit, _ = harness.toolkit(known_hosts=tmp_path / "kh", dry_run=True, use_agent=False)
    with pytest.raises(ConnectionFailed):
        toolkit.run("n9", ["ceph", "status"], mutating=False)


# -- secrets ---------------------------------------------------------------------------------------


def test_secrets_are_redacted_in_logs_and_errors(node: Node) -> None:
    secret = "s3cr3t-t0ken"
    toolkit, log = node(secrets=(secret,))
    result = toolkit.run("n1", ["sh", "-c", 'echo "token=$1"; echo "stderr $1" >&2', "sh", secret])
    assert result.stdout == f"token={secret}\n"
    with pytest.raises(CommandFailed) as info:
        toolkit.run("n1", ["sh", "-c", 'echo "bad $1" >&2; exit 1', "sh", secret])
    assert secret not in str(info.value)
    assert "bad ***" in str(info.value)
    with pytest.raises(ActionError) as json_info:
        toolkit.run("n1", ["echo", secret]).json()
    assert secret not in str(json_info.value)
    assert secret not in log.text()
    assert "n1: token=***" in log.text()
    assert "n1: stderr ***" in log.text()


def test_secrets_are_redacted_in_dry_run_records(harness: Harness, tmp_path: Path) -> None:
    harness.add("n9", port=closed_port())
    toolkit, _ = harness.toolkit(known_hosts=tmp_path / "kh", dry_run=True, secrets=("hunter2",))
    toolkit.run("n9", ["login", "--password", "hunter2"])
    assert harness.planned == [{"kind": "ssh", "host": "n9", "command": "login --password ***"}]


def test_redact() -> None:
    assert redact("a secret and a secretive one", ["secret", "secretive", ""]) == "a *** and a *** one"
    assert redact("nothing", []) == "nothing"
