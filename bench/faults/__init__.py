"""Fault-injection run: a batch of runbook runs under real faults, then an audit of what the store kept.

``.venv/bin/python -m bench.faults [--runs 20] [--faults N] [--seed S] [--kinds a,b]`` starts its own
redis-server (AOF, ``appendfsync always``) and two ``hotswap worker`` processes (concurrency 2, 2 s leases,
10 s redelivery of released steps nobody claimed), launches runs of a few runbook shapes, and while they run
injects, in a seeded random order, the faults of ``kinds.FAULTS`` (see there). Kill faults wait (bounded) for
a step to be running and strike the process that runs it, found from the worker pid the store recorded when
the step was claimed.

Modules: ``shapes`` (the runbooks and what each must end as), ``cluster`` (the processes this run owns and
which of them runs what), ``kinds`` (the faults), ``audit`` (snapshots and the final audit), ``report`` (the
summary, the table, the verdict), ``__main__`` (options, schedule, the batch).

Every run is snapshotted before and after each fault and about once a second between faults, so a record
that shrank or went back in time is caught where it happened. The exit code is 1 when a record was lost or
went back in time, a run ended wrongly or got stuck, a step was executed again after it had finished or a
non-idempotent side effect was repeated, an acknowledged write was missing after a Redis SIGKILL, or fewer
than 80 % of kill faults hit a running step.
"""

from __future__ import annotations

WORKER_ENV = {"HOTSWAP_LEASE_SECONDS": "2", "HOTSWAP_REDELIVER_SECONDS": "10",
              "HOTSWAP_ACTION_MODULES": "tests.support.fault_actions"}
"""Short leases and redelivery so a batch recovers in seconds. The workers get them; ``python -m bench.faults``
(it launches runs) sets them in its own environment before it imports the engine (importing this package
does not, so a test process that audits is left alone)."""

LEASE_SECONDS = float(WORKER_ENV["HOTSWAP_LEASE_SECONDS"])
