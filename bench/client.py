"""The client side of one measurement, run in its own process so its peak memory is its own.

``python -m bench.client '<json spec>'`` prints one JSON object on stdout. Modes:
- ``plan``: load_runbook + resolve_params + build_plan, ``repeats`` times (timings of each phase);
- ``launch``: Service.launch with an executor, then poll the run's status until it is terminal or the cap;
- ``ceiling``: ``noop.delay()`` N times, then wait for the worker's INCR counter to reach N.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_SECONDS = 0.01


def plan_times(spec: dict[str, Any]) -> dict[str, Any]:
    from actions import default_registry
    from engine.params import resolve_params
    from engine.plan import build_plan
    from engine.runbook import load_runbook

    registry = default_registry()
    load, build, steps = [], [], 0
    for _ in range(int(spec.get("repeats", 3))):
        t0 = time.perf_counter()
        runbook = load_runbook(Path(spec["path"]), registry)
        t1 = time.perf_counter()
        plan = build_plan(runbook, resolve_params(runbook, {}, None), {})
        t2 = time.perf_counter()
        load.append(t1 - t0)
        build.append(t2 - t1)
        steps = len(plan.steps)
        del runbook, plan
    return {"load_s": load, "build_s": build, "steps": steps}


def launch(spec: dict[str, Any]) -> dict[str, Any]:
    from actions import default_registry
    from engine.canvas import compile_canvas
    from engine.celery_app import make_app, runtime
    from engine.service import Identity, Service

    app = make_app(spec["url"])
    rt = runtime(app)
    executor = spec["executor"]
    if executor == "dyrygent":
        from bench.dyrygent_worker import install, launcher

        install(app)
        launch_canvas = launcher(app)
    else:
        def launch_canvas(run_id: str, plan: Any) -> None:
            compile_canvas(app, run_id, plan).apply_async()

    service = Service(rt.store, default_registry(), rt.publish, launch_canvas=launch_canvas)
    rt.store.r.ping()
    t0 = time.monotonic()
    run_id = service.launch(Path(spec["path"]), {}, Identity("bench", "cli"),
                            executor="hotswap" if executor == "hotswap" else "canvas")
    launched = time.monotonic() - t0
    sys.stdout.write(json.dumps({"launched": run_id, "launch_s": launched}) + "\n")
    sys.stdout.flush()
    deadline = t0 + float(spec["cap"])
    key = rt.store.keys.run(run_id)
    status = ""
    while time.monotonic() < deadline:
        raw = rt.store.r.hget(key, "status")
        status = raw.decode() if raw else ""
        if status in TERMINAL:
            break
        time.sleep(POLL_SECONDS)
    wall = time.monotonic() - t0
    return {"run_id": run_id, "status": status, "wall_s": wall, "launch_s": launched}


def ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    from engine.celery_app import NOOP_TASK, make_app, runtime

    app = make_app(spec["url"])
    r = runtime(app).store.r
    counter, n = spec["counter"], int(spec["n"])
    r.delete(counter)
    task = app.tasks[NOOP_TASK]
    t0 = time.monotonic()
    for _ in range(n):
        task.delay(counter)
    published = time.monotonic() - t0
    deadline = t0 + float(spec["cap"])
    count = 0
    while time.monotonic() < deadline:
        count = int(r.get(counter) or 0)
        if count >= n:
            break
        time.sleep(POLL_SECONDS)
    return {"count": count, "wall_s": time.monotonic() - t0, "publish_s": published,
            "status": "succeeded" if count >= n else "capped"}


MODES = {"plan": plan_times, "launch": launch, "ceiling": ceiling}


def main() -> None:
    spec = json.loads(sys.argv[1])
    out = MODES[spec["mode"]](spec)
    out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
