"""replace-node cancelled at three points on the production-like lab — mid-drain, while the OSDs are
being stopped, at the swap gate — each leaving no flag, throttle or initial-weight setting of the run
behind, with its cleanup steps shown by ``hotswap status``. Each test rebuilds what the run took apart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.states import Status
from lab import Lab
from tests.lab_e2e.conftest import (
    LabEngine,
    crush_weights,
    eventually,
    host_osds,
    osd_states,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]

NODE = "node4"
RUN_SETTINGS = ("osd_max_backfills", "osd_recovery_max_active", "osd_crush_initial_weight", "osd_mclock_profile")


def run_settings(lab: Lab) -> list[dict[str, object]]:
    return [e for e in lab.ceph_json("config", "dump") if e["name"] in RUN_SETTINGS]


def flags(lab: Lab) -> tuple[list[str], dict[str, list[str]]]:
    dump = lab.ceph_json("osd", "dump")
    return sorted(dump["flags_set"]), dict(dump.get("crush_node_flags") or {})


class Before:
    def __init__(self, lab: Lab) -> None:
        self.weights = crush_weights(lab)
        self.settings = run_settings(lab)
        self.flags = flags(lab)
        self.ids = host_osds(lab, NODE) or []

    def rebuild(self, lab: Lab) -> None:
        """Put NODE's OSDs back: recreate destroyed ones (same id), start stopped ones, in, old weights."""
        states = osd_states(lab)
        for osd in self.ids:
            if "destroyed" in states[osd]["state"]:
                lab.lab_osd("create", str(osd), NODE)
            elif not states[osd]["up"]:
                lab.lab_osd("start", str(osd))
        eventually(lambda: all(osd_states(lab)[o]["up"] for o in self.ids) or None, f"{NODE}'s OSDs up", 180)
        lab.ceph("osd", "in", *map(str, self.ids))
        now = crush_weights(lab)
        for osd, weight in self.weights.items():
            if now.get(osd) != pytest.approx(weight, abs=1e-6):
                lab.ceph("osd", "crush", "reweight", f"osd.{osd}", f"{weight:.10g}")
        lab.wait_settled(timeout=300)


@pytest.fixture
def before(settled_lab: Lab) -> Iterator[Before]:
    state = Before(settled_lab)
    assert state.ids, f"{NODE} holds no OSD"
    try:
        yield state
    finally:
        state.rebuild(settled_lab)


def cancel_and_check(engine: LabEngine, lab: Lab, run_id: str, before: Before) -> dict[str, str]:
    """Cancel, wait for the cleanup, and check nothing of the run is left set; returns cleanup outcomes."""
    engine.service.cancel(run_id, engine.operator)
    eventually(lambda: engine.store.run(run_id).get("cleanup") == "done" or None, "the cleanup to finish", 180)
    status = engine.service.status(run_id)
    cleanup = {s["id"]: s["status"] for s in status.get("cleanup", [])}
    print(f"\ncleanup after cancel: {cleanup}")
    assert status["run"]["status"] == Status.CANCELLED
    assert cleanup, "hotswap status shows no cleanup steps"
    assert not {s for s, st in cleanup.items() if st == Status.FAILED}, cleanup
    assert cleanup["cleanup_chat"] == Status.SUCCEEDED
    assert run_settings(lab) == before.settings, "a throttle or initial-weight setting of the run was left behind"
    assert flags(lab) == before.flags, "a flag was left behind"
    return cleanup


def test_cancel_mid_drain(lab_engine: LabEngine, settled_lab: Lab, before: Before) -> None:
    lab = settled_lab
    run_id = lab_engine.launch("replace-node.yaml", cluster="lab", node=NODE, reason="e2e: cancel mid-drain",
                               poll="2s")
    eventually(lambda: any(crush_weights(lab)[o] < before.weights[o] for o in before.ids) or None,
               "the first drain step", timeout=180, interval=0.3)
    assert run_settings(lab) != before.settings, "the drain is not throttled"
    cleanup = cancel_and_check(lab_engine, lab, run_id, before)
    assert cleanup["cleanup_throttle_drain"] == Status.SUCCEEDED


def test_cancel_while_stopping(lab_engine: LabEngine, settled_lab: Lab, before: Before) -> None:
    lab = settled_lab
    run_id = lab_engine.launch("replace-node.yaml", cluster="lab", node=NODE, reason="e2e: cancel at stop",
                               poll="2s", step=1)

    def stopping() -> bool | None:
        status = lab_engine.step(run_id, "stop_osds")["status"]
        assert lab_engine.store.run(run_id)["status"] == Status.RUNNING, lab_engine.explain(run_id)
        return status in (Status.RUNNING, Status.WAITING) or None

    eventually(stopping, "stop_osds to run", timeout=400, interval=0.2)
    cancel_and_check(lab_engine, lab, run_id, before)


def test_cancel_at_the_swap_gate(lab_engine: LabEngine, settled_lab: Lab, before: Before) -> None:
    lab = settled_lab
    run_id = lab_engine.launch("replace-node.yaml", cluster="lab", node=NODE, reason="e2e: cancel at the gate",
                               poll="2s", step=1)
    lab_engine.wait_step(run_id, "swap", Status.WAITING, timeout=400)
    cleanup = cancel_and_check(lab_engine, lab, run_id, before)
    assert cleanup["cleanup_locate"] == Status.SUCCEEDED  # the LEDs switched on for the swap go off again
