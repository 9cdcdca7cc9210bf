"""The domain benchmark (bench/replace) in its quick mode, for correctness only: one hotswap
replace-node through a real worker, the bare script replayed from it over SSH, and the same with the
checks, each leaving the lab as it found it. No timing is asserted (the bench itself exits 1 on its
target; this machine is shared)."""

from __future__ import annotations

import pytest

from bench.replace.bare import Run, Wait, script_from
from bench.replace.main import measure
from lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.bench]


@pytest.mark.timeout(2400)
def test_quick_bench_replays_what_hotswap_did_and_restores_the_lab(ceph_lab: Lab) -> None:
    # measure() raises StateChanged when a contender leaves ids, weights, config or flags changed,
    # and waits for HEALTH_OK with every PG active+clean after each one.
    report = measure(ceph_lab, "node3", repeats=1, checks=True)

    (rep,) = report.reps
    rec = rep.hotswap
    assert rec.status == "succeeded"
    mutating = [c.line for c in rec.commands if c.mutating]
    said = " | ".join(mutating)
    for expected in ("osd crush reweight osd.", "osd out", "osd destroy", "lab-osd stop", "lab-osd create"):
        assert expected in said, f"{expected!r} not among the recorded mutations: {said}"
    assert all(not c.poll for c in rec.commands if c.mutating)

    bare = script_from(rec, with_checks=False)
    assert [i.line for i in bare if isinstance(i, Run)] == mutating
    assert any(isinstance(i, Wait) for i in bare), "the bare script never waited for the cluster"
    assert rep.bare.commands == len(mutating) and rep.bare.waits >= 2
    assert rep.checks is not None and rep.checks.commands > rep.bare.commands

    parts = rec.breakdown()
    assert sum(parts.values()) == pytest.approx(rec.wall)
    assert parts["waiting"] > 0 and parts["actions"] > 0
    assert report.script and report.median_ratio > 0
