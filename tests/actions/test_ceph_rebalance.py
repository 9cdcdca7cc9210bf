"""ceph.rebalance_step, driven by outputs captured on a real cluster (see
test_ceph_actions for the Replay double of ``ctx.ssh``). The real-lab runs are in tests/lab_e2e."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from actions import ceph
from actions.base import NotYet
from engine.errors import ActionError
from tests.actions.test_ceph_actions import Replay, age, context, doc


def df(**changes: dict[str, Any]) -> dict[str, Any]:
    """The healthy ``osd df`` with per-OSD fields changed, e.g. ``df(osd5={"reweight": 0.5})``."""
    data: dict[str, Any] = copy.deepcopy(doc("healthy_osd_df.json"))
    for node in data["nodes"]:
        node.update(changes.get(f"osd{node['id']}", {}))
    return data


# -- the choice ------------------------------------------------------------------------------------


def test_choice_lowers_the_fullest_osd_above_average_by_one_step() -> None:
    spread, osd, weight = ceph.rebalance_choice(df(), max_spread=2, step=0.05, min_reweight=0.5)
    assert spread == pytest.approx(10.5561 - 5.0872, abs=1e-3)
    assert (osd, weight) == (5, 0.95)


def test_choice_is_none_when_the_spread_is_small_enough() -> None:
    assert ceph.rebalance_choice(df(), max_spread=6, step=0.05, min_reweight=0.5)[1:] == (None, None)


def test_choice_never_goes_below_min_reweight_and_moves_to_the_next_fullest() -> None:
    _, osd, weight = ceph.rebalance_choice(df(osd5={"reweight": 0.5}), max_spread=2, step=0.05, min_reweight=0.5)
    assert (osd, weight) == (3, 0.95)
    _, osd, weight = ceph.rebalance_choice(df(osd5={"reweight": 0.52}), max_spread=2, step=0.05, min_reweight=0.5)
    assert (osd, weight) == (5, 0.5)


def test_choice_ignores_out_osds_and_gives_up_when_nothing_can_be_lowered() -> None:
    floor = {"reweight": 0.5}
    _, osd, _ = ceph.rebalance_choice(df(osd2={"reweight": 0.0}), max_spread=2, step=0.05, min_reweight=0.5)
    assert osd == 5
    stuck = df(osd3=floor, osd4=floor, osd5=floor)
    assert ceph.rebalance_choice(stuck, max_spread=2, step=0.05, min_reweight=0.5)[1:] == (None, None)


# -- the polling action ----------------------------------------------------------------------------


def test_rebalance_step_lowers_one_osd_per_round_and_waits_between_rounds() -> None:
    replay = Replay("healthy")
    memory: dict[str, Any] = {}
    with pytest.raises(NotYet, match="round 1 applied"):
        ceph.rebalance_step(context(replay, memory), cluster="lab", max_spread=2)
    assert replay.mutations() == [("osd", "reweight", "5", "0.95")]
    assert memory["rounds"] == [{"osd": 5, "reweight": 0.95, "spread": pytest.approx(5.469, abs=1e-3)}]

    with pytest.raises(NotYet, match="stats lag"):  # too early: the stats do not show round 1 yet
        ceph.rebalance_step(context(replay, memory), cluster="lab", max_spread=2)
    assert len(replay.mutations()) == 1

    age(memory, "changed_at", 10)
    replay.docs[("osd", "df")] = df(osd5={"reweight": 0.95, "utilization": 8.0})
    with pytest.raises(NotYet, match="round 2 applied"):
        ceph.rebalance_step(context(replay, memory), cluster="lab", max_spread=2)
    assert replay.mutations()[-1] == ("osd", "reweight", "3", "0.95")


def test_rebalance_step_finishes_when_converged() -> None:
    replay = Replay("healthy")
    result = ceph.rebalance_step(context(replay), cluster="lab", max_spread=6)
    assert result["converged"] and result["rounds"] == [] and not replay.mutations()
    assert result["spread"] == result["spread_before"]


def test_rebalance_step_stops_after_max_rounds_without_failing() -> None:
    replay = Replay("healthy")
    memory: dict[str, Any] = {}
    with pytest.raises(NotYet):
        ceph.rebalance_step(context(replay, memory), cluster="lab", max_spread=2, max_rounds=1)
    age(memory, "changed_at", 10)
    result = ceph.rebalance_step(context(replay, memory), cluster="lab", max_spread=2, max_rounds=1)
    assert not result["converged"] and len(result["rounds"]) == 1 and len(replay.mutations()) == 1


@pytest.mark.parametrize("phase", ["rebalancing_step2", "failure_recovering", "refill"])
def test_rebalance_step_measures_only_once_data_has_settled(phase: str) -> None:
    replay = Replay(phase)
    with pytest.raises(NotYet, match="before measuring"):
        ceph.rebalance_step(context(replay), cluster="lab", max_spread=2)
    assert not replay.mutations() and not replay.ran("osd", "df")


def test_rebalance_step_dry_run_records_one_round() -> None:
    replay = Replay("healthy", dry_run=True)
    result = ceph.rebalance_step(context(replay), cluster="lab", max_spread=2)
    assert result["dry_run"] and replay.recorded == [("osd", "reweight", "5", "0.95")]
    assert not replay.ran("osd", "reweight")


def test_rebalance_step_parameter_errors() -> None:
    with pytest.raises(ActionError, match="step and min_reweight"):
        ceph.rebalance_step(context(Replay()), cluster="lab", max_spread=2, step=0)
