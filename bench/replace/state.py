"""The lab's state a replacement must leave as it found it, so every repetition starts from the same one."""

from __future__ import annotations

from typing import Any

from lab import Lab

FLAGS = {"noout", "norebalance", "nobackfill", "norecover", "noscrub", "nodeep-scrub", "noup", "nodown", "noin"}


class StateChanged(RuntimeError):
    """A replacement left the lab different from how it found it (the message lists what differs)."""


def snapshot(lab: Lab) -> dict[str, Any]:
    """OSD ids per CRUSH host, CRUSH weights, up/in of each OSD, the mon config database, flags."""
    tree = lab.ceph_json("osd", "tree")["nodes"]
    dump = lab.ceph_json("osd", "dump")
    return {
        "hosts": {n["name"]: sorted(n.get("children") or []) for n in tree if n["type"] == "host"},
        "weights": {n["id"]: round(float(n["crush_weight"]), 5) for n in tree if n["type"] == "osd"},
        "up_in": {o["osd"]: (o["up"], o["in"]) for o in dump["osds"]},
        "config": sorted((e["section"], e["name"], e["value"]) for e in lab.ceph_json("config", "dump")),
        "flags": sorted(set(dump["flags_set"]) & FLAGS),
        "group_flags": dump.get("crush_node_flags") or {},
    }


def settle_and_check(lab: Lab, before: dict[str, Any], who: str, timeout: float = 300) -> None:
    """HEALTH_OK with every PG active+clean (two polls in a row), and the same state as ``before``."""
    lab.wait_settled(timeout=timeout)
    after = snapshot(lab)
    differs = [f"{key}: before {before[key]!r}, after {after[key]!r}" for key in before if before[key] != after[key]]
    if differs:
        raise StateChanged(f"{who} left the lab changed:\n  " + "\n  ".join(differs))
