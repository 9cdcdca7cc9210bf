"""The lab is the production-like cluster lab/README.md describes: 3 mons on 3 hosts, an active and a
standby mgr, an admin host without OSDs, size-3 and EC 2+1 pools with failure domain host, and OSDs
that place themselves in CRUSH at their size when they first start (as ceph-volume's do)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from lab import Lab, LabError
from lab.cluster import OSD_DEVICE_BYTES

pytestmark = [pytest.mark.lab, pytest.mark.slow]

T = TypeVar("T")
SIZE_WEIGHT = OSD_DEVICE_BYTES / 2**40
"""osd_crush_initial_weight -1 means the device size in TiB (Ceph rounds it to 4 decimals)."""
NEW_OSD = 8


def eventually(check: Callable[[], T | None], what: str, timeout: float = 90) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


def tree_nodes(lab: Lab) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in lab.ceph_json("osd", "tree")["nodes"]}


def host_of(lab: Lab, osd_id: int) -> str | None:
    nodes = tree_nodes(lab)
    osd = nodes.get(f"osd.{osd_id}")
    if osd is None:
        return None
    return next((n["name"] for n in nodes.values() if n["type"] == "host" and osd["id"] in n.get("children", [])),
                None)


def test_cluster_is_healthy_with_eight_osds_up_and_in(ceph_lab: Lab) -> None:
    status = ceph_lab.ceph_json("status")
    assert status["health"]["status"] == "HEALTH_OK"
    osdmap = status["osdmap"]
    assert (osdmap["num_osds"], osdmap["num_up_osds"], osdmap["num_in_osds"]) == (8, 8, 8)
    assert [s["state_name"] for s in status["pgmap"]["pgs_by_state"]] == ["active+clean"]
    assert status["pgmap"]["num_objects"] >= 88


def test_three_mons_named_after_their_hosts_are_in_quorum(ceph_lab: Lab) -> None:
    quorum = ceph_lab.ceph_json("quorum_status")
    assert sorted(quorum["quorum_names"]) == ["admin", "node1", "node2"]
    mons = quorum["monmap"]["mons"]
    assert len({m["public_addrs"]["addrvec"][0]["addr"] for m in mons}) == 3
    metadata = {m["name"]: m["hostname"] for m in ceph_lab.ceph_json("mon", "metadata")}
    assert metadata == {"admin": "admin", "node1": "node1", "node2": "node2"}


def test_active_mgr_on_admin_and_standby_on_node1(ceph_lab: Lab) -> None:
    dump = ceph_lab.ceph_json("mgr", "dump")
    assert dump["available"] is True
    assert dump["active_name"] == "admin"
    assert [s["name"] for s in dump["standbys"]] == ["node1"]
    metadata = {m["name"]: m["hostname"] for m in ceph_lab.ceph_json("mgr", "metadata")}
    assert metadata == {"admin": "admin", "node1": "node1"}


def test_osds_sit_in_the_host_bucket_of_the_host_they_report(ceph_lab: Lab) -> None:
    nodes = tree_nodes(ceph_lab)
    hosts = {n["name"]: sorted(c for c in n["children"]) for n in nodes.values() if n["type"] == "host"}
    assert hosts == {"node1": [0, 1], "node2": [2, 3], "node3": [4, 5], "node4": [6, 7]}
    metadata = {int(m["id"]): m["hostname"] for m in ceph_lab.ceph_json("osd", "metadata")}
    assert metadata == {0: "node1", 1: "node1", 2: "node2", 3: "node2", 4: "node3", 5: "node3",
                        6: "node4", 7: "node4"}
    assert "admin" not in hosts


def test_initial_osds_have_their_size_as_crush_weight(ceph_lab: Lab) -> None:
    weights = [n["crush_weight"] for n in tree_nodes(ceph_lab).values() if n["type"] == "osd"]
    assert len(weights) == 8
    assert all(w == pytest.approx(SIZE_WEIGHT, rel=0.02) for w in weights), weights
    assert ceph_lab.ceph("config", "get", "osd", "osd_crush_update_on_start").strip() == "true"


def rule_failure_domain(lab: Lab, rule_id: int) -> str:
    rule = next(r for r in lab.ceph_json("osd", "crush", "rule", "dump") if r["rule_id"] == rule_id)
    return next(str(s["type"]) for s in rule["steps"] if s["op"].startswith("choose"))


def test_replicated_pool_is_size_three_min_size_two_across_hosts(ceph_lab: Lab) -> None:
    pools = {p["pool_name"]: p for p in ceph_lab.ceph_json("osd", "pool", "ls", "detail")}
    lab_pool = pools["lab"]
    assert (lab_pool["type"], lab_pool["size"], lab_pool["min_size"], lab_pool["pg_num"]) == (1, 3, 2, 32)
    assert rule_failure_domain(ceph_lab, lab_pool["crush_rule"]) == "host"
    assert "rados" in lab_pool["application_metadata"]


def test_erasure_coded_pool_is_two_plus_one_across_hosts(ceph_lab: Lab) -> None:
    pools = {p["pool_name"]: p for p in ceph_lab.ceph_json("osd", "pool", "ls", "detail")}
    ec = pools["lab-ec"]
    assert (ec["type"], ec["size"], ec["min_size"]) == (3, 3, 2)
    profile = ceph_lab.ceph_json("osd", "erasure-code-profile", "get", ec["erasure_code_profile"])
    assert (profile["k"], profile["m"], profile["crush-failure-domain"]) == ("2", "1", "host")
    assert rule_failure_domain(ceph_lab, ec["crush_rule"]) == "host"
    assert "rados" in ec["application_metadata"]
    stats = {p["name"]: p["stats"] for p in ceph_lab.ceph_json("df")["pools"]}
    assert stats["lab-ec"]["objects"] >= 40
    assert stats["lab"]["objects"] >= 48


@pytest.fixture
def new_osd(ceph_lab: Lab) -> Iterator[int]:
    """osd.8 does not exist before; afterwards it is stopped, purged and its host bucket removed."""
    ceph_lab.wait_settled()
    yield NEW_OSD
    ceph_lab.lab_osd("stop", str(NEW_OSD))
    eventually(lambda: not any(o["osd"] == NEW_OSD and o["up"] for o in ceph_lab.ceph_json("osd", "dump")["osds"]),
               "osd.8 marked down")
    ceph_lab.ceph("osd", "purge", str(NEW_OSD), "--yes-i-really-mean-it")
    ceph_lab.lab_osd("zap", str(NEW_OSD))
    for host in ("node5", "node6"):
        if host in tree_nodes(ceph_lab):
            ceph_lab.ceph("osd", "crush", "rm", host)
    ceph_lab.ceph("config", "rm", "osd", "osd_crush_initial_weight")
    ceph_lab.wait_settled(timeout=300)


def test_new_osd_joins_crush_at_its_size_and_takes_data_at_once(ceph_lab: Lab, new_osd: int) -> None:
    ceph_lab.lab_osd("create", str(new_osd), "node5")
    eventually(lambda: host_of(ceph_lab, new_osd) == "node5", "osd.8 to place itself under host node5")
    assert tree_nodes(ceph_lab)[f"osd.{new_osd}"]["crush_weight"] == pytest.approx(SIZE_WEIGHT, rel=0.02)
    assert tree_nodes(ceph_lab)["node5"]["type"] == "host"

    def has_pgs() -> bool:
        listing = ceph_lab.ceph_json("pg", "ls-by-osd", str(new_osd))
        return bool(listing.get("pg_stats") if isinstance(listing, dict) else listing)

    eventually(has_pgs, "PGs mapped to the new osd.8")
    metadata = ceph_lab.ceph_json("osd", "metadata", str(new_osd))
    assert metadata["hostname"] == "node5"


def test_new_osd_joins_at_weight_zero_when_the_initial_weight_is_set_to_zero(
    ceph_lab: Lab, new_osd: int
) -> None:
    ceph_lab.ceph("config", "set", "osd", "osd_crush_initial_weight", "0")
    ceph_lab.lab_osd("create", str(new_osd), "node6")
    eventually(lambda: host_of(ceph_lab, new_osd) == "node6", "osd.8 to place itself under host node6")
    assert tree_nodes(ceph_lab)[f"osd.{new_osd}"]["crush_weight"] == 0
    eventually(lambda: any(o["osd"] == new_osd and o["up"] == 1 and o["in"] == 1
                           for o in ceph_lab.ceph_json("osd", "dump")["osds"]), "osd.8 up and in")
    ceph_lab.wait_settled()
    listing = ceph_lab.ceph_json("pg", "ls-by-osd", str(new_osd))
    assert not (listing.get("pg_stats") if isinstance(listing, dict) else listing)


def test_lab_osd_weight_option_sets_the_first_start_weight(ceph_lab: Lab, new_osd: int) -> None:
    ceph_lab.lab_osd("create", str(new_osd), "node5", "--weight", "0.002")
    assert ceph_lab.lab_osd("status", str(new_osd)).returncode == 0, "create returned before the daemon ran"
    eventually(lambda: host_of(ceph_lab, new_osd) == "node5", "osd.8 to place itself under host node5")
    assert tree_nodes(ceph_lab)[f"osd.{new_osd}"]["crush_weight"] == pytest.approx(0.002, abs=1e-4)


def test_restarted_osd_stays_in_its_host_bucket(ceph_lab: Lab) -> None:
    ceph_lab.lab_osd("stop", "5")
    eventually(lambda: not any(o["osd"] == 5 and o["up"] for o in ceph_lab.ceph_json("osd", "dump")["osds"]),
               "osd.5 marked down")
    ceph_lab.lab_osd("start", "5")
    eventually(lambda: any(o["osd"] == 5 and o["up"] for o in ceph_lab.ceph_json("osd", "dump")["osds"]),
               "osd.5 up again")
    assert host_of(ceph_lab, 5) == "node3"
    assert ceph_lab.ceph_json("osd", "metadata", "5")["hostname"] == "node3"
    ceph_lab.wait_settled(timeout=300)


def mgr_roles(lab: Lab) -> tuple[str | None, list[str]]:
    dump = lab.ceph_json("mgr", "dump")
    return (dump["active_name"] if dump["available"] else None), [s["name"] for s in dump["standbys"]]


def test_standby_mgr_takes_over_when_the_active_one_fails(ceph_lab: Lab) -> None:
    try:
        ceph_lab.ceph("mgr", "fail", "admin")
        eventually(lambda: mgr_roles(ceph_lab) == ("node1", ["admin"]), "node1 active with admin as standby")
    finally:
        if mgr_roles(ceph_lab)[0] != "admin":
            ceph_lab.ceph("mgr", "fail", "node1")
        eventually(lambda: mgr_roles(ceph_lab) == ("admin", ["node1"]), "admin active again, node1 standby")


def test_a_stopped_mon_leaves_two_in_quorum_and_rejoins_when_started(ceph_lab: Lab) -> None:
    def quorum() -> list[str]:
        return sorted(ceph_lab.ceph_json("quorum_status")["quorum_names"])

    ceph_lab.stop_daemon("mon.node2")
    try:
        eventually(lambda: quorum() == ["admin", "node1"], "a quorum of admin and node1")
        assert ceph_lab.daemons()[2].name == "mon.node2" and not ceph_lab.daemons()[2].running
        assert ceph_lab.ceph_rc("mon", "ok-to-stop", "node1").returncode != 0
    finally:
        ceph_lab.start_daemon("mon.node2")
    eventually(lambda: quorum() == ["admin", "node1", "node2"], "mon.node2 back in quorum")
    assert ceph_lab.ceph_json("mon", "metadata", "node2")["hostname"] == "node2"
    with pytest.raises(LabError, match=r"no lab daemon 'mon\.node3'"):
        ceph_lab.stop_daemon("mon.node3")
    ceph_lab.wait_settled()
