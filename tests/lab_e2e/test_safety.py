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
    OPERATION_FLAGS,
    TERMINAL,
    LabEngine,
    assert_healthy_and_clean,
    crush_weights,
    eventually,
    host_osds,
    osd_states,
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
    weights, states, flags = crush_weights(lab), osd_states(lab), flags_set(lab)
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
        assert flags_set(lab) == flags
        assert {o: (s["up"], s["in"]) for o, s in osd_states(lab).items()} == {
            o: (s["up"], s["in"]) for o, s in states.items()}
        assert run_silences(lab, run_id) == []
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the failed run", timeout=60)
    finally:
        release(lab_engine, run_id)


class Disturbed:
    """What the mid-drain test changed, so the fixture can put it back whatever happened."""

    def __init__(self, lab: Lab) -> None:
        dump = lab.ceph_json("osd", "dump")
        self.weights = crush_weights(lab)
        self.flags = set(dump["flags_set"])
        self.ratios = {"nearfull": float(dump["nearfull_ratio"]), "backfillfull": float(dump["backfillfull_ratio"])}
        self.stopped: list[int] = []
        self.restored = False

    def restore(self, lab: Lab) -> None:
        if self.restored:
            return
        lab.ceph("osd", "set-backfillfull-ratio", f"{self.ratios['backfillfull']:.2f}")
        lab.ceph("osd", "set-nearfull-ratio", f"{self.ratios['nearfull']:.2f}")
        for osd in self.stopped:
            lab.lab_osd("start", str(osd))
        for flag in (flags_set(lab) & OPERATION_FLAGS) - self.flags:
            lab.ceph("osd", "unset", flag)
        now = crush_weights(lab)
        for osd, weight in self.weights.items():
            if osd in now and now[osd] != pytest.approx(weight, abs=1e-4):
                lab.ceph("osd", "crush", "reweight", f"osd.{osd}", f"{weight:g}")
        eventually(lambda: all(s["up"] for s in osd_states(lab).values()), "every OSD up again", timeout=120)
        lab.wait_settled(timeout=300)
        self.restored = True


@pytest.fixture
def disturbed(settled_lab: Lab) -> Iterator[Disturbed]:
    state = Disturbed(settled_lab)
    try:
        yield state
    finally:
        state.restore(settled_lab)


def wake_times(engine: LabEngine, run_id: str, step: str, count: int, timeout: float) -> list[dict[str, object]]:
    """The step's records over its next ``count`` polls (a poll parks it again with a new wake_at)."""
    seen: dict[float, dict[str, object]] = {}

    def polled() -> bool:
        s = engine.step(run_id, step)
        if s["status"] == Status.WAITING and s.get("wake_at"):
            seen.setdefault(float(s["wake_at"]), s)
        return len(seen) > count

    eventually(polled, f"{count} more polls of {step}", timeout=timeout, interval=0.2)
    return list(seen.values())


def test_an_osd_down_elsewhere_pauses_the_drain_and_a_failed_drain_leaves_no_flag_set(
    lab_engine: LabEngine, settled_lab: Lab, disturbed: Disturbed
) -> None:
    lab = settled_lab
    ids = host_osds(lab, NODE) or []
    victim = next(o for o, h in sorted(lab.osd_hosts.items()) if h != NODE)
    assert ids and "noout" not in disturbed.flags
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=NODE, reason="e2e: failure mid-drain",
                               step=0.1, poll="2s")
    try:
        eventually(lambda: any(crush_weights(lab)[o] < disturbed.weights[o] for o in ids) or None,
                   f"the drain of {NODE} to lower a CRUSH weight", timeout=120, interval=0.2)
        assert "noout" in flags_set(lab)
        lab.lab_osd("stop", str(victim))
        disturbed.stopped.append(victim)

        def paused() -> dict[str, object] | None:
            assert lab_engine.store.run(run_id)["status"] not in TERMINAL, lab_engine.explain(run_id)
            s = lab_engine.step(run_id, "drain")
            return s if s["status"] == Status.WAITING and "OSD_DOWN" in str(s.get("waiting_reason")) else None

        first = eventually(paused, "the drain to wait on OSD_DOWN", timeout=60)
        weights = crush_weights(lab)
        print(f"\npaused: {first['waiting_reason']}; weights {weights}")
        polls = wake_times(lab_engine, run_id, "drain", count=2, timeout=60)
        assert all("OSD_DOWN" in str(p.get("waiting_reason")) for p in polls), polls
        assert crush_weights(lab) == weights, "a reweight step was applied while an OSD was down"
        statuses = {s: lab_engine.step(run_id, s)["status"] for s in LATER_STEPS[3:]}
        assert set(statuses.values()) == {Status.PENDING}, statuses
        states = osd_states(lab)
        assert all(states[o]["up"] and states[o]["in"] for o in ids), states
        assert not states[victim]["up"] and states[victim]["in"]

        # A check waiting cannot fix (OSDs past backfillfull) fails the paused drain: cleanup unsets noout.
        lab.ceph("osd", "set-nearfull-ratio", "0.004")
        lab.ceph("osd", "set-backfillfull-ratio", "0.005")
        run = lab_engine.wait(run_id, timeout=120)
        assert run["status"] == Status.FAILED, lab_engine.explain(run_id)
        drain = lab_engine.step(run_id, "drain")
        print(f"failed: {drain['error']}")
        assert drain["status"] == Status.FAILED and "OSD_BACKFILLFULL" in str(drain["error"])
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the failed run", timeout=60)
        assert lab_engine.step(run_id, "cleanup_flags")["status"] == Status.SUCCEEDED
        assert lab_engine.result(run_id, "cleanup_flags")["unset"] == ["noout"]
        assert not flags_set(lab) & OPERATION_FLAGS
        statuses = {s: lab_engine.step(run_id, s)["status"] for s in LATER_STEPS[3:]}
        assert set(statuses.values()) <= {Status.PENDING, Status.CANCELLED}, statuses
        assert host_osds(lab, NODE) == ids
        states = osd_states(lab)
        assert all(states[o]["up"] and states[o]["in"] for o in ids), states
    finally:
        release(lab_engine, run_id)
    disturbed.restore(lab)
    assert crush_weights(lab) == pytest.approx(disturbed.weights, abs=1e-4)
    assert_healthy_and_clean(lab)
