"""The runbook shapes a fault-injection batch launches, and what each must end as."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TERMINAL_RUN = {"succeeded", "failed", "cancelled"}
TERMINAL_STEP = {"succeeded", "failed", "skipped", "cancelled"}
IDEMPOTENT = {"core.echo", "core.wait_until", "core.fail"}
"""Actions that may run twice harmlessly; test.phases is not, and must rely on its saved progress."""


@dataclass(frozen=True)
class Shape:
    name: str
    yaml: str
    """The runbook; DIR is replaced by the run's own side-effect directory."""
    fails_at: str = ""
    """The step that must fail (and end the run with its reason); empty when the run must succeed."""
    never: tuple[str, ...] = ()
    """Steps after the failing one: they must never have run."""


EFFECT_DIRS = ("phases", "left", "slow", *(f"item-{i}" for i in range(5)))
"""Sub-directories of a run's side-effect directory that its test.phases steps write into."""

SHAPES = (
    Shape("sequence", """
name: fault-sequence
steps:
  - id: prepare
    action: core.echo
    with: {message: start}
  - id: flaky
    action: core.fail
    with: {message: transient, times: 1}
    retry: {attempts: 3, backoff: 0.2, jitter: false}
  - id: phases
    action: test.phases
    with: {directory: "DIR/phases", count: 4, pause: 0.7}
  - id: after
    action: core.echo
    with: {message: "{{ steps.phases.result.done | join(',') }}"}
"""),
    Shape("failing", """
name: fault-failing
steps:
  - parallel:
      - id: slow
        action: test.phases
        with: {directory: "DIR/slow", count: 3, pause: 0.8}
      - steps:
          - id: warmup
            action: core.echo
            with: {message: warmup}
          - id: boom
            action: core.fail
            with: {message: planned failure}
  - id: never
    action: core.echo
    with: {message: unreachable}
""", fails_at="boom", never=("never",)),
    Shape("parallel", """
name: fault-parallel
steps:
  - parallel:
      - id: left
        action: test.phases
        with: {directory: "DIR/left", count: 3, pause: 0.8}
      - steps:
          - id: poll
            action: core.wait_until
            with: {condition: "{{ poll >= 5 }}", interval: 0.4}
          - id: right
            action: core.echo
            with: {message: right}
  - id: join
    action: core.echo
    with: {message: "{{ steps.left.result.done | length }} {{ steps.right.result.message }}"}
"""),
    Shape("fan_out", """
name: fault-fanout
steps:
  - id: fan
    for_each: "{{ range(5) | list }}"
    as: n
    concurrency: 2
    action: test.phases
    with: {directory: "DIR/item-{{ n }}", count: 2, pause: 0.6}
  - id: total
    action: core.echo
    with: {message: "{{ steps.fan.results | length }} items"}
"""),
    Shape("wait", """
name: fault-wait
steps:
  - id: wait
    action: core.wait_until
    with: {condition: "{{ poll >= 10 }}", interval: 0.5}
  - id: done
    action: core.echo
    with: {message: done}
"""),
)
BY_NAME = {s.name: s for s in SHAPES}


@dataclass
class Launched:
    run_id: str
    shape: Shape
    effects: Path
    at: float
    actions: dict[str, str]
    """step -> its action, from the run's plan."""
