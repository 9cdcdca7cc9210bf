"""The client load generator against the real lab: steady 4 KiB ops on both pools, stalls made visible."""

from __future__ import annotations

import time

import pytest

from lab import Lab, LabError, clientload

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_records_ops_on_both_pools_with_no_errors_on_a_healthy_cluster(ceph_lab: Lab) -> None:
    ceph_lab.wait_settled()
    load = clientload.start(ceph_lab, idle_seconds=3)
    try:
        with load.window("steady"):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert load.running()
                time.sleep(0.5)
    finally:
        summary = load.stop()
    assert summary.errors == 0, summary.describe()
    assert summary.idle.ops >= 3 * 2 * 2 * clientload.DEFAULT_RATE * 0.8, summary.describe()
    assert 0 < summary.idle_p99_ms < 1000, summary.describe()
    assert summary.windows["steady"].ops >= 3 * 2 * 2 * clientload.DEFAULT_RATE * 0.8
    assert summary.windows["steady"].min_ops_per_second >= 2 * 2 * clientload.DEFAULT_RATE * 0.8
    assert summary.stuck_ms == 0
    rows = load.seconds()
    assert {p for r in rows for p, stats in r["pools"].items() if stats["ops"]} == {"lab", "lab-ec"}
    assert all(len(r["lat_ms"]) == r["ops"] for r in rows)
    assert summary.path is not None and summary.path.parent == ceph_lab.layout.log
    assert load.stop() is summary


def test_paused_client_io_shows_as_ops_in_flight_then_completes_without_errors(ceph_lab: Lab) -> None:
    ceph_lab.wait_settled()
    load = clientload.start(ceph_lab, pools=["lab"], idle_seconds=2)
    try:
        with load.window("paused"):
            ceph_lab.ceph("osd", "pause")
            try:
                deadline = time.monotonic() + 30
                while load.stats(load.marks["paused"][0]).max_inflight_ms < 2000:
                    assert time.monotonic() < deadline, "no op seen blocked under 'ceph osd pause'"
                    time.sleep(0.5)
            finally:
                ceph_lab.ceph("osd", "unpause")
        after = time.time()
        deadline = time.monotonic() + 30
        while load.stats(after).ops == 0:
            assert time.monotonic() < deadline, "client ops did not resume after 'ceph osd unpause'"
            time.sleep(0.5)
    finally:
        summary = load.stop()
    paused = summary.windows["paused"]
    assert paused.max_inflight_ms >= 2000
    assert paused.max_ms >= 2000 and paused.min_ops_per_second == 0, summary.describe()
    assert summary.errors == 0, summary.describe()
    assert summary.p99_ms > summary.idle_p99_ms


def test_unknown_pool_makes_start_fail_with_the_log_to_read(ceph_lab: Lab) -> None:
    with pytest.raises(LabError, match=r"exited 1 before connecting: see .*client-load\.log"):
        clientload.start(ceph_lab, pools=["no-such-pool"], idle_seconds=1)
