"""The ceph JSON parsers and decisions, against outputs captured on a real Ceph 16.2 cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actions import cephjson as cj
from engine.errors import ActionError

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "ceph-samples"
PHASES = [
    "healthy", "rebalancing_step1", "rebalancing_step2", "rebalancing_step3", "rebalancing_step4",
    "drained", "stopped_before_purge", "after_purge", "destroyed", "refill", "refill_same_id",
    "failure_osd_down_noout", "failure_recovering", "nearfull", "final",
]


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def with_rc(name: str) -> tuple[str, int]:
    """A ``*.stdout-and-rc.txt`` file: stdout, then ``rc=N`` (on its own line or glued to the JSON)."""
    text = (SAMPLES / name).read_text().rstrip("\n")
    head, _, rc = text.rpartition("rc=")
    return head, int(rc)


def split_stderr(stdout_and_stderr: str) -> tuple[str, str]:
    """The captured ok-to-stop file holds the JSON line, then EBUSY on stderr."""
    first, _, rest = stdout_and_stderr.strip("\n").partition("\n")
    return first, rest


def exit_code(what: str) -> dict[str, Any]:
    entries = json.loads((SAMPLES / "probe" / "exit_codes.json").read_text())
    return next(e for e in entries if e["what"].startswith(what))


# -- health and PG states ---------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [p for p in PHASES if p not in ("refill_same_id", "failure_recovering")])
def test_status_and_health_detail_agree_on_health(phase: str) -> None:
    """(In the two phases left out, the files were captured while health was changing.)"""
    from_status = cj.parse_health(sample(f"{phase}_status.json"))
    from_detail = cj.parse_health(sample(f"{phase}_health_detail.json"))
    assert from_status.status == from_detail.status
    assert set(from_status.checks) == set(from_detail.checks)


@pytest.mark.parametrize("phase", PHASES)
def test_pg_counts_add_up_in_status_and_pg_stat(phase: str) -> None:
    for doc in (sample(f"{phase}_status.json"), sample(f"{phase}_pg_stat.json")):
        assert sum(cj.pg_states(doc).values()) == cj.num_pgs(doc) == 33


def test_health_detail_keeps_messages() -> None:
    health = cj.parse_health(sample("failure_osd_down_noout_health_detail.json"))
    assert health.status == "HEALTH_WARN"
    assert sorted(health.checks) == ["OSDMAP_FLAGS", "OSD_DOWN", "PG_DEGRADED"]
    assert health.checks["OSD_DOWN"].detail == ("osd.2 (root=default,host=node2) is down",)
    assert health.checks["PG_DEGRADED"].count == 6
    assert health.unexpected(["OSDMAP_FLAGS", "PG_DEGRADED"]) == ["OSD_DOWN"]
    assert health.fatal([]) == []


def test_muted_checks_are_ignored() -> None:
    doc = sample("nearfull_health_detail.json")
    doc["checks"]["POOL_NEARFULL"]["muted"] = True
    assert list(cj.parse_health(doc).checks) == ["OSD_NEARFULL"]


def test_full_osds_are_fatal_unless_allowed() -> None:
    doc = sample("nearfull_health_detail.json")
    doc["checks"]["OSD_BACKFILLFULL"] = doc["checks"].pop("OSD_NEARFULL")
    health = cj.parse_health(doc)
    assert health.fatal([]) == ["OSD_BACKFILLFULL"]
    assert health.fatal(["OSD_BACKFILLFULL"]) == []


def test_missing_ratios_mean_zero() -> None:
    healthy = sample("healthy_status.json")
    assert "misplaced_ratio" not in healthy["pgmap"] and "degraded_ratio" not in healthy["pgmap"]
    summary = cj.summarize_status(healthy)
    assert summary.misplaced_ratio == 0.0 and summary.degraded_ratio == 0.0
    assert cj.ratio(sample("healthy_pg_stat.json"), "misplaced_ratio") == 0.0


def test_ratios_are_read_when_present() -> None:
    summary = cj.summarize_status(sample("refill_same_id_status.json"))
    assert summary.misplaced_ratio == pytest.approx(0.03125)
    assert summary.degraded_ratio == pytest.approx(0.0078125)
    pg_stat = sample("failure_osd_down_noout_pg_stat.json")
    assert cj.ratio(pg_stat, "degraded_ratio") == pytest.approx(0.1015625)


def test_healthy_summary() -> None:
    summary = cj.summarize_status(sample("healthy_status.json"))
    assert summary.health.ok and summary.all_clean
    assert (summary.num_osds, summary.num_up_osds, summary.num_in_osds) == (6, 6, 6)
    assert summary.as_dict()["unclean_pgs"] == {}


@pytest.mark.parametrize("phase", ["rebalancing_step2", "rebalancing_step3", "rebalancing_step4"])
def test_health_ok_while_pgs_peer_is_not_clean(phase: str) -> None:
    summary = cj.summarize_status(sample(f"{phase}_status.json"))
    assert summary.health.ok
    assert not summary.all_clean
    assert summary.inactive > 0
    assert cj.clean_blockers(summary, [])


def test_health_ok_with_remapped_pgs_is_not_clean() -> None:
    status = sample("healthy_status.json")
    status["pgmap"]["pgs_by_state"] = [
        {"state_name": "active+clean", "count": 24},
        {"state_name": "active+clean+remapped", "count": 9},
    ]
    status["pgmap"]["misplaced_ratio"] = 0.26
    summary = cj.summarize_status(status)
    assert summary.health.ok and not summary.all_clean
    reasons = cj.clean_blockers(summary, [])
    assert any("9 active+clean+remapped" in r for r in reasons)
    assert any("misplaced 26.0%" in r for r in reasons)


def test_stale_pg_stat_right_after_a_step_claims_clean() -> None:
    """Right after a reweight the two mgr views disagree: the stale one must not be trusted alone."""
    assert cj.all_clean(cj.pg_states(sample("rebalancing_step3_pg_stat.json")))
    assert not cj.all_clean(cj.pg_states(sample("rebalancing_step3_status.json")))


@pytest.mark.parametrize(
    ("state", "clean"),
    [
        ("active+clean", True),
        ("active+clean+scrubbing", True),
        ("active+clean+scrubbing+deep", True),
        ("active+clean+remapped", False),
        ("active+recovering", False),
        ("active+undersized+degraded", False),
        ("remapped+peering", False),
        ("peering", False),
        ("activating", False),
        ("active+remapped+backfilling", False),
    ],
)
def test_is_clean(state: str, clean: bool) -> None:
    assert cj.is_clean(state) is clean


def test_no_pgs_is_not_clean() -> None:
    assert not cj.all_clean({})


def test_moving_and_inactive_counts() -> None:
    states = cj.pg_states(sample("refill_same_id_status.json"))
    assert cj.count_with(states, cj.MOVING) == 1  # active+recovering; recovery_wait is queued, not moving
    assert cj.inactive(states) == 5


def test_drain_step_with_misplaced_and_degraded() -> None:
    summary = cj.summarize_status(sample("probe/status_drain_misplaced.json"))
    assert summary.misplaced_ratio == pytest.approx(0.05)
    assert list(summary.health.checks) == ["PG_DEGRADED"]
    allowed = ["PG_DEGRADED"]
    blockers = cj.settle_blockers(summary, max_misplaced=0.05, max_backfilling=4, allowed_checks=allowed)
    assert blockers == ["3 PG(s) not active"]
    blockers = cj.settle_blockers(summary, max_misplaced=0.01, max_backfilling=0, allowed_checks=[])
    assert len(blockers) == 4


# -- flags ------------------------------------------------------------------------------------------


def test_flags_from_osd_dump() -> None:
    assert "noout" not in cj.osd_flags(sample("probe/osd_dump_healthy.json"))
    assert "noout" in cj.osd_flags(sample("probe/osd_dump_stopped_noout.json"))


def test_flags_from_comma_string_without_flags_set() -> None:
    dump = sample("probe/osd_dump_stopped_noout.json")
    del dump["flags_set"]
    assert {"noout", "sortbitwise"} <= cj.osd_flags(dump)


def test_validate_flags() -> None:
    assert cj.validate_flags(["noout", "norebalance", "noout"]) == ["noout", "norebalance"]
    with pytest.raises(ActionError, match=r"unknown OSD flag.*bogus"):
        cj.validate_flags(["noout", "bogus"])
    with pytest.raises(ActionError, match="no flags"):
        cj.validate_flags([])
    assert exit_code("osd set bogus")["rc"] == 22


# -- tree and dump ----------------------------------------------------------------------------------


def test_osds_of_host_and_weights() -> None:
    tree = sample("healthy_osd_tree.json")
    assert cj.host_osds(tree, "node1") == [0, 1]
    assert cj.host_osds(tree, "nodeX") is None
    assert cj.crush_weights(sample("rebalancing_step2_osd_tree.json"), [0, 1]) == {0: 0.5, 1: 0.5}
    with pytest.raises(ActionError, match=r"osd\.9 not in the OSD tree"):
        cj.crush_weights(tree, [0, 9])


def test_tree_status_in_each_phase() -> None:
    stopped = cj.tree_osds(sample("stopped_before_purge_osd_tree.json"))
    assert (stopped[0].status, stopped[0].reweight, stopped[0].crush_weight) == ("down", 0.0, 0.0)
    destroyed = cj.tree_osds(sample("destroyed_osd_tree.json"))
    assert destroyed[2].status == "destroyed" and destroyed[2].host == "node2"
    assert cj.host_osds(sample("destroyed_osd_tree.json"), "node4") == [0, 1]
    purged = cj.tree_osds(sample("after_purge_osd_tree.json"))
    assert sorted(purged) == [2, 3, 4, 5]
    assert cj.host_osds(sample("after_purge_osd_tree.json"), "node1") is None


def test_dump_states_through_a_replacement() -> None:
    healthy = cj.dump_osds(sample("probe/osd_dump_healthy.json"))
    assert all(o.up_and_in for o in healthy.values())
    stopped = cj.dump_osds(sample("probe/osd_dump_stopped_noout.json"))
    assert not stopped[0].up and stopped[0].in_  # noout keeps it in
    destroyed = cj.dump_osds(sample("probe/osd_dump_destroyed.json"))
    assert destroyed[0].destroyed and not destroyed[1].destroyed
    purged = cj.dump_osds(sample("probe/osd_dump_after_purge.json"))
    assert 0 not in purged and 1 not in purged
    assert cj.unknown_ids(purged, [0, 2, 3]) == [0]


def test_recreated_osd_that_never_booted_is_in_but_not_up() -> None:
    """The trap: `exists,new`, `in` = 1, and the cluster says HEALTH_OK."""
    state = cj.dump_osds(sample("probe/osd_dump_new_not_booted.json"))[0]
    assert state.new and state.in_ and not state.up
    assert not state.up_and_in
    assert cj.parse_health(sample("probe/health_new_not_booted.json")).ok
    assert cj.tree_osds(sample("probe/osd_tree_new_not_booted.json"))[0].status == "down"
    booted = cj.dump_osds(sample("probe/osd_dump_new_booted_weight0.json"))[0]
    assert booted.up_and_in
    assert cj.tree_osds(sample("probe/osd_tree_new_booted_weight0.json"))[0].crush_weight == 0.0


def test_destroyed_osd_is_never_up_and_in() -> None:
    state = cj.dump_osds(sample("probe/osd_dump_failed_out_destroyed.json"))[2]
    assert state.destroyed and not state.in_ and not state.up_and_in


def test_free_ids_are_the_lowest_unused() -> None:
    assert cj.free_ids(sample("probe/osd_dump_after_purge.json"), 2) == [0, 1]
    assert cj.free_ids(sample("probe/osd_dump_healthy.json"), 1) == [6]


# -- ok-to-stop / safe-to-destroy -------------------------------------------------------------------


def test_ok_to_stop_exit_0_is_ok() -> None:
    result = cj.parse_ok_to_stop((SAMPLES / "precheck_ok_to_stop.json").read_text(), 0)
    assert result.ok and result.osds == (0, 1) and result.num_not_ok_pgs == 0


def test_ok_to_stop_exit_16_carries_json_on_stdout() -> None:
    text, rc = with_rc("precheck_ok_to_stop_cross_host.stdout-and-rc.txt")
    stdout, stderr = split_stderr(text)
    assert rc == 16 and "EBUSY" in stderr
    result = cj.parse_ok_to_stop(stdout, rc)
    assert not result.ok
    assert result.bad_become_inactive == ("2.8", "2.1c")
    assert result.explain() == "stopping osd.0, osd.2 would make 2 of 15 PG(s) inactive: 2.8, 2.1c"


def test_ok_to_stop_other_exit_codes_are_errors() -> None:
    with pytest.raises(ActionError, match="exited 22"):
        cj.parse_ok_to_stop("", 22)


def test_ok_to_stop_and_safe_to_destroy_accept_nonexistent_ids() -> None:
    ok = exit_code("osd ok-to-stop 9")
    assert ok["rc"] == 0 and cj.parse_ok_to_stop(ok["stdout"], ok["rc"]).ok
    safe = exit_code("osd safe-to-destroy 9")
    assert safe["rc"] == 0 and cj.parse_safe_to_destroy(safe["stdout"]).unsafe([9]) == []


@pytest.mark.parametrize(
    ("name", "unsafe", "why"),
    [
        ("precheck_safe_to_destroy.stdout-and-rc.txt", [0, 1], "osd.0, osd.1 still map PGs"),
        ("failure_safe_to_destroy.stdout-and-rc.txt", [2], "osd.2 have no reported stats"),
        ("drained_up_safe_to_destroy.stdout-and-rc.txt", [], ""),
        ("drained_down_safe_to_destroy.stdout-and-rc.txt", [], ""),
    ],
)
def test_safe_to_destroy_exits_0_even_when_unsafe(name: str, unsafe: list[int], why: str) -> None:
    stdout, rc = with_rc(name)
    assert rc == 0
    result = cj.parse_safe_to_destroy(stdout)
    asked = [2] if name.startswith("failure") else [0, 1]
    assert result.unsafe(asked) == unsafe
    if unsafe:
        assert why in result.explain(asked)


def test_pg_listing_of_busy_drained_and_down_osds() -> None:
    busy = cj.pgs_in_listing(sample("probe/pg_ls_by_osd_0_healthy.json"))
    assert busy and all(state == "active+clean" for state in busy.values())
    drained = sample("probe/pg_ls_by_osd_0_drained.json")
    assert "pg_stats" not in drained and cj.pgs_in_listing(drained) == {}
    assert cj.pgs_in_listing([{"pgid": "2.1", "state": "active+clean"}]) == {"2.1": "active+clean"}
    down = exit_code("pg ls-by-osd 0")
    assert cj.not_up_error(down["rc"], down["stderr"])
    assert not cj.not_up_error(2, "Error ENOENT")


@pytest.mark.parametrize(
    ("what", "rc"),
    [
        ("osd destroy 9", 0), ("osd purge 9", 0), ("osd out 9", 0), ("osd down 9", 0),
        ("osd destroy 0 (up)", cj.EBUSY), ("osd purge 0 (up)", cj.EBUSY),
        ("osd crush rm node1 (holds", cj.ENOTEMPTY), ("osd crush rm nodeX", 0),
        ("osd destroy 0 (already", 0), ("osd purge 1 (already", 0),
    ],
)
def test_recorded_exit_codes(what: str, rc: int) -> None:
    assert exit_code(what)["rc"] == rc


# -- utilization ------------------------------------------------------------------------------------


def test_utilization_spread() -> None:
    result = cj.utilization(sample("nearfull_osd_df.json"))
    assert set(result["osds"]) == {"0", "1", "2", "3", "4", "5"}
    assert result["max"]["osd"] == 5 and result["min"]["osd"] == 2
    assert result["spread"] == pytest.approx(result["max"]["utilization"] - result["min"]["utilization"])


def test_utilization_ignores_out_osds() -> None:
    result = cj.utilization(sample("stopped_before_purge_osd_df.json"))
    assert result["max"]["osd"] not in (0, 1) and result["min"]["osd"] not in (0, 1)


# -- gradual reweight -------------------------------------------------------------------------------


def test_next_weight_steps_towards_the_target_and_stops_there() -> None:
    assert cj.next_weight(1.0, 0.0, 0.25) == 0.75
    assert cj.next_weight(0.1, 0.0, 0.25) == 0.0
    assert cj.next_weight(0.0, 1.0, 0.3) == 0.3
    assert cj.next_weight(0.9, 1.0, 0.3) == 1.0
    assert cj.next_weight(0.099990844726562, 0.1, 0.25) == 0.1  # CRUSH fixed point
    with pytest.raises(ActionError, match="positive"):
        cj.next_weight(1.0, 0.0, 0)


def test_plan_weights_matches_the_captured_drain() -> None:
    plan = cj.plan_weights(1.0, 0.0, 0.25)
    seen = [cj.crush_weights(sample(f"rebalancing_step{i}_osd_tree.json"), [0])[0] for i in (1, 2, 3, 4)]
    assert plan == seen == [0.75, 0.5, 0.25, 0.0]
    assert cj.plan_weights(0.5, 0.5, 0.25) == []


def test_settle_blockers_healthy_is_calm() -> None:
    summary = cj.summarize_status(sample("healthy_status.json"))
    assert cj.settle_blockers(summary, max_misplaced=0.05, max_backfilling=4, allowed_checks=[]) == []
    assert cj.clean_blockers(summary, []) == []


def test_settle_blockers_report_unexpected_health() -> None:
    summary = cj.summarize_status(sample("failure_osd_down_noout_status.json"))
    allowed = ["OSDMAP_FLAGS"]
    reasons = cj.settle_blockers(summary, max_misplaced=0.05, max_backfilling=4, allowed_checks=allowed)
    assert reasons == ["HEALTH_WARN: OSD_DOWN: 1 osds down; PG_DEGRADED: Degraded data redundancy: "
                       "13/128 objects degraded (10.156%), 6 pgs degraded"]


def test_stats_lag_and_config_value() -> None:
    cfg = exit_code("config get mgr mgr_stats_period")
    period = cj.parse_number(cfg["stdout"], "config get")
    assert period == 1.0 and cj.stats_lag(period) == 3.0
    assert cj.parse_number('"5"', "config get") == 5.0
    with pytest.raises(ActionError, match="not a number"):
        cj.parse_number('"five"', "config get")
    with pytest.raises(ActionError, match="valid JSON"):
        cj.loads("Error EACCES", "config get")


# -- daemons, pools and failure domains --------------------------------------------------------------


def test_mon_hosts_from_metadata_and_quorum_from_the_mon_map() -> None:
    mons = cj.mon_hosts(sample("prodlab/mon_dump.json"), sample("prodlab/mon_metadata.json"))
    assert mons == {"admin": "admin", "node1": "node1", "node2": "node2"}
    assert cj.mon_quorum(sample("prodlab/mon_dump.json")) == ["admin", "node1", "node2"]
    assert cj.mon_hosts(sample("prodlab/mon_dump.json"), []) == {"admin": "admin", "node1": "node1", "node2": "node2"}
    assert cj.same_host("node1.example.com", "NODE1") and not cj.same_host("node1", "node10")


def test_mgrs_active_and_standbys() -> None:
    mgrs = cj.parse_mgrs(sample("prodlab/mgr_dump.json"), sample("prodlab/mgr_metadata.json"))
    assert (mgrs.active, mgrs.standbys, mgrs.available) == ("admin", ("node1",), True)
    assert mgrs.host_of("node1") == "node1" and mgrs.host_of("unknown") == "unknown"
    alone = cj.parse_mgrs(sample("probe/mgr_dump.json"), sample("probe/mgr_metadata.json"))
    assert (alone.active, alone.standbys, alone.host_of("x")) == ("x", (), "vm")


def test_pools_and_rules_of_the_erasure_coded_lab() -> None:
    pools = {p.name: p for p in cj.parse_pools(sample("prodlab/osd_pool_ls_detail.json"))}
    assert (pools["lab"].erasure, pools["lab"].size, pools["lab"].min_size) == (False, 3, 2)
    assert (pools["lab-ec"].erasure, pools["lab-ec"].size, pools["lab-ec"].rule) == (True, 3, 1)
    rules = cj.parse_rules(sample("prodlab/osd_crush_rule_dump.json"))
    assert [(r.name, r.root, r.domain, r.device_class) for r in rules.values()] == [
        ("replicated_rule", "default", "host", None), ("lab-ec", "default", "host", None)]
    classed = cj.parse_rules([{"rule_id": 5, "rule_name": "ssd", "steps": [
        {"op": "take", "item": -12, "item_name": "default~ssd"}, {"op": "chooseleaf_firstn", "num": 0, "type": "host"},
        {"op": "emit"}]}])
    assert (classed[5].root, classed[5].device_class) == ("default", "ssd")


def test_failure_domains_count_weighted_buckets_without_the_leaving_osds() -> None:
    rule = cj.parse_rules(sample("prodlab/osd_crush_rule_dump.json"))[0]
    tree = sample("healthy_osd_tree.json")
    assert cj.failure_domains(tree, rule) == {"node1": 2.0, "node2": 2.0, "node3": 2.0}
    assert set(cj.failure_domains(tree, rule, [0, 1])) == {"node2", "node3"}
    assert set(cj.failure_domains(sample("rebalancing_step4_osd_tree.json"), rule)) == {"node2", "node3"}
    per_osd = cj.Rule(9, "osd", "default", None, "osd")
    assert len(cj.failure_domains(tree, per_osd, [5])) == 5
    ssd = cj.Rule(9, "ssd", "default", "ssd", "host")
    assert cj.failure_domains(tree, ssd) == {}
