"""Host-scoped flags, the recovery throttle and its exact restore, new OSDs held at weight 0, the
client-impact gate between weight steps, and riding out a cluster that stops answering — driven by
outputs captured on a real cluster (see test_ceph_actions for the Replay double of ``ctx.ssh``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from actions import ceph
from actions.base import NotYet
from actions.ceph.common import ClusterUnreachable
from actions.ceph.gate import in_window, parse_bench_latency, slowest_osds
from engine.errors import ActionError, CommandFailed, SafetyCheckFailed
from tests.actions.test_ceph_actions import Replay, Reply, age, context, doc, poll, text

BENCH = ("rados", "-p", "lab", "bench", "5", "write", "-t", "1", "-b", "4096")
OP_QUEUE = ("config", "get", "osd", "osd_op_queue")


def stderr_of(name: str) -> str:
    return text(name).rpartition("rc=")[0]


# -- host-scoped flags ------------------------------------------------------------------------------


def test_host_noout_is_set_with_set_group_once_and_unset_exactly() -> None:
    replay, memory = Replay(), {}
    result = ceph.set_host_flags(context(replay, memory), cluster="lab", host="node3")
    assert replay.mutations() == [("osd", "set-group", "noout", "node3")] and result["set"] == ["noout"]

    replay = Replay(dump="probe/osd_dump_group_noout_node3.json")  # a retry once it is set
    result = ceph.set_host_flags(context(replay, memory), cluster="lab", host="node3")
    assert replay.mutations() == [] and result["set"] == ["noout"]

    result = ceph.unset_host_flags(context(replay), cluster="lab", host="node3")
    assert replay.mutations() == [("osd", "unset-group", "noout", "node3")] and result["unset"] == ["noout"]
    replay = Replay()
    assert ceph.unset_host_flags(context(replay), cluster="lab", host="node3")["already_unset"] == ["noout"]
    assert replay.mutations() == []


def test_host_flags_refuse_flags_that_cannot_be_scoped() -> None:
    with pytest.raises(ActionError, match="cannot be scoped to a host"):
        ceph.set_host_flags(context(Replay()), cluster="lab", host="node3", flags=["norebalance"])


# -- throttle and restore ---------------------------------------------------------------------------


def throttled_dump(*entries: tuple[str, str, str]) -> list[dict[str, Any]]:
    dump: list[dict[str, Any]] = copy.deepcopy(doc("probe/config_dump.json"))
    for section, name, value in entries:
        dump = [e for e in dump if not (e["section"] == section and e["name"] == name)]
        dump.append({"section": section, "name": name, "value": value, "level": "advanced",
                     "can_update_at_runtime": True, "mask": ""})
    return dump


def test_throttle_records_what_it_replaces_before_setting_and_keeps_it_on_retry() -> None:
    replay, memory = Replay(), {}
    replay.answer(OP_QUEUE, Reply(stdout="\nwpq\n"))
    result = ceph.throttle_recovery(context(replay, memory), cluster="lab", recovery_sleep=0.5)
    assert result["scheduler"] == "wpq"
    assert result["previous"] == {"osd/osd_max_backfills": None, "osd/osd_recovery_max_active": None,
                                  "osd/osd_recovery_sleep": "0.000000"}
    assert replay.mutations() == [("config", "set", "osd", "osd_max_backfills", "1"),
                                  ("config", "set", "osd", "osd_recovery_max_active", "1"),
                                  ("config", "set", "osd", "osd_recovery_sleep", "0.5")]

    replay = Replay()  # a retry or takeover: the cluster now holds the run's values
    replay.docs[("config", "dump")] = throttled_dump(("osd", "osd_max_backfills", "1"))
    again = ceph.throttle_recovery(context(replay, memory), cluster="lab", recovery_sleep=0.5)
    assert again["previous"] == result["previous"] and not replay.ran("config", "get")


def test_throttle_uses_the_mclock_profile_under_mclock() -> None:
    replay = Replay()
    replay.answer(OP_QUEUE, Reply(stdout="mclock_scheduler\n"))
    result = ceph.throttle_recovery(context(replay), cluster="lab")
    assert replay.mutations() == [("config", "set", "osd", "osd_mclock_profile", "high_client_ops")]
    assert result["previous"] == {"osd/osd_mclock_profile": None}


def test_throttle_puts_back_what_it_set_when_a_setting_fails() -> None:
    replay = Replay()
    replay.answer(OP_QUEUE, Reply(stdout="wpq"))
    replay.answer(("config", "set", "osd", "osd_recovery_max_active", "1"), Reply(rc=22, stderr="Error EINVAL"))
    with pytest.raises(CommandFailed):
        ceph.throttle_recovery(context(replay), cluster="lab")
    assert replay.mutations()[-1] == ("config", "rm", "osd", "osd_max_backfills")


def test_restore_puts_back_exact_values_or_removes_and_is_idempotent() -> None:
    previous = {"osd/osd_max_backfills": None, "osd/osd_recovery_sleep": "0.000000"}
    applied = {"osd/osd_max_backfills": "1", "osd/osd_recovery_sleep": "0.5"}
    replay = Replay()
    replay.docs[("config", "dump")] = throttled_dump(("osd", "osd_max_backfills", "1"),
                                                     ("osd", "osd_recovery_sleep", "0.500000"))
    result = ceph.restore_config(context(replay), cluster="lab", previous=previous, applied=applied)
    assert replay.mutations() == [("config", "rm", "osd", "osd_max_backfills"),
                                  ("config", "set", "osd", "osd_recovery_sleep", "0.000000")]
    assert result["restored"] == ["osd/osd_max_backfills removed", "osd/osd_recovery_sleep=0.000000"]

    replay = Replay()  # already as before (the cleanup after a successful restore)
    result = ceph.restore_config(context(replay), cluster="lab", previous=previous, applied=applied)
    assert replay.mutations() == [] and result["already"] == sorted(previous)


def test_restore_leaves_alone_a_value_someone_changed_since() -> None:
    replay = Replay()
    replay.docs[("config", "dump")] = throttled_dump(("osd", "osd_max_backfills", "8"))
    result = ceph.restore_config(context(replay), cluster="lab", previous={"osd/osd_max_backfills": None},
                                 applied={"osd/osd_max_backfills": "1"})
    assert replay.mutations() == [] and result["left_alone"] == ["osd/osd_max_backfills"]


# -- new OSDs at weight 0 ---------------------------------------------------------------------------


def test_hold_new_osds_at_zero_scopes_the_initial_weight_to_the_new_ids() -> None:
    replay = Replay()
    result = ceph.hold_new_osds_at_zero(context(replay), cluster="lab", host="node4")
    assert result["osds"] == [6, 7]  # the lowest free ids, one per inventory device
    assert replay.mutations() == [("config", "set", "osd.6", "osd_crush_initial_weight", "0"),
                                  ("config", "set", "osd.7", "osd_crush_initial_weight", "0")]
    assert result["previous"] == {"osd.6/osd_crush_initial_weight": None, "osd.7/osd_crush_initial_weight": None}


def test_add_node_zeroes_an_osd_that_placed_itself_at_its_size_before_the_ramp() -> None:
    tree = copy.deepcopy(doc("probe/osd_tree_new_booted_weight0.json"))
    zeroed = copy.deepcopy(tree)
    next(n for n in tree["nodes"] if n["id"] == 0)["crush_weight"] = 0.0038909912109375  # its 4 GiB in TiB
    replay = Replay("healthy", "probe/osd_dump_new_booted_weight0.json")
    replay.docs[("osd", "tree")] = tree
    replay.after[("osd", "crush", "reweight", "osd.0", "0")] = lambda: replay.docs.update({("osd", "tree"): zeroed})
    memory: dict[str, Any] = {"ids": [0], "devices": ["/dev/sdb"], "created": [0], "created_at": 0.0}
    restore = {"osd.0/osd_crush_initial_weight": None}
    replay.docs[("config", "dump")] = throttled_dump(("osd.0", "osd_crush_initial_weight", "0"))
    signal = poll(ceph.add_node, replay, memory, cluster="lab", host="node4", target_weight=None,
                  restore_initial_weight=restore, step_fraction=0.25)
    assert replay.mutations()[:2] == [("osd", "crush", "reweight", "osd.0", "0"),
                                      ("config", "rm", "osd.0", "osd_crush_initial_weight")]
    assert memory["self_placed"] == {"0": 0.0038909912109375} and "zero_verified" in memory
    assert isinstance(signal, NotYet) and "step 1 applied" in str(signal)
    size = int(next(n for n in doc("healthy_osd_df.json")["nodes"] if n["id"] == 0)["kb"]) / 2**30
    assert memory["target"] == {"0": pytest.approx(size, abs=1e-6)}
    assert replay.mutations()[2] == ("osd", "crush", "reweight", "osd.0", f"{round(size / 4, 6):g}")


# -- the client gate --------------------------------------------------------------------------------


def slow_ops_replay() -> Replay:
    replay = Replay("healthy")
    replay.docs[("status",)] = doc("probe/status_slow_ops.json")
    replay.docs[("health", "detail")] = doc("probe/health_slow_ops.json")
    return replay


def test_slow_ops_park_the_drain_naming_the_osd_instead_of_failing_it() -> None:
    replay, memory = slow_ops_replay(), {}
    signal = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert isinstance(signal, NotYet) and "SLOW_OPS: 1 slow ops" in str(signal) and "held by osd.0" in str(signal)
    assert replay.mutations() == []
    replay = Replay("healthy")  # cleared: the step goes
    signal = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert isinstance(signal, NotYet) and "step 1 applied" in str(signal) and "paused_since" not in memory["reweight"]
    with pytest.raises(SafetyCheckFailed, match="SLOW_OPS"):
        ceph.reweight(context(slow_ops_replay()), cluster="lab", host="node1", target=0.0, pause_on_slow_ops=False)


def test_a_long_pause_is_told_once_then_fails_at_max_pause() -> None:
    replay, memory = slow_ops_replay(), {}
    ctx = context(replay, memory)
    params: dict[str, Any] = {"cluster": "lab", "host": "node1", "target": 0.0, "notify_after": 60, "max_pause": 600}
    poll(ceph.reweight, replay, memory, **params)
    age(memory["reweight"], "paused_since", 61)
    with pytest.raises(NotYet):
        ceph.reweight(ctx, **params)
    told = [line for line in ctx.log.lines if "paused for" in line]  # type: ignore[attr-defined]
    assert len(told) == 1 and "SLOW_OPS" in told[0] and "osd.0" in told[0] and "run1 step step" in told[0]
    age(memory["reweight"], "paused_since", 600)
    with pytest.raises(SafetyCheckFailed, match=r"more than max_pause 600s.*SLOW_OPS.*held by osd.0"):
        ceph.reweight(context(replay, memory), **params)


def test_latency_probe_parks_above_the_threshold_and_names_the_slowest_osds() -> None:
    bench = text("probe/rados_bench_write_4k.txt")
    assert parse_bench_latency(bench) == pytest.approx(0.780192)
    perf = doc("probe/osd_perf.json")
    for info in perf["osdstats"]["osd_perf_infos"]:
        info["perf_stats"]["apply_latency_ms"] = info["id"]
    assert [o for o, _ in slowest_osds(perf)] == [7, 6, 5]
    replay, memory = Replay("healthy"), {}
    replay.answer(BENCH, Reply(stdout=bench))
    replay.docs[("osd", "perf")] = perf
    params: dict[str, Any] = {"cluster": "lab", "host": "node1", "target": 0.0, "probe_pool": "lab"}
    signal = poll(ceph.reweight, replay, memory, max_write_latency_ms=0.5, **params)
    assert isinstance(signal, NotYet) and "client write latency 0.8 ms > 0.5 ms" in str(signal)
    assert "held by osd.7, osd.6, osd.5" in str(signal) and replay.mutations() == []
    signal = poll(ceph.reweight, replay, memory, max_write_latency_ms=5, **params)
    assert isinstance(signal, NotYet) and "step 1 applied" in str(signal)
    assert memory["reweight"]["max_latency_ms"] == pytest.approx(0.780192, abs=1e-3)
    with pytest.raises(ActionError, match="needs probe_pool"):
        ceph.reweight(context(Replay()), cluster="lab", host="node1", target=0.0, max_write_latency_ms=5)


def test_window() -> None:
    import datetime as dt

    at = dt.datetime(2026, 12, 1, 23, 30, tzinfo=dt.UTC)
    assert in_window("22:00-06:00", at) and not in_window("08:00-18:00", at) and in_window(None, at)
    with pytest.raises(ActionError, match="HH:MM-HH:MM"):
        ceph.reweight(context(Replay()), cluster="lab", host="node1", target=0.0, window="night")


# -- a cluster that stops answering -----------------------------------------------------------------


def test_a_wait_rides_out_a_connect_timeout_then_fails_at_the_grace() -> None:
    replay, memory = Replay(), {"started_at": 0.0}
    replay.answer(("status",), Reply(rc=1, stderr=stderr_of("probe/status_connect_timeout.stderr-and-rc.txt")))
    signal = poll(ceph.wait_healthy, replay, memory, cluster="lab", outage_grace=60)
    assert isinstance(signal, NotYet) and "cluster not answering" in str(signal) and "timed out" in str(signal)
    age(memory, "unreachable_since", 61)
    with pytest.raises(ClusterUnreachable, match=r"has not answered for 61s.*quorum"):
        ceph.wait_healthy(context(replay, memory), cluster="lab", outage_grace=60)


def test_an_answer_ends_the_outage_and_a_real_error_is_not_ridden_out() -> None:
    replay, memory = Replay(), {"started_at": 0.0, "unreachable_since": 0.0}
    poll(ceph.wait_healthy, replay, memory, cluster="lab")
    assert "unreachable_since" not in memory
    replay.answer(("status",), Reply(rc=22, stderr="Error EINVAL: invalid command"))
    with pytest.raises(CommandFailed, match="EINVAL"):
        ceph.wait_healthy(context(replay, {"started_at": 0.0}), cluster="lab")


# -- the spare host swap ----------------------------------------------------------------------------


def tree_with_orphan_spare(weight: float = 1.0) -> dict[str, Any]:
    """The healthy 3-host tree plus host bucket node4 outside the root holding osd.6 (as prepare_spare
    leaves it; ``osd tree`` lists an orphan bucket as a top-level node)."""
    tree: dict[str, Any] = copy.deepcopy(doc("healthy_osd_tree.json"))
    tree["nodes"].append({"id": -9, "name": "node4", "type": "host", "type_id": 1, "children": [6]})
    tree["nodes"].append({"id": 6, "name": "osd.6", "type": "osd", "type_id": 0, "crush_weight": weight,
                          "depth": 1, "status": "up", "reweight": 1, "device_class": "hdd"})
    return tree


def test_swap_bucket_swaps_an_orphan_spare_into_the_old_hosts_place_once() -> None:
    replay = Replay()
    before = tree_with_orphan_spare()
    after = copy.deepcopy(before)  # swap-bucket swaps items, weights and names
    names = {n["id"]: n for n in after["nodes"]}
    names[-2]["name"], names[-9]["name"] = "node4", "node1"
    replay.docs[("osd", "tree")] = before
    swap = ("osd", "crush", "swap-bucket", "node4", "node1", "--yes-i-really-mean-it")
    replay.after[swap] = lambda: replay.docs.update({("osd", "tree"): after})
    result = ceph.swap_bucket(context(replay), cluster="lab", new_host="node4", old_host="node1")
    assert replay.mutations() == [swap]
    assert result["swapped"] and result["old_osds"] == [0, 1] and result["new_osds"] == [6]
    again = ceph.swap_bucket(context(replay), cluster="lab", new_host="node4", old_host="node1")
    assert again["already"] and replay.mutations() == [swap]


def test_swap_bucket_refuses_a_spare_without_weight_or_already_in_the_root() -> None:
    replay = Replay()
    replay.docs[("osd", "tree")] = tree_with_orphan_spare(weight=0.0)
    with pytest.raises(SafetyCheckFailed, match="holds no weighted OSD"):
        ceph.swap_bucket(context(replay), cluster="lab", new_host="node4", old_host="node1")
    replay = Replay()
    with pytest.raises(SafetyCheckFailed, match="already under 'default'"):
        ceph.swap_bucket(context(replay), cluster="lab", new_host="node2", old_host="node1")
    assert replay.mutations() == []
