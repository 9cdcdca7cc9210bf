import json
from types import MappingProxyType

import pytest

from engine.errors import InventoryError
from inventory import Cluster, Datacenter, Host, Inventory, Rack, SSHDefaults, load_inventory
from inventory.model import DEFAULT_COMMANDS

from .paths import EXAMPLE


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return load_inventory(EXAMPLE)


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


def test_select_without_filters_returns_all_hosts_sorted(inv: Inventory) -> None:
    assert names(inv.select()) == sorted(inv.hosts)
    assert len(inv.hosts) == 8


def test_select_by_cluster(inv: Inventory) -> None:
    assert names(inv.select(cluster="prod-par")) == ["par-mon1", "par-osd1", "par-osd2", "par-osd3"]
    assert inv.hosts_of_cluster("backup-ams") == inv.select(cluster="backup-ams")
    assert names(inv.hosts_of_cluster("backup-ams")) == ["ams-ceph1", "ams-ceph2", "ams-ceph3"]


def test_select_by_role(inv: Inventory) -> None:
    assert names(inv.select(role="mon")) == ["ams-ceph1", "ams-ceph2", "ams-ceph3", "par-mon1", "par-osd3"]
    assert inv.select(role="no-such-role") == []


def test_select_by_rack(inv: Inventory) -> None:
    assert names(inv.select(rack="par1-r02")) == ["par-osd2", "par-osd3"]


def test_select_by_datacenter_includes_hosts_placed_through_their_rack(inv: Inventory) -> None:
    assert names(inv.select(datacenter="ams2")) == ["ams-ceph1", "ams-ceph2", "ams-ceph3", "bastion-ams"]
    assert inv.host("par-osd1").datacenter == "par1"


def test_select_by_pattern(inv: Inventory) -> None:
    assert names(inv.select(pattern="par-osd*")) == ["par-osd1", "par-osd2", "par-osd3"]
    assert names(inv.select(pattern="*-ceph[12]")) == ["ams-ceph1", "ams-ceph2"]
    assert inv.select(pattern="PAR-*") == []


def test_select_combined_filters_all_apply(inv: Inventory) -> None:
    assert names(inv.select(cluster="prod-par", role="osd", rack="par1-r02")) == ["par-osd2", "par-osd3"]
    assert names(inv.select(cluster="prod-par", role="mon", pattern="*osd*")) == ["par-osd3"]
    assert names(inv.select(datacenter="par1", role="mgr")) == ["par-mon1"]
    assert inv.select(cluster="backup-ams", datacenter="par1") == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster": "prod-pa"}, "unknown cluster 'prod-pa' (did you mean 'prod-par'?)"),
        ({"rack": "par1-r3"}, "unknown rack 'par1-r3' (did you mean 'par1-r02' or 'par1-r01'?)"),
        ({"datacenter": "ams"}, "unknown datacenter 'ams' (did you mean 'ams2'?)"),
    ],
)
def test_select_refuses_undefined_names(inv: Inventory, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(InventoryError) as e:
        inv.select(**kwargs)
    assert str(e.value).startswith(message)


def test_host_lookup_suggests_close_matches(inv: Inventory) -> None:
    assert inv.host("par-osd2").address == "10.10.1.22"
    with pytest.raises(InventoryError) as e:
        inv.host("par-osd4")
    assert str(e.value) == (
        f"unknown host 'par-osd4' (did you mean 'par-osd3', 'par-osd2' or 'par-osd1'?): "
        f"the inventory {EXAMPLE} defines 8 host(s), see 'hotswap inventory'"
    )
    with pytest.raises(InventoryError, match=r"^unknown host 'zzz': the inventory"):
        inv.host("zzz")


def test_cluster_and_datacenter_lookup(inv: Inventory) -> None:
    assert inv.cluster("prod-par").admin_host == "par-mon1"
    assert inv.datacenter("par1").notify["smtp"] == "smtp.example.com:25"
    with pytest.raises(InventoryError, match=r"^unknown datacenter 'par2' \(did you mean 'par1'\?\)"):
        inv.datacenter("par2")
    with pytest.raises(InventoryError, match=r"^unknown cluster 'x': the inventory <empty> defines no "):
        Inventory.empty().cluster("x")


def test_empty_inventory() -> None:
    empty = Inventory.empty()
    assert empty.select() == []
    assert empty.ssh == SSHDefaults()
    assert empty.as_template_context() == {"hosts": {}, "clusters": {}, "datacenters": {}, "racks": {}}


def test_default_commands_substitute_id_and_device() -> None:
    c = Cluster(name="lab", admin_host="node1")
    assert c.command("osd_stop", id="3") == ["systemctl", "stop", "ceph-osd@3"]
    assert c.command("osd_start", id=12) == ["systemctl", "start", "ceph-osd@12"]
    assert c.command("osd_create", id="3", device="/dev/sdb") == [
        "ceph-volume", "lvm", "create", "--osd-id", "3", "--data", "/dev/sdb",
    ]
    assert c.command("osd_zap", device="/dev/sdc") == ["ceph-volume", "lvm", "zap", "--destroy", "/dev/sdc"]
    assert set(c.commands) == set(DEFAULT_COMMANDS)


def test_given_commands_override_defaults_and_add_new_ones() -> None:
    c = Cluster(
        name="lab", admin_host="node1",
        commands={
            "osd_stop": ("ceph", "orch", "daemon", "stop", "osd.{id}"),
            "locate": ("ledctl", "locate={device}"),
        },
    )
    assert c.command("osd_stop", id="7") == ["ceph", "orch", "daemon", "stop", "osd.7"]
    assert c.command("osd_start", id="7") == ["systemctl", "start", "ceph-osd@7"]
    assert c.command("locate", device="/dev/sdb", host="n1") == ["ledctl", "locate=/dev/sdb"]


def test_command_substitutes_every_occurrence_in_an_item_and_leaves_other_braces() -> None:
    c = Cluster(name="lab", admin_host="n", commands={"x": ("{host}:{device}:{host}", "{}", "{{id}}", "-")})
    assert c.command("x", host="n1", device="/dev/sdb", id="1") == ["n1:/dev/sdb:n1", "{}", "{1}", "-"]


def test_command_values_are_not_reinterpreted() -> None:
    c = Cluster(name="lab", admin_host="n", commands={"x": ("{device}", "{host}")})
    assert c.command("x", device="{host}", host="a b; rm -rf /") == ["{host}", "a b; rm -rf /"]


def test_command_errors() -> None:
    c = Cluster(name="lab", admin_host="node1")
    with pytest.raises(InventoryError) as e:
        c.command("osd_stp", id="1")
    assert str(e.value) == (
        "cluster 'lab' has no command 'osd_stp' (did you mean 'osd_stop', 'osd_start' or 'osd_zap'?): "
        "known commands are osd_create, osd_start, osd_stop, osd_zap"
    )
    with pytest.raises(InventoryError) as e:
        c.command("osd_create", id="1")
    assert str(e.value) == "command 'osd_create' of cluster 'lab' needs a value for {device}"
    with pytest.raises(InventoryError) as e:
        c.command("osd_stop", osd_id="1")
    assert str(e.value) == (
        "command 'osd_stop': unknown placeholder value(s) osd_id; commands take id, device, host, slot, serial"
    )


def test_command_returns_a_fresh_list() -> None:
    c = Cluster(name="lab", admin_host="n")
    c.command("osd_stop", id="1").append("--oops")
    assert c.command("osd_stop", id="1") == ["systemctl", "stop", "ceph-osd@1"]


def test_model_is_immutable() -> None:
    h = Host(name="n1", address="10.0.0.1", roles=["osd"], extra={"a": 1})  # type: ignore[arg-type]
    assert h.roles == ("osd",)
    assert isinstance(h.extra, MappingProxyType)
    with pytest.raises(AttributeError):
        h.address = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        h.extra["b"] = 2  # type: ignore[index]
    inv = Inventory(hosts={"n1": h})
    with pytest.raises(TypeError):
        inv.hosts["n2"] = h  # type: ignore[index]
    assert hash(h) == hash(Host(name="n1", address="10.0.0.1", roles=("osd",), extra={"a": 1}))


def test_datacenter_title_defaults_to_name() -> None:
    assert Datacenter(name="par1").title == "par1"
    assert Datacenter(name="par1", title="Paris").title == "Paris"


def _only_plain(value: object) -> None:
    if isinstance(value, dict):
        assert type(value) is dict
        for k, v in value.items():
            assert type(k) is str
            _only_plain(v)
    elif isinstance(value, list):
        assert type(value) is list
        for v in value:
            _only_plain(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), repr(value)


def test_template_context_is_plain_data(inv: Inventory) -> None:
    ctx = inv.as_template_context()
    _only_plain(ctx)
    assert set(ctx) == {"hosts", "clusters", "datacenters", "racks"}
    ams3 = ctx["hosts"]["ams-ceph3"]
    assert ams3["port"] == 2222 and ams3["user"] == "hotswap"
    assert ctx["hosts"]["par-osd1"]["port"] == 22
    assert ctx["hosts"]["bastion-ams"]["user"] == "jump"
    assert ams3["devices"] == ["/dev/sdb", "/dev/sdc"]
    assert ctx["hosts"]["par-osd3"]["extra"]["bmc"] == "https://10.10.9.23"
    assert ctx["clusters"]["prod-par"]["hosts"] == ["par-mon1", "par-osd1", "par-osd2", "par-osd3"]
    assert ctx["clusters"]["prod-par"]["commands"]["osd_stop"] == ["systemctl", "stop", "ceph-osd@{id}"]
    assert ctx["clusters"]["backup-ams"]["ceph"] == ["cephadm", "shell", "--", "ceph"]
    assert ctx["racks"]["ams2-c07"] == {
        "name": "ams2-c07", "datacenter": "ams2", "hosts": ["ams-ceph1", "ams-ceph2", "ams-ceph3"],
    }
    assert ctx["datacenters"]["par1"]["title"] == "Paris 1 (Saint-Denis)"
    assert ctx["datacenters"]["par1"]["hosts"] == ["par-mon1", "par-osd1", "par-osd2", "par-osd3"]


def test_template_context_is_a_copy(inv: Inventory) -> None:
    ctx = inv.as_template_context()
    ctx["hosts"]["par-osd3"]["extra"]["bmc"] = "changed"
    ctx["hosts"]["par-osd3"]["devices"].append("/dev/sdz")
    assert inv.host("par-osd3").extra["bmc"] == "https://10.10.9.23"
    assert inv.as_template_context()["hosts"]["par-osd3"]["devices"][-1] != "/dev/sdz"


def test_template_context_renders_in_jinja(inv: Inventory) -> None:
    import jinja2.sandbox

    env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    text = env.from_string(
        "{% for h in inventory.clusters['prod-par'].hosts %}{{ inventory.hosts[h].address }} {% endfor %}"
    ).render(inventory=inv.as_template_context())
    assert text == "10.10.1.11 10.10.1.21 10.10.1.22 10.10.1.23 "


def test_as_dict_is_json_and_keeps_unset_values_unset(inv: Inventory) -> None:
    data = json.loads(json.dumps(inv.as_dict()))
    assert data["source"] == str(EXAMPLE)
    assert data["hosts"]["par-osd1"]["port"] is None
    assert data["hosts"]["par-osd1"]["user"] is None
    assert data["hosts"]["ams-ceph1"]["jump"] == "bastion-ams"
    assert data["ssh"]["user"] == "hotswap" and data["ssh"]["sudo"] is True
    assert data["ssh"]["known_hosts"] == str(EXAMPLE.parent / "known_hosts")
    assert data["racks"]["par1-r01"] == {"name": "par1-r01", "datacenter": "par1"}
    assert data["clusters"]["backup-ams"]["extra"] == {"release": "reef"}
    assert set(data) == {"source", "ssh", "datacenters", "racks", "clusters", "hosts"}


def test_rack_and_inventory_built_by_hand() -> None:
    inv = Inventory(
        hosts={"a": Host(name="a", address="10.0.0.1", rack="r1", cluster="c", roles=("osd",))},
        clusters={"c": Cluster(name="c", admin_host="a")},
        racks={"r1": Rack(name="r1")},
        source="memory",
    )
    assert names(inv.select(rack="r1", cluster="c", role="osd")) == ["a"]
