"""The closed set of statuses and their allowed transitions, as data.

The tables are authoritative at run time: engine/scripts.py generates its Lua guards from them, so a
transition missing here fails the script instead of being recorded."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


S = Status


class Outcome(StrEnum):
    """What handling one step message came to (returned by the executor, for the task runtime and logs)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    TOLERATED = "tolerated"
    """Failed, within its for_each failure budget: the run goes on."""
    WAITING = "waiting"
    """Parked until a timer: a poll, an approval gate, a worker with the planned action."""
    RETRYING = "retrying"
    STALE = "stale"
    """Another execution owns the step now (this one lost its lease)."""
    LOST_LOCK = "lost_lock"
    """The run lost a lock and was fenced off."""
    STARTED = "started"
    """A run waiting for its locks got them and started."""
    NOT_DUE = "not_due"
    """Not this message's to execute yet: its dependencies, its timer or another worker's live lease come first."""
    ALREADY_DONE = "already_done"
    """A duplicate message: the step already finished (or was recorded lost after its run ended)."""
    RUN_INACTIVE = "run_inactive"
    """The run is not running (finished, cancelled, failed): the step does not start."""

    @classmethod
    def of_claim(cls, claim_outcome: str) -> Outcome:
        """The executor's outcome for a claim that was refused (the store's claim outcome strings)."""
        if claim_outcome in ("done", "orphaned"):
            return cls.ALREADY_DONE
        if claim_outcome.startswith("run_"):
            return cls.RUN_INACTIVE
        return cls.NOT_DUE


PARKED_OUTCOMES: frozenset[Outcome] = frozenset({Outcome.WAITING, Outcome.RETRYING, Outcome.NOT_DUE})
"""Outcomes after which the step still has to run (the native canvas executor retries its task on them)."""

STEP_TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.RUNNING, S.SKIPPED, S.CANCELLED, S.WAITING}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.WAITING, S.SKIPPED, S.CANCELLED, S.RUNNING}),
    S.WAITING: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.SKIPPED: frozenset(),
    S.FAILED: frozenset({S.PENDING}),  # resume
    S.CANCELLED: frozenset({S.PENDING}),  # resume
}
"""RUNNING -> RUNNING is a takeover: a new attempt after the previous worker lost its lease."""

RUN_TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.WAITING}),
    S.WAITING: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.RUNNING, S.CANCELLED}),  # resume; cancel releases its locks
    S.CANCELLED: frozenset({S.RUNNING}),  # resume
}

TERMINAL: frozenset[Status] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.SKIPPED})
DONE_OK: frozenset[Status] = frozenset({S.SUCCEEDED, S.SKIPPED})
"""Statuses that satisfy a dependency."""
ACTIVE: frozenset[Status] = frozenset({S.RUNNING, S.WAITING})
FINISHED_RUN: frozenset[Status] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
"""Run statuses that no longer change on their own (resume can still restart a failed or cancelled run)."""


def run_settled(record: Mapping[str, Any]) -> bool:
    """Nothing more happens to a run by itself: it finished, none of its steps still runs (a cancelled run's
    running steps are being interrupted) and no cleanup step is left to run. Whoever follows a run (CLI,
    event stream, chat progress) stops here, not at the first finished status."""
    if record.get("status") not in FINISHED_RUN or record.get("cleanup") == "running":
        return False
    return int(record.get("n_active") or 0) <= 0


def can_step(old: Status, new: Status) -> bool:
    return new in STEP_TRANSITIONS[old]


def can_run(old: Status, new: Status) -> bool:
    return new in RUN_TRANSITIONS[old]
