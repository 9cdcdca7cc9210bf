"""ceph.preflight, driven by outputs captured on real clusters: the 1-mon lab of the phase captures and
the 3-mon lab with a replicated size 3 and an erasure-coded 2+1 pool (``prodlab/``). The real-lab runs
are in tests/lab_e2e."""

from __future__ import annotations

import copy
import re

import pytest

from actions import ceph
from engine.errors import ActionError, SafetyCheckFailed
from tests.actions.test_ceph_actions import Replay, Reply, context, doc, text
from tests.actions.test_ceph_rebalance import df

OK_TO_STOP_01 = ("osd", "ok-to-stop", "0", "1")


def preflight_replay(phase: str = "healthy", cluster: str = "probe") -> Replay:
    replay = Replay(phase, cluster=cluster)
    replay.answer(OK_TO_STOP_01, Reply(stdout=text("precheck_ok_to_stop.json")))
    return replay


def refusal(replay: Replay, host: str = "node1", **params: object) -> str:
    with pytest.raises(SafetyCheckFailed) as caught:
        ceph.preflight(context(replay), cluster="lab", host=host, **params)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"pre-flight of {host} failed: ")
    return message


def test_preflight_records_the_node_and_its_facts() -> None:
    result = ceph.preflight(context(preflight_replay()), cluster="lab", host="node1")
    assert result["ok"] and result["problems"] == []
    assert (result["osds"], result["weights"], result["weight"]) == ([0, 1], {"0": 1.0, "1": 1.0}, 1.0)
    assert result["devices"] == ["/dev/sdb", "/dev/sdc"]
    assert result["domains_left"] == {"device_health_metrics": 2, "lab": 2}
    assert result["mons"] == {"a": "vm"} and result["mons_on_host"] == []
    assert (result["mgr_active"], result["mgr_standbys"]) == ("x", [])
    assert 0.08 < result["projected_max_utilization"] < 0.2


def test_preflight_refuses_while_data_moves() -> None:
    assert "data is moving" in refusal(preflight_replay("rebalancing_step2"))


def test_preflight_refuses_the_admin_endpoint() -> None:
    replay = preflight_replay()
    replay.answer(("osd", "ok-to-stop", "2", "3"), Reply(stdout=text("precheck_ok_to_stop.json")))
    message = refusal(replay, host="node2")  # the test inventory's admin_host
    assert "node2 is the admin endpoint of cluster lab" in message and "move admin_host" in message


def test_preflight_refuses_a_host_carrying_a_monitor_and_quotes_mon_ok_to_stop() -> None:
    replay = preflight_replay(cluster="prodlab")
    stderr = text("prodlab/mon_ok_to_stop_node1.stderr-and-rc.txt").rpartition("rc=")[0]
    replay.answer(("mon", "ok-to-stop", "node1"), Reply(rc=0, stderr=stderr))
    message = refusal(replay)
    assert "node1 carries monitor mon.node1 (3 mons, quorum admin, node1, node2)" in message
    assert "quorum would shrink to 2" in message and "ceph mon remove node1" in message
    assert ("mon", "ok-to-stop", "node1") in replay.executed


def test_preflight_quotes_a_mon_ok_to_stop_refusal() -> None:
    replay = preflight_replay()
    metadata = copy.deepcopy(doc("probe/mon_metadata.json"))
    metadata[0]["hostname"] = "node1"
    replay.docs[("mon", "metadata")] = metadata
    stderr = text("probe/mon_ok_to_stop_a.stderr-and-rc.txt").rpartition("rc=")[0]
    replay.answer(("mon", "ok-to-stop", "a"), Reply(rc=16, stderr=stderr))
    message = refusal(replay)
    assert "carries monitor mon.a (1 mons, quorum a); 'ceph mon ok-to-stop a': Error EBUSY: not enough " \
           "monitors would be available" in message


def test_preflight_refuses_the_only_active_mgr_without_a_standby() -> None:
    replay = preflight_replay()
    metadata = copy.deepcopy(doc("probe/mgr_metadata.json"))
    metadata[0]["hostname"] = "node1.example.com"  # metadata may carry the FQDN
    replay.docs[("mgr", "metadata")] = metadata
    message = refusal(replay)
    assert "node1 runs the only active mgr (mgr.x) and no standby mgr runs elsewhere" in message


def test_preflight_accepts_the_active_mgr_when_a_standby_runs_elsewhere() -> None:
    replay = preflight_replay(cluster="prodlab")
    dump = copy.deepcopy(doc("probe/osd_pool_ls_detail.json"))  # size 2 pools: placement is fine
    replay.docs[("osd", "pool", "ls", "detail")] = dump
    mons = copy.deepcopy(doc("prodlab/mon_metadata.json"))
    for mon in mons:
        mon["hostname"] = "elsewhere"
    replay.docs[("mon", "metadata")] = mons
    metadata = copy.deepcopy(doc("prodlab/mgr_metadata.json"))
    for mgr in metadata:  # the active mgr on node1, its standby on node4
        mgr["hostname"] = "node1" if mgr["name"] == "admin" else "node4"
    replay.docs[("mgr", "metadata")] = metadata
    result = ceph.preflight(context(replay), cluster="lab", host="node1")
    assert result["ok"] and (result["mgr_active"], result["mgr_standbys"]) == ("admin", ["node1"])


def test_preflight_refuses_when_a_pool_could_not_place_its_replicas_or_chunks() -> None:
    # The 3-mon lab's pools (replicated size 3 / min_size 2, EC 2+1, failure domain host) on a 3-host tree.
    message = refusal(preflight_replay(cluster="prodlab"), check_daemons=False)
    assert ("pool 'lab' (replicated, size 3, min_size 2) needs 3 hosts under 'default' (rule 'replicated_rule') "
            "and only 2 would hold weight without node1 (data could not be re-replicated") in message
    assert "pool 'lab-ec' (erasure-coded, k+m=3, min_size 2) needs 3 hosts under 'default' (rule 'lab-ec')" in message
    assert "add a host first" in message


def test_preflight_says_when_a_pool_would_drop_below_min_size() -> None:
    replay = preflight_replay(cluster="prodlab")
    pools = copy.deepcopy(doc("prodlab/osd_pool_ls_detail.json"))
    for pool in pools:
        pool["size"], pool["min_size"] = 3, 3
    replay.docs[("osd", "pool", "ls", "detail")] = pools
    assert "below min_size: its PGs would stop serving I/O" in refusal(replay, check_daemons=False)


def test_preflight_refuses_max_hosts_down_beyond_what_the_pools_allow() -> None:
    message = refusal(preflight_replay(), max_hosts_down=2)
    assert re.search(r"max_hosts_down 2 in the inventory lets 2 host\(s\) be out at once, but pool 'lab' "
                     r"\(replicated, size 2, min_size 1\) spans 3 hosts, so at most 1 may be: lower max_hosts_down "
                     r"to 1", message), message


def test_preflight_refuses_when_the_rest_cannot_absorb_the_data() -> None:
    replay = preflight_replay()
    full = {"kb_used": 700_000}
    replay.docs[("osd", "df")] = df(osd0=full, osd1=full, osd2=full, osd3=full, osd4=full, osd5=full)
    assert "nearfull ratio" in refusal(replay)


def test_preflight_refuses_when_ok_to_stop_says_no() -> None:
    replay = preflight_replay()
    replay.answer(OK_TO_STOP_01, Reply(rc=16, stdout='{"ok_to_stop":false,"osds":[0,1],"num_ok_pgs":10,'
                                                    '"num_not_ok_pgs":2,"bad_become_inactive":["2.1","2.3"]}'))
    assert "2.1, 2.3" in refusal(replay)


def test_preflight_of_an_unknown_host_fails() -> None:
    with pytest.raises(ActionError, match="no CRUSH host bucket 'node9'"):
        ceph.preflight(context(preflight_replay()), cluster="lab", host="node9")


def test_preflight_dry_run_reports_problems_instead_of_failing() -> None:
    replay = Replay("rebalancing_step2", dry_run=True)
    replay.answer(OK_TO_STOP_01, Reply(stdout=text("precheck_ok_to_stop.json")))
    result = ceph.preflight(context(replay), cluster="lab", host="node1")
    assert not result["ok"] and "data is moving" in result["problems"][0]
