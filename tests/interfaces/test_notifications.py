"""Notifications on success, failure and waiting, to chat (through the bot) and to a webhook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.interfaces.settings import Notification
from engine.service import Identity
from tests.interfaces.conftest import Stack
from tests.interfaces.slack_standin import SlackStandIn
from tests.support.workers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def notifying(redis_server: Any, worker: Any, tmp_path: Path, slack: SlackStandIn) -> Iterator[Stack]:
    rules = (Notification(runbooks=("flaky", "replace-node"), on=frozenset({"failure", "waiting"}),
                          webhook=f"{slack.url}/hooks/ops"),
             Notification(runbooks=("hello",), on=frozenset({"success"}), chat="C0NOTIFY"))
    s = Stack(redis_server.url, tmp_path, slack, notifications=rules)
    yield s
    s.stop()


def test_notifications_on_success_failure_and_waiting(notifying: Stack) -> None:
    s = notifying
    hello = s.api("POST", "/runs", json={"runbook": "hello"}).json()["run"]
    flaky = s.api("POST", "/runs", json={"runbook": "flaky"}).json()["run"]
    gate = s.api("POST", "/runs", json={"runbook": "replace-node", "params": {"host": "node7"}}).json()["run"]

    chat = wait_for(lambda: [c for c in s.slack.of("chat.postMessage") if c.body.get("channel") == "C0NOTIFY"
                             and hello in c.body["text"]], what="the success notification in chat")
    assert "succeeded" in chat[0].body["text"]

    def hooks(run: str) -> list[dict[str, Any]]:
        return [c.body for c in s.slack.posts_to("/hooks/ops") if c.body.get("run") == run]

    failure = wait_for(lambda: hooks(flaky), what="the failure webhook")[0]
    assert failure["event"] == "failure" and "disk still busy" in failure["detail"]
    waiting = wait_for(lambda: hooks(gate), what="the waiting webhook")[0]
    assert waiting["event"] == "waiting" and waiting["detail"].startswith("confirm: destroy the OSDs of")
    assert not hooks(hello), "hello has no webhook notification"
    s.service.cancel(gate, Identity("alice", "cli"))
    s.wait(gate)
    assert len(hooks(gate)) == 1 and len(hooks(flaky)) == 1, "each notification is sent once"
