"""The ceph actions' decisions, driven by outputs captured on a real cluster.

``Replay`` stands in for ``ctx.ssh`` in these unit tests only: it answers each read-only ceph
command from the captured file of the current phase, records every command, and follows the SSH
toolkit's contract (mutating commands are only recorded in dry-run; check=True raises on non-zero).
End-to-end tests against the real Ceph lab live elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actions import ceph
from actions.base import ActionContext, ActionRegistry, NotYet
from actions.ssh import CommandResult
from engine.errors import ActionError, CommandFailed, SafetyCheckFailed
from inventory.model import Cluster, Host, Inventory

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "ceph-samples"
PREFIX = ("ceph", "--connect-timeout", "10")
ADMIN = "node2"


def text(name: str) -> str:
    return (SAMPLES / name).read_text()


def doc(name: str) -> Any:
    return json.loads(text(name))


def stdout_of(name: str) -> str:
    """stdout of a ``*.stdout-and-rc.txt`` capture (the text before ``rc=``, without stderr lines)."""
    body = text(name).rstrip("\n").rpartition("rc=")[0]
    return "\n".join(line for line in body.splitlines() if not line.startswith("Error"))


@dataclass
class Reply:
    rc: int = 0
    stdout: str = ""
    stderr: str = ""


PHASE_FILES = {
    ("status",): "{phase}_status.json",
    ("health", "detail"): "{phase}_health_detail.json",
    ("osd", "tree"): "{phase}_osd_tree.json",
    ("osd", "df"): "{phase}_osd_df.json",
    ("pg", "stat"): "{phase}_pg_stat.json",
}

CLUSTER_FILES = {
    ("mon", "dump"): "mon_dump.json",
    ("mon", "metadata"): "mon_metadata.json",
    ("mgr", "dump"): "mgr_dump.json",
    ("mgr", "metadata"): "mgr_metadata.json",
    ("osd", "pool", "ls", "detail"): "osd_pool_ls_detail.json",
    ("osd", "crush", "rule", "dump"): "osd_crush_rule_dump.json",
    ("config", "dump"): "config_dump.json",
}
"""Daemon maps, pools and rules: from the 1-mon lab of the phase captures (``probe/``) or from the
3-mon lab with an erasure-coded pool (``prodlab/``), chosen by ``Replay(cluster=...)``."""


class Replay:
    """A test double for ``ctx.ssh`` answering from captured ceph outputs."""

    def __init__(self, phase: str = "healthy", dump: str = "probe/osd_dump_healthy.json", dry_run: bool = False,
                 cluster: str = "probe"):
        self.phase = phase
        self.cluster = cluster
        self.dump = dump
        self.dry_run = dry_run
        self.docs: dict[tuple[str, ...], Any] = {}
        self.replies: dict[tuple[str, ...], list[Reply]] = {}
        self.after: dict[tuple[str, ...], Callable[[], None]] = {}
        self.calls: list[tuple[str, tuple[str, ...], bool]] = []
        self.executed: list[tuple[str, ...]] = []
        self.recorded: list[tuple[str, ...]] = []

    def answer(self, cmd: tuple[str, ...], *replies: Reply) -> None:
        self.replies[cmd] = list(replies)

    def run(
        self,
        host: str,
        argv: list[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        sudo: bool | None = None,
        stdin: str | None = None,
        mutating: bool = True,
    ) -> CommandResult:
        cmd = self._command(argv)
        self.calls.append((host, cmd, mutating))
        if self.dry_run and mutating:
            self.recorded.append(cmd)
            return CommandResult(host, list(argv), 0, "", "", 0.0, dry_run=True)
        self.executed.append(cmd)
        reply = self._reply(cmd, mutating)
        if cmd in self.after:
            self.after.pop(cmd)()
        if check and reply.rc != 0:
            raise CommandFailed(host, list(argv), reply.rc, reply.stderr)
        return CommandResult(host, list(argv), reply.rc, reply.stdout, reply.stderr, 0.0)

    def _command(self, argv: list[str]) -> tuple[str, ...]:
        if tuple(argv[: len(PREFIX)]) == PREFIX:
            assert argv[-2:] == ["-f", "json"], argv
            return tuple(argv[len(PREFIX) : -2])
        return tuple(argv)

    def _reply(self, cmd: tuple[str, ...], mutating: bool) -> Reply:
        if cmd in self.replies:
            queue = self.replies[cmd]
            return queue.pop(0) if len(queue) > 1 else queue[0]
        if cmd in self.docs:
            return Reply(stdout=json.dumps(self.docs[cmd]))
        if cmd in PHASE_FILES:
            return Reply(stdout=text(PHASE_FILES[cmd].format(phase=self.phase)))
        if cmd == ("osd", "dump"):
            return Reply(stdout=text(self.dump))
        if cmd in CLUSTER_FILES:
            return Reply(stdout=text(f"{self.cluster}/{CLUSTER_FILES[cmd]}"))
        if cmd == ("config", "get", "mgr", "mgr_stats_period"):
            return Reply(stdout="\n1\n")
        if mutating:
            return Reply()
        raise AssertionError(f"no recorded answer for read-only command {cmd}")

    def ran(self, *prefix: str) -> list[tuple[str, ...]]:
        return [c for c in self.executed if c[: len(prefix)] == prefix]

    def mutations(self) -> list[tuple[str, ...]]:
        return [c for _, c, m in self.calls if m]


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    warning = error = info


INVENTORY = Inventory(
    clusters={
        "lab": Cluster(
            name="lab",
            admin_host=ADMIN,
            ceph=PREFIX,
            commands={"osd_stop": ("stop-osd", "{id}"), "osd_create": ("make-osd", "{id}", "{device}")},
        )
    },
    hosts={
        name: Host(name=name, address="127.0.0.1", cluster="lab", devices=("/dev/sdb", "/dev/sdc"))
        for name in ("node1", "node2", "node3", "node4")
    },
)


def context(replay: Replay, memory: dict[str, Any] | None = None) -> ActionContext:
    return ActionContext(
        run_id="run1", step_id="step", attempt=1, dry_run=replay.dry_run, log=Log(),
        memory=memory if memory is not None else {}, inventory=INVENTORY, ssh=replay,
    )


def age(memory: dict[str, Any], key: str, seconds: float) -> None:
    """Pretend ``seconds`` passed since the timestamp ``memory[key]`` was taken."""
    memory[key] = float(memory[key]) - seconds


# -- plumbing ---------------------------------------------------------------------------------------


def test_every_action_is_documented_and_destructive_ones_are_flagged() -> None:
    registry = ActionRegistry.from_modules(ceph.modules())
    names = {s.name for s in registry}
    assert {"ceph.status", "ceph.reweight", "ceph.wait_healthy", "ceph.add_node", "ceph.destroy_osds"} <= names
    for spec in registry:
        assert spec.doc and "cluster" in spec.params
    assert {s.name for s in registry if s.destructive} == {"ceph.destroy_osds", "ceph.purge_osds", "ceph.remove_host"}
    assert {s.name for s in registry if s.polling} == {
        "ceph.reweight", "ceph.wait_healthy", "ceph.add_node", "ceph.safe_to_destroy", "ceph.stop_osds",
        "ceph.rebalance_step", "ceph.prepare_spare",
    }


def test_ceph_helper_runs_on_the_admin_host_with_json_output() -> None:
    replay = Replay()
    ceph.status(context(replay), cluster="lab")
    assert all(host == ADMIN and not mutating for host, _, mutating in replay.calls)
    assert replay.executed == [("status",), ("osd", "dump")]


# -- read-only actions ------------------------------------------------------------------------------


def test_status_summary_and_flags() -> None:
    result = ceph.status(context(Replay("failure_osd_down_noout", "probe/osd_dump_stopped_noout.json")), cluster="lab")
    assert result["health"] == "HEALTH_WARN"
    assert set(result["checks"]) == {"OSDMAP_FLAGS", "OSD_DOWN", "PG_DEGRADED"}
    assert result["degraded_ratio"] == pytest.approx(0.1015625) and result["misplaced_ratio"] == 0.0
    assert (result["num_up_osds"], result["num_in_osds"]) == (5, 6)
    assert result["flags"] == ["noout"]
    assert not result["all_active_clean"]


def test_health_lists_checks_with_detail() -> None:
    result = ceph.health(context(Replay("nearfull")), cluster="lab")
    assert result["status"] == "HEALTH_WARN" and not result["ok"]
    assert result["checks"]["OSD_NEARFULL"]["detail"] == ["osd.0 is near full", "osd.1 is near full", "osd.5 is near full"]


def test_osds_of_host() -> None:
    result = ceph.osds_of(context(Replay("rebalancing_step2")), cluster="lab", host="node1")
    assert result == {"host": "node1", "osds": [0, 1], "weights": {"0": 0.5, "1": 0.5}}
    with pytest.raises(ActionError, match="no CRUSH host bucket 'node1'"):
        ceph.osds_of(context(Replay("after_purge")), cluster="lab", host="node1")


def test_utilization() -> None:
    result = ceph.utilization(context(Replay("nearfull")), cluster="lab")
    assert result["max"]["osd"] == 5 and result["spread"] > 5


# -- flags ------------------------------------------------------------------------------------------


def test_set_flags_sets_only_missing_ones_and_remembers_them() -> None:
    replay = Replay(dump="probe/osd_dump_healthy.json")
    memory: dict[str, Any] = {}
    result = ceph.set_flags(context(replay, memory), cluster="lab", flags=["noout", "norebalance"])
    assert replay.mutations() == [("osd", "set", "noout"), ("osd", "set", "norebalance")]
    assert result["set"] == ["noout", "norebalance"] and memory["set"] == ["noout", "norebalance"]

    replay = Replay(dump="probe/osd_dump_stopped_noout.json")  # a retry after noout got set
    result = ceph.set_flags(context(replay, memory), cluster="lab", flags=["noout"])
    assert replay.mutations() == []
    assert result["set"] == ["noout", "norebalance"] and result["already_set"] == []


def test_set_flags_leaves_flags_set_by_someone_else_alone() -> None:
    replay = Replay(dump="probe/osd_dump_stopped_noout.json")
    result = ceph.set_flags(context(replay), cluster="lab", flags=["noout"])
    assert replay.mutations() == [] and result == {"set": [], "already_set": ["noout"], "flags": ["noout"]}


def test_unknown_flag_is_refused_before_any_command() -> None:
    replay = Replay()
    with pytest.raises(ActionError, match="unknown OSD flag"):
        ceph.set_flags(context(replay), cluster="lab", flags=["noout", "nosuch"])
    assert replay.calls == []


def test_unset_flags_only_unsets_set_ones() -> None:
    replay = Replay(dump="probe/osd_dump_stopped_noout.json")
    result = ceph.unset_flags(context(replay), cluster="lab", flags=["noout", "noscrub"])
    assert replay.mutations() == [("osd", "unset", "noout")]
    assert result == {"unset": ["noout"], "already_unset": ["noscrub"], "flags": []}


# -- safety checks ----------------------------------------------------------------------------------


def test_ok_to_stop_passes() -> None:
    replay = Replay()
    replay.answer(("osd", "ok-to-stop", "0", "1"), Reply(0, text("precheck_ok_to_stop.json")))
    result = ceph.ok_to_stop(context(replay), cluster="lab", osds=[0, 1])
    assert result["ok"] and result["num_not_ok_pgs"] == 0 and result["become_degraded"] == 20


def test_ok_to_stop_exit_16_is_a_refusal_with_numbers() -> None:
    replay = Replay()
    stdout = stdout_of("precheck_ok_to_stop_cross_host.stdout-and-rc.txt")
    replay.answer(("osd", "ok-to-stop", "0", "2"), Reply(16, stdout, "Error EBUSY: unsafe to stop osd(s)"))
    with pytest.raises(SafetyCheckFailed, match=r"2 of 15 PG\(s\) inactive: 2\.8, 2\.1c"):
        ceph.ok_to_stop(context(replay), cluster="lab", osds=[0, 2])


def test_ok_to_stop_other_exit_codes_fail() -> None:
    replay = Replay()
    replay.answer(("osd", "ok-to-stop", "0"), Reply(22, "", "Error EINVAL"))
    with pytest.raises(CommandFailed):
        ceph.ok_to_stop(context(replay), cluster="lab", osds=[0])


def test_nonexistent_ids_are_refused_before_asking_ceph() -> None:
    """ok-to-stop and safe-to-destroy both answer yes for ids that do not exist."""
    for check in (ceph.ok_to_stop, ceph.safe_to_destroy):
        replay = Replay(dump="probe/osd_dump_after_purge.json")
        with pytest.raises(ActionError, match=r"osd\.0 not in the OSD map"):
            check(context(replay), cluster="lab", osds=[0, 2])
        assert replay.executed == [("osd", "dump")]


def test_safe_to_destroy_reads_the_json_not_the_exit_code() -> None:
    replay = Replay()
    replay.answer(("osd", "safe-to-destroy", "0", "1"), Reply(0, stdout_of("precheck_safe_to_destroy.stdout-and-rc.txt")))
    with pytest.raises(SafetyCheckFailed, match=r"osd\.0, osd\.1 still map PGs"):
        ceph.safe_to_destroy(context(replay), cluster="lab", osds=[0, 1])


def test_safe_to_destroy_waits_when_asked() -> None:
    replay = Replay()
    replay.answer(("osd", "safe-to-destroy", "2"), Reply(0, stdout_of("failure_safe_to_destroy.stdout-and-rc.txt")))
    with pytest.raises(NotYet, match="no reported stats") as caught:
        ceph.safe_to_destroy(context(replay), cluster="lab", osds=[2], wait=True, interval=7)
    assert caught.value.after == 7


def test_safe_to_destroy_when_drained() -> None:
    replay = Replay()
    replay.answer(("osd", "safe-to-destroy", "0", "1"), Reply(0, stdout_of("drained_up_safe_to_destroy.stdout-and-rc.txt")))
    assert ceph.safe_to_destroy(context(replay), cluster="lab", osds=[0, 1])["safe"]


# -- wait_healthy -----------------------------------------------------------------------------------


def poll(action: Callable[..., Any], replay: Replay, memory: dict[str, Any], **params: Any) -> Any:
    """One invocation; returns the NotYet raised, or the result."""
    try:
        return action(context(replay, memory), **params)
    except NotYet as signal:
        return signal


def test_wait_healthy_first_waits_out_the_stats_lag() -> None:
    replay, memory = Replay(), {}
    signal = poll(ceph.wait_healthy, replay, memory, cluster="lab")
    assert isinstance(signal, NotYet) and 0 < signal.after <= 3.0
    assert ("status",) not in replay.executed  # not trusting a status that cannot show the change yet


def test_wait_healthy_needs_consecutive_clean_polls() -> None:
    replay, memory = Replay("healthy"), {}
    poll(ceph.wait_healthy, replay, memory, cluster="lab")
    age(memory, "started_at", 3.1)
    first = poll(ceph.wait_healthy, replay, memory, cluster="lab", interval=4)
    assert isinstance(first, NotYet) and first.after == 4 and "1 of 2" in str(first)
    result = poll(ceph.wait_healthy, replay, memory, cluster="lab")
    assert isinstance(result, dict) and result["health"] == "HEALTH_OK" and result["polls"] == 2


def test_wait_healthy_refuses_health_ok_with_remapped_pgs() -> None:
    status = doc("healthy_status.json")
    status["pgmap"]["pgs_by_state"] = [
        {"state_name": "active+clean", "count": 24},
        {"state_name": "active+clean+remapped", "count": 9},
    ]
    status["pgmap"]["misplaced_ratio"] = 0.26
    replay, memory = Replay("healthy"), {"started_at": 0.0, "good": 1}
    replay.docs[("status",)] = status
    signal = poll(ceph.wait_healthy, replay, memory, cluster="lab")
    assert isinstance(signal, NotYet) and "active+clean+remapped" in str(signal)
    assert memory["good"] == 0


@pytest.mark.parametrize("phase", ["rebalancing_step2", "rebalancing_step3", "rebalancing_step4", "refill_same_id"])
def test_wait_healthy_waits_while_pgs_move(phase: str) -> None:
    signal = poll(ceph.wait_healthy, Replay(phase), {"started_at": 0.0}, cluster="lab")
    assert isinstance(signal, NotYet) and "not active+clean" in str(signal)


def test_wait_healthy_trusts_neither_view_alone() -> None:
    """``status`` clean but ``pg stat`` (refreshed at another moment) still shows peering PGs."""
    replay = Replay("refill")
    replay.docs[("status",)] = doc("healthy_status.json")
    signal = poll(ceph.wait_healthy, replay, {"started_at": 0.0}, cluster="lab")
    assert isinstance(signal, NotYet) and "pg stat: 10 peering" in str(signal)


def test_wait_healthy_accepts_allowed_checks_only() -> None:
    replay = Replay("nearfull")
    signal = poll(ceph.wait_healthy, replay, {"started_at": 0.0}, cluster="lab", allowed_checks=["OSD_NEARFULL"])
    assert isinstance(signal, NotYet) and "POOL_NEARFULL" in str(signal) and "OSD_NEARFULL:" not in str(signal)
    memory = {"started_at": 0.0}
    allowed = ["OSD_NEARFULL", "POOL_NEARFULL"]
    poll(ceph.wait_healthy, replay, memory, cluster="lab", allowed_checks=allowed)
    result = poll(ceph.wait_healthy, replay, memory, cluster="lab", allowed_checks=allowed)
    assert isinstance(result, dict) and result["health"] == "HEALTH_WARN"


def test_wait_healthy_checks_drained_osds() -> None:
    replay, memory = Replay("drained"), {"started_at": 0.0}
    replay.answer(("pg", "ls-by-osd", "0"), Reply(0, text("probe/pg_ls_by_osd_0_healthy.json")))
    replay.answer(("pg", "ls-by-osd", "1"), Reply(0, text("probe/pg_ls_by_osd_0_drained.json")))
    signal = poll(ceph.wait_healthy, replay, memory, cluster="lab", drained_osds=[0, 1])
    assert isinstance(signal, NotYet) and "osd.0 still maps 10 PG(s)" in str(signal) and "osd.1" not in str(signal)

    replay.answer(("pg", "ls-by-osd", "0"), Reply(11, "\n{\"pg_ready\":true}", "Error EAGAIN: osd 0 is not up\n"))
    poll(ceph.wait_healthy, replay, memory, cluster="lab", drained_osds=[0, 1])
    result = poll(ceph.wait_healthy, replay, memory, cluster="lab", drained_osds=[0, 1])
    assert isinstance(result, dict) and result["drained_osds"] == [0, 1]


def test_wait_healthy_fails_on_checks_waiting_cannot_fix() -> None:
    health = doc("nearfull_status.json")
    health["health"]["checks"]["OSD_BACKFILLFULL"] = health["health"]["checks"].pop("OSD_NEARFULL")
    replay = Replay("nearfull")
    replay.docs[("status",)] = health
    with pytest.raises(SafetyCheckFailed, match="OSD_BACKFILLFULL"):
        ceph.wait_healthy(context(replay, {"started_at": 0.0}), cluster="lab")


def test_wait_healthy_tolerates_peering_for_a_minute_only() -> None:
    replay, memory = Replay("refill"), {"started_at": 0.0}
    signal = poll(ceph.wait_healthy, replay, memory, cluster="lab")
    assert isinstance(signal, NotYet) and "PG_AVAILABILITY" in str(signal)
    age(memory, "unavailable_since", 61)
    with pytest.raises(SafetyCheckFailed, match="unavailable for more than 60s"):
        ceph.wait_healthy(context(replay, memory), cluster="lab")


def test_wait_healthy_dry_run_polls_once_and_returns() -> None:
    replay = Replay("rebalancing_step3", dry_run=True)
    ctx = context(replay)
    result = ceph.wait_healthy(ctx, cluster="lab")
    assert result["dry_run"] and result["waiting_for"]
    assert ctx.planned[0]["kind"] == "wait until healthy"


# -- gradual reweight -------------------------------------------------------------------------------


def test_reweight_steps_down_by_step_only_when_settled() -> None:
    replay, memory = Replay("healthy"), {}
    signal = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert isinstance(signal, NotYet) and signal.after == 3.0
    assert replay.mutations() == [("osd", "crush", "reweight", "osd.0", "0.75"),
                                  ("osd", "crush", "reweight", "osd.1", "0.75")]
    assert memory["reweight"]["steps"] == 1 and memory["osds"] == [0, 1]

    replay = Replay("rebalancing_step1")
    signal = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert isinstance(signal, NotYet) and "stats lag" in str(signal)
    assert replay.executed == []  # within the lag nothing is read or changed

    age(memory["reweight"], "changed_at", 3.1)
    signal = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert replay.mutations() == [("osd", "crush", "reweight", "osd.0", "0.5"),
                                  ("osd", "crush", "reweight", "osd.1", "0.5")]
    assert memory["reweight"]["steps"] == 2


@pytest.mark.parametrize(
    ("phase", "reason"),
    [
        ("rebalancing_step2", "5 PG(s) not active"),
        ("failure_osd_down_noout", "OSD_DOWN"),
        ("refill_same_id", "PG(s) not active"),
    ],
)
def test_reweight_waits_while_the_cluster_is_busy(phase: str, reason: str) -> None:
    replay = Replay(phase)
    replay.docs[("osd", "tree")] = doc("rebalancing_step2_osd_tree.json")
    signal = poll(ceph.reweight, replay, {}, cluster="lab", osds=[0, 1], target=0.0, interval=9)
    assert isinstance(signal, NotYet) and signal.after == 9 and reason in str(signal)
    assert replay.mutations() == []


def test_reweight_waits_on_misplaced_and_backfilling_limits() -> None:
    status = doc("healthy_status.json")
    status["pgmap"]["pgs_by_state"] = [
        {"state_name": "active+clean", "count": 27},
        {"state_name": "active+remapped+backfilling", "count": 6},
    ]
    status["pgmap"]["misplaced_ratio"] = 0.08
    replay = Replay("healthy")
    replay.docs[("status",)] = status
    signal = poll(ceph.reweight, replay, {}, cluster="lab", osds=[0, 1], target=0.0, max_backfilling=4)
    assert isinstance(signal, NotYet)
    assert "misplaced 8.0% > 5.0%" in str(signal) and "6 PGs backfilling/recovering > 4" in str(signal)
    assert replay.mutations() == []
    result = poll(ceph.reweight, replay, {}, cluster="lab", osds=[0, 1], target=0.0, max_misplaced=0.1,
                  max_backfilling=6)
    assert isinstance(result, NotYet) and len(replay.mutations()) == 2


def test_reweight_finishes_when_at_target_and_clean() -> None:
    memory = {"osds": [0, 1], "reweight": {"from": {"0": 1.0, "1": 1.0}, "steps": 4, "changed_at": 0.0}}
    signal = poll(ceph.reweight, Replay("rebalancing_step4"), memory, cluster="lab", host="node1", target=0.0)
    assert isinstance(signal, NotYet) and "data still settling" in str(signal)
    replay = Replay("drained")
    result = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert result == {"osds": [0, 1], "from": {"0": 1.0, "1": 1.0}, "to": 0.0, "steps": 4, "max_latency_ms": None}
    assert replay.mutations() == []


def test_reweight_resumes_a_half_applied_step() -> None:
    tree = doc("rebalancing_step1_osd_tree.json")  # both at 0.75; the crash happened after osd.0 got 0.5
    for node in tree["nodes"]:
        if node["id"] == 0:
            node["crush_weight"] = 0.5
    replay = Replay("rebalancing_step1")
    replay.docs[("osd", "tree")] = tree
    memory = {"osds": [0, 1], "reweight": {"from": {"0": 1.0, "1": 1.0}, "steps": 2, "changed_at": 0.0,
                                           "planned": {"0": 0.5, "1": 0.5}}}
    signal = poll(ceph.reweight, replay, memory, cluster="lab", host="node1", target=0.0)
    assert isinstance(signal, NotYet)
    assert replay.mutations() == [("osd", "crush", "reweight", "osd.1", "0.5")]
    assert memory["reweight"]["steps"] == 2


def test_reweight_stops_on_full_osds() -> None:
    status = doc("nearfull_status.json")
    status["health"]["checks"]["OSD_BACKFILLFULL"] = status["health"]["checks"].pop("OSD_NEARFULL")
    replay = Replay("healthy")
    replay.docs[("status",)] = status
    with pytest.raises(SafetyCheckFailed, match="OSD_BACKFILLFULL"):
        ceph.reweight(context(replay), cluster="lab", osds=[0, 1], target=0.0)
    assert replay.mutations() == []


def test_reweight_dry_run_records_every_step_and_runs_none() -> None:
    replay = Replay("healthy", dry_run=True)
    ctx = context(replay)
    result = ceph.reweight(ctx, cluster="lab", host="node1", target=0.0)
    assert result == {"osds": [0, 1], "from": {"0": 1.0, "1": 1.0}, "to": 0.0, "steps": 4, "dry_run": True}
    assert replay.recorded == [
        ("osd", "crush", "reweight", f"osd.{o}", w) for w in ("0.75", "0.5", "0.25", "0") for o in (0, 1)
    ]
    assert replay.executed == [("osd", "tree")] * 2  # read-only: host -> OSDs, then the current weights
    assert [p["kind"] for p in ctx.planned] == ["wait for the cluster to settle"] * 4


def test_reweight_parameter_errors() -> None:
    with pytest.raises(ActionError, match="either 'host' or 'osds'"):
        ceph.reweight(context(Replay()), cluster="lab", target=0.0)
    with pytest.raises(ActionError, match="step must be positive"):
        ceph.reweight(context(Replay()), cluster="lab", osds=[0], target=0.0, step=0)
    with pytest.raises(ActionError, match=r"osd\.9 not in the OSD tree"):
        ceph.reweight(context(Replay()), cluster="lab", osds=[9], target=0.0)


# -- out / stop -------------------------------------------------------------------------------------


def test_out_checks_ids_then_verifies() -> None:
    replay = Replay(dump="probe/osd_dump_healthy.json")
    replay.after[("osd", "out", "2")] = lambda: setattr(replay, "dump", "probe/osd_dump_failed_out_destroyed.json")
    assert ceph.out(context(replay), cluster="lab", osds=[2]) == {"out": [2], "already_out": []}
    with pytest.raises(ActionError, match=r"osd\.9 not in the OSD map"):
        ceph.out(context(Replay()), cluster="lab", osds=[9])
    replay = Replay(dump="probe/osd_dump_healthy.json")
    with pytest.raises(ActionError, match="still in"):
        ceph.out(context(replay), cluster="lab", osds=[2])


def test_stop_osds_checks_stops_marks_down_and_verifies() -> None:
    replay, memory = Replay("healthy", "probe/osd_dump_healthy.json"), {}
    replay.answer(("osd", "ok-to-stop", "0", "1"), Reply(0, text("precheck_ok_to_stop.json")))
    signal = poll(ceph.stop_osds, replay, memory, cluster="lab", host="node1")
    assert isinstance(signal, NotYet)
    assert [(h, c) for h, c, m in replay.calls if m] == [
        ("node1", ("stop-osd", "0")), ("node1", ("stop-osd", "1")), (ADMIN, ("osd", "down", "0", "1"))
    ]
    replay = Replay("stopped_before_purge", "probe/osd_dump_stopped_noout.json")
    age(memory, "downed_at", 5)
    assert poll(ceph.stop_osds, replay, memory, cluster="lab", host="node1") == {"host": "node1", "stopped": [0, 1]}
    assert replay.mutations() == []


def test_stop_osds_notices_a_daemon_that_came_back() -> None:
    memory = {"osds": [0, 1], "stopped": [0, 1], "downed_at": 0.0}
    with pytest.raises(ActionError, match="came back up"):
        ceph.stop_osds(context(Replay("healthy"), memory), cluster="lab", host="node1")


def test_stop_osds_refuses_when_not_ok_to_stop() -> None:
    replay = Replay("healthy")
    stdout = stdout_of("precheck_ok_to_stop_cross_host.stdout-and-rc.txt")
    replay.answer(("osd", "ok-to-stop", "0", "1"), Reply(16, stdout, "Error EBUSY"))
    with pytest.raises(SafetyCheckFailed, match="inactive"):
        ceph.stop_osds(context(replay), cluster="lab", host="node1")
    assert replay.mutations() == []


def test_stop_osds_only_stops_osds_of_that_host() -> None:
    replay = Replay("healthy")
    with pytest.raises(ActionError, match=r"osd\.2 not under CRUSH host 'node1'"):
        ceph.stop_osds(context(replay), cluster="lab", host="node1", osds=[0, 2])
    assert replay.mutations() == []


# -- destroy / purge / remove_host ------------------------------------------------------------------


def safe(replay: Replay, ids: str, capture: str = "drained_down_safe_to_destroy.stdout-and-rc.txt") -> None:
    replay.answer(("osd", "safe-to-destroy", *ids.split()), Reply(0, stdout_of(capture)))


def test_destroy_refuses_up_osds() -> None:
    replay = Replay(dump="probe/osd_dump_healthy.json")
    safe(replay, "0 1", "drained_up_safe_to_destroy.stdout-and-rc.txt")  # drained: safe even while up
    with pytest.raises(SafetyCheckFailed, match=r"osd\.0, osd\.1 still up: stop them first"):
        ceph.destroy_osds(context(replay), cluster="lab", osds=[0, 1])
    assert replay.mutations() == []


def test_destroy_refuses_unsafe_osds() -> None:
    replay = Replay(dump="probe/osd_dump_stopped_noout.json")
    safe(replay, "0 1", "precheck_safe_to_destroy.stdout-and-rc.txt")
    with pytest.raises(SafetyCheckFailed, match=r"2 OSD\(s\) not safe to destroy: osd\.0, osd\.1 still map PGs"):
        ceph.destroy_osds(context(replay), cluster="lab", osds=[0, 1])
    assert replay.mutations() == []


def test_destroy_when_down_and_safe_then_idempotent() -> None:
    replay = Replay(dump="probe/osd_dump_stopped_noout.json")
    safe(replay, "0")
    replay.after[("osd", "destroy", "0", "--yes-i-really-mean-it")] = lambda: setattr(
        replay, "dump", "probe/osd_dump_destroyed.json"
    )
    result = ceph.destroy_osds(context(replay), cluster="lab", osds=[0])
    assert result == {"destroyed": [0], "already_destroyed": [], "absent": []}
    assert replay.mutations() == [("osd", "destroy", "0", "--yes-i-really-mean-it")]

    replay = Replay(dump="probe/osd_dump_destroyed.json")
    safe(replay, "0")  # osd.7 does not exist: it is not asked about
    result = ceph.destroy_osds(context(replay), cluster="lab", osds=[0, 7])
    assert result == {"destroyed": [], "already_destroyed": [0], "absent": [7]}
    assert replay.mutations() == []


def test_destroy_race_with_an_osd_coming_up_is_a_clear_refusal() -> None:
    replay = Replay(dump="probe/osd_dump_stopped_noout.json")
    safe(replay, "0")
    replay.answer(("osd", "destroy", "0", "--yes-i-really-mean-it"), Reply(16, "", "Error EBUSY: osd.0 is not `down`.\n"))
    with pytest.raises(SafetyCheckFailed, match=r"osd\.0 is not down: stop it"):
        ceph.destroy_osds(context(replay), cluster="lab", osds=[0])


def test_destroy_dry_run_reports_the_refusal_and_records_the_command() -> None:
    replay = Replay(dump="probe/osd_dump_healthy.json", dry_run=True)
    safe(replay, "0", "precheck_safe_to_destroy.stdout-and-rc.txt")
    ctx = context(replay)
    ceph.destroy_osds(ctx, cluster="lab", osds=[0])
    assert replay.recorded == [("osd", "destroy", "0", "--yes-i-really-mean-it")]
    assert all(not mutating for _, cmd, mutating in replay.calls if cmd in replay.executed)
    reasons = [p["reason"] for p in ctx.planned if p["kind"] == "refuse"]
    assert any("still up" in r for r in reasons) and any("not safe to destroy" in r for r in reasons)


def test_purge_destroyed_and_down_osds_then_idempotent() -> None:
    replay = Replay(dump="probe/osd_dump_destroyed.json")
    safe(replay, "0 1")
    replay.after[("osd", "purge", "1", "--yes-i-really-mean-it")] = lambda: setattr(
        replay, "dump", "probe/osd_dump_after_purge.json"
    )
    assert ceph.purge_osds(context(replay), cluster="lab", osds=[0, 1]) == {"purged": [0, 1], "already_purged": []}
    assert replay.mutations() == [("osd", "purge", "0", "--yes-i-really-mean-it"),
                                  ("osd", "purge", "1", "--yes-i-really-mean-it")]
    replay = Replay(dump="probe/osd_dump_after_purge.json")
    assert ceph.purge_osds(context(replay), cluster="lab", osds=[0, 1]) == {"purged": [], "already_purged": [0, 1]}
    assert replay.mutations() == []


def test_purge_refuses_up_osds() -> None:
    replay = Replay(dump="probe/osd_dump_healthy.json")
    safe(replay, "0 1", "drained_up_safe_to_destroy.stdout-and-rc.txt")
    with pytest.raises(SafetyCheckFailed, match="still up"):
        ceph.purge_osds(context(replay), cluster="lab", osds=[0, 1])


def empty_bucket_tree() -> Any:
    tree = doc("after_purge_osd_tree.json")
    tree["nodes"][0]["children"].append(-2)
    tree["nodes"].append({"id": -2, "name": "node1", "type": "host", "type_id": 1, "children": []})
    return tree


def test_remove_host_refuses_a_bucket_with_osds() -> None:
    replay = Replay("destroyed")
    with pytest.raises(SafetyCheckFailed, match=r"bucket not empty: CRUSH host 'node4' still holds osd\.0, osd\.1"):
        ceph.remove_host(context(replay), cluster="lab", host="node4")
    assert replay.mutations() == []


def test_remove_host_removes_an_empty_bucket_once() -> None:
    replay = Replay("after_purge")
    replay.docs[("osd", "tree")] = empty_bucket_tree()
    replay.after[("osd", "crush", "rm", "node1")] = lambda: replay.docs.pop(("osd", "tree"))
    assert ceph.remove_host(context(replay), cluster="lab", host="node1")["removed"]
    assert replay.mutations() == [("osd", "crush", "rm", "node1")]
    assert ceph.remove_host(context(Replay("after_purge")), cluster="lab", host="node1") == {
        "host": "node1", "removed": False, "absent": True,
    }


def test_remove_host_enotempty_is_a_safety_failure() -> None:
    replay = Replay("after_purge")
    replay.docs[("osd", "tree")] = empty_bucket_tree()
    replay.answer(("osd", "crush", "rm", "node1"), Reply(39, "", "Error ENOTEMPTY: (39) Directory not empty\n"))
    with pytest.raises(SafetyCheckFailed, match="bucket not empty"):
        ceph.remove_host(context(replay), cluster="lab", host="node1")


# -- add_node ---------------------------------------------------------------------------------------


def test_add_node_reuses_a_destroyed_id_and_waits_until_it_is_really_up_and_in() -> None:
    replay, memory = Replay("destroyed", "probe/osd_dump_destroyed.json"), {}
    replay.after[("make-osd", "0", "/dev/sdb")] = lambda: setattr(replay, "dump", "probe/osd_dump_new_not_booted.json")
    signal = poll(ceph.add_node, replay, memory, cluster="lab", host="node4", osd_ids=[0], devices=["/dev/sdb"])
    assert isinstance(signal, NotYet) and "osd.0 down, in (exists,new)" in str(signal)
    assert [(h, c) for h, c, m in replay.calls if m] == [("node4", ("make-osd", "0", "/dev/sdb"))]

    signal = poll(ceph.add_node, replay, memory, cluster="lab", host="node4", osd_ids=[0], devices=["/dev/sdb"])
    assert isinstance(signal, NotYet) and replay.mutations() == [("make-osd", "0", "/dev/sdb")]  # not again
    age(memory, "created_at", 301)
    with pytest.raises(ActionError, match=r"exists,new.*zap"):
        ceph.add_node(context(replay, memory), cluster="lab", host="node4", osd_ids=[0], devices=["/dev/sdb"])


def test_add_node_brings_weight_up_gradually_once_booted() -> None:
    memory: dict[str, Any] = {"ids": [0], "devices": ["/dev/sdb"], "created": [0], "created_at": 0.0}
    replay = Replay("healthy", "probe/osd_dump_new_booted_weight0.json")
    replay.docs[("osd", "tree")] = doc("probe/osd_tree_new_booted_weight0.json")
    signal = poll(ceph.add_node, replay, memory, cluster="lab", host="node4", osd_ids=[0], devices=["/dev/sdb"])
    assert isinstance(signal, NotYet)
    assert replay.mutations() == [("osd", "crush", "reweight", "osd.0", "0.25")]
    assert memory["reweight"]["from"] == {"0": 0.0}


def test_add_node_places_an_osd_outside_crush_at_weight_0() -> None:
    tree = doc("probe/osd_tree_after_purge.json")
    tree["stray"] = [{"id": 0, "name": "osd.0", "type": "osd", "type_id": 0, "crush_weight": 0,
                      "status": "up", "reweight": 1, "exists": 1}]
    replay = Replay("healthy", "probe/osd_dump_new_booted_weight0.json")
    replay.docs[("osd", "tree")] = tree
    memory: dict[str, Any] = {"ids": [0], "devices": ["/dev/sdb"], "created": [0], "created_at": 0.0}
    poll(ceph.add_node, replay, memory, cluster="lab", host="node4", osd_ids=[0])
    assert replay.mutations()[:3] == [
        ("osd", "crush", "add-bucket", "node4", "host"),
        ("osd", "crush", "move", "node4", "root=default"),
        ("osd", "crush", "add", "osd.0", "0", "root=default", "host=node4"),
    ]


def test_add_node_refuses_to_create_over_a_live_osd() -> None:
    replay = Replay("stopped_before_purge", "probe/osd_dump_stopped_noout.json")
    with pytest.raises(ActionError, match=r"osd\.0 down, in \(exists\) exists and is not destroyed"):
        ceph.add_node(context(replay), cluster="lab", host="node4", osd_ids=[0], devices=["/dev/sdb"])
    assert replay.mutations() == []


def test_add_node_takes_free_ids_and_inventory_devices() -> None:
    replay = Replay("after_purge", "probe/osd_dump_after_purge.json")
    memory: dict[str, Any] = {}
    poll(ceph.add_node, replay, memory, cluster="lab", host="node4")
    assert memory["ids"] == [0, 1] and memory["devices"] == ["/dev/sdb", "/dev/sdc"]
    assert replay.mutations() == [("make-osd", "0", "/dev/sdb"), ("make-osd", "1", "/dev/sdc")]
    with pytest.raises(ActionError, match="one id per device"):
        ceph.add_node(context(Replay()), cluster="lab", host="node4", osd_ids=[0])


def test_add_node_dry_run_records_creation_and_every_step() -> None:
    replay = Replay("after_purge", "probe/osd_dump_after_purge.json", dry_run=True)
    ctx = context(replay)
    result = ceph.add_node(ctx, cluster="lab", host="node4", step=0.5)
    assert result["steps"] == 2 and result["from"] == {"0": 0.0, "1": 0.0} and result["dry_run"]
    assert replay.recorded == [
        ("make-osd", "0", "/dev/sdb"), ("make-osd", "1", "/dev/sdc"),
        ("osd", "crush", "reweight", "osd.0", "0.5"), ("osd", "crush", "reweight", "osd.1", "0.5"),
        ("osd", "crush", "reweight", "osd.0", "1"), ("osd", "crush", "reweight", "osd.1", "1"),
    ]
    assert all(cmd[0] == "osd" and cmd[1] in ("dump", "tree") for cmd in replay.executed)
