"""Record real ``ceph ... -f json`` outputs (with exit codes) from a running lab, in several states.

    python -m lab.capture --out DIR [--dir LABDIR]

Writes ``<phase>_<command>.json`` (stdout) and ``<phase>_<command>.stdout-and-rc.txt`` (stdout, then
``rc=N``) for the commands whose exit code matters, plus ``manifest.json``. Phases: healthy,
osd_down_noout, destroyed, recreated (right after the same-id OSD boots), drained (host node4 at CRUSH
weight 0 and clean). The lab is put back the way it was at the end (node4 reweighted to its previous
weights, noout unset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab.core import Lab
from lab.layout import LabError, default_dir
from lab.procs import wait_until

STATE_COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "health_detail": ("health", "detail"),
    "osd_tree": ("osd", "tree"),
    "osd_df": ("osd", "df"),
    "osd_dump": ("osd", "dump"),
    "pg_stat": ("pg", "stat"),
}
RC_COMMANDS: dict[str, tuple[str, ...]] = {
    "ok_to_stop": ("osd", "ok-to-stop"),
    "safe_to_destroy": ("osd", "safe-to-destroy"),
}


class Capture:
    def __init__(self, lab: Lab, out: Path) -> None:
        self.lab = lab
        self.out = out
        self.manifest: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)

    def record(self, phase: str, name: str, args: tuple[str, ...], with_rc: bool) -> None:
        proc = self.lab.ceph_rc(*args, "-f", "json")
        base = self.out / f"{phase}_{name}"
        if with_rc:
            path = base.with_name(base.name + ".stdout-and-rc.txt")
            path.write_text(f"{proc.stdout}rc={proc.returncode}\n")
        else:
            path = base.with_name(base.name + ".json")
            path.write_text(proc.stdout)
        self.manifest.append({"phase": phase, "file": path.name, "argv": ["ceph", *args, "-f", "json"],
                              "rc": proc.returncode, "stderr": proc.stderr.strip()})

    def phase(self, phase: str, osds: list[int]) -> None:
        for name, args in STATE_COMMANDS.items():
            self.record(phase, name, args, with_rc=False)
        ids = tuple(str(i) for i in osds)
        self.record(phase, f"pg_ls_by_osd_{osds[0]}", ("pg", "ls-by-osd", ids[0]), with_rc=False)
        for name, args in RC_COMMANDS.items():
            self.record(phase, name, (*args, *ids), with_rc=True)

    def save_manifest(self) -> None:
        (self.out / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n")


def osd_up(lab: Lab, osd_id: int) -> bool:
    return any(o["osd"] == osd_id and o["up"] == 1 for o in lab.ceph_json("osd", "dump")["osds"])


def no_pgs_on(lab: Lab, osd_ids: list[int]) -> bool:
    for osd_id in osd_ids:
        listing = lab.ceph_json("pg", "ls-by-osd", str(osd_id))
        stats = listing.get("pg_stats", []) if isinstance(listing, dict) else listing
        if stats:
            return False
    return True


def run_capture(lab: Lab, out: Path) -> Capture:
    cap = Capture(lab, out)
    lab.wait_settled()
    cap.phase("healthy", [2])

    lab.ceph("osd", "set", "noout")
    lab.lab_osd("stop", "2")
    wait_until(lambda: not osd_up(lab, 2), 60, "osd.2 to be marked down")
    cap.phase("osd_down_noout", [2])
    cap.record("osd_down_noout", "ok_to_stop_other_host", ("osd", "ok-to-stop", "4"), with_rc=True)

    lab.ceph("osd", "destroy", "2", "--yes-i-really-mean-it")
    cap.phase("destroyed", [2])

    lab.lab_osd("zap", "2")
    lab.lab_osd("create", "2", "node2")
    wait_until(lambda: osd_up(lab, 2), 120, "the recreated osd.2 to be up")
    cap.phase("recreated", [2])
    lab.ceph("osd", "unset", "noout")
    lab.wait_settled()

    weights = {int(n["id"]): float(n["crush_weight"]) for n in lab.ceph_json("osd", "tree")["nodes"]
               if n["type"] == "osd"}
    for osd_id in (6, 7):
        lab.ceph("osd", "crush", "reweight", f"osd.{osd_id}", "0")
    lab.wait_settled()
    wait_until(lambda: no_pgs_on(lab, [6, 7]), 120, "no PGs left on osd.6 and osd.7", interval=1)
    cap.phase("drained", [6, 7])
    for osd_id in (6, 7):
        lab.ceph("osd", "crush", "reweight", f"osd.{osd_id}", f"{weights[osd_id]:g}")
    lab.wait_settled()
    cap.save_manifest()
    return cap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.capture", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=str(default_dir()), help="a lab that is up")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    lab = Lab(args.dir)
    try:
        if not lab.is_up():
            raise LabError(f"no lab is up in {lab.root}: run 'python -m lab up --dir {lab.root}' first")
        cap = run_capture(lab, args.out)
    except LabError as exc:
        print(f"capture: {exc}", file=sys.stderr)
        return 1
    print(f"{len(cap.manifest)} outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
