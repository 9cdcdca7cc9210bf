"""dc.notify against real HTTP and SMTP receivers; dc.wait_for_swap as an approval gate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actions import dc
from actions.base import ActionContext, ActionRegistry, NotYet
from actions.http import HttpToolkit
from engine.errors import ActionError, ConnectionFailed
from inventory import Cluster, Datacenter, Host, Inventory, Rack
from tests.support.alertmanager import free_port
from tests.support.logs import ListLog
from tests.support.receiver import Receiver, running_receiver

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
    assert {s.name: s.polling for s in registry} == {"dc.notify": False, "dc.wait_for_swap": True}
