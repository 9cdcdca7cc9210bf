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

PARAMS = ["-p", "cluster=lab", "-p", "node=node2", "-p", "reason=fan failure"]


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
    admin = "ssh node1: ceph --connect-timeout 10 "
    lab_osd = str(lab.lab_osd_path)
    for line in [
        f"http POST http://127.0.0.1:{ports.alertmanager}/api/v2/silences",
        admin + "osd set noout -f json",
        *(admin + f"osd crush reweight osd.{o} {w} -f json" for o in (2, 3) for w in ("0.75", "0.5", "0.25", "0")),
        admin + "osd out 2 3 -f json",
        f"ssh node2: {lab_osd} stop 2",
        f"ssh node2: {lab_osd} stop 3",
        admin + "osd down 2 3 -f json",
        admin + "osd destroy 2 --yes-i-really-mean-it -f json",
        admin + "osd destroy 3 --yes-i-really-mean-it -f json",
        f"http POST http://127.0.0.1:{ports.receiver_http}/hooks/dc",
        f"send email: to=dc-ops@example.com smtp=127.0.0.1:{ports.receiver_smtp}",
        f"http POST http://127.0.0.1:{ports.receiver_http}/api/tickets",
        "wait for swap confirmation: host=node2",
        f"ssh node2: {lab_osd} create 2 node2",
        f"ssh node2: {lab_osd} create 3 node2",
        *(admin + f"osd crush reweight osd.{o} {w} -f json" for o in (2, 3) for w in ("0.25", "0.5", "0.75", "1")),
        "unset the flag if it is set by then: flag=noout",
        f"http POST http://127.0.0.1:{ports.receiver_http}/hooks/chat",
    ]:
        assert line in out, f"missing from the dry-run: {line}"
    steps = json.loads(as_json.stdout)
    assert [s["id"] for s in steps][:3] == ["preflight", "set_downtime", "set_flags"]
    assert all(s["status"] == "would run" for s in steps), [(s["id"], s["status"], s["note"]) for s in steps]
    hosts = {w.get("host") for s in steps for w in s["would"] if w["kind"] == "ssh"}
    assert hosts == {"node1", "node2"}

    assert lab.ceph_json("osd", "dump")["epoch"] == epoch, "the OSD map changed during a dry-run"
    assert silences(lab) == silenced
    assert lab.received() == []
    assert not (tmp_path / "home" / "redis").exists()
