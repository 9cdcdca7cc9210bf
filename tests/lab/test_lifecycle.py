"""A lab of its own, on bluestore: OSDs keep their data across a restart, and ``down`` stops every
process of the lab (the client load generator included) and keeps the logs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab, clientload
from lab.cluster import OSD_DEVICE_BYTES
from lab.core import REQUIRED_PROGRAMS
from lab.procs import gone, lab_processes
from lab.pytest_plugin import lab_dir

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOLD_FLAGS = ("noout", "norecover", "nobackfill")


@pytest.fixture(scope="module")
def bluestore_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"the Ceph lab needs {', '.join(missing)}: run lab/install.sh as root")
    lab = Lab(lab_dir(tmp_path_factory))
    lab.up(objectstore="bluestore")
    try:
        yield lab
    finally:
        lab.down()


def pg_states(lab: Lab) -> tuple[dict[str, int], int]:
    pgmap = lab.ceph_json("status")["pgmap"]
    return {s["state_name"]: s["count"] for s in pgmap["pgs_by_state"]}, int(pgmap.get("degraded_objects", 0))


def test_bluestore_osds_on_sparse_files_at_their_size(bluestore_lab: Lab) -> None:
    assert bluestore_lab.objectstore == "bluestore"
    metadata = {int(m["id"]): m for m in bluestore_lab.ceph_json("osd", "metadata")}
    assert {m["osd_objectstore"] for m in metadata.values()} == {"bluestore"}
    assert metadata[4]["hostname"] == "node3"
    block = bluestore_lab.layout.data / "osd.4" / "block"
    assert block.stat().st_size == OSD_DEVICE_BYTES
    assert block.stat().st_blocks * 512 < OSD_DEVICE_BYTES / 4
    weights = [n["crush_weight"] for n in bluestore_lab.ceph_json("osd", "tree")["nodes"] if n["type"] == "osd"]
    assert weights == [pytest.approx(OSD_DEVICE_BYTES / 2**40, rel=0.02)] * 8


def test_restarted_bluestore_osd_comes_back_with_its_data(bluestore_lab: Lab) -> None:
    """With recovery and backfill held, only an OSD that kept its objects lets its PGs go clean."""
    bluestore_lab.wait_settled()
    for flag in HOLD_FLAGS:
        bluestore_lab.ceph("osd", "set", flag)
    try:
        bluestore_lab.lab_osd("stop", "4")
        deadline = time.monotonic() + 60
        while pg_states(bluestore_lab)[1] == 0:
            assert time.monotonic() < deadline, "no object was reported degraded with osd.4 stopped"
            time.sleep(0.5)
        bluestore_lab.lab_osd("start", "4")
        deadline = time.monotonic() + 60
        while True:
            states, degraded = pg_states(bluestore_lab)
            if set(states) == {"active+clean"} and degraded == 0:
                break
            assert time.monotonic() < deadline, f"PGs did not go clean under norecover: {states}, {degraded} degraded"
            time.sleep(0.5)
    finally:
        for flag in HOLD_FLAGS:
            bluestore_lab.ceph("osd", "unset", flag)
    bluestore_lab.wait_settled()


def test_status_cli_lists_every_daemon(bluestore_lab: Lab) -> None:
    proc = subprocess.run([sys.executable, "-m", "lab", "status", "--json", "--dir", str(bluestore_lab.root)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    status = json.loads(proc.stdout)
    assert status["health"] == "HEALTH_OK"
    assert status["objectstore"] == "bluestore"
    names = [d["name"] for d in status["daemons"] if d["pid"]]
    assert names[:5] == ["mon.admin", "mon.node1", "mon.node2", "mgr.admin", "mgr.node1"]
    assert sorted(n for n in names if n.startswith("osd.")) == [f"osd.{i}" for i in range(8)]
    assert sorted(n for n in names if n.startswith("sshd.")) == sorted(
        f"sshd.{h}" for h in ("admin", "node1", "node2", "node3", "node4", "node5", "node6"))
    assert {"alertmanager", "receiver"} <= set(names)
    assert sorted(status["ports"]["mon"]) == ["admin", "node1", "node2"]


def test_down_stops_every_process_of_the_lab_and_keeps_the_logs(bluestore_lab: Lab) -> None:
    load = clientload.start(bluestore_lab, idle_seconds=1)
    pids = [d.pid for d in bluestore_lab.daemons() if d.pid is not None]
    assert len(pids) == 3 + 2 + 8 + 7 + 2
    assert load.pid is not None and load.running()
    assert load.pid in lab_processes(bluestore_lab.root)
    bluestore_lab.down()
    assert all(gone(pid) for pid in [*pids, load.pid])
    assert lab_processes(bluestore_lab.root) == []
    assert not bluestore_lab.layout.data.exists()
    assert (bluestore_lab.layout.log / "mon.admin.log").stat().st_size > 0
    assert not bluestore_lab.is_up()
    assert load.stop().ops > 0
