"""The safety rails of drain-node on the real lab: a drain refused in preflight when the data cannot fit,
and a drain that pauses when an OSD of another host goes down and, once failed, leaves no flag set.

Each test puts the lab back as it found it (ratios, OSDs running, CRUSH weights, HEALTH_OK) and cancels
its run so its locks do not block the tests that follow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from engine.states import Status
from lab import Lab
from tests.lab_e2e.conftest import (
    LabEngine,
    crush_weights,
    eventually,
    host_osds,
    run_silences,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

NODE = "node3"
LATER_STEPS = ["set_downtime", "set_flags", "drain", "wait_drained", "safe_to_destroy", "mark_out", "stop_osds",
               "purge_osds", "remove_host", "unset_flags", "final_health", "clear_downtime", "announce"]


def flags_set(lab: Lab) -> set[str]:
    return set(lab.ceph_json("osd", "dump")["flags_set"])


def nearfull_ratio(lab: Lab) -> float:
    return float(lab.ceph_json("osd", "dump")["nearfull_ratio"])


def utilizations(lab: Lab) -> dict[int, tuple[int, int]]:
    """(kb_used, kb) of every OSD, from ``osd df``."""
    return {int(n["id"]): (int(n["kb_used"]), int(n["kb"])) for n in lab.ceph_json("osd", "df")["nodes"]}


def cleanup_done(engine: LabEngine, run_id: str) -> dict[str, object] | None:
    run = engine.store.run(run_id)
    return run if run.get("cleanup") == "done" else None


def release(engine: LabEngine, run_id: str) -> None:
    """Cancel a failed run: a failed run keeps its locks (cluster:lab) until resumed or cancelled."""
    if engine.store.run(run_id)["status"] == Status.FAILED:
        engine.service.cancel(run_id, engine.operator)


@pytest.fixture
def tight_nearfull(settled_lab: Lab) -> Iterator[float]:
    """A nearfull ratio between today's fullest OSD and the fullest one once NODE's data has moved: no
    OSD is nearfull now (health stays OK), but draining NODE would make one so."""
    lab = settled_lab
    original = nearfull_ratio(lab)
    leaving = host_osds(lab, NODE) or []
    usage = utilizations(lab)
    now = max(used / kb for osd, (used, kb) in usage.items() if osd not in leaving)
    moving = sum(usage[o][0] for o in leaving)
    staying = [o for o in usage if o not in leaving]
    projected = max((usage[o][0] + moving / len(staying)) / usage[o][1] for o in staying)
    assert projected > now
    ratio = round((now + projected) / 2, 4)
    lab.ceph("osd", "set-nearfull-ratio", str(ratio))
    try:
        yield ratio
    finally:
        lab.ceph("osd", "set-nearfull-ratio", f"{original:.2f}")
        lab.wait_settled(timeout=120)


def test_drain_of_a_host_whose_data_cannot_fit_is_refused_in_preflight(
    lab_engine: LabEngine, settled_lab: Lab, tight_nearfull: float
) -> None:
    lab = settled_lab
    weights, epoch = crush_weights(lab), lab.ceph_json("osd", "dump")["epoch"]
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=NODE, reason="e2e: cannot fit", poll="2s")
    try:
        run = lab_engine.wait(run_id, timeout=120)
        assert run["status"] == Status.FAILED, lab_engine.explain(run_id)
        preflight = lab_engine.step(run_id, "preflight")
        assert preflight["status"] == Status.FAILED
        error = str(preflight["error"])
        print(f"\npreflight refused: {error}")
        match = re.search(r"osd\.(\d+) would reach ([\d.]+)% used \(nearfull ratio ([\d.]+)%\)", error)
        assert match, error
        assert f"pre-flight of {NODE} failed" in error
        assert float(match[2]) / 100 >= tight_nearfull
        assert float(match[3]) / 100 == pytest.approx(tight_nearfull, abs=0.0006)
        assert int(match[1]) not in (host_osds(lab, NODE) or [])

        statuses = {s: lab_engine.step(run_id, s)["status"] for s in LATER_STEPS}
        assert set(statuses.values()) <= {Status.PENDING, Status.CANCELLED}, statuses
        assert crush_weights(lab) == weights
        assert lab.ceph_json("osd", "dump")["epoch"] == epoch, "the osdmap changed: something was set"
        assert not flags_set(lab) & {"noout", "norebalance", "nobackfill"}
        assert run_silences(lab, run_id) == []
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the failed run", timeout=60)
    finally:
        release(lab_engine, run_id)
