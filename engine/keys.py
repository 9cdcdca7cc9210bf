"""Every Redis key, TTL and timing default hotswap uses, named once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

DEFAULT_PREFIX = "hotswap:"

LEASE_SECONDS = 30.0
"""A running step's lease; its worker renews it every LEASE_SECONDS / 3. An expired lease means the worker died."""
CANCEL_CHECK_SECONDS = 0.5
"""How quickly a running action learns that its run was cancelled (its SSH commands are then killed)."""
DEPLOY_RECHECK_SECONDS = 30.0
"""A step whose action changed in a deploy since its run was planned is tried again this often."""
TIMER_REARM_SECONDS = 60.0
"""A due timer handed to the queue is re-armed this far ahead until the step claims it (a lost message retries)."""
REDELIVER_SECONDS = 120.0
"""A released step not claimed within this long is published again (its message was lost with a worker
or with Redis). Longer than any normal queue backlog, so it rarely duplicates a message still in flight."""
INLINE_STEPS = 16
"""How many released steps one worker task runs on its own before publishing the rest (see Executor.inline)."""
TICK_SECONDS = 0.25
"""How often each worker looks for due timers and expired leases. Step-to-step release does not wait for it."""
BROKER_VISIBILITY_TIMEOUT = 3600 * 6
"""Redis transport visibility timeout. hotswap never uses countdown/ETA, so no message outlives it by design."""
LOCK_LEASE_SECONDS = 300.0
"""A run's locks are renewed by every worker's ticker while the run is active; if no worker renews them
(every worker gone) they lapse after this, and the run is fenced off when it comes back."""
LOCK_RENEW_EVERY_TICKS = 8


@dataclass(frozen=True)
class Timings:
    """The timings a deployment may tune, passed as values to the store and the executor. Each can be set by
    an environment variable (``Timings.from_env``, read once by the composition root, never at import)."""

    lease: float = LEASE_SECONDS
    redeliver: float = REDELIVER_SECONDS
    inline: int = INLINE_STEPS
    lock_lease: float = LOCK_LEASE_SECONDS

    ENV = {"lease": "HOTSWAP_LEASE_SECONDS", "redeliver": "HOTSWAP_REDELIVER_SECONDS", "inline": "HOTSWAP_INLINE_STEPS",
           "lock_lease": "HOTSWAP_LOCK_LEASE_SECONDS"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Timings:
        values: dict[str, float | int] = {}
        for f in fields(cls):
            raw = environ.get(cls.ENV[f.name])
            if raw:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
        return cls(**values)  # type: ignore[arg-type]
LOCK_RETRY_SECONDS = 5.0
"""How often a run waiting for a lock tries again."""
MAX_RESULT_BYTES = 256 * 1024
MAX_LOG_LINE = 4000
FINISHED_RUN_TTL: int | None = None
"""Finished runs are kept (audit); set a TTL in seconds to expire them."""


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    @property
    def runs(self) -> str:
        return f"{self.prefix}runs"

    @property
    def timers(self) -> str:
        return f"{self.prefix}timers"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def plan(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:plan"

    def statuses(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:status"

    def remaining(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:remaining"

    def step(self, run_id: str, step_id: str) -> str:
        return f"{self.prefix}run:{run_id}:step:{step_id}"

    def log(self, run_id: str, step_id: str) -> str:
        return f"{self.prefix}run:{run_id}:log:{step_id}"

    def events(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:events"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    @staticmethod
    def member(run_id: str, step_id: str) -> str:
        """How a step is named in the global timer and lease sets."""
        return f"{run_id}|{step_id}"

    @staticmethod
    def split_member(member: str) -> tuple[str, str]:
        run_id, _, step_id = member.partition("|")
        return run_id, step_id
