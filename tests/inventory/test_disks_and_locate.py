"""Per-disk slot/serial/model in a host's ``devices`` and the optional locate LED commands."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

import pytest

from engine.errors import InventoryError, ValidationError
from inventory import Cluster, Host, Inventory, parse_inventory
from inventory.model import Disk, placeholders_of, render_command

from .paths import EXAMPLE


def parse(text: str) -> Inventory:
    return parse_inventory(dedent(text).lstrip("\n"), "inv.yaml", base_dir=Path("/etc/hotswap"))


def issues(text: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        parse(text)
    return [str(i) for i in e.value.issues]


def test_devices_mix_paths_and_mappings_with_slot_serial_model() -> None:
    inv = parse("""
        clusters:
          lab:
            admin_host: node1
            commands:
              locate_on: [ledctl, "locate={device}"]
              locate_off: [ledctl, "locate_off={device}"]
        hosts:
          node1:
            address: 10.0.0.1
            cluster: lab
            devices:
              - /dev/sdb
              - {path: /dev/sdc, slot: 3, serial: "0042ZX", model: ST4000NM0035}
              - path: /dev/disk/by-id/wwn-0x5000c500a1b2c3d4
                slot: front-07
            commands:
              locate_on: [storcli, "/c0/e252/s{slot}", start, locate]
    """)
    h = inv.host("node1")
    assert h.devices == ("/dev/sdb", "/dev/sdc", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4")
    assert h.disks == (
        Disk("/dev/sdb"),
        Disk("/dev/sdc", slot="3", serial="0042ZX", model="ST4000NM0035"),
        Disk("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", slot="front-07"),
    )
    assert h.disk("/dev/sdc") == Disk("/dev/sdc", slot="3", serial="0042ZX", model="ST4000NM0035")
    assert h.disk("/dev/sdz") is None
    assert inv.host_command("node1", "locate_on") == ("storcli", "/c0/e252/s{slot}", "start", "locate")
    assert inv.host_command("node1", "locate_off") == ("ledctl", "locate_off={device}")
    ctx = inv.as_template_context()["hosts"]["node1"]
    assert ctx["disks"][1] == {"path": "/dev/sdc", "slot": "3", "serial": "0042ZX", "model": "ST4000NM0035"}
    assert ctx["commands"] == {"locate_on": ["storcli", "/c0/e252/s{slot}", "start", "locate"]}
    assert json.loads(json.dumps(inv.as_dict()))["hosts"]["node1"]["disks"][0]["path"] == "/dev/sdb"


def test_no_locate_command_anywhere_is_none() -> None:
    inv = parse("""
        clusters:
          lab: {admin_host: node1}
        hosts:
          node1: {address: 10.0.0.1, cluster: lab}
          loose: {address: 10.0.0.2}
    """)
    assert inv.host_command("node1", "locate_on") is None
    assert inv.host_command("loose", "locate_off") is None
    assert inv.host_command("node1", "osd_stop") == ("systemctl", "stop", "ceph-osd@{id}")


def test_disk_entries_are_validated_in_place() -> None:
    assert issues("""
        hosts:
          node1:
            address: 10.0.0.1
            devices:
              - {slot: 2}
              - {path: sdc}
              - {path: /dev/sdd, serial: 0123, bay: 4}
              - 7
              - {path: /dev/sde, slot: true, model: ""}
              - /dev/sdf
              - {path: /dev/sdf}
            commands:
              locate_on: [ledctl, "locate={dev}"]
              locate_off: ledctl off
    """) == [
        "inv.yaml:5:9: host 'node1': devices[0]: missing required key 'path' (the device path, like /dev/sdb)",
        "inv.yaml:6:10: host 'node1': devices[1]: path must be an absolute device path like /dev/sdb, not 'sdc'",
        "inv.yaml:7:26: host 'node1': devices[2]: serial must be a string, not the number 83: quote it "
        "(YAML reads unquoted digits as a number and may change them)",
        "inv.yaml:7:40: host 'node1': devices[2]: unknown key 'bay'; allowed keys are model, path, serial, slot",
        "inv.yaml:8:9: host 'node1': devices[3] must be a device path or a mapping with path, slot, serial, "
        "model, not the number 7",
        "inv.yaml:9:26: host 'node1': devices[4]: slot must be a non-empty string (the bay or slot label, "
        "e.g. 3 or \"front-07\"), not the boolean true",
        "inv.yaml:9:38: host 'node1': devices[4]: model must be a non-empty string, not the string ''",
        "inv.yaml:11:9: host 'node1': devices lists '/dev/sdf' twice; remove one",
        "inv.yaml:13:27: host 'node1': commands: locate_on[1] uses unknown placeholder {dev} "
        "(did you mean 'device'?); placeholders are {id}, {device}, {host}, {slot}, {serial}",
        "inv.yaml:14:7: host 'node1': commands: locate_off must be a non-empty list of strings (an argv, "
        "e.g. [systemctl, stop, \"ceph-osd@{id}\"]), not the string 'ledctl off'",
    ]


def test_devices_must_be_a_list() -> None:
    assert issues("""
        hosts:
          node1: {address: 10.0.0.1, devices: /dev/sdb}
    """) == [
        "inv.yaml:2:30: host 'node1': devices must be a list of device paths (or of mappings with path, "
        "slot, serial, model), not the string '/dev/sdb'",
    ]


def test_a_host_built_in_code_gets_one_disk_per_device_path() -> None:
    h = Host(name="n", address="10.0.0.1", devices=("/dev/sdb", "/dev/sdc"))
    assert h.disks == (Disk("/dev/sdb"), Disk("/dev/sdc"))
    h2 = Host(name="n", address="10.0.0.1", disks=(Disk("/dev/sdb", slot="1"),))
    assert h2.devices == ("/dev/sdb",)


def test_render_command_substitutes_once_and_names_what_is_missing() -> None:
    template = ("storcli", "/c0/e252/s{slot}", "start", "locate", "--id={serial}")
    assert placeholders_of(template) == ["slot", "serial"]
    assert render_command("host 'n1'", "locate_on", template, {"slot": "{serial}", "serial": "$(reboot)"}) == [
        "storcli", "/c0/e252/s{serial}", "start", "locate", "--id=$(reboot)",
    ]
    with pytest.raises(InventoryError) as e:
        render_command("host 'n1'", "locate_on", template, {"serial": "X"})
    assert str(e.value) == "command 'locate_on' of host 'n1' needs a value for {slot}"
    c = Cluster(name="lab", admin_host="n1", commands={"locate_on": ("ledctl", "locate={device}")})
    assert c.command("locate_on", device="/dev/sdb") == ["ledctl", "locate=/dev/sdb"]


def test_example_configures_locate_commands() -> None:
    from inventory import load_inventory

    inv = load_inventory(EXAMPLE)
    assert inv.host_command("ams-ceph1", "locate_on") == ("ledctl", "locate={device}")
    assert inv.host_command("ams-ceph1", "locate_off") == ("ledctl", "locate_off={device}")
    slots = {d.path: d.slot for d in inv.host("par-osd1").disks}
    assert slots["/dev/sdb"] == "1"
