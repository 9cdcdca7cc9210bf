"""dc.notify against real HTTP and SMTP receivers; dc.wait_for_swap as an approval gate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions import dc
from actions.base import ActionContext, ActionRegistry, NotYet
from actions.http import HttpToolkit
from actions.ssh import ConnectionPool, SSHSettings, SSHToolkit
from engine.errors import ActionError, ConnectionFailed
from inventory import Cluster, Datacenter, Host, Inventory, Rack
from inventory.model import Disk
from tests.support.alertmanager import free_port
from tests.support.logs import ListLog
from tests.support.receiver import Receiver, running_receiver
from tests.support.sshd import Sshd, running_sshd

RUN_URL = "https://hotswap.example/runs/run-42"
SUBJECT = "[hotswap] replace node1 (rack r7, serial SN-0001)"


class Decided:
    def __init__(self, decision: dict[str, Any] | None) -> None:
        self._decision = decision

    def decision(self) -> dict[str, Any] | None:
        return self._decision


def make_ctx(inv: Inventory, *, dry_run: bool = False, memory: dict[str, Any] | None = None,
             attempt: int = 1) -> ActionContext:
    log = ListLog()
    ctx = ActionContext(
        run_id="run-42", step_id="notify-dc", attempt=attempt, dry_run=dry_run, log=log, inventory=inv,
        memory={} if memory is None else memory, run={"id": "run-42", "launched_by": "alice"},
    )
    ctx.http = HttpToolkit(log=log, dry_run=dry_run, would=ctx.would)
    return ctx


def make_inventory(notify: dict[str, str], contact: str | None = "dc-ops@example.com") -> Inventory:
    return Inventory(
        datacenters={"par1": Datacenter("par1", title="Paris 1", contact=contact, notify=notify)},
        racks={"r7": Rack("r7", datacenter="par1")},
        clusters={"lab": Cluster("lab", admin_host="node1", datacenter="par1"),
                  "other": Cluster("other", admin_host="node9")},
        hosts={
            "node1": Host("node1", address="127.0.0.1", cluster="lab", datacenter="par1", rack="r7",
                          serial="SN-0001"),
            "node9": Host("node9", address="127.0.0.1", cluster="other"),
        },
    )


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def inv(rx: Receiver) -> Inventory:
    rx.http.respond("/api/tickets", 201, json_body={"id": "T-17"})
    return make_inventory({
        "webhook": f"{rx.http.url}/hooks/dc",
        "email": "techs@par1.example.com",
        "smtp": rx.smtp.address,
        "ticket_api": f"{rx.http.url}/api/tickets",
    })


def notify(ctx: ActionContext, **params: Any) -> dict[str, Any]:
    params.setdefault("reason", "OSD 12 disk failed SMART")
    result: dict[str, Any] = dc.notify(ctx, cluster="lab", host="node1", run_url=RUN_URL, **params)
    return result


def test_notify_reaches_every_configured_channel(rx: Receiver, inv: Inventory) -> None:
    ctx = make_ctx(inv)
    result = notify(ctx)

    assert result == {
        "datacenter": "par1", "sent": ["webhook", "email", "ticket"], "skipped": [],
        "delivered": ["webhook", "email", "ticket"], "ticket": "T-17",
    }
    [hook] = rx.http.requests("/hooks/dc")
    assert hook.method == "POST"
    assert hook.headers["content-type"] == "application/json"
    payload = hook.json()
    expected = {
        "host": "node1", "rack": "r7", "serial": "SN-0001", "datacenter": "par1",
        "reason": "OSD 12 disk failed SMART", "run_id": "run-42", "run_url": RUN_URL,
    }
    assert {k: payload[k] for k in expected} == expected
    assert payload["text"].startswith(SUBJECT)

    [mail] = rx.smtp.mails
    assert mail.rcpt_tos == ["techs@par1.example.com"]
    assert mail.message["Subject"] == SUBJECT
    assert mail.message["To"] == "techs@par1.example.com"
    assert mail.message["From"].startswith("hotswap@")
    for needle in ("node1", "r7", "SN-0001", "Paris 1", "OSD 12 disk failed SMART", "run-42",
                   RUN_URL, "alice"):
        assert needle in mail.body

    [ticket] = rx.http.requests("/api/tickets")
    body = ticket.json()
    assert body["title"] == "replace node1 (rack r7, serial SN-0001)"
    assert "OSD 12 disk failed SMART" in body["description"]
    assert body["serial"] == "SN-0001"
    assert ctx.memory == {"delivered": ["webhook", "email", "ticket"], "ticket": "T-17"}


def test_a_retry_after_a_failed_ticket_sends_only_the_ticket(rx: Receiver, inv: Inventory) -> None:
    rx.http.respond("/api/tickets", 503, text="maintenance", times=1)
    memory: dict[str, Any] = {}

    with pytest.raises(ActionError, match=r"ticket: .*503") as failed:
        notify(make_ctx(inv, memory=memory))
    assert "delivered: webhook, email" in str(failed.value)
    assert memory == {"delivered": ["webhook", "email"]}

    result = notify(make_ctx(inv, memory=memory, attempt=2))

    assert result["sent"] == ["ticket"]
    assert result["skipped"] == ["webhook", "email"]
    assert len(rx.http.requests("/hooks/dc")) == 1
    assert len(rx.smtp.mails) == 1
    assert len(rx.http.requests("/api/tickets")) == 2
    assert result["ticket"] == "T-17"


def test_a_refused_mail_does_not_stop_the_other_channels_and_is_resent(rx: Receiver, inv: Inventory) -> None:
    rx.smtp.reject_next(451, "greylisted")
    memory: dict[str, Any] = {}

    with pytest.raises(ActionError, match="451") as failed:
        notify(make_ctx(inv, memory=memory))
    assert not isinstance(failed.value, ConnectionFailed)
    assert memory["delivered"] == ["webhook", "ticket"]
    assert rx.smtp.mails == []

    assert notify(make_ctx(inv, memory=memory))["sent"] == ["email"]
    assert len(rx.smtp.mails) == 1
    assert len(rx.http.requests("/hooks/dc")) == 1
    assert len(rx.http.requests("/api/tickets")) == 1


def test_an_unreachable_smtp_server_is_a_connection_failure(rx: Receiver) -> None:
    inv = make_inventory({"smtp": f"127.0.0.1:{free_port()}"})
    with pytest.raises(ConnectionFailed, match="SMTP"):
        notify(make_ctx(inv))


def test_only_the_requested_channels_are_used(rx: Receiver, inv: Inventory) -> None:
    result = notify(make_ctx(inv), channels=["email"])

    assert result["sent"] == ["email"]
    assert len(rx.smtp.mails) == 1
    assert rx.http.requests() == []


def test_email_goes_to_the_datacenter_contact_without_notify_email(rx: Receiver) -> None:
    inv = make_inventory({"smtp": rx.smtp.address}, contact="ops@par1.example.com")
    notify(make_ctx(inv))
    [mail] = rx.smtp.mails
    assert mail.rcpt_tos == ["ops@par1.example.com"]


@pytest.mark.parametrize(("channels", "match"), [
    (["pager"], "unknown channel"),
    (["webhook", "ticket"], "no ticket configured"),
])
def test_bad_channels_are_refused_before_sending_anything(
    rx: Receiver, channels: list[str], match: str
) -> None:
    inv = make_inventory({"webhook": f"{rx.http.url}/hooks/dc"})
    with pytest.raises(ActionError, match=match):
        notify(make_ctx(inv), channels=channels)
    assert rx.http.requests() == []


def test_a_datacenter_without_channels_is_an_error(rx: Receiver) -> None:
    with pytest.raises(ActionError, match="no notify channels"):
        notify(make_ctx(make_inventory({})))


def test_a_host_of_another_cluster_is_refused(rx: Receiver, inv: Inventory) -> None:
    with pytest.raises(ActionError, match="belongs to cluster 'other'"):
        dc.notify(make_ctx(inv), cluster="lab", host="node9", reason="x")


def test_dry_run_sends_nothing_and_records_each_channel(rx: Receiver, inv: Inventory) -> None:
    ctx = make_ctx(inv, dry_run=True)
    result = notify(ctx)

    assert rx.http.requests() == []
    assert rx.smtp.mails == []
    assert [(p["kind"], p.get("url") or p.get("to")) for p in ctx.planned] == [
        ("http", f"{rx.http.url}/hooks/dc"),
        ("send email", "techs@par1.example.com"),
        ("http", f"{rx.http.url}/api/tickets"),
    ]
    assert ctx.planned[1]["subject"] == SUBJECT
    assert result["sent"] == ["webhook", "email", "ticket"]
    assert result["delivered"] == []
    assert ctx.memory == {}


def test_wait_for_swap_waits_until_decided(inv: Inventory) -> None:
    ctx = make_ctx(inv)
    with pytest.raises(NotYet, match=r"rack r7, serial SN-0001"):
        dc.wait_for_swap(ctx, cluster="lab", host="node1")

    ctx.approvals = Decided(None)
    with pytest.raises(NotYet, match="swap done\\?"):
        dc.wait_for_swap(ctx, cluster="lab", host="node1", message="swap done?")

    ctx.approvals = Decided({"approved": True, "by": "tech-anna"})
    assert dc.wait_for_swap(ctx, cluster="lab", host="node1") == {"approved": True, "by": "tech-anna"}


def test_wait_for_swap_in_dry_run_records_the_wait(inv: Inventory) -> None:
    ctx = make_ctx(inv, dry_run=True)
    assert dc.wait_for_swap(ctx, cluster="lab", host="node1") == {"approved": True, "by": "dry-run"}
    assert [p["kind"] for p in ctx.planned] == ["wait for swap confirmation"]


def test_actions_are_registered() -> None:
    registry = ActionRegistry.from_modules([dc])
    assert {s.name: s.polling for s in registry} == {
        "dc.notify": False, "dc.wait_for_swap": True, "dc.locate_on": False, "dc.locate_off": False,
    }


# -- disks in the notice --------------------------------------------------------------------------------

DISKS = {
    "disks": [
        {"osd": 12, "host": "node1", "path": "/dev/sdc", "by_path": "/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0",
         "slot": "7", "serial": "ZC1A2B3C", "model": "SEAGATE ST4000NM0035", "device_id": "SEAGATE_ST4000NM0035_ZC1A2B3C",
         "type": "hdd", "size_bytes": 4000783007744, "role": "data", "source": "ceph+inventory"},
        {"osd": 13, "host": "node1", "path": "/dev/sdd", "slot": None, "serial": None, "model": None,
         "type": "hdd", "size_bytes": None, "source": "ceph"},
    ],
    "notes": ["osd.13: no serial for sdd (no unique device id: a virtual or loop device?)"],
}


def test_the_notice_names_each_disk_in_text_and_payload(rx: Receiver, inv: Inventory) -> None:
    result = notify(make_ctx(inv), disks=DISKS)

    assert result["disks"] == 2
    [hook] = rx.http.requests("/hooks/dc")
    payload = hook.json()
    assert [(d["osd"], d["path"], d["slot"], d["serial"], d["model"]) for d in payload["disks"]] == [
        (12, "/dev/sdc", "7", "ZC1A2B3C", "SEAGATE ST4000NM0035"), (13, "/dev/sdd", None, None, None),
    ]
    assert payload["disk_notes"] == DISKS["notes"]
    [mail] = rx.smtp.mails
    table = mail.body.replace("\r\n", "\n").split("Disks (2):\n", 1)[1]
    lines = table.splitlines()
    assert lines[0].split() == ["OSD", "Host", "Path", "Slot", "Serial", "Model", "Type", "Size", "By-path"]
    assert lines[1].split() == ["osd.12", "node1", "/dev/sdc", "7", "ZC1A2B3C", "SEAGATE", "ST4000NM0035", "hdd",
                                "3.6", "TiB", "/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0"]
    assert lines[2].split() == ["osd.13", "node1", "/dev/sdd", "unknown", "unknown", "unknown", "hdd", "unknown",
                                "unknown"]
    assert "- osd.13: no serial for sdd" in mail.body
    [ticket] = rx.http.requests("/api/tickets")
    assert "ZC1A2B3C" in ticket.json()["description"] and ticket.json()["disks"][0]["slot"] == "7"


def test_disks_unknown_to_everyone_are_said_so(rx: Receiver, inv: Inventory) -> None:
    notify(make_ctx(inv), channels=["email"], disks={"disks": [], "notes": ["Ceph reports no disk for osd.2"]})
    [mail] = rx.smtp.mails
    assert "Disks: unknown (see the notes)" in mail.body and "- Ceph reports no disk for osd.2" in mail.body


def test_a_retry_with_disks_still_sends_only_the_failed_channel(rx: Receiver, inv: Inventory) -> None:
    rx.http.respond("/hooks/dc", 502, text="bad gateway", times=1)
    memory: dict[str, Any] = {}
    with pytest.raises(ActionError, match="webhook"):
        notify(make_ctx(inv, memory=memory), disks=DISKS["disks"])
    assert notify(make_ctx(inv, memory=memory, attempt=2), disks=DISKS["disks"])["sent"] == ["webhook"]
    assert len(rx.smtp.mails) == 1 and len(rx.http.requests("/api/tickets")) == 1
    assert [len(r.json()["disks"]) for r in rx.http.requests("/hooks/dc")] == [2, 2]


def test_bad_disk_rows_are_refused_before_sending(rx: Receiver, inv: Inventory) -> None:
    with pytest.raises(ActionError, match=r"disks\[0\] must be a mapping"):
        notify(make_ctx(inv), disks=["/dev/sdb"])  # type: ignore[list-item]
    assert rx.http.requests() == [] and rx.smtp.mails == []


# -- locate LEDs, over a real sshd ----------------------------------------------------------------------

LED = """#!/bin/sh
# A stand-in for ledctl: records its arguments one per line, fails when one matches $LED_DIR/fail.
dir=$(dirname "$0")
{ for a in "$@"; do printf '[%s]' "$a"; done; echo; } >> "$dir/calls"
if [ -f "$dir/fail" ]; then
  for a in "$@"; do case "$a" in *"$(cat "$dir/fail")"*) echo "ledctl: cannot locate $a" >&2; exit 3;; esac; done
fi
"""

ROWS = [
    {"osd": 12, "host": "node1", "path": "/dev/sdc", "by_path": "/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0",
     "slot": "7", "serial": "ZC1A2B3C"},
    {"osd": 13, "host": "node1", "path": "/dev/it's $(touch pwned)", "slot": "8", "serial": None},
]


class Leds:
    def __init__(self, root: Path) -> None:
        self.dir = root / "led"
        self.dir.mkdir()
        self.program = self.dir / "led"
        self.program.write_text(LED)
        self.program.chmod(0o755)

    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def fail_on(self, text: str | None) -> None:
        if text is None:
            (self.dir / "fail").unlink()
        else:
            (self.dir / "fail").write_text(text)


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
def leds(tmp_path: Path) -> Leds:
    return Leds(tmp_path)


def led_ctx(sshd: Sshd, pool: ConnectionPool, leds: Leds, *, commands: dict[str, tuple[str, ...]] | None = None,
            host_commands: dict[str, tuple[str, ...]] | None = None, dry_run: bool = False,
            memory: dict[str, Any] | None = None) -> ActionContext:
    led = str(leds.program)
    if commands is None:
        commands = {"locate_on": (led, "locate={device}"), "locate_off": (led, "locate_off={device}")}
    inv = Inventory(
        clusters={"lab": Cluster("lab", admin_host="node1", commands=commands)},
        hosts={"node1": Host("node1", address="127.0.0.1", port=sshd.port, user=sshd.user, cluster="lab",
                             disks=(Disk("/dev/sdb", slot="1"), Disk("/dev/sdc", slot="2")),
                             commands=host_commands or {})},
    )
    log = ListLog()
    ctx = ActionContext(run_id="run-42", step_id="led", attempt=1, dry_run=dry_run, log=log, inventory=inv,
                        memory={} if memory is None else memory)
    ctx.ssh = SSHToolkit(
        SSHSettings(known_hosts=sshd.known_hosts, key_file=sshd.client_key, use_agent=False, connect_timeout=5),
        inv.host, log=log, dry_run=dry_run, would=ctx.would, pool=pool,
    )
    return ctx


def log_text(ctx: ActionContext) -> str:
    return "\n".join(m for _, m in ctx.log.lines)  # type: ignore[attr-defined]


def test_locate_on_and_off_run_the_inventory_command_per_disk(sshd: Sshd, pool: ConnectionPool, leds: Leds,
                                                               tmp_path: Path) -> None:
    on = dc.locate_on(led_ctx(sshd, pool, leds), cluster="lab", host="node1", disks={"disks": ROWS, "notes": []})

    assert leds.calls() == [
        "[locate=/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0]",
        "[locate=/dev/it's $(touch pwned)]",
    ]
    assert not (Path.home() / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert on["configured"] is True and on["disks"] == ["/dev/sdc", "/dev/it's $(touch pwned)"]
    assert on["ran"][0] == f"{leds.program} locate=/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0"

    off = dc.locate_off(led_ctx(sshd, pool, leds), cluster="lab", host="node1", disks=ROWS)
    assert leds.calls()[2:] == [
        "[locate_off=/dev/disk/by-path/pci-0000:3b:00.0-sas-phy2-lun-0]",
        "[locate_off=/dev/it's $(touch pwned)]",
    ]
    assert off["state"] == "off" and len(off["ran"]) == 2


def test_without_disks_the_hosts_inventory_devices_are_used_and_host_commands_win(
    sshd: Sshd, pool: ConnectionPool, leds: Leds
) -> None:
    ctx = led_ctx(sshd, pool, leds, host_commands={"locate_on": (str(leds.program), "start", "slot={slot}")})
    dc.locate_on(ctx, cluster="lab", host="node1")
    assert leds.calls() == ["[start][slot=1]", "[start][slot=2]"]


def test_a_failed_disk_does_not_stop_the_others_and_a_retry_runs_only_it(
    sshd: Sshd, pool: ConnectionPool, leds: Leds
) -> None:
    leds.fail_on("pwned")
    memory: dict[str, Any] = {}
    with pytest.raises(ActionError, match=r"locate_on failed on node1 for /dev/it's \$\(touch pwned\): .*exit"):
        dc.locate_on(led_ctx(sshd, pool, leds, memory=memory), cluster="lab", host="node1", disks=ROWS)
    assert len(leds.calls()) == 2
    assert len(memory["locate_on"]) == 1

    leds.fail_on(None)
    again = dc.locate_on(led_ctx(sshd, pool, leds, memory=memory), cluster="lab", host="node1", disks=ROWS)
    assert leds.calls()[2:] == ["[locate=/dev/it's $(touch pwned)]"]
    assert len(again["skipped"]) == 1 and len(again["ran"]) == 1


def test_dry_run_shows_the_commands_and_runs_none(sshd: Sshd, pool: ConnectionPool, leds: Leds) -> None:
    ctx = led_ctx(sshd, pool, leds, dry_run=True)
    result = dc.locate_on(ctx, cluster="lab", host="node1", disks=ROWS)
    assert leds.calls() == []
    assert [p["kind"] for p in ctx.planned] == ["ssh", "ssh"]
    assert ctx.planned[1]["command"] == f"{leds.program} 'locate=/dev/it'\"'\"'s $(touch pwned)'"
    assert ctx.memory == {} and len(result["ran"]) == 2


def test_no_locate_command_is_a_logged_no_op(sshd: Sshd, pool: ConnectionPool, leds: Leds) -> None:
    ctx = led_ctx(sshd, pool, leds, commands={})
    assert dc.locate_off(ctx, cluster="lab", host="node1", disks=ROWS) == {
        "configured": False, "state": "off", "ran": [], "skipped": [], "disks": [],
    }
    assert "no locate_off command configured for host node1 or cluster lab" in log_text(ctx)
    assert leds.calls() == []


def test_a_disk_without_the_value_the_command_needs_is_refused_before_any_runs(
    sshd: Sshd, pool: ConnectionPool, leds: Leds
) -> None:
    ctx = led_ctx(sshd, pool, leds, commands={"locate_on": (str(leds.program), "{slot}", "{serial}")})
    with pytest.raises(ActionError) as e:
        dc.locate_on(ctx, cluster="lab", host="node1", disks=ROWS)
    assert str(e.value) == (
        "locate_on on node1: /dev/it's $(touch pwned) has no value for {serial} "
        "(add it to the host's devices entry in the inventory)"
    )
    assert leds.calls() == []
    with pytest.raises(ActionError, match="is on host node7, not node1"):
        dc.locate_on(ctx, cluster="lab", host="node1", disks=[{"host": "node7", "path": "/dev/sdb"}])


def test_a_chassis_led_runs_once_for_all_disks_or_without_any(sshd: Sshd, pool: ConnectionPool, leds: Leds) -> None:
    chassis = {"locate_on": (str(leds.program), "identify", "{host}")}
    result = dc.locate_on(led_ctx(sshd, pool, leds, commands=chassis), cluster="lab", host="node1", disks=ROWS)
    assert leds.calls() == ["[identify][node1]"]
    assert result["disks"] == ["/dev/sdc", "/dev/it's $(touch pwned)"]
    dc.locate_on(led_ctx(sshd, pool, leds, commands=chassis), cluster="lab", host="node1", disks=[])
    assert leds.calls() == ["[identify][node1]", "[identify][node1]"]
