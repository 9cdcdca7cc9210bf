"""replace-node on the production-like lab through a real worker, with client load and the PG sampler
running: preflight, throttled gentle drain, destroy keeping ids, swap gate, refill held at weight 0."""

from __future__ import annotations

import time

import pytest

from engine.errors import ApprovalDenied
from engine.service import Identity
from engine.states import Status
from lab import Lab
from lab.clientload import ClientLoad
from tests.lab_e2e.conftest import (
    LabEngine,
    assert_healthy_and_clean,
    crush_weights,
    eventually,
    host_osds,
    osd_states,
    run_silences,
)
from tests.lab_e2e.pgsampler import PgSampler

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODE = "node3"
REASON = "PSU failure (e2e)"
RUN_SETTINGS = ("osd_max_backfills", "osd_recovery_max_active", "osd_crush_initial_weight", "osd_mclock_profile")


def http_posts(lab: Lab, path: str) -> list[dict[str, object]]:
    return [m for m in lab.received() if m.get("kind") == "http" and m.get("path") == path]


def run_settings(lab: Lab) -> list[dict[str, object]]:
    """The options a run changes, wherever they are set in the mon config database."""
    return [e for e in lab.ceph_json("config", "dump") if e["name"] in RUN_SETTINGS]


def cluster_flags(lab: Lab) -> tuple[set[str], dict[str, list[str]]]:
    dump = lab.ceph_json("osd", "dump")
    return set(dump["flags_set"]), dict(dump.get("crush_node_flags") or {})


@pytest.mark.timeout(1200)
def test_replace_node_keeps_ids_moves_data_safely_and_cleans_up(
    lab_engine: LabEngine, settled_lab: Lab, pg_sampler: PgSampler, client_load: ClientLoad
) -> None:
    lab = settled_lab
    ids = host_osds(lab, NODE)
    assert ids, f"{NODE} holds no OSD in the lab"
    weights = crush_weights(lab)
    settings, flags = run_settings(lab), cluster_flags(lab)

    run_id = lab_engine.launch("replace-node.yaml", cluster="lab", node=NODE, reason=REASON, poll="2s")
    client_load.mark("drain")
    lab_engine.wait_step(run_id, "wait_drained", Status.SUCCEEDED, timeout=900)
    client_load.end("drain")
    lab_engine.wait_step(run_id, "swap", Status.WAITING, timeout=300)

    # At the swap gate: drained, destroyed with ids and CRUSH slots kept; no flag and no throttle held.
    states = osd_states(lab)
    assert all("destroyed" in states[i]["state"] and not states[i]["up"] for i in ids), states
    assert host_osds(lab, NODE) == ids
    assert all(crush_weights(lab)[i] == 0 for i in ids)
    assert cluster_flags(lab) == flags, "a flag is held across the swap gate"
    assert run_settings(lab) == settings, "the throttle is held across the swap gate"
    throttle = lab_engine.result(run_id, "throttle_drain")
    assert set(throttle["applied"]) == {"osd/osd_max_backfills", "osd/osd_recovery_max_active"}
    live = [s for s in run_silences(lab, run_id) if s["status"]["state"] == "active"]
    assert len(live) == 1 and [(m["name"], m["value"]) for m in live[0]["matchers"]] == [("host", NODE)]

    notices = http_posts(lab, "/hooks/dc")
    assert len(notices) == 1
    body = notices[0]["body"]
    assert isinstance(body, dict)
    expected = {"host": NODE, "rack": "r2", "reason": REASON, "cluster": "lab", "run_id": run_id}
    assert {k: body[k] for k in expected} == expected
    assert len(http_posts(lab, "/api/tickets")) == 1

    with pytest.raises(ApprovalDenied):
        lab_engine.service.approve(run_id, "swap", Identity("mallory", "cli"))
    lab_engine.service.approve(run_id, "swap", Identity("dc-tech", "cli"), comment="new chassis racked")
    refill_started = time.time()
    run = lab_engine.wait(run_id, timeout=900)
    assert run["status"] == Status.SUCCEEDED, lab_engine.explain(run_id)

    # Same ids, back up and in under the same host at their old weights; nothing of the run left set.
    assert host_osds(lab, NODE) == ids
    states = osd_states(lab)
    assert all(states[i]["up"] and states[i]["in"] and "destroyed" not in states[i]["state"] for i in ids)
    assert crush_weights(lab) == pytest.approx(weights, abs=1e-4)
    assert_healthy_and_clean(lab)
    assert run_settings(lab) == settings and cluster_flags(lab) == flags
    silences = run_silences(lab, run_id)
    assert silences and all(s["status"]["state"] == "expired" for s in silences)
    chat = http_posts(lab, "/hooks/chat")
    assert len(chat) == 1 and f"{NODE} replaced" in str(chat[0]["body"])

    # The refill: the new OSDs sat at weight 0 and nothing was misplaced before the first ramp step.
    refill = lab_engine.result(run_id, "refill")
    first = refill["first_step"]
    assert first["misplaced_ratio"] == 0 and first["remapped_pgs"] == 0, refill
    before_ramp = [s for s in pg_sampler.samples if refill_started <= s.at < float(first["at"])]
    remapped = [dict(s.states) for s in before_ramp if any("remapped" in st for st in s.states)]
    assert before_ramp and not remapped, f"PGs remapped before the first ramp step: {remapped[:3]}"

    load = client_load.stop()
    findings = eventually(lambda: pg_sampler.findings, "sampler findings")
    print(f"\nPG sampler during replace-node {NODE}: {findings.describe()}\n{load.describe()}")
    print(f"client p99 during the drain {load.windows['drain'].p99_ms:.1f} ms vs idle p99 {load.idle_p99_ms:.1f} ms")
    assert load.ops > 100 and load.errors == 0, load.describe()
    assert findings.samples >= 30 and findings.max_gap < 10
    assert findings.below_min_size_samples == 0, "a PG had fewer acting OSDs than its pool's min_size"
    assert findings.bad_samples == 0, "a PG was down, incomplete, stale or unknown"
    assert findings.longest_inactive <= 10, findings.describe()
