"""The closed set of statuses and their allowed transitions, as data."""

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
    S.FAILED: frozenset({S.RUNNING}),  # resume
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
