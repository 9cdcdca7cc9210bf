"""chat.notify against a real HTTP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from actions import chat
from actions.base import ActionContext, ActionRegistry
from actions.http import HttpToolkit
from engine.errors import ActionError
from inventory import Cluster, Inventory
from tests.support.logs import ListLog
from tests.support.receiver import Receiver, running_receiver

TOKEN_PATH = "/services/T000/B000/XXXXSECRET"


def make_ctx(inv: Inventory, *, dry_run: bool = False) -> ActionContext:
    log = ListLog()
    ctx = ActionContext(run_id="run-7", step_id="chat", attempt=1, dry_run=dry_run, log=log, inventory=inv)
    ctx.http = HttpToolkit(log=log, dry_run=dry_run, would=ctx.would)
    return ctx


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def inv(rx: Receiver) -> Inventory:
    return Inventory(clusters={
        "lab": Cluster("lab", admin_host="node1", chat_webhook=f"{rx.http.url}{TOKEN_PATH}"),
        "quiet": Cluster("quiet", admin_host="node1"),
    })


def test_posts_the_text_to_an_explicit_webhook(rx: Receiver, inv: Inventory) -> None:
    result = chat.notify(make_ctx(inv), message="node1: OSDs drained", webhook=f"{rx.http.url}/hooks/ops")

    [posted] = rx.http.requests()
    assert (posted.method, posted.path) == ("POST", "/hooks/ops")
    assert posted.headers["content-type"] == "application/json"
    assert posted.json() == {"text": "node1: OSDs drained"}
    assert result == {"posted": True, "status": 200, "webhook": f"{rx.http.url}/…"}


def test_uses_the_clusters_webhook_and_keeps_the_token_out_of_results(rx: Receiver, inv: Inventory) -> None:
    result = chat.notify(make_ctx(inv), message="starting", cluster="lab")

    [posted] = rx.http.requests()
    assert posted.path == TOKEN_PATH
    assert posted.json() == {"text": "starting"}
    assert "SECRET" not in repr(result)


def test_explicit_webhook_wins_over_the_cluster(rx: Receiver, inv: Inventory) -> None:
    chat.notify(make_ctx(inv), message="hi", cluster="lab", webhook=f"{rx.http.url}/other")
    assert [r.path for r in rx.http.requests()] == ["/other"]


@pytest.mark.parametrize(("cluster", "match"), [(None, "no webhook given"), ("quiet", "no chat_webhook")])
def test_without_a_webhook_it_says_what_to_configure(inv: Inventory, cluster: str | None, match: str) -> None:
    with pytest.raises(ActionError, match=match):
        chat.notify(make_ctx(inv), message="hi", cluster=cluster)


def test_a_refused_post_is_an_error(rx: Receiver, inv: Inventory) -> None:
    rx.http.respond("/hooks/gone", 404, text="no_service")
    with pytest.raises(ActionError, match="404"):
        chat.notify(make_ctx(inv), message="hi", webhook=f"{rx.http.url}/hooks/gone")


def test_dry_run_posts_nothing_and_records_the_post(rx: Receiver, inv: Inventory) -> None:
    ctx = make_ctx(inv, dry_run=True)
    result = chat.notify(ctx, message="would say this", cluster="lab")

    assert rx.http.requests() == []
    [planned] = ctx.planned
    assert (planned["kind"], planned["method"]) == ("http", "POST")
    assert "would say this" in planned["body"]
    assert result["posted"] is False


def test_action_is_registered() -> None:
    assert [s.name for s in ActionRegistry.from_modules([chat])] == ["chat.notify"]
