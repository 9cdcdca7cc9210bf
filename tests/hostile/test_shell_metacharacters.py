"""Shell metacharacters end to end: a parameter goes through resolve_params, the plan and template
rendering into an argv, then over a real sshd (tests/support/sshd.py) to the host. It must arrive as
ONE literal argument, and no side effect of the shell syntax it carries may happen."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actions import default_registry
from actions.ssh import ConnectionPool, SSHSettings, SSHToolkit
from engine import templating
from engine.errors import ActionError
from engine.params import resolve_params
from engine.plan import build_plan
from engine.runbook import parse_runbook
from tests.support.sshd import Sshd, running_sshd

REGISTRY = default_registry()
MARKER = "@MARKER@"

HOSTILE = {
    "semicolon": f"node2; touch {MARKER}",
    "command substitution": f"$(touch {MARKER})",
    "backticks": f"`touch {MARKER}`",
    "and-or": f"x && touch {MARKER} || touch {MARKER}",
    "pipe": f"x | touch {MARKER}",
    "newline": f"node2\ntouch {MARKER}",
    "carriage return": f"node2\rtouch {MARKER}",
    "single quotes": f"'; touch {MARKER}; '",
    "double quotes": f"\"; touch {MARKER}; \"",
    "mixed quotes": f"a'b\"c; touch {MARKER}",
    "redirection": f">{MARKER}",
    "process substitution": f"<(touch {MARKER})",
    "variable and IFS": f"$IFS;touch${{IFS}}{MARKER}",
    "glob": "*",
    "option-looking": "--help",
    "tab and spaces": "a \t b",
    "backslashes": f"\\; touch {MARKER} \\",
    "template syntax": "{{ 7 * 7 }}",
    "unicode": "nœud-2 ✓",
}

RUNBOOK = parse_runbook("""name: shell
params:
  node: {type: string, required: true}
steps:
  - id: show
    action: core.echo
    with:
      message: "print {{ params.node }}"
      data: ["printf", "[%s]\\n", "{{ params.node }}"]
""", "shell.yaml", REGISTRY)


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int | None
    user: str | None
    jump: str | None = None


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warning(self, message: str) -> None:
        self.lines.append(message)

    def error(self, message: str) -> None:
        self.lines.append(message)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def pool() -> Iterator[ConnectionPool]:
    p = ConnectionPool()
    yield p
    p.close_all()


def toolkit(server: Sshd, pool: ConnectionPool, **settings: Any) -> SSHToolkit:
    host = Host("node1", "127.0.0.1", server.port, server.user)
    return SSHToolkit(
        SSHSettings(known_hosts=server.known_hosts, key_file=server.client_key, use_agent=False, connect_timeout=5,
                    **settings),
        {"node1": host}.__getitem__, log=_Log(), dry_run=False, would=lambda *a, **k: None, pool=pool,
    )


def rendered_argv(value: str) -> list[str]:
    """The argv the step would run, built the way the engine builds it: params -> plan -> render."""
    params = resolve_params(RUNBOOK, {"node": value})
    plan = build_plan(RUNBOOK, params, {})
    args = templating.render(plan.steps["show"].args, {"params": plan.params})
    argv: list[str] = args["data"]
    return argv


@pytest.mark.parametrize("case, sudo", [(case, False) for case in HOSTILE]
                         + [(case, True) for case in ("semicolon", "command substitution", "newline", "single quotes")])
def test_a_hostile_parameter_arrives_as_one_literal_argument(case: str, sudo: bool, sshd: Sshd, pool: ConnectionPool,
                                                             tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = HOSTILE[case].replace(MARKER, str(marker))
    argv = rendered_argv(value)
    assert argv == ["printf", "[%s]\n", value]
    result = toolkit(sshd, pool).run("node1", argv, sudo=sudo)
    assert result.stdout == f"[{value}]\n"
    assert result.exit_code == 0
    assert not marker.exists()


@pytest.mark.parametrize("case", HOSTILE)
def test_the_shown_command_line_quotes_every_argument(case: str, sshd: Sshd, pool: ConnectionPool) -> None:
    value = HOSTILE[case].replace(MARKER, "/tmp/never")
    argv = rendered_argv(value)
    assert shlex.split(toolkit(sshd, pool).command_line(argv)) == argv


def test_the_argument_count_on_the_host_is_exact(sshd: Sshd, pool: ConnectionPool, tmp_path: Path) -> None:
    """All hostile values in one command: the remote program sees exactly that many arguments."""
    marker = tmp_path / "pwned"
    values = [v.replace(MARKER, str(marker)) for v in HOSTILE.values()]
    result = toolkit(sshd, pool).run("node1", ["sh", "-c", 'echo "$#"', "sh", *values])
    assert result.stdout == f"{len(values)}\n"
    assert not marker.exists()


def test_a_nul_byte_is_refused_before_anything_is_sent(sshd: Sshd) -> None:
    own_pool = ConnectionPool()
    try:
        with pytest.raises(ActionError) as e:
            toolkit(sshd, own_pool).run("node1", ["printf", "[%s]\\n", "node2\x00; reboot"])
    finally:
        own_pool.close_all()
    assert type(e.value) is ActionError
    assert str(e.value) == "command arguments must not contain NUL bytes, got 'node2\\x00; reboot'"
