"""ceph.disks_of: which disks back which OSDs, parsed from real ``ceph osd metadata`` / ``device ls``
outputs (tests/data/ceph-samples/devices/), then run over a real sshd (tests/support/sshd.py)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions import ceph_devices as cd
from actions.base import ActionContext
from actions.ssh import ConnectionPool, SSHSettings, SSHToolkit
from engine.errors import ActionError, CommandFailed
from inventory.model import Cluster, Disk, Host, Inventory
from tests.support.logs import ListLog
from tests.support.sshd import Sshd, running_sshd

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "ceph-samples" / "devices"
SDC_BY_PATH = "/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0"
NVME_BY_PATH = "/dev/disk/by-path/pci-0000:5e:00.0-nvme-1"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


# -- parsing real outputs ---------------------------------------------------------------------------


def test_a_memstore_osd_has_no_disk_whatever_rotational_says() -> None:
    meta = sample("osd_metadata_0_memstore.json")
    assert (meta["rotational"], meta["default_device_class"], meta["devices"]) == ("1", "hdd", "")
    o = cd.osd_devices(meta)
    assert (o.osd, o.objectstore, o.hostname, o.devices) == (0, "memstore", "vm", ())
    assert (o.type, o.rotational, o.size_bytes) == (None, None, None)
    assert o.notes == ("Ceph reports no disk for osd.0 (memstore keeps its data in RAM)",)


def test_a_bluestore_osd_on_a_loop_device_has_a_path_but_no_serial() -> None:
    o = cd.osd_devices(sample("osd_metadata_8_bluestore_loop.json"))
    assert o.devices == (cd.CephDevice("loop0", ("data",), None, None),)
    assert o.devices[0].path == "/dev/loop0"
    assert (o.devices[0].serial, o.devices[0].model) == (None, None)
    assert (o.type, o.rotational, o.size_bytes) == ("hdd", True, 2147483648)
    assert o.notes == ("osd.8: no serial for loop0 (no unique device id: a virtual or loop device?)",)


def test_bluestore_on_a_file_names_the_disk_under_the_file() -> None:
    o = cd.osd_devices(sample("osd_metadata_9_bluestore_file.json"))
    assert [d.name for d in o.devices] == ["vda"]
    assert o.notes[-1] == "osd.9: bluestore on a file (/tmp/hs-lab-D/data/osd.9/block) on vda"


def test_every_osd_of_the_lab_parses() -> None:
    parsed = [cd.osd_devices(m) for m in sample("osd_metadata_all.json")]
    assert [o.osd for o in parsed] == list(range(10))
    assert [o.objectstore for o in parsed].count("memstore") == 8
    assert [len(o.devices) for o in parsed] == [0] * 8 + [1, 1]


def test_lvm_data_disk_with_a_db_on_nvme_keeps_the_disks_not_the_lvs() -> None:
    o = cd.osd_devices(sample("osd_metadata_8_documented_format_lvm_db.json"))
    sdc = cd.CephDevice("sdc", ("data",), "SEAGATE_ST4000NM0035-1V4107_ZC1A2B3C", SDC_BY_PATH)
    nvme = cd.CephDevice("nvme0n1", ("db",), "INTEL_SSDPEDMD400G4_CVFT724400A6400LGN", NVME_BY_PATH)
    assert sorted(o.devices, key=lambda d: d.name) == [nvme, sdc]
    assert (sdc.serial, sdc.model) == ("ZC1A2B3C", "SEAGATE ST4000NM0035-1V4107")
    assert (o.type, o.size_bytes, o.notes) == ("hdd", 4000783007744, ())


@pytest.mark.parametrize(("devid", "expected"), [
    ("SAMSUNG_MZ7KM960HMJP-00005_S3F3NX0K501737", ("SAMSUNG MZ7KM960HMJP-00005", "S3F3NX0K501737")),
    ("INTEL_SSDPEDMD400G4_CVFT724400A6400LGN", ("INTEL SSDPEDMD400G4", "CVFT724400A6400LGN")),
    ("JUSTASERIAL", (None, "JUSTASERIAL")),
])
def test_split_device_id(devid: str, expected: tuple[str | None, str | None]) -> None:
    assert cd.split_device_id(devid) == expected


def test_the_mgr_device_table_fills_what_the_metadata_lacks() -> None:
    assert cd.device_table(sample("device_ls.json")) == {}
    table = cd.device_table(sample("device_ls_documented_format.json"))
    assert table["osd.9"] == [{"device_id": "INTEL_SSDPEDMD400G4_CVFT724400A6400LGN", "dev": "nvme0n1",
                               "path": NVME_BY_PATH}]
    meta = dict(sample("osd_metadata_8_documented_format_lvm_db.json"), device_ids="", device_paths="")
    bare = cd.osd_devices(meta)
    assert all(d.device_id is None for d in bare.devices) and len(bare.notes) == 2
    filled = cd.with_device_table(bare, table)
    assert {d.name: (d.device_id, d.by_path) for d in filled.devices} == {
        "nvme0n1": ("INTEL_SSDPEDMD400G4_CVFT724400A6400LGN", NVME_BY_PATH),
        "sdc": ("SEAGATE_ST4000NM0035-1V4107_ZC1A2B3C", SDC_BY_PATH),
    }


def test_rows_take_the_slot_from_the_inventory_by_serial_or_path() -> None:
    o = cd.osd_devices(sample("osd_metadata_8_documented_format_lvm_db.json"))
    inventory = {"node2": (
        Disk("/dev/disk/by-id/scsi-ZC1A2B3C", slot="7", serial="ZC1A2B3C"),
        Disk(NVME_BY_PATH, slot="nvme-1", model="P3700"),
        Disk("/dev/sdd", slot="8", serial="OTHER"),
    )}
    rows = cd.disk_rows([o], {8: "node2"}, inventory, whole_hosts=["node2"])
    by_path = {r["path"]: r for r in rows}
    assert by_path["/dev/sdc"]["slot"] == "7" and by_path["/dev/sdc"]["source"] == "ceph+inventory"
    assert by_path["/dev/nvme0n1"]["slot"] == "nvme-1" and by_path["/dev/nvme0n1"]["role"] == "db"
    assert by_path["/dev/nvme0n1"]["model"] == "INTEL SSDPEDMD400G4"
    assert by_path["/dev/sdd"] == {
        "osd": None, "host": "node2", "path": "/dev/sdd", "by_path": None, "slot": "8", "serial": "OTHER",
        "model": None, "device_id": None, "type": None, "size_bytes": None, "role": None, "source": "inventory",
    }
    assert set(by_path) == {"/dev/sdc", "/dev/nvme0n1", "/dev/sdd"}
    assert cd.disk_rows([o], {8: "node2"}, inventory)[-1]["osd"] == 8  # one OSD only: no other disks


def test_the_table_says_unknown_and_shows_role_and_by_path_only_when_known() -> None:
    rows = [
        {"osd": 3, "host": "node2", "path": "/dev/sdc", "slot": "7", "serial": "ZC1A2B3C",
         "model": "SEAGATE ST4000NM0035", "type": "hdd", "size_bytes": 4000783007744},
        {"osd": None, "host": "node2", "path": "/dev/sdd"},
    ]
    assert cd.disk_table(rows) == (
        "OSD    Host   Path      Slot     Serial    Model                 Type     Size\n"
        "osd.3  node2  /dev/sdc  7        ZC1A2B3C  SEAGATE ST4000NM0035  hdd      3.6 TiB\n"
        "-      node2  /dev/sdd  unknown  unknown   unknown               unknown  unknown\n"
    )
    rows[0] |= {"role": "db", "by_path": NVME_BY_PATH}
    header = cd.disk_table(rows).splitlines()[0]
    assert header.endswith("Role     By-path")


def test_rows_given_to_an_action_are_checked() -> None:
    assert cd.normalize_rows([{"path": "/dev/sdb", "extra": 1}]) == [dict.fromkeys(cd.ROW_KEYS) | {"path": "/dev/sdb"}]
    with pytest.raises(ActionError, match="must be a list of disk rows"):
        cd.normalize_rows("sdb")
    with pytest.raises(ActionError, match=r"disks\[1\] must be a mapping"):
        cd.normalize_rows([{}, "sdb"])


# -- the action over real SSH, the cluster answering from the captures --------------------------------

REPLAY = """#!/bin/sh
# Answers "ceph ARGS -f json" from captured files: $1 is the directory of answers.
dir=$1; shift
echo "$*" >> "$dir/calls"
key=$(printf '%s' "$*" | tr ' ' '_')
if [ -f "$dir/$key.rc" ]; then cat "$dir/$key.err" >&2; exit "$(cat "$dir/$key.rc")"; fi
if [ -f "$dir/$key" ]; then cat "$dir/$key"; exit 0; fi
echo "no answer for: $*" >&2; exit 22
"""


class Cluster1:
    """A directory of answers for one cluster, served by the REPLAY script over SSH."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "answers"
        self.dir.mkdir()
        self.script = root / "ceph-replay"
        self.script.write_text(REPLAY)
        self.script.chmod(0o755)

    def answer(self, args: str, text: str) -> None:
        (self.dir / f"{args.replace(' ', '_')}_-f_json").write_text(text)

    def fail(self, args: str, rc: int, stderr: str) -> None:
        key = f"{args.replace(' ', '_')}_-f_json"
        (self.dir / f"{key}.rc").write_text(str(rc))
        (self.dir / f"{key}.err").write_text(stderr)

    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def pool() -> Iterator[ConnectionPool]:
    p = ConnectionPool()
    yield p
    p.close_all()


@pytest.fixture
def answers(tmp_path: Path) -> Cluster1:
    c = Cluster1(tmp_path)
    c.answer("osd tree", (SAMPLES / "osd_tree_with_unplaced_bluestore.json").read_text())
    for meta in sample("osd_metadata_all.json"):
        c.answer(f"osd metadata {meta['id']}", json.dumps(meta))
    enoent = (SAMPLES / "osd_metadata_42_nonexistent.stdout-rc-stderr.txt").read_text().strip().splitlines()
    assert enoent[0] == "rc=2"
    c.fail("osd metadata 42", 2, enoent[1])
    c.answer("device ls", (SAMPLES / "device_ls.json").read_text())
    return c


def make_ctx(sshd: Sshd, pool: ConnectionPool, answers: Cluster1, *, dry_run: bool = False,
             node2_disks: tuple[Disk, ...] = ()) -> ActionContext:
    hosts = {
        name: Host(name, address="127.0.0.1", port=sshd.port, user=sshd.user, cluster="lab",
                   disks=node2_disks if name == "node2" else ())
        for name in ("node1", "node2", "node3", "node4")
    }
    inv = Inventory(
        hosts=hosts,
        clusters={"lab": Cluster("lab", admin_host="node1", ceph=(str(answers.script), str(answers.dir)))},
    )
    log = ListLog()
    ctx = ActionContext(run_id="run-7", step_id="disks", attempt=1, dry_run=dry_run, log=log, inventory=inv)
    ctx.ssh = SSHToolkit(
        SSHSettings(known_hosts=sshd.known_hosts, key_file=sshd.client_key, use_agent=False, connect_timeout=5),
        inv.host, log=log, dry_run=dry_run, would=ctx.would, pool=pool,
    )
    return ctx


def test_a_memstore_host_falls_back_to_the_inventory_disks(sshd: Sshd, pool: ConnectionPool, answers: Cluster1) -> None:
    disks = (Disk("/dev/lab/node2-a", slot="1"), Disk("/dev/lab/node2-b", slot="2", serial="SN-B"))
    ctx = make_ctx(sshd, pool, answers, dry_run=True, node2_disks=disks)
    result = cd.disks_of(ctx, cluster="lab", host="node2")

    assert answers.calls() == [
        "osd tree -f json", "osd metadata 2 -f json", "osd metadata 3 -f json", "device ls -f json",
    ]
    assert result["unknown_osds"] == [2, 3]
    assert [(r["osd"], r["path"], r["slot"], r["serial"], r["source"]) for r in result["disks"]] == [
        (None, "/dev/lab/node2-a", "1", None, "inventory"),
        (None, "/dev/lab/node2-b", "2", "SN-B", "inventory"),
    ]
    assert result["notes"] == [
        "Ceph reports no disk for osd.2 (memstore keeps its data in RAM)",
        "Ceph reports no disk for osd.3 (memstore keeps its data in RAM)",
        "the disks of osd.2, osd.3 are not known to Ceph; the inventory lists 2 disk(s) for node2",
    ]
    assert [o["objectstore"] for o in result["osds"]] == ["memstore", "memstore"]
    text = "\n".join(m for _, m in ctx.log.lines)  # type: ignore[attr-defined]
    assert "2 disk(s) for node2:" in text and "/dev/lab/node2-b  2" in text


def test_named_osds_outside_any_host_bucket(sshd: Sshd, pool: ConnectionPool, answers: Cluster1) -> None:
    documented = sample("osd_metadata_8_documented_format_lvm_db.json")
    answers.answer("osd metadata 8", json.dumps(documented))
    answers.fail("device ls", 2, "Error ENOTSUP: mgr is unavailable")
    disks = (Disk("/dev/disk/by-id/scsi-ZC1A2B3C", slot="7", serial="ZC1A2B3C"),)
    ctx = make_ctx(sshd, pool, answers, node2_disks=disks)

    result = cd.disks_of(ctx, cluster="lab", osds=[8, 42])

    sdc = next(r for r in result["disks"] if r["path"] == "/dev/sdc")
    assert (sdc["host"], sdc["slot"], sdc["serial"], sdc["by_path"]) == ("node2", "7", "ZC1A2B3C", SDC_BY_PATH)
    assert result["unknown_osds"] == [42]
    assert result["notes"][:2] == [
        "'ceph device ls' failed (is the mgr up?): device ids come from the OSD metadata only",
        "no metadata for osd.42 (never booted, or purged): its disk is unknown to Ceph",
    ]


def test_a_failing_metadata_read_is_not_taken_for_a_missing_osd(
    sshd: Sshd, pool: ConnectionPool, answers: Cluster1
) -> None:
    answers.fail("osd metadata 3", 110, "Error ETIMEDOUT: timed out")
    with pytest.raises(CommandFailed, match="ETIMEDOUT"):
        cd.disks_of(make_ctx(sshd, pool, answers), cluster="lab", osds=[3])


def test_refusals(sshd: Sshd, pool: ConnectionPool, answers: Cluster1) -> None:
    ctx = make_ctx(sshd, pool, answers)
    with pytest.raises(ActionError, match="either 'host' or 'osds'"):
        cd.disks_of(ctx, cluster="lab")
    with pytest.raises(ActionError, match="no CRUSH host bucket 'node9'"):
        cd.disks_of(ctx, cluster="lab", host="node9")
    assert shlex.split(answers.calls()[-1]) == ["osd", "tree", "-f", "json"]
