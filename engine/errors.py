"""One exception hierarchy for hotswap. Every message says what is wrong and what to do."""

from __future__ import annotations

from dataclasses import dataclass


class HotswapError(Exception):
    """Base of every error hotswap raises on purpose."""

    exit_code = 1


@dataclass(frozen=True)
class Location:
    """Where in a source file something is (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


class ValidationIssue:
    """One problem found while validating a runbook, inventory or parameter."""

    def __init__(self, location: Location | None, message: str, step: str | None = None) -> None:
        self.location = location
        self.message = message
        self.step = step

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        step = f"step '{self.step}': " if self.step else ""
        return f"{where}{step}{self.message}"

    def as_dict(self) -> dict[str, object]:
        loc = self.location
        return {
            "file": loc.file if loc else None,
            "line": loc.line if loc else None,
            "column": loc.column if loc else None,
            "step": self.step,
            "message": self.message,
        }


class ValidationError(HotswapError):
    """A runbook (or its parameters) is invalid; nothing ran."""

    exit_code = 2

    def __init__(self, issues: list[ValidationIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class UnknownActionError(HotswapError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown action '{name}': run 'hotswap actions' to list the available ones")
        self.name = name


class ActionError(HotswapError):
    """An action failed in a way it understands; the message is shown to the operator."""


class SafetyCheckFailed(ActionError):
    """A safety check refused a destructive step; fix the cluster state, then resume the run."""


class CommandFailed(ActionError):
    """A remote or local command exited non-zero."""

    def __init__(self, host: str, argv: list[str], exit_code: int, stderr: str) -> None:
        self.host = host
        self.argv = argv
        self.exit_code_value = exit_code
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"{host}: '{' '.join(argv)}' exited {exit_code}" + (f": {tail}" if tail else ""))


class CommandTimeout(ActionError):
    def __init__(self, host: str, argv: list[str], seconds: float) -> None:
        super().__init__(f"{host}: '{' '.join(argv)}' did not finish in {seconds:g}s and was killed")


class ConnectionFailed(ActionError):
    """Could not reach a host or service; usually transient, so retries apply."""


class HostKeyError(ActionError):
    """A host presented an unknown or changed SSH host key."""


class StepTimeout(HotswapError):
    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(f"step '{step}' exceeded its timeout of {seconds:g}s")


class RunNotFound(HotswapError):
    exit_code = 3

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run '{run_id}': run 'hotswap runs' to list recent runs")


class StepNotFound(HotswapError):
    exit_code = 3

    def __init__(self, run_id: str, step: str) -> None:
        super().__init__(f"run '{run_id}' has no step '{step}': run 'hotswap status {run_id}' to see its steps")


class LeaseLost(HotswapError):
    """This execution of a step may no longer act: its lease lapsed or another worker took the step over.
    Not a failure of the step: the execution stops without recording anything and the takeover goes on."""


class ActionMismatch(HotswapError):
    """This worker's action is not the one the run was planned with (a deploy changed it): the step waits
    for a worker that has the planned action instead of running it with other semantics."""


class InvalidTransition(HotswapError):
    """An operation does not apply to a run or step in its current status."""


class ApprovalDenied(HotswapError):
    """Someone not allowed to approve a gate tried to."""


class LockHeld(HotswapError):
    def __init__(self, lock: str, holder: str) -> None:
        super().__init__(f"lock '{lock}' is held by run {holder}: wait for it or cancel it")
        self.holder = holder


class ConfigError(HotswapError):
    """The configuration (environment, config file, inventory) is wrong."""


class InventoryError(HotswapError):
    """The inventory is invalid or a lookup found nothing."""
