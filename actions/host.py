"""Run a command on an inventory host: the escape hatch for steps no dedicated action covers."""

from __future__ import annotations

from typing import Any

from actions.base import ActionContext, action
from engine.errors import ActionError


@action("host.run")
def run(ctx: ActionContext, *, host: str, argv: list[str], timeout: float = 600, sudo: bool = False,
        mutating: bool = True, check: bool = True) -> dict[str, Any]:
    """Run ``argv`` (a list: never a shell string) on ``host`` over SSH; return exit code, stdout and stderr.

    Each item arrives as one literal argument. A timeout or a cancelled run kills the remote process.
    ``mutating: false`` marks a read-only command that may run even in dry-run.
    """
    if ctx.ssh is None:
        raise ActionError("no SSH toolkit: configure an inventory (HOTSWAP_INVENTORY) for the workers")
    if not argv:
        raise ActionError("argv is empty: give the command as a list, e.g. [uptime]")
    result = ctx.ssh.run(host, argv, timeout=timeout, sudo=sudo, mutating=mutating, check=check)
    return {"exit_code": result.exit_code, "stdout": result.stdout[-20000:], "stderr": result.stderr[-20000:]}
