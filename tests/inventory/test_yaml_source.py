import json
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InventoryError, ValidationError
from inventory import (
    Inventory,
    InventorySource,
    SSHDefaults,
    YamlInventorySource,
    load_inventory,
    parse_inventory,
)

from .paths import EXAMPLE

BASE = Path("/etc/hotswap")
MISSING_ADDRESS = "missing required key 'address' (the IP address or DNS name to connect to)"


def parse(text: str) -> Inventory:
    return parse_inventory(dedent(text).lstrip("\n"), "inv.yaml", base_dir=BASE)


def issues(text: str | bytes) -> list[str]:
    doc = text if isinstance(text, bytes) else dedent(text).lstrip("\n")
    with pytest.raises(ValidationError) as e:
        parse_inventory(doc, "inv.yaml", base_dir=BASE)
    return [str(i) for i in e.value.issues]


# --- valid documents -------------------------------------------------------------------------------------


def test_example_loads() -> None:
    inv = load_inventory(EXAMPLE)
    assert isinstance(YamlInventorySource(EXAMPLE), InventorySource)
    assert inv.source == str(EXAMPLE)
    assert sorted(inv.datacenters) == ["ams2", "par1"]
    assert sorted(inv.clusters) == ["backup-ams", "prod-par"]
    assert sorted(inv.racks) == ["ams2-c07", "par1-r01", "par1-r02"]
    assert len(inv.hosts) == 8
    ams3 = inv.host("ams-ceph3")
    assert (ams3.address, ams3.port, ams3.jump, ams3.serial) == ("10.20.0.13", 2222, "bastion-ams", "0004215")
    assert ams3.datacenter == "ams2"  # from its rack
    assert inv.ssh == SSHDefaults(
        user="hotswap", port=22, known_hosts=str(EXAMPLE.parent / "known_hosts"),
        key_file=str(EXAMPLE.parent / "id_ed25519"), trust_on_first_use=False,
        connect_timeout=10, command_timeout=600, sudo=True,
    )
    backup = inv.cluster("backup-ams")
    assert backup.ceph == ("cephadm", "shell", "--", "ceph")
    assert backup.command("osd_zap", device="/dev/sdc")[-1] == "/dev/sdc"
    assert inv.cluster("prod-par").monitoring["alertmanager_url"] == "https://alertmanager.par1.example.com"
    assert inv.datacenter("ams2").notify["ticket_api"] == "https://tickets.ams2.example.net/api/tickets"


def test_format_doc_sample_loads() -> None:
    """The sample in docs/inventory-format.md (copied here) must stay valid."""
    inv = parse("""
        ssh:
          user: root
          port: 22
          known_hosts: known_hosts
          key_file: id_ed25519
          trust_on_first_use: false
          connect_timeout: 10
          command_timeout: 600
          sudo: false
        datacenters:
          par1:
            title: Paris 1
            contact: dc-ops@example.com
            notify:
              webhook: http://127.0.0.1:8025/hooks/dc
              email: dc-ops@example.com
              smtp: 127.0.0.1:2525
              ticket_api: http://127.0.0.1:8025/api/tickets
        racks:
          r1: {datacenter: par1}
        clusters:
          lab:
            admin_host: node1
            datacenter: par1
            ceph: [ceph, --connect-timeout, "10"]
            monitoring:
              alertmanager_url: http://127.0.0.1:9093
            chat_webhook: http://127.0.0.1:8025/hooks/chat
            max_hosts_down: 1
            commands:
              osd_stop: [systemctl, stop, "ceph-osd@{id}"]
              osd_start: [systemctl, start, "ceph-osd@{id}"]
              osd_create: [ceph-volume, lvm, create, --osd-id, "{id}", --data, "{device}"]
              osd_zap: [ceph-volume, lvm, zap, --destroy, "{device}"]
        hosts:
          bastion:
            address: 127.0.0.1
            port: 2200
          node1:
            address: 127.0.0.1
            port: 2201
            user: root
            jump: bastion
            cluster: lab
            datacenter: par1
            rack: r1
            roles: [mon, osd]
            serial: SN-0001
            devices: [/dev/sdb, /dev/sdc]
            extra: {}
    """)
    assert inv.host("node1").devices == ("/dev/sdb", "/dev/sdc")
    assert inv.ssh.known_hosts == "/etc/hotswap/known_hosts"
    assert inv.cluster("lab").ceph == ("ceph", "--connect-timeout", "10")


def test_minimal_document_gets_defaults() -> None:
    inv = parse("""
        hosts:
          n1: {address: 10.0.0.1}
        clusters:
          c: {admin_host: n1}
    """)
    assert inv.ssh == SSHDefaults()
    h = inv.host("n1")
    assert (h.port, h.user, h.jump, h.cluster, h.roles, h.devices, dict(h.extra)) == (
        None, None, None, None, (), (), {},
    )
    c = inv.cluster("c")
    assert (c.ceph, c.max_hosts_down, c.chat_webhook, c.datacenter) == (("ceph",), 1, None, None)
    assert c.command("osd_stop", id="0") == ["systemctl", "stop", "ceph-osd@0"]


def test_empty_sections_and_entries_are_allowed_where_nothing_is_required() -> None:
    inv = parse("""
        ssh:
        datacenters:
          par1:
        racks:
          r1:
        hosts:
    """)
    assert inv.datacenter("par1").title == "par1"
    assert inv.racks["r1"].datacenter is None
    assert inv.hosts == {}


def test_numbers_as_names_and_references() -> None:
    inv = parse("""
        racks:
          12: {}
        hosts:
          n1: {address: 10.0.0.1, rack: 12}
    """)
    assert inv.host("n1").rack == "12"


def test_absolute_and_home_paths_are_kept(tmp_path: Path) -> None:
    inv = parse("""
        ssh: {known_hosts: /var/lib/hotswap/known_hosts, key_file: ~/.ssh/id_ed25519}
    """)
    assert inv.ssh.known_hosts == "/var/lib/hotswap/known_hosts"
    assert inv.ssh.key_file == str(Path.home() / ".ssh/id_ed25519")


def test_extra_is_free_form_and_dates_become_iso_text() -> None:
    inv = parse("""
        hosts:
          n1:
            address: 10.0.0.1
            extra:
              warranty_until: 2027-03-31
              bmc: {url: "https://x", ports: [623]}
              checked: 2024-01-02T03:04:05Z
    """)
    ctx = inv.as_template_context()["hosts"]["n1"]["extra"]
    assert ctx == {
        "warranty_until": "2027-03-31", "bmc": {"url": "https://x", "ports": [623]},
        "checked": "2024-01-02T03:04:05+00:00",
    }
    assert json.loads(json.dumps(inv.as_dict()))["hosts"]["n1"]["extra"]["warranty_until"] == "2027-03-31"


def test_binary_values_are_refused_in_extra() -> None:
    assert issues("""
        hosts:
          n1:
            address: 10.0.0.1
            extra:
              blobs: [ok, !!binary aGk=]
    """) == [
        "inv.yaml:5:19: host 'n1': extra.blobs[1] is binary (!!binary); use a plain string",
    ]


def test_relative_paths_resolve_against_the_file_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "inv.yaml").write_text("ssh: {known_hosts: keys/known_hosts, key_file: id}\n")
    monkeypatch.chdir(tmp_path)
    inv = load_inventory("site/inv.yaml")
    assert inv.ssh.known_hosts == str(tmp_path / "site" / "keys" / "known_hosts")
    assert inv.ssh.key_file == str(tmp_path / "site" / "id")
    assert inv.source == "site/inv.yaml"


def test_source_reads_the_file_again_on_every_load(tmp_path: Path) -> None:
    f = tmp_path / "inv.yaml"
    f.write_text("hosts: {a: {address: 10.0.0.1}}\n")
    source = YamlInventorySource(f)
    assert list(source.load().hosts) == ["a"]
    f.write_text("hosts: {b: {address: 10.0.0.1}}\n")
    assert list(source.load().hosts) == ["b"]


# --- the file itself -------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as e:
        load_inventory(tmp_path / "nope.yaml")
    assert str(e.value) == (
        f"inventory file {tmp_path / 'nope.yaml'} does not exist: check the path "
        "(see docs/inventory-format.md for the format)"
    )


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="is a directory: name the YAML file"):
        load_inventory(tmp_path)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert issues(text) == [
        "inv.yaml: the inventory is empty: it needs at least a 'hosts' mapping (see docs/inventory-format.md)"
    ]


@pytest.mark.parametrize(
    ("text", "found"),
    [("- a\n- b\n", "a list"), ("hello\n", "the string 'hello'"), ("42\n", "the number 42")],
)
def test_file_that_is_not_a_mapping(text: str, found: str) -> None:
    assert issues(text) == [
        f"inv.yaml:1:1: the inventory must be a mapping with keys clusters, datacenters, hosts, racks, ssh, "
        f"not {found}"
    ]


def test_non_utf8_file(tmp_path: Path) -> None:
    f = tmp_path / "inv.yaml"
    f.write_bytes(b"hosts:\n  n\xe9ud: {address: 10.0.0.1}\n")
    with pytest.raises(ValidationError) as e:
        load_inventory(f)
    assert str(e.value) == f"{f}: not UTF-8 (byte 10): save the file as UTF-8"


def test_yaml_syntax_error() -> None:
    assert issues("hosts:\n  a: {address: 10.0.0.1\n  b: 2\n") == [
        "inv.yaml:3:4: YAML syntax error: expected ',' or '}', but got ':'"
    ]


def test_duplicate_key_from_loader() -> None:
    assert issues("hosts:\n  a: {address: 10.0.0.1}\n  a: {address: 10.0.0.2}\n") == [
        "inv.yaml:3:3: duplicate key 'a'"
    ]


# --- validation: every issue, with file:line:column ------------------------------------------------------


def test_unknown_top_level_key() -> None:
    assert issues("""
        hosts: {}
        host: {}
        groups: {}
    """) == [
        "inv.yaml:2:1: inventory: unknown key 'host' (did you mean 'hosts'?); "
        "allowed keys are clusters, datacenters, hosts, racks, ssh",
        "inv.yaml:3:1: inventory: unknown key 'groups'; "
        "allowed keys are clusters, datacenters, hosts, racks, ssh",
    ]


def test_unknown_keys_inside_entries_suggest_close_matches() -> None:
    assert issues("""
        ssh:
          usr: admin
        datacenters:
          par1:
            titel: Paris
            notify: {webhok: http://x, email: a@b}
        racks:
          r1: {datacenter: par1, dc: par1}
        clusters:
          lab:
            admin_host: node1
            comands: {}
        hosts:
          node1:
            adress: 10.0.0.1
            address: 10.0.0.1
    """) == [
        "inv.yaml:2:3: ssh: unknown key 'usr' (did you mean 'user'?); allowed keys are command_timeout, "
        "connect_timeout, key_file, known_hosts, port, sudo, trust_on_first_use, user",
        "inv.yaml:5:5: datacenter 'par1': unknown key 'titel' (did you mean 'title'?); "
        "allowed keys are contact, extra, notify, title",
        "inv.yaml:6:14: datacenter 'par1': notify: unknown key 'webhok' (did you mean 'webhook'?); "
        "allowed keys are email, smtp, ticket_api, webhook",
        "inv.yaml:8:26: rack 'r1': unknown key 'dc'; allowed keys are datacenter",
        "inv.yaml:12:5: cluster 'lab': unknown key 'comands' (did you mean 'commands'?); allowed keys are "
        "admin_host, ceph, chat_webhook, commands, datacenter, extra, max_hosts_down, monitoring",
        "inv.yaml:15:5: host 'node1': unknown key 'adress' (did you mean 'address'?); allowed keys are "
        "address, cluster, commands, datacenter, devices, extra, jump, port, rack, roles, serial, user",
    ]


def test_wrong_types_in_ssh() -> None:
    assert issues("""
        ssh:
          port: "22"
          connect_timeout: -1
          command_timeout: 0
          sudo: "no"
          trust_on_first_use: 1
          user: 3
          known_hosts: ""
    """) == [
        "inv.yaml:2:3: ssh: port must be an integer from 1 to 65535, not the string '22': remove the quotes",
        "inv.yaml:3:3: ssh: connect_timeout must be a positive number of seconds, not the number -1",
        "inv.yaml:4:3: ssh: command_timeout must be a positive number of seconds, not the number 0",
        "inv.yaml:5:3: ssh: sudo must be true or false, not the string 'no'",
        "inv.yaml:6:3: ssh: trust_on_first_use must be true or false, not the number 1",
        "inv.yaml:7:3: ssh: user must be a non-empty string, not the number 3",
        "inv.yaml:8:3: ssh: known_hosts must be a non-empty string, not the string ''",
    ]


def test_wrong_types_in_hosts() -> None:
    assert issues("""
        hosts:
          node1:
            address: 10.0.0.1
            port: 70000
            roles: osd
            devices: [sdb, /dev/sdc, /dev/sdc]
            serial: 0123
            extra: [1]
          node2:
            address: [10.0.0.2]
            port: true
            roles: [mon, 5, mon]
          node3:
            address: "10.0.0.3 "
            port: 0
            user: ""
            jump: [node1]
    """) == [
        "inv.yaml:4:5: host 'node1': port must be an integer from 1 to 65535, not the number 70000",
        "inv.yaml:5:5: host 'node1': roles must be a list of role names, not the string 'osd'",
        "inv.yaml:6:15: host 'node1': devices[0] must be an absolute device path like /dev/sdb, not 'sdb'",
        "inv.yaml:6:30: host 'node1': devices lists '/dev/sdc' twice; remove one",
        "inv.yaml:7:5: host 'node1': serial must be a string, not the number 83: quote it "
        "(YAML reads unquoted digits as a number and may change them)",
        "inv.yaml:8:5: host 'node1': extra must be a mapping (free-form), not a list",
        "inv.yaml:10:5: host 'node2': address must be a non-empty string (an IP address or DNS name), "
        "not a list",
        "inv.yaml:11:5: host 'node2': port must be an integer from 1 to 65535, not the boolean true",
        "inv.yaml:12:18: host 'node2': roles[1] must be a non-empty string, not the number 5",
        "inv.yaml:12:21: host 'node2': roles lists 'mon' twice; remove one",
        "inv.yaml:14:5: host 'node3': address '10.0.0.3 ' contains whitespace",
        "inv.yaml:15:5: host 'node3': port must be an integer from 1 to 65535, not the number 0",
        "inv.yaml:16:5: host 'node3': user must be a non-empty string, not the string ''",
        "inv.yaml:17:5: host 'node3': jump must be a non-empty string, not a list",
    ]


def test_wrong_types_in_clusters_and_datacenters() -> None:
    assert issues("""
        datacenters:
          par1:
            notify: [webhook]
            contact: 5
        clusters:
          lab:
            admin_host: node1
            ceph: ceph
            max_hosts_down: 0
            monitoring: {alertmanager_url: 9093}
            chat_webhook: {url: x}
            extra: x
        hosts:
          node1: {address: 10.0.0.1}
    """) == [
        "inv.yaml:3:5: datacenter 'par1': notify must be a mapping of names to strings, not a list",
        "inv.yaml:4:5: datacenter 'par1': contact must be a non-empty string, not the number 5",
        "inv.yaml:8:5: cluster 'lab': ceph must be a non-empty list of strings (the argv prefix of ceph CLI "
        "calls), not the string 'ceph'",
        "inv.yaml:9:5: cluster 'lab': max_hosts_down must be an integer of at least 1, not the number 0",
        "inv.yaml:10:18: cluster 'lab': monitoring.alertmanager_url must be a non-empty string, "
        "not the number 9093",
        "inv.yaml:11:5: cluster 'lab': chat_webhook must be a non-empty string, not a mapping",
        "inv.yaml:12:5: cluster 'lab': extra must be a mapping (free-form), not the string 'x'",
    ]


def test_commands_must_be_lists_of_strings() -> None:
    argv = 'a non-empty list of strings (an argv, e.g. [systemctl, stop, "ceph-osd@{id}"])'
    assert issues("""
        clusters:
          lab:
            admin_host: node1
            commands:
              osd_stop: systemctl stop ceph-osd@{id}
              osd_start: [systemctl, start, 12]
              osd_zap: []
              osd_create: [ceph-volume, "{dev}"]
              bad-name: [x]
        hosts:
          node1: {address: 10.0.0.1}
    """) == [
        f"inv.yaml:5:7: cluster 'lab': commands: osd_stop must be {argv}, "
        "not the string 'systemctl stop ceph-osd@{id}'",
        "inv.yaml:6:37: cluster 'lab': commands: osd_start[2] must be a non-empty string, not the number 12",
        f"inv.yaml:7:7: cluster 'lab': commands: osd_zap must be {argv}, not an empty list",
        "inv.yaml:8:33: cluster 'lab': commands: osd_create[1] uses unknown placeholder {dev} "
        "(did you mean 'device'?); placeholders are {id}, {device}, {host}, {slot}, {serial}",
        "inv.yaml:9:7: cluster 'lab': command name 'bad-name' is not valid: use letters, digits and '_'",
    ]


def test_commands_must_be_a_mapping() -> None:
    assert issues("""
        clusters:
          lab: {admin_host: node1, commands: [osd_stop]}
        hosts:
          node1: {address: 10.0.0.1}
    """) == [
        "inv.yaml:2:28: cluster 'lab': commands must be a mapping of command names to argv lists, not a list",
    ]


def test_missing_required_fields() -> None:
    assert issues("""
        clusters:
          lab: {datacenter: null}
          lab2:
        hosts:
          node1: {port: 2201}
          node2:
    """) == [
        "inv.yaml:2:3: cluster 'lab': missing required key 'admin_host' (the host of this inventory to run "
        "the ceph CLI on)",
        "inv.yaml:3:3: cluster 'lab2': missing required key 'admin_host' (the host of this inventory to run "
        "the ceph CLI on)",
        f"inv.yaml:5:3: host 'node1': {MISSING_ADDRESS}",
        f"inv.yaml:6:3: host 'node2': {MISSING_ADDRESS}",
    ]


def test_sections_and_entries_must_be_mappings() -> None:
    assert issues("""
        hosts: [a, b]
        clusters: 3
        racks:
          r1: [par1]
        datacenters:
          par1: Paris
        ssh: true
    """) == [
        "inv.yaml:1:1: 'hosts' must be a mapping, not a list",
        "inv.yaml:2:1: 'clusters' must be a mapping, not the number 3",
        "inv.yaml:4:3: rack 'r1' must be a mapping, not a list",
        "inv.yaml:6:3: datacenter 'par1' must be a mapping, not the string 'Paris'",
        "inv.yaml:7:1: 'ssh' must be a mapping, not the boolean true",
    ]


def test_invalid_names() -> None:
    assert issues("""
        hosts:
          "bad name": {address: 10.0.0.3}
          -lead: {address: 10.0.0.4}
    """) == [
        "inv.yaml:2:3: host name 'bad name' is not valid: use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit",
        "inv.yaml:3:3: host name '-lead' is not valid: use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit",
    ]


def test_references_to_undefined_entries_name_them_and_suggest() -> None:
    assert issues("""
        datacenters: {par1: {}}
        racks: {r1: {datacenter: par2}}
        clusters:
          lab: {admin_host: node1, datacenter: pari}
        hosts:
          node1: {address: 10.0.0.1, cluster: lba, rack: r11}
          node2: {address: 10.0.0.2, jump: bastoin, datacenter: par3}
          bastion: {address: 10.0.0.9}
    """) == [
        "inv.yaml:2:14: rack 'r1': datacenter 'par2' is not a defined datacenter (did you mean 'par1'?); "
        "define it under 'datacenters'",
        "inv.yaml:4:28: cluster 'lab': datacenter 'pari' is not a defined datacenter (did you mean 'par1'?); "
        "define it under 'datacenters'",
        "inv.yaml:6:30: host 'node1': cluster 'lba' is not a defined cluster (did you mean 'lab'?); "
        "define it under 'clusters'",
        "inv.yaml:6:44: host 'node1': rack 'r11' is not a defined rack (did you mean 'r1'?); "
        "define it under 'racks'",
        "inv.yaml:7:30: host 'node2': jump 'bastoin' is not a defined host (did you mean 'bastion'?); "
        "define it under 'hosts'",
        "inv.yaml:7:45: host 'node2': datacenter 'par3' is not a defined datacenter (did you mean 'par1'?); "
        "define it under 'datacenters'",
    ]


def test_reference_with_nothing_close() -> None:
    assert issues("""
        hosts:
          node1: {address: 10.0.0.1, cluster: zebra}
    """) == [
        "inv.yaml:2:30: host 'node1': cluster 'zebra' is not a defined cluster; define it under 'clusters'",
    ]


def test_admin_host_must_be_a_defined_host() -> None:
    assert issues("""
        clusters:
          lab: {admin_host: nod1}
        hosts:
          node1: {address: 10.0.0.1}
          node2: {address: 10.0.0.2}
    """) == [
        "inv.yaml:2:9: cluster 'lab': admin_host 'nod1' is not a defined host (did you mean 'node1' or "
        "'node2'?); define it under 'hosts'",
    ]


def test_jump_cycles() -> None:
    assert issues("""
        hosts:
          a: {address: 10.0.0.1, jump: b}
          b: {address: 10.0.0.2, jump: c}
          c: {address: 10.0.0.3, jump: a}
          d: {address: 10.0.0.4, jump: a}
          x: {address: 10.0.0.5, jump: y}
          y: {address: 10.0.0.6, jump: x}
          self: {address: 10.0.0.7, jump: self}
    """) == [
        "inv.yaml:2:26: host 'a': jump hosts form a cycle a -> b -> c -> a; "
        "one host of the chain must be reachable without a jump",
        "inv.yaml:6:26: host 'x': jump hosts form a cycle x -> y -> x; "
        "one host of the chain must be reachable without a jump",
        "inv.yaml:8:29: host 'self': jump names the host itself",
    ]


def test_jump_chain_without_cycle_is_fine() -> None:
    inv = parse("""
        hosts:
          edge: {address: 203.0.113.1}
          inner: {address: 10.0.0.1, jump: edge}
          deep: {address: 10.1.0.1, jump: inner}
    """)
    assert inv.host("deep").jump == "inner"


def test_duplicate_address_and_port() -> None:
    assert issues("""
        ssh: {port: 2222}
        hosts:
          a: {address: 10.0.0.1}
          b: {address: 10.0.0.1, port: 2222}
          c: {address: 10.0.0.1, port: 22}
          d: {address: HOST.example.com}
          e: {address: host.example.com}
    """) == [
        "inv.yaml:4:7: host 'b': same address and port as host 'a' (10.0.0.1:2222); "
        "each host needs its own address or port",
        "inv.yaml:7:7: host 'e': same address and port as host 'd' (host.example.com:2222); "
        "each host needs its own address or port",
    ]


def test_same_private_address_behind_different_jump_hosts_is_allowed() -> None:
    inv = parse("""
        hosts:
          bastion1: {address: 203.0.113.1}
          bastion2: {address: 203.0.113.2}
          a: {address: 10.0.0.1, jump: bastion1}
          b: {address: 10.0.0.1, jump: bastion2}
    """)
    assert len(inv.hosts) == 4
    assert issues("""
        hosts:
          bastion1: {address: 203.0.113.1}
          a: {address: 10.0.0.1, jump: bastion1}
          b: {address: 10.0.0.1, jump: bastion1}
    """) == [
        "inv.yaml:4:7: host 'b': same address and port as host 'a' (10.0.0.1:22 via 'bastion1'); "
        "each host needs its own address or port",
    ]


def test_host_datacenter_must_match_its_rack() -> None:
    assert issues("""
        datacenters: {par1: {}, ams2: {}}
        racks: {r1: {datacenter: par1}}
        hosts:
          a: {address: 10.0.0.1, rack: r1, datacenter: ams2}
          b: {address: 10.0.0.2, rack: r1, datacenter: par1}
    """) == [
        "inv.yaml:4:36: host 'a': datacenter 'ams2' contradicts its rack 'r1', "
        "which is in datacenter 'par1'; fix one (or drop the host's datacenter)",
    ]


def test_all_issues_are_reported_together_in_file_order() -> None:
    found = issues("""
        hosts:
          b: {address: 10.0.0.1, port: x}
          a: {adress: 10.0.0.2}
        clusters:
          lab: {admin_host: zz}
        bogus: 1
    """)
    assert [f.split(": ", 1)[0] for f in found] == [
        "inv.yaml:2:26", "inv.yaml:3:3", "inv.yaml:3:7", "inv.yaml:5:9", "inv.yaml:6:1",
    ]


def test_validation_error_issues_carry_locations() -> None:
    with pytest.raises(ValidationError) as e:
        parse_inventory("hosts:\n  a: {port: 1}\n", "site.yaml")
    [issue] = e.value.issues
    assert issue.as_dict() == {
        "file": "site.yaml", "line": 2, "column": 3, "step": None,
        "message": f"host 'a': {MISSING_ADDRESS}",
    }


# --- robustness ------------------------------------------------------------------------------------------

_names = st.sampled_from(["a", "b", "node1", "lab", "par1", "r1", "x y", "12"])
_fields = st.sampled_from([
    "address", "port", "user", "jump", "cluster", "datacenter", "rack", "roles", "serial", "devices", "extra",
    "admin_host", "ceph", "commands", "monitoring", "notify", "osd_stop", "title", "max_hosts_down", "sudo",
    "connect_timeout", "known_hosts", "bogus",
])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False, allow_infinity=False),
    _names, st.sampled_from(["10.0.0.1", "/dev/sdb", "{id}", "{nope}", ""]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(_fields, _names), inner, max_size=4)
    ),
    max_leaves=12,
)
_documents = st.dictionaries(
    st.sampled_from(["ssh", "datacenters", "racks", "clusters", "hosts", "other"]),
    st.one_of(_values, st.dictionaries(_names, st.dictionaries(_fields, _values, max_size=5), max_size=4)),
    max_size=5,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_any_document_either_loads_or_reports_located_issues(doc: dict[str, object]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        inv = parse_inventory(text, "fuzz.yaml", base_dir=BASE)
    except ValidationError as e:
        assert e.issues
        for issue in e.issues:
            assert issue.location is not None and issue.location.file == "fuzz.yaml"
            assert issue.message
        return
    inv.as_dict()
    inv.as_template_context()
    for cluster in inv.clusters.values():
        assert cluster.admin_host in inv.hosts
