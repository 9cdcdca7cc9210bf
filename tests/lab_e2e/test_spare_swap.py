"""replace-node-spare on the production-like lab: the spare node5 takes node4's place with
`ceph osd crush swap-bucket` (data moves once), then node4 takes node5's place again the same way, so the
lab ends with its original layout. Client load and the PG sampler run throughout."""

from __future__ import annotations

import pytest

from engine.states import Status
from lab import Lab
from lab.clientload import ClientLoad
from tests.lab_e2e.conftest import LabEngine, assert_healthy_and_clean, crush_weights, host_osds, osd_states
from tests.lab_e2e.pgsampler import PgSampler

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1200)]

SETTINGS = ("osd_max_backfills", "osd_recovery_max_active", "osd_crush_update_on_start", "osd_crush_initial_weight")


def settings(lab: Lab) -> list[dict[str, object]]:
    return [e for e in lab.ceph_json("config", "dump") if e["name"] in SETTINGS]


def swap(engine: LabEngine, lab: Lab, node: str, spare: str, load: ClientLoad) -> dict[str, object]:
    ids, weights, before = host_osds(lab, node) or [], crush_weights(lab), settings(lab)
    assert ids and host_osds(lab, spare) is None, "the spare must be outside CRUSH, the node in it"
    run_id = engine.launch("replace-node-spare.yaml", cluster="lab", node=node, spare=spare,
                           devices=[f"/dev/lab/{spare}-a", f"/dev/lab/{spare}-b"], poll="2s")
    with load.window(f"swap {node}->{spare}"):
        engine.wait_step(run_id, "wait_moved", Status.SUCCEEDED, timeout=600)
    run = engine.wait(run_id, timeout=600)
    assert run["status"] == Status.SUCCEEDED, engine.explain(run_id)
    new = engine.result(run_id, "spare")["osds"]
    assert host_osds(lab, node) is None, f"{node}'s bucket is still in CRUSH"
    assert host_osds(lab, spare) == sorted(new) and not set(ids) & set(osd_states(lab))
    after = crush_weights(lab)
    assert all(after[o] == pytest.approx(weights[ids[0]], abs=1e-6) for o in new)
    assert sum(after.values()) == pytest.approx(sum(weights.values()), abs=1e-5), "the cluster's weight changed"
    assert settings(lab) == before, "throttle or osd_crush_update_on_start left behind"
    assert_healthy_and_clean(lab)
    swapped = engine.result(run_id, "swap_bucket")
    assert swapped["swapped"] and sorted(swapped["old_osds"]) == ids
    return {"run": run_id, "new": new}


def test_a_spare_takes_the_place_of_a_node_and_data_moves_once(
    lab_engine: LabEngine, settled_lab: Lab, pg_sampler: PgSampler, client_load: ClientLoad
) -> None:
    lab = settled_lab
    original = {h: host_osds(lab, h) for h in ("node4", "node5")}
    swap(lab_engine, lab, "node4", "node5", client_load)
    swap(lab_engine, lab, "node5", "node4", client_load)
    assert {h: host_osds(lab, h) for h in ("node4", "node5")} == original
    load = client_load.stop()
    findings = pg_sampler.findings
    print(f"\nPG sampler during two spare swaps: {findings.describe()}\n{load.describe()}")
    assert load.errors == 0, load.describe()
    assert findings.below_min_size_samples == 0 and findings.bad_samples == 0, findings.describe()
    assert findings.longest_inactive <= 10, findings.describe()
