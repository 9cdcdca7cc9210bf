"""The only module that knows Celery: the app, its settings, the step tasks, publishing, and the
worker's ticker (timers and expired leases).

Steps are ordinary tasks with late acknowledgement and reject-on-worker-lost. Nothing is ever
published with a countdown or ETA (those sit unacknowledged past the Redis visibility timeout and
run twice): waits are durable timers in Redis that the ticker turns into messages when due.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request
from redis.exceptions import RedisError

from engine import config as hconfig
from engine.errors import RunNotFound
from engine.hooks import Hooks, StepHooks
from engine.keys import BROKER_VISIBILITY_TIMEOUT, LOCK_RENEW_EVERY_TICKS, TICK_SECONDS, Timings
from engine.plan import Plan
from engine.redisconn import Replication, celery_urls
from engine.states import PARKED_OUTCOMES, Outcome

log = logging.getLogger("hotswap.worker")

QUICK_QUEUE = "hotswap"
POLL_QUEUE = "hotswap.poll"
STEP_TASK = "hotswap.step"
SOFT_LIMIT_GRACE = 10.0
BATCH_SPREAD = 64
"""A release wider than this is published in batches, at least this many messages (so every worker slot
gets work) ..."""
MAX_BATCH = 16
"""... of at most this many steps each."""
CANVAS_STEP_TASK = "hotswap.canvas_step"
NOOP_TASK = "hotswap.noop"


class CanvasStepFailed(Exception):
    """Raised by a canvas step task so native Celery stops the chain."""


def make_app(redis_url: str, replication: Replication | None = None) -> Celery:
    """``redis_url``: any URL of :mod:`engine.redisconn` (``sentinel://`` too: broker, results and store then
    follow a failover); ``replication``: what the store's critical transitions wait for (Config.replication)."""
    urls = celery_urls(redis_url)
    app = Celery("hotswap", broker=urls.broker, backend=urls.backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_expires=86400,
        task_serializer="json",
        accept_content=["json"],
        # "sorted": a worker always takes from "hotswap" before "hotswap.poll" (instead of taking turns), so
        # released steps never queue behind polls, however many polls are due
        broker_transport_options={"visibility_timeout": BROKER_VISIBILITY_TIMEOUT, "queue_order_strategy": "sorted",
                                  **urls.broker_options},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=10_000,
        task_default_queue=QUICK_QUEUE,
        worker_send_task_events=False,
        task_send_sent_event=False,
        hotswap_redis_url=redis_url,
        hotswap_replication=replication,
    )
    if urls.backend_options:
        app.conf.result_backend_transport_options = urls.backend_options
    if urls.publish_retry_policy:
        app.conf.task_publish_retry_policy = urls.publish_retry_policy
    _register_tasks(app)
    return app


def worker_name(pid: int) -> str:
    """How a process that runs steps is named in their records (and how its death is recognised)."""
    return f"{socket.gethostname()}:{pid}"


class StepRequest(Request):  # type: ignore[misc]
    """A step task's request in the worker's main process: when its pool child dies (SIGKILL, OOM), the
    steps that child was running are released for takeover at once; only a dead machine waits out the lease."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)
        if isinstance(exc, WorkerLostError) and self.worker_pid:
            try:
                released = runtime(self.app).store.release_worker(worker_name(self.worker_pid))
                log.warning("pool child %s was lost; released for takeover: %s", self.worker_pid,
                            ", ".join(f"{r}/{s}" for r, s in released) or "nothing")
            except (OSError, RedisError) as e:
                log.warning("pool child %s was lost; its steps wait for their lease (%s)", self.worker_pid, e)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def _register_tasks(app: Celery) -> None:
    @app.task(name=STEP_TASK, shared=False, bind=True, acks_late=True, reject_on_worker_lost=True,
              Request=StepRequest)
    def step(self: Any, run_id: str, step_id: str, more: list[str] | None = None) -> str:
        executor = runtime(app).executor
        outcome = executor.run_step(run_id, step_id)
        for sid in more or []:
            executor.run_step(run_id, sid)
        return outcome

    @app.task(name=CANVAS_STEP_TASK, shared=False, bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None, ignore_result=False)
    def canvas_step(self: Any, run_id: str, step_id: str) -> str:
        outcome = runtime(app).canvas_executor.run_step(run_id, step_id)
        if outcome in PARKED_OUTCOMES:
            raise self.retry(countdown=1.0)
        if outcome == Outcome.FAILED:
            raise CanvasStepFailed(f"step {step_id} failed")
        return outcome

    @app.task(name=NOOP_TASK, shared=False, acks_late=True)
    def noop(counter: str) -> None:
        runtime(app).store.r.incr(counter)


class Runtime:
    """Per-process state of a worker or client: the store, executors, and how to publish steps."""

    def __init__(self, app: Celery, hooks: Sequence[StepHooks] = ()) -> None:
        """``hooks``: observers of every step this process executes (engine/hooks.py); the one place to add them."""
        from actions import default_registry
        from engine.context import toolkit_factory
        from engine.executor import Executor
        from engine.store import Store

        self.app = app
        timings = Timings.from_env(os.environ)
        self.store = Store(hconfig.redis_client(app.conf.get("hotswap_redis_url") or app.conf.broker_url,
                                                app.conf.get("hotswap_replication")),
                           redeliver=timings.redeliver, lock_lease=timings.lock_lease)
        registry = default_registry()
        worker = worker_name(os.getpid())
        factory = toolkit_factory()
        self.executor = Executor(self.store, registry, self.publish, worker, factory, (SoftTimeLimitExceeded,),
                                 lease=timings.lease, inline=timings.inline, hooks=Hooks(hooks))
        self.canvas_executor = Executor(self.store, registry, lambda run_id, ids: None, worker, factory,
                                        (SoftTimeLimitExceeded,), lease=timings.lease)

    def publish(self, run_id: str, step_ids: Iterable[str]) -> None:
        """One message per step, except for a wide release (a fan-out), where steps without a timeout share
        messages in small batches: far fewer messages, still spread over every worker slot. Steps that poll or
        wait for a human go to the poll queue, so thousands of waits due at once never hold back quick steps."""
        plan = self.store.plan(run_id)
        by_queue: dict[str, list[str]] = {}
        for sid in step_ids:
            by_queue.setdefault(self.queue_of(plan, sid), []).append(sid)
        with self.app.producer_or_acquire() as producer:
            for queue, ids in by_queue.items():
                self._publish(plan, run_id, ids, queue, producer)

    def queue_of(self, plan: Plan, step_id: str) -> str:
        step = plan.steps.get(step_id) or plan.cleanup.get(step_id)
        if step is None:
            return QUICK_QUEUE
        if step.approval:
            return POLL_QUEUE
        registry = self.executor.registry
        return POLL_QUEUE if step.action in registry and registry.get(step.action).polling else QUICK_QUEUE

    def _publish(self, plan: Plan, run_id: str, ids: list[str], queue: str, producer: Any) -> None:
        task = self.app.tasks[STEP_TASK]
        timed = [sid for sid in ids if (s := plan.steps.get(sid)) is not None and s.timeout]
        plain = [sid for sid in ids if sid not in set(timed)] if timed else ids
        size = max(1, min(MAX_BATCH, len(plain) // BATCH_SPREAD)) if len(plain) > BATCH_SPREAD else 1
        for sid in timed:
            timeout = plan.steps[sid].timeout or 0
            # A backstop: the step's own deadline stops it first (and kills its remote commands).
            task.apply_async(kwargs={"run_id": run_id, "step_id": sid}, producer=producer, queue=queue,
                             soft_time_limit=timeout + SOFT_LIMIT_GRACE,
                             time_limit=timeout + SOFT_LIMIT_GRACE + 30)
        for i in range(0, len(plain), size):
            batch = plain[i:i + size]
            kwargs: dict[str, Any] = {"run_id": run_id, "step_id": batch[0]}
            if len(batch) > 1:
                kwargs["more"] = batch[1:]
            task.apply_async(kwargs=kwargs, producer=producer, queue=queue)

    def tick(self, renew_locks: bool = False) -> int:
        """Publish steps whose timer is due or whose worker lost its lease. Returns how many."""
        if renew_locks:
            self.store.renew_locks()
        due = self.store.due_timers() + self.store.expired_leases()
        by_run: dict[str, list[str]] = {}
        for run_id, sid in due:
            by_run.setdefault(run_id, []).append(sid)
        for run_id, sids in by_run.items():
            try:
                self.publish(run_id, sids)
            except RunNotFound:
                self.store.forget_timers(run_id, sids)
                log.warning("timers of unknown run %s dropped: %s", run_id, ", ".join(sids))
        return len(due)


_runtimes: dict[int, Runtime] = {}
_lock = threading.Lock()


def runtime(app: Celery) -> Runtime:
    key = id(app)
    with _lock:
        rt = _runtimes.get(key)
        if rt is None or getattr(rt, "_pid", None) != os.getpid():
            rt = Runtime(app)
            rt._pid = os.getpid()  # type: ignore[attr-defined]
            _runtimes[key] = rt
        return rt


class Ticker:
    """Runs in each worker's main process: turns due timers and expired leases into step messages."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="hotswap-ticker", daemon=True)

    def _loop(self) -> None:
        rt = runtime(self.app)
        ticks = 0
        while not self.stop.wait(TICK_SECONDS):
            ticks += 1
            try:
                rt.tick(renew_locks=ticks % LOCK_RENEW_EVERY_TICKS == 0)
            except (OSError, RedisError) as e:
                log.warning("ticker: %s (retrying)", e)
            except Exception:
                log.exception("ticker failed; continuing")


def run_worker(app: Celery, *, concurrency: int = 2, queues: str = f"{QUICK_QUEUE},{POLL_QUEUE}",
               loglevel: str = "INFO", extra: list[str] | None = None) -> None:
    """Run a Celery worker (prefork) plus the ticker in this process. Blocks until shutdown."""
    ticker = Ticker(app)

    def start(**_: Any) -> None:
        ticker.thread.start()

    def stop(**_: Any) -> None:
        ticker.stop.set()
        if ticker.thread.is_alive():  # let a tick in progress publish what it took (else it waits for the re-arm)
            ticker.thread.join(timeout=TICK_SECONDS * 20)

    def warm(**_: Any) -> None:
        """Each pool child builds its store, registry and toolkits now, not on its first step."""
        try:
            runtime(app)
        except Exception:  # a child that dies here is forked again at once, in a loop: let its first step fail
            log.exception("could not prepare this worker process; its first step will try again")

    signals.worker_process_init.connect(warm, weak=False)
    signals.worker_ready.connect(start, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)
    argv = ["worker", f"--concurrency={concurrency}", "-Q", queues, f"--loglevel={loglevel}", "-P", "prefork",
            "--without-gossip", "--without-mingle", "--without-heartbeat", *(extra or [])]
    app.worker_main(argv)
