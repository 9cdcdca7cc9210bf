"""The safety rails of the runbooks on the production-like lab, through a real worker and real SSH: what
preflight refuses (a mon host, the only active mgr, a pool that could not be placed, data that cannot
fit), what pauses a drain and what ends the pause (an OSD down elsewhere, client latency over the threshold,
a mon outage), and
a refill refused when a reused id's disk was not wiped.

Each test puts the lab back as it found it (daemons, pools, ratios, OSDs, CRUSH weights, settings,
HEALTH_OK) and cancels its run so its locks do not block the tests that follow.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import pytest

from engine.service import Identity
from engine.states import Status
from lab import Lab, LabError
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
LATER_STEPS = ["set_downtime", "throttle", "drain", "wait_drained", "unthrottle", "safe_to_destroy", "mark_out",
               "stop_osds", "purge_osds", "remove_host", "final_health", "clear_downtime", "announce"]
RUN_SETTINGS = ("osd_max_backfills", "osd_recovery_max_active", "osd_crush_initial_weight", "osd_mclock_profile")


def flags_set(lab: Lab) -> set[str]:
    return set(lab.ceph_json("osd", "dump")["flags_set"])


def host_flags(lab: Lab) -> dict[str, list[str]]:
    return dict(lab.ceph_json("osd", "dump").get("crush_node_flags") or {})


def run_settings(lab: Lab) -> list[dict[str, object]]:
    return [e for e in lab.ceph_json("config", "dump") if e["name"] in RUN_SETTINGS]


def nearfull_ratio(lab: Lab) -> float:
    return float(lab.ceph_json("osd", "dump")["nearfull_ratio"])


def utilizations(lab: Lab) -> dict[int, tuple[int, int]]:
    """(kb_used, kb) of every OSD, from ``osd df``."""
    return {int(n["id"]): (int(n["kb_used"]), int(n["kb"])) for n in lab.ceph_json("osd", "df")["nodes"]}


def cleanup_done(engine: LabEngine, run_id: str) -> dict[str, object] | None:
    run = engine.store.run(run_id)
    return run if run.get("cleanup") == "done" else None


def release(engine: LabEngine, run_id: str) -> None:
    """Cancel a run that still holds its locks (a failed run keeps cluster:lab until resumed or cancelled)."""
    if engine.store.run(run_id)["status"] not in (Status.SUCCEEDED, Status.CANCELLED):
        engine.service.cancel(run_id, engine.operator)
        eventually(lambda: engine.store.run(run_id)["status"] in TERMINAL or None, f"run {run_id} to end", 120)


def refused(engine: LabEngine, run_id: str, host: str) -> str:
    """The preflight refusal of a run that must fail before it changes anything."""
    run = engine.wait(run_id, timeout=180)
    assert run["status"] == Status.FAILED, engine.explain(run_id)
    preflight = engine.step(run_id, "preflight")
    error = str(preflight["error"])
    print(f"\npreflight refused: {error}")
    assert preflight["status"] == Status.FAILED and f"pre-flight of {host} failed" in error
    later = {s["id"]: s["status"] for s in engine.service.status(run_id)["steps"] if s["id"] != "preflight"}
    assert set(later.values()) <= {Status.PENDING, Status.CANCELLED}, later
    return error


# -- refused in preflight ---------------------------------------------------------------------------


def test_a_host_carrying_a_monitor_is_refused(lab_engine: LabEngine, settled_lab: Lab) -> None:
    lab = settled_lab
    weights = crush_weights(lab)
    run_id = lab_engine.launch("replace-node.yaml", cluster="lab", node="node1", reason="e2e: mon host", poll="2s")
    try:
        error = refused(lab_engine, run_id, "node1")
        assert "node1 carries monitor mon.node1 (3 mons, quorum admin, node1, node2)" in error
        assert "move the monitor to another host first" in error
        assert crush_weights(lab) == weights and run_silences(lab, run_id) == []
    finally:
        release(lab_engine, run_id)


@pytest.fixture
def lone_mgr_on_node1(settled_lab: Lab) -> Iterator[Lab]:
    """The active mgr moved to node1 and the admin host's mgr stopped: node1 runs the only mgr."""
    lab = settled_lab
    lab.ceph("mgr", "fail", "admin")
    eventually(lambda: lab.ceph_json("mgr", "dump")["active_name"] == "node1" or None, "mgr.node1 active", 60)
    lab.stop_daemon("mgr.admin")
    eventually(lambda: not lab.ceph_json("mgr", "dump")["standbys"] or None, "no standby mgr", 60)
    try:
        yield lab
    finally:
        lab.start_daemon("mgr.admin")
        eventually(lambda: lab.ceph_json("mgr", "dump")["standbys"] or None, "mgr.admin back as standby", 60)
        lab.ceph("mgr", "fail", "node1")
        eventually(lambda: (lab.ceph_json("mgr", "dump")["active_name"] == "admin"
                            and lab.ceph_json("mgr", "dump")["available"]) or None, "mgr.admin active again", 60)
        eventually(lambda: lab.ceph_json("mgr", "dump")["standbys"] or None, "mgr.node1 back as standby", 60)
        lab.wait_settled(timeout=120)


def test_the_only_active_mgr_without_a_standby_is_refused(lab_engine: LabEngine, lone_mgr_on_node1: Lab) -> None:
    lab = lone_mgr_on_node1
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node="node1", reason="e2e: lone mgr", poll="2s")
    try:
        error = refused(lab_engine, run_id, "node1")
        assert "node1 runs the only active mgr (mgr.node1) and no standby mgr runs elsewhere" in error
        assert "start a standby mgr on another host first" in error
        assert host_osds(lab, "node1")
    finally:
        release(lab_engine, run_id)


@pytest.fixture
def wide_pool(settled_lab: Lab) -> Iterator[str]:
    """A replicated pool of size 4 on the lab's 4 storage hosts: without any one of them it cannot place
    its 4 replicas."""
    lab, name = settled_lab, "e2e-wide"
    lab.ceph("osd", "pool", "create", name, "8", "8", "replicated")
    try:
        lab.ceph("osd", "pool", "set", name, "size", "4")
        lab.ceph("osd", "pool", "application", "enable", name, "rbd")
        lab.wait_settled(timeout=120)
        yield name
    finally:
        lab.ceph("osd", "pool", "rm", name, name, "--yes-i-really-really-mean-it")
        lab.wait_settled(timeout=120)


def test_a_pool_that_could_not_be_placed_without_the_host_is_refused(
    lab_engine: LabEngine, settled_lab: Lab, wide_pool: str
) -> None:
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=NODE, reason="e2e: wide pool", poll="2s")
    try:
        error = refused(lab_engine, run_id, NODE)
        assert (f"pool '{wide_pool}' (replicated, size 4, min_size 2) needs 4 hosts under 'default' (rule "
                f"'replicated_rule') and only 3 would hold weight without {NODE}") in error
        assert "pool 'lab'" not in error and "pool 'lab-ec'" not in error  # size 3 pools fit on 3 hosts
    finally:
        release(lab_engine, run_id)


@pytest.fixture
def tight_nearfull(settled_lab: Lab) -> Iterator[float]:
    """A nearfull ratio between today's fullest OSD and the fullest one once NODE's data has moved: no
    OSD is nearfull now (health stays OK), but draining NODE would make one so."""
    lab = settled_lab
    original = nearfull_ratio(lab)
    leaving = host_osds(lab, NODE) or []
    usage = {o: u for o, u in utilizations(lab).items() if o in lab.osd_hosts}
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
        error = refused(lab_engine, run_id, NODE)
        match = re.search(r"osd\.(\d+) would reach ([\d.]+)% used \(nearfull ratio ([\d.]+)%\)", error)
        assert match, error
        assert float(match[2]) / 100 >= tight_nearfull
        assert float(match[3]) / 100 == pytest.approx(tight_nearfull, abs=0.0006)
        assert int(match[1]) not in (host_osds(lab, NODE) or [])
        assert crush_weights(lab) == weights and flags_set(lab) == flags
        assert {o: (s["up"], s["in"]) for o, s in osd_states(lab).items()} == {
            o: (s["up"], s["in"]) for o, s in states.items()}
        assert run_silences(lab, run_id) == []
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the failed run", timeout=60)
    finally:
        release(lab_engine, run_id)


# -- paused mid-drain -------------------------------------------------------------------------------


class Disturbed:
    """What a mid-drain test changed, so the fixture can put it back whatever happened."""

    def __init__(self, lab: Lab) -> None:
        self.weights = crush_weights(lab)
        self.flags = flags_set(lab)
        self.settings = run_settings(lab)
        self.stopped: list[int] = []
        self.stopped_daemons: list[str] = []
        self.injected: list[int] = []
        self.restored = False

    def restore(self, lab: Lab) -> None:
        if self.restored:
            return
        for daemon in self.stopped_daemons:
            lab.start_daemon(daemon)
        eventually(lambda: lab.cli.answers() or None, "the mons to answer again", timeout=120)
        for osd in self.injected:
            lab.ceph("tell", f"osd.{osd}", "injectargs", "--osd_debug_inject_dispatch_delay_probability=0")
        lab.ceph("config", "rm", "osd", "osd_op_complaint_time")
        for osd in self.stopped:
            lab.lab_osd("start", str(osd))
        for flag in (flags_set(lab) & OPERATION_FLAGS) - self.flags:
            lab.ceph("osd", "unset", flag)
        now = crush_weights(lab)
        for osd, weight in self.weights.items():
            if osd in now and now[osd] != pytest.approx(weight, abs=1e-6):
                lab.ceph("osd", "crush", "reweight", f"osd.{osd}", f"{weight:.10g}")
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


def drain_started(engine: LabEngine, lab: Lab, run_id: str, ids: list[int], weights: dict[int, float]) -> None:
    def lowered() -> bool | None:
        assert engine.store.run(run_id)["status"] not in TERMINAL, engine.explain(run_id)
        return any(crush_weights(lab)[o] < weights[o] for o in ids) or None

    eventually(lowered, f"the drain of {NODE} to lower a CRUSH weight", timeout=180, interval=0.2)


def paused_on(engine: LabEngine, run_id: str, marker: str, timeout: float = 90) -> dict[str, object]:
    def paused() -> dict[str, object] | None:
        assert engine.store.run(run_id)["status"] not in TERMINAL, engine.explain(run_id)
        s = engine.step(run_id, "drain")
        return s if s["status"] == Status.WAITING and marker in str(s.get("waiting_reason")) else None

    return eventually(paused, f"the drain to wait on {marker}", timeout=timeout, interval=0.3)


def test_an_osd_down_elsewhere_pauses_the_drain_then_fails_it_at_max_pause(
    lab_engine: LabEngine, settled_lab: Lab, disturbed: Disturbed
) -> None:
    lab = settled_lab
    ids = host_osds(lab, NODE) or []
    victim = next(o for o, h in sorted(lab.osd_hosts.items()) if h not in (NODE,))
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=NODE, reason="e2e: failure mid-drain",
                               step=0.1, poll="2s", max_pause="25s", notify_after="5s")
    try:
        drain_started(lab_engine, lab, run_id, ids, disturbed.weights)
        lab.lab_osd("stop", str(victim))
        disturbed.stopped.append(victim)
        first = paused_on(lab_engine, run_id, "OSD_DOWN")
        weights = crush_weights(lab)
        print(f"\npaused: {first['waiting_reason']}")
        assert f"held by osd.{victim}" in str(first["waiting_reason"])
        polls = wake_times(lab_engine, run_id, "drain", count=2, timeout=60)
        assert all("OSD_DOWN" in str(p.get("waiting_reason")) for p in polls), polls
        assert crush_weights(lab) == weights, "a reweight step was applied while an OSD was down"
        assert flags_set(lab) == disturbed.flags and host_flags(lab) == {}, "the run set a flag"

        run = lab_engine.wait(run_id, timeout=120)
        assert run["status"] == Status.FAILED, lab_engine.explain(run_id)
        drain = lab_engine.step(run_id, "drain")
        print(f"failed: {drain['error']}")
        assert re.search(r"paused for \d+s, more than max_pause 25s: before step \d+: .*OSD_DOWN.*held by osd\."
                         + str(victim), str(drain["error"])), drain["error"]
        chat = [str(m["body"]) for m in lab.received() if m.get("path") == "/hooks/chat"]
        assert any("paused for" in c and "OSD_DOWN" in c and f"osd.{victim}" in c for c in chat), chat
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the failed run", timeout=60)
        assert lab_engine.step(run_id, "cleanup_throttle")["status"] == Status.SUCCEEDED
        assert run_settings(lab) == disturbed.settings, "the throttle was not put back"
        states = osd_states(lab)
        assert all(states[o]["up"] and states[o]["in"] for o in ids), states
    finally:
        release(lab_engine, run_id)
    disturbed.restore(lab)
    assert crush_weights(lab) == pytest.approx(disturbed.weights, abs=1e-6)
    assert_healthy_and_clean(lab)


def test_client_latency_over_the_threshold_pauses_the_drain_and_it_continues_once_it_clears(
    lab_engine: LabEngine, settled_lab: Lab, disturbed: Disturbed
) -> None:
    """Real latency: half the messages to the OSDs of one other host delayed 50 ms
    (``osd_debug_inject_dispatch_delay_*``): the 4 KiB write probe goes from ~2 ms to ~90 ms."""
    lab = settled_lab
    ids = host_osds(lab, NODE) or []
    slow = sorted(o for o, h in lab.osd_hosts.items() if h == "node1")
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=NODE, reason="e2e: client latency", step=0.1,
                               poll="2s", max_write_latency_ms=20, probe_pool="lab", notify_after="5s")
    try:
        drain_started(lab_engine, lab, run_id, ids, disturbed.weights)
        for osd in slow:
            lab.ceph("tell", f"osd.{osd}", "injectargs", "--osd_debug_inject_dispatch_delay_duration=0.05",
                     "--osd_debug_inject_dispatch_delay_probability=0.5")
            disturbed.injected.append(osd)
        held = paused_on(lab_engine, run_id, "client write latency", timeout=180)
        print(f"\npaused: {held['waiting_reason']}")
        assert re.search(r"client write latency [\d.]+ ms > 20 ms \(4 KiB rados bench on pool lab",
                         str(held["waiting_reason"])), held["waiting_reason"]
        steps = int(lab_engine.step(run_id, "drain")["memory"]["reweight"]["steps"])
        weights = crush_weights(lab)
        polls = wake_times(lab_engine, run_id, "drain", count=1, timeout=90)
        assert all("client write latency" in str(p.get("waiting_reason")) for p in polls), polls
        assert crush_weights(lab) == weights, "a reweight step was applied while clients suffered"

        for osd in list(disturbed.injected):
            lab.ceph("tell", f"osd.{osd}", "injectargs", "--osd_debug_inject_dispatch_delay_probability=0")
            disturbed.injected.remove(osd)

        def continued() -> bool | None:
            assert lab_engine.store.run(run_id)["status"] not in TERMINAL, lab_engine.explain(run_id)
            return int(lab_engine.step(run_id, "drain")["memory"]["reweight"]["steps"]) > steps or None

        eventually(continued, "the drain to take its next step", timeout=180, interval=1)
        assert any(crush_weights(lab)[o] < weights[o] for o in ids)
        memory = lab_engine.step(run_id, "drain")["memory"]["reweight"]
        print(f"continued once the latency cleared: step {memory['steps']}, probe max {memory.get('max_latency_ms')} ms")
        chat = [str(m["body"]) for m in lab.received() if m.get("path") == "/hooks/chat"]
        assert any("paused for" in c and "client write latency" in c for c in chat), chat
    finally:
        release(lab_engine, run_id)
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the cancelled run", timeout=120)
    assert run_settings(lab) == disturbed.settings, "the throttle was not put back after the cancel"
    disturbed.restore(lab)
    assert_healthy_and_clean(lab)


def test_a_mon_outage_is_ridden_out_by_the_drain(
    lab_engine: LabEngine, settled_lab: Lab, disturbed: Disturbed
) -> None:
    """Two of three mons stopped for ~15 s (no quorum: every ceph call times out), then back."""
    lab = settled_lab
    ids = host_osds(lab, NODE) or []
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=NODE, reason="e2e: mon outage", step=0.1,
                               poll="2s", outage_grace="90s")
    try:
        drain_started(lab_engine, lab, run_id, ids, disturbed.weights)
        for mon in ("mon.node1", "mon.node2"):
            lab.stop_daemon(mon)
            disturbed.stopped_daemons.append(mon)
        out_at = time.monotonic()
        held = paused_on(lab_engine, run_id, "cluster not answering", timeout=120)
        print(f"\nduring the outage: {held['waiting_reason']}")
        remaining = 15 - (time.monotonic() - out_at)
        if remaining > 0:
            wake_times(lab_engine, run_id, "drain", count=1, timeout=remaining + 60)
        assert lab_engine.store.run(run_id)["status"] not in TERMINAL, lab_engine.explain(run_id)
        for mon in list(disturbed.stopped_daemons):
            lab.start_daemon(mon)
            disturbed.stopped_daemons.remove(mon)
        down_for = time.monotonic() - out_at
        steps = int(lab_engine.step(run_id, "drain")["memory"]["reweight"]["steps"])

        def continued() -> bool | None:
            assert lab_engine.store.run(run_id)["status"] not in TERMINAL, lab_engine.explain(run_id)
            return int(lab_engine.step(run_id, "drain")["memory"]["reweight"]["steps"]) > steps or None

        eventually(continued, "the drain to take its next step after the outage", timeout=180, interval=1)
        print(f"mons out for {down_for:.0f} s; the drain went on")
    finally:
        release(lab_engine, run_id)
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the cancelled run", timeout=120)
    disturbed.restore(lab)
    assert run_settings(lab) == disturbed.settings
    assert_healthy_and_clean(lab)


# -- a refill refused -------------------------------------------------------------------------------


def test_a_reused_id_on_an_unwiped_disk_is_refused_at_the_refill(
    lab_engine: LabEngine, settled_lab: Lab, disturbed: Disturbed
) -> None:
    lab = settled_lab
    osd = 5
    assert lab.osd_hosts[osd] == NODE
    run_id = lab_engine.launch("replace-osd.yaml", cluster="lab", node=NODE, osd=osd, device=f"/dev/lab/{NODE}-b",
                               reason="e2e: unwiped disk", poll="2s")
    try:
        lab_engine.wait_step(run_id, "swap", Status.WAITING, timeout=400)
        assert "destroyed" in osd_states(lab)[osd]["state"]
        # What ceph-volume does with --osd-id on a disk still holding the old store: register the id with
        # a new uuid and start the daemon on the old store. On the lab it cannot even authenticate (the
        # old store's key was dropped with the destroy) and exits; the id stays registered, never up.
        lab.ceph("osd", "new", str(uuid.uuid4()), str(osd))
        with pytest.raises(LabError, match="exited"):
            lab.lab_osd("start", str(osd))
        assert osd_states(lab)[osd]["state"] == ["exists", "new"]
        lab_engine.service.approve(run_id, "swap", Identity("dc-tech", "cli"))
        run = lab_engine.wait(run_id, timeout=300)
        assert run["status"] == Status.FAILED, lab_engine.explain(run_id)
        recreate = lab_engine.step(run_id, "recreate")
        print(f"\nrefused: {recreate['error']}")
        assert f"osd.{osd} down" in str(recreate["error"]) and "never booted" in str(recreate["error"])
        assert "Zap the disk" in str(recreate["error"])
        eventually(lambda: cleanup_done(lab_engine, run_id), "the cleanup of the failed run", timeout=60)
        assert run_settings(lab) == disturbed.settings, "initial weight or throttle left behind"
    finally:
        release(lab_engine, run_id)
    lab.lab_osd("stop", str(osd))
    lab.ceph("osd", "destroy", str(osd), "--yes-i-really-mean-it")
    lab.lab_osd("create", str(osd), NODE)
    eventually(lambda: osd_states(lab)[osd]["up"] or None, f"osd.{osd} up again", timeout=120)
    lab.ceph("osd", "in", str(osd))
    disturbed.restore(lab)
    assert_healthy_and_clean(lab)
