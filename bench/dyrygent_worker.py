"""A worker for celery-dyrygent: hotswap's Celery app (same broker, same ``hotswap.canvas_step`` task)
plus dyrygent's workflow processor, on its own queue so the hotswap worker never sees its messages.

dyrygent re-runs its processor with a countdown chosen by ``Workflow.get_retry_countdown`` (whole
seconds: 2 s after an active tick, 10-30 s otherwise). The benchmark forces it to ``TICK_SECONDS``.
Run as ``python -m bench.dyrygent_worker --concurrency 2`` with ``HOTSWAP_REDIS_URL`` set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery_dyrygent.tasks import processor
from celery_dyrygent.workflows import Workflow

from engine.canvas import compile_canvas
from engine.celery_app import make_app, run_worker
from engine.plan import Plan

QUEUE = "bench.dyrygent"
TICK_SECONDS = 0.1


class TickWorkflow(Workflow):  # type: ignore[misc]
    """dyrygent's workflow with its processor re-run every TICK_SECONDS."""

    def get_retry_countdown(self) -> float:
        return TICK_SECONDS


def install(app: Celery) -> None:
    """Register dyrygent's processor task on ``app`` and make it tick every TICK_SECONDS."""
    processor.register_workflow_processor(app)
    processor.Workflow = TickWorkflow  # the processor task rebuilds the workflow through this name


def launcher(app: Celery) -> Callable[[str, Plan], None]:
    """A ``launch_canvas`` for Service: the plan's native canvas, run by a dyrygent workflow."""

    def launch(run_id: str, plan: Plan) -> None:
        workflow = TickWorkflow(options={"queue": QUEUE})
        workflow.add_celery_canvas(compile_canvas(app, run_id, plan))
        workflow.apply_async(options={"queue": QUEUE})

    return launch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args(argv)
    app: Any = make_app(os.environ["HOTSWAP_REDIS_URL"])
    install(app)
    # dyrygent rebuilds signatures and AsyncResults without an app: they must find this one.
    app.set_current()
    app.set_default()
    run_worker(app, concurrency=args.concurrency, queues=QUEUE, loglevel="WARNING")


if __name__ == "__main__":
    main()
