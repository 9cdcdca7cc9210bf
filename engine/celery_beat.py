"""Celery beat for schedules: the schedule objects and the beat loop, the only Celery code schedules need.

Kept beside engine/celery_app.py so every Celery import lives in the Celery adapter; the schedule book
(engine/interfaces/schedules.py) decides what fires and why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import ParseException, crontab, schedule


def beat_schedule(cron: str | None, every: float | None) -> Any:
    """A Celery schedule for a cron expression (5 fields) or an interval in seconds."""
    if cron:
        return crontab.from_string(cron)
    assert every is not None
    return schedule(timedelta(seconds=every))


def parse_cron(expr: str) -> Any:
    """A Celery crontab whose fields are sets (minute, hour, day_of_month, month_of_year, day_of_week)."""
    return crontab.from_string(expr)


def cron_ok(expr: str) -> bool:
    if len(expr.split()) != 5:
        return False
    try:
        crontab.from_string(expr)
    except (ParseException, ValueError, IndexError):
        return False
    return True


def run_beat(app: Any, entries: Mapping[str, dict[str, Any]], task_name: str,
             fire: Callable[[str, str], list[dict[str, Any]]], state_dir: Path, max_interval: float = 5.0) -> None:
    """Run Celery beat in this process with ``entries`` (beat_schedule format). The fire task executes here,
    in the beat process (it only validates, checks and launches; steps go to the workers' queues)."""
    app.task(name=task_name, shared=False)(fire)

    class LocalScheduler(PersistentScheduler):  # type: ignore[misc]
        def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
            entry = self.reserve(entry) if advance else entry
            try:
                return self.app.tasks[entry.task].apply(args=entry.args)
            finally:
                self._tasks_since_sync += 1
                if self.should_sync():
                    self._do_sync()

    app.conf.beat_schedule = dict(entries)
    app.conf.timezone = "UTC"
    state_dir.mkdir(parents=True, exist_ok=True)
    beat = app.Beat(scheduler=LocalScheduler, schedule=str(state_dir / "beat-schedule"), max_interval=max_interval,
                    loglevel="INFO")
    beat.run()
