"""Extension points around a step's life, in the style of dramatiq's middleware.

Subclass :class:`StepHooks`, override the moments you care about, and hand an instance to the executor
(``Runtime(app, hooks=[...])`` in ``engine.celery_app``, which builds the executor). Every method is a no-op
here. Hooks observe; they cannot change what happens, and an exception in a hook is logged and ignored,
so metrics or a notification sink that fails never fails a step.

Every hook runs in the process executing the step, after the store recorded the transition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("hotswap.hooks")


class StepHooks:
    """No-op hooks; ``run_id``/``step_id`` name the step, ``action`` is its action's registered name."""

    def claimed(self, run_id: str, step_id: str, action: str, attempt: int, takeover: bool) -> None:
        """This process now executes the step (``takeover``: its previous worker lost the lease)."""

    def parked(self, run_id: str, step_id: str, action: str, kind: str, wake_at: float, reason: str) -> None:
        """The step frees its slot until ``wake_at``: kind is poll, retry, approval or deploy."""

    def finished(self, run_id: str, step_id: str, action: str, status: str, seconds: float, error: str) -> None:
        """The step reached a final status (succeeded, failed, skipped); ``seconds`` of this execution."""

    def cleanup_started(self, run_id: str) -> None:
        """A failed or cancelled run starts its cleanup steps."""


class Hooks:
    """Calls every registered hook in order, isolating the executor from their failures."""

    def __init__(self, hooks: Sequence[StepHooks] = ()) -> None:
        self._hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def emit(self, moment: str, *args: Any) -> None:
        for hook in self._hooks:
            try:
                getattr(hook, moment)(*args)
            except Exception:  # an observer must never break a step
                log.exception("hook %s.%s failed; ignored", type(hook).__name__, moment)
