"""The real Ceph lab: SSH access per host, lab-osd, Alertmanager, the receiver and the inventory
(the cluster's shape is in test_cluster_shape.py)."""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any, TypeVar

import paramiko
import pytest
import requests
import yaml

from inventory.sources import load_inventory
from lab import Lab, LabError

pytestmark = [pytest.mark.lab, pytest.mark.slow]

T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)


@pytest.fixture
def ssh(ceph_lab: Lab) -> Iterator[Callable[[str], paramiko.SSHClient]]:
    clients: list[paramiko.SSHClient] = []

    def connect(host: str) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(ceph_lab.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=ceph_lab.ssh_port(host), username=ceph_lab.user,
                       key_filename=str(ceph_lab.client_key_path), look_for_keys=False,
                       allow_agent=False, timeout=10)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def remote(client: paramiko.SSHClient, command: str, timeout: float = 120) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def osd_state(lab: Lab, osd_id: int) -> dict[str, Any]:
    dump = lab.ceph_json("osd", "dump")
    return next(o for o in dump["osds"] if o["osd"] == osd_id)


def crush_weight(lab: Lab, osd_id: int) -> float:
    tree = lab.ceph_json("osd", "tree")
    return float(next(n["crush_weight"] for n in tree["nodes"] if n["name"] == f"osd.{osd_id}"))


@pytest.mark.parametrize("host", ["admin", "node1", "node2", "node3", "node4", "node5", "node6"])
def test_plain_ceph_works_over_each_sshd_with_verified_host_keys(
    ceph_lab: Lab, ssh: Callable[[str], paramiko.SSHClient], host: str
) -> None:
    rc, out, err = remote(ssh(host), "ceph --connect-timeout 10 -s -f json && echo $LAB_HOST")
    assert rc == 0, err
    status_json, lab_host = out.strip().rsplit("\n", 1)
    assert json.loads(status_json)["fsid"] == ceph_lab.state.fsid
    assert lab_host == host


def test_unknown_host_key_is_rejected(ceph_lab: Lab) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect("127.0.0.1", port=ceph_lab.ssh_port("node1"), username=ceph_lab.user,
                       key_filename=str(ceph_lab.client_key_path), look_for_keys=False,
                       allow_agent=False, timeout=10)
    client.close()


def test_lab_osd_stop_and_start_over_ssh(ceph_lab: Lab, ssh: Callable[[str], paramiko.SSHClient]) -> None:
    node2 = ssh("node2")
    lab_osd = ceph_lab.lab_osd_path
    rc, _, err = remote(node2, f"{lab_osd} stop 2")
    assert rc == 0, err
    eventually(lambda: osd_state(ceph_lab, 2)["up"] == 0, "osd.2 to be marked down")
    rc, _, err = remote(node2, f"{lab_osd} stop 2")
    assert rc == 0, err

    rc, _, err = remote(node2, f"{lab_osd} start 2")
    assert rc == 0, err
    eventually(lambda: osd_state(ceph_lab, 2)["up"] == 1, "osd.2 to be up again")
    ceph_lab.wait_settled()


def test_destroyed_osd_is_recreated_with_the_same_id_and_crush_position(
    ceph_lab: Lab, ssh: Callable[[str], paramiko.SSHClient]
) -> None:
    node4 = ssh("node4")
    lab_osd = ceph_lab.lab_osd_path
    before = osd_state(ceph_lab, 7)
    weight_before = crush_weight(ceph_lab, 7)
    rc, _, err = remote(node4, f"{lab_osd} stop 7")
    assert rc == 0, err
    eventually(lambda: osd_state(ceph_lab, 7)["up"] == 0, "osd.7 to be marked down")
    ceph_lab.ceph("osd", "destroy", "7", "--yes-i-really-mean-it")
    rc, _, err = remote(node4, f"{lab_osd} zap 7")
    assert rc == 0, err
    rc, _, err = remote(node4, f"{lab_osd} create 7")
    assert rc == 0, err

    eventually(lambda: osd_state(ceph_lab, 7)["up"] == 1, "the new osd.7 to be up")
    after = osd_state(ceph_lab, 7)
    assert after["uuid"] != before["uuid"]
    assert "destroyed" not in after["state"]
    tree = ceph_lab.ceph_json("osd", "tree")
    node4_bucket = next(n for n in tree["nodes"] if n["name"] == "node4")
    osd7 = next(n for n in tree["nodes"] if n["name"] == "osd.7")
    assert osd7["id"] in node4_bucket["children"]
    assert osd7["crush_weight"] == weight_before > 0
    ceph_lab.wait_settled()


def test_lab_osd_refuses_to_zap_a_running_osd(ceph_lab: Lab) -> None:
    with pytest.raises(LabError, match="stop it before zapping"):
        ceph_lab.lab_osd("zap", "0")
    assert ceph_lab.lab_osd("status", "0").returncode == 0


def test_alertmanager_answers_and_forwards_to_the_receiver(ceph_lab: Lab) -> None:
    status = requests.get(f"{ceph_lab.alertmanager_url}/api/v2/status", timeout=10)
    assert status.status_code == 200
    assert status.json()["cluster"]["status"] == "disabled"
    alert = {"labels": {"alertname": "LabProbe", "severity": "info"}, "annotations": {"summary": "probe"}}
    posted = requests.post(f"{ceph_lab.alertmanager_url}/api/v2/alerts", json=[alert], timeout=10)
    assert posted.status_code == 200

    def forwarded() -> list[dict[str, Any]]:
        return [m for m in ceph_lab.received()
                if m["kind"] == "http" and m["path"] == "/hooks/alertmanager"
                and any(a["labels"]["alertname"] == "LabProbe" for a in m["body"]["alerts"])]

    eventually(forwarded, "Alertmanager to post the alert to the receiver")


def test_receiver_records_http_posts(ceph_lab: Lab) -> None:
    response = requests.post(f"{ceph_lab.receiver_url}/api/tickets", json={"title": "replace node3"},
                             timeout=10)
    assert response.status_code == 200
    ticket_id = response.json()["id"]
    recorded = [m for m in ceph_lab.received() if m.get("seq") == ticket_id]
    assert recorded[0]["body"] == {"title": "replace node3"}
    assert recorded[0]["path"] == "/api/tickets"
    lines = ceph_lab.received_path.read_text().splitlines()
    assert any(json.loads(line)["seq"] == ticket_id for line in lines)


def test_receiver_records_smtp_mail(ceph_lab: Lab) -> None:
    message = EmailMessage()
    message["From"] = "hotswap@example.com"
    message["To"] = "dc-ops@example.com"
    message["Subject"] = "Please replace node3"
    message.set_content("Rack r2, serial SN-LAB-0003.\n.leading dot kept\n")
    host, port = ceph_lab.smtp_address
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(message)

    mails = [m for m in ceph_lab.received() if m["kind"] == "smtp" and m["subject"] == "Please replace node3"]
    assert len(mails) == 1
    assert mails[0]["rcpt_to"] == ["dc-ops@example.com"]
    assert mails[0]["mail_from"] == "hotswap@example.com"
    assert ".leading dot kept" in mails[0]["body"]


def test_inventory_loads_and_matches_the_lab(ceph_lab: Lab) -> None:
    raw = yaml.safe_load(ceph_lab.inventory_path.read_text())
    assert [h for h, e in raw["hosts"].items() if e["extra"]["spare"]] == ["node5", "node6"]
    inventory = load_inventory(ceph_lab.inventory_path)
    cluster = inventory.cluster("lab")
    assert cluster.admin_host == "admin"
    assert sorted(inventory.hosts) == ["admin", "node1", "node2", "node3", "node4", "node5", "node6"]
    assert {name: list(host.roles) for name, host in inventory.hosts.items()} == {
        "admin": ["admin", "mon", "mgr"], "node1": ["mon", "mgr", "osd"], "node2": ["mon", "osd"],
        "node3": ["osd"], "node4": ["osd"], "node5": [], "node6": []}
    assert raw["hosts"]["node3"]["extra"]["osds"] == [4, 5]
    assert raw["hosts"]["admin"]["devices"] == []
    for name, host in inventory.hosts.items():
        assert (host.address, host.port) == ("127.0.0.1", ceph_lab.ssh_port(name))
    assert cluster.command("osd_create", id=3, host="node2") == [
        str(ceph_lab.lab_osd_path), "create", "3", "node2"]
    notify = inventory.datacenter("par1").notify
    assert notify["smtp"] == f"127.0.0.1:{ceph_lab.smtp_address[1]}"
    assert notify["webhook"].startswith(ceph_lab.receiver_url)


def test_env_points_at_the_lab(ceph_lab: Lab) -> None:
    env = ceph_lab.env()
    assert env["CEPH_CONF"] == str(ceph_lab.conf_path)
    assert env["HOTSWAP_LAB_INVENTORY"] == str(ceph_lab.inventory_path)
