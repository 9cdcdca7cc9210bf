"""add-node, drain-node, replace-osd and rebalance on the real lab through a real worker.

The tests chain so the lab ends as it started: add-node brings the spare node5 in, drain-node takes
it out again; replace-osd recreates osd.5 in place; rebalance undoes the imbalance it creates.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.service import Identity
from engine.states import Status
from lab import Lab
from tests.lab_e2e.conftest import (
    LabEngine,
    assert_healthy_and_clean,
    crush_weights,
    host_osds,
    osd_states,
    run_silences,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(900)]

SPARE = "node5"
SPARE_DEVICES = ["/dev/lab/node5-a", "/dev/lab/node5-b"]
RUN_SETTINGS = ("osd_max_backfills", "osd_recovery_max_active", "osd_crush_initial_weight")


def run_settings(lab: Lab) -> list[dict[str, object]]:
    return [e for e in lab.ceph_json("config", "dump") if e["name"] in RUN_SETTINGS]


def chat_messages(lab: Lab) -> list[str]:
    return [str(m["body"]["text"]) for m in lab.received()
            if m.get("kind") == "http" and m.get("path") == "/hooks/chat" and isinstance(m.get("body"), dict)]


def test_add_node_brings_the_spare_host_in_gradually(lab_engine: LabEngine, settled_lab: Lab) -> None:
    lab = settled_lab
    assert host_osds(lab, SPARE) is None, "node5 is already in CRUSH: a previous session left it"
    before = set(osd_states(lab))
    settings = run_settings(lab)
    run_id = lab_engine.launch("add-node.yaml", cluster="lab", node=SPARE, devices=SPARE_DEVICES, poll="2s")
    run = lab_engine.wait(run_id, timeout=600)
    assert run["status"] == Status.SUCCEEDED, lab_engine.explain(run_id)

    created = lab_engine.result(run_id, "add")["created"]
    assert len(created) == 2 and not set(created) & before
    assert host_osds(lab, SPARE) == sorted(created)
    states = osd_states(lab)
    assert all(states[o]["up"] and states[o]["in"] for o in created)
    sizes = {int(n["id"]): int(n["kb"]) / 2**30 for n in lab.ceph_json("osd", "df")["nodes"]}
    assert all(crush_weights(lab)[o] == pytest.approx(sizes[o], abs=1e-4) for o in created)  # their device size
    add = lab_engine.result(run_id, "add")
    assert add["steps"] == 4  # 0 -> 1/4 -> 1/2 -> 3/4 -> the size
    assert add["first_step"]["misplaced_ratio"] == 0, "data moved before the ramp: the new OSDs were not at weight 0"
    assert_healthy_and_clean(lab)
    assert run_settings(lab) == settings, "initial weight or throttle left behind"
    assert any(f"{SPARE} added" in m for m in chat_messages(lab))


def test_drain_node_purges_the_host_and_removes_its_bucket(lab_engine: LabEngine, settled_lab: Lab) -> None:
    lab = settled_lab
    ids = host_osds(lab, SPARE)
    assert ids, "run after test_add_node: node5 must hold OSDs"
    run_id = lab_engine.launch("drain-node.yaml", cluster="lab", node=SPARE, reason="e2e decommission", poll="2s")
    run = lab_engine.wait(run_id, timeout=600)
    assert run["status"] == Status.SUCCEEDED, lab_engine.explain(run_id)

    assert host_osds(lab, SPARE) is None
    assert not set(ids) & set(osd_states(lab))
    assert lab_engine.result(run_id, "drain")["steps"] == 4
    assert lab_engine.result(run_id, "purge_osds")["purged"] == ids
    assert_healthy_and_clean(lab)
    silences = run_silences(lab, run_id)
    assert silences and all(s["status"]["state"] == "expired" for s in silences)
    assert any(f"{SPARE} drained and removed" in m for m in chat_messages(lab))


def test_replace_osd_recreates_one_disk_with_the_same_id(lab_engine: LabEngine, settled_lab: Lab) -> None:
    lab = settled_lab
    osd, node = 5, "node3"
    settings = run_settings(lab)
    assert osd in (host_osds(lab, node) or [])
    weights = crush_weights(lab)
    run_id = lab_engine.launch("replace-osd.yaml", cluster="lab", node=node, osd=osd, device="/dev/lab/node3-b",
                               reason="SMART errors (e2e)", poll="2s")
    lab_engine.wait_step(run_id, "swap", Status.WAITING, timeout=600)
    assert "destroyed" in osd_states(lab)[osd]["state"]
    others = [o for o in host_osds(lab, node) or [] if o != osd]
    assert all(osd_states(lab)[o]["up"] for o in others), "only the replaced disk may be down"
    notice = [m for m in lab.received() if m.get("path") == "/hooks/dc"]
    assert len(notice) == 1 and "osd.5" in notice[0]["body"]["reason"] and notice[0]["body"]["host"] == node
    lab_engine.service.approve(run_id, "swap", Identity("sre-oncall", "cli"))
    run = lab_engine.wait(run_id, timeout=600)
    assert run["status"] == Status.SUCCEEDED, lab_engine.explain(run_id)

    assert osd in (host_osds(lab, node) or [])
    state = osd_states(lab)[osd]
    assert state["up"] and state["in"] and "destroyed" not in state["state"]
    assert crush_weights(lab) == pytest.approx(weights, abs=1e-4)
    assert_healthy_and_clean(lab)
    assert run_settings(lab) == settings


def spread(lab: Lab) -> float:
    nodes = [n for n in lab.ceph_json("osd", "df")["nodes"] if n["reweight"] > 0 and n["kb"] > 0]
    utils = [float(n["utilization"]) for n in nodes]
    return max(utils) - min(utils)


@pytest.fixture
def imbalanced_lab(settled_lab: Lab) -> Iterator[Lab]:
    """osd.0 at three times its CRUSH weight, restored afterwards with every reweight at 1."""
    lab = settled_lab
    weight = crush_weights(lab)[0]
    lab.ceph("osd", "crush", "reweight", "osd.0", f"{3 * weight:.10g}")
    lab.wait_settled(timeout=300)
    yield lab
    lab.ceph("osd", "crush", "reweight", "osd.0", f"{weight:.10g}")
    for node in lab.ceph_json("osd", "df")["nodes"]:
        if float(node["reweight"]) not in (0.0, 1.0):
            lab.ceph("osd", "reweight", str(node["id"]), "1")
    lab.wait_settled(timeout=300)


def test_rebalance_reduces_the_utilization_spread(lab_engine: LabEngine, imbalanced_lab: Lab) -> None:
    lab = imbalanced_lab
    before = spread(lab)
    target = round(before / 3, 2)
    run_id = lab_engine.launch("rebalance.yaml", cluster="lab", max_spread=target, step=0.1, min_reweight=0.3,
                               max_rounds=8, poll="2s")
    run = lab_engine.wait(run_id, timeout=600)
    assert run["status"] == Status.SUCCEEDED, lab_engine.explain(run_id)

    result = lab_engine.result(run_id, "rebalance")
    after = lab_engine.result(run_id, "after")["spread"]
    print(f"\nrebalance: spread {before:.2f} -> {after:.2f} points (target {target}) in "
          f"{len(result['rounds'])} round(s): {result['rounds']}")
    assert result["rounds"] and result["rounds"][0]["osd"] == 0
    assert after < before * 0.75
    reweights = {int(n["id"]): float(n["reweight"]) for n in lab.ceph_json("osd", "df")["nodes"]}
    assert reweights[0] < 1 and min(reweights.values()) >= 0.3 - 1e-4
    assert_healthy_and_clean(lab)
