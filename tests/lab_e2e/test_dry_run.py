"""`hotswap run --dry-run` of replace-node against the real lab shows everything and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import Lab
from tests.lab_e2e.conftest import ROOT, silences

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

PARAMS = ["-p", "cluster=lab", "-p", "node=node3", "-p", "reason=fan failure"]


def dry_run(lab: Lab, home: Path, *global_options: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOTSWAP_INVENTORY": str(lab.inventory_path), "HOTSWAP_HOME": str(home)}
    env.pop("HOTSWAP_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *global_options, "run", "runbooks/replace-node.yaml", "--dry-run", *PARAMS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_dry_run_prints_every_command_and_request_and_touches_nothing(settled_lab: Lab, tmp_path: Path) -> None:
    lab = settled_lab
    epoch = lab.ceph_json("osd", "dump")["epoch"]
    silenced = silences(lab)
    ports = lab.ports

    text = dry_run(lab, tmp_path / "home")
    as_json = dry_run(lab, tmp_path / "home", "--json")

    assert text.returncode == 0, text.stderr
    assert as_json.returncode == 0, as_json.stderr
    out = text.stdout
    print("\n" + out)
    admin = "ssh admin: ceph --connect-timeout 10 "
    lab_osd = str(lab.lab_osd_path)
    ids = (4, 5)
    weight = {int(n["id"]): float(n["crush_weight"]) for n in lab.ceph_json("osd", "tree")["nodes"]
              if n["type"] == "osd"}[4]
    down = [round(weight * f, 6) for f in (0.75, 0.5, 0.25)] + [0.0]
    up = [round(weight * f, 6) for f in (0.25, 0.5, 0.75)] + [weight]
    for line in [
        f"http POST http://127.0.0.1:{ports.alertmanager}/api/v2/silences",
        admin + "config set osd osd_max_backfills 1 -f json",
        admin + "config set osd osd_recovery_max_active 1 -f json",
        *(admin + f"osd crush reweight osd.{o} {w:.10g} -f json" for o in ids for w in down),
        "put back what the run changed",
        admin + "osd out 4 5 -f json",
        f"ssh node3: {lab_osd} stop 4",
        f"ssh node3: {lab_osd} stop 5",
        admin + "osd down 4 5 -f json",
        admin + "osd destroy 4 --yes-i-really-mean-it -f json",
        admin + "osd destroy 5 --yes-i-really-mean-it -f json",
        f"http POST http://127.0.0.1:{ports.receiver_http}/hooks/dc",
        f"send email: to=dc-ops@example.com smtp=127.0.0.1:{ports.receiver_smtp}",
        f"http POST http://127.0.0.1:{ports.receiver_http}/api/tickets",
        "wait for swap confirmation: host=node3",
        admin + "config set osd.4 osd_crush_initial_weight 0 -f json",
        admin + "config set osd.5 osd_crush_initial_weight 0 -f json",
        f"ssh node3: {lab_osd} create 4 node3",
        f"ssh node3: {lab_osd} create 5 node3",
        "wait until the new OSDs are up and in, at CRUSH weight 0: osds=osd.4, osd.5",
        *(admin + f"osd crush reweight osd.{o} {w:.10g} -f json" for o in ids for w in up),
        f"http POST http://127.0.0.1:{ports.receiver_http}/hooks/chat",
    ]:
        assert line in out, f"missing from the dry-run: {line}"
    assert " osd set noout" not in out and "set-group" not in out, "the runbook sets a flag"
    steps = json.loads(as_json.stdout)
    assert [s["id"] for s in steps][:4] == ["preflight", "disks", "set_downtime", "throttle_drain"]
    assert all(s["status"] == "would run" for s in steps), [(s["id"], s["status"], s["note"]) for s in steps]
    hosts = {w.get("host") for s in steps for w in s["would"] if w["kind"] == "ssh"}
    assert hosts == {"admin", "node3"}

    assert lab.ceph_json("osd", "dump")["epoch"] == epoch, "the OSD map changed during a dry-run"
    assert silences(lab) == silenced
    assert lab.received() == []
    assert not (tmp_path / "home" / "redis").exists()
