"""Chatops against a real server and workers, with requests built to Slack's documented formats and a
stand-in for Slack's Web API that records what the bot posts."""

from __future__ import annotations

import time

import pytest

from engine.interfaces.chatops import SlackAuthError, sign, verify
from engine.service import Identity
from tests.interfaces.conftest import BOT_TOKEN, SIGNING_SECRET, Stack
from tests.support.workers import wait_for

# Slack's documented example ("Verifying requests from Slack").
SLACK_SAMPLE_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
    b"channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
    b"response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
SLACK_SAMPLE_TS = "1531420618"
SLACK_SAMPLE_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_signature_matches_slacks_test_vector() -> None:
    assert sign(SIGNING_SECRET, SLACK_SAMPLE_TS, SLACK_SAMPLE_BODY) == SLACK_SAMPLE_SIGNATURE
    verify(SIGNING_SECRET, SLACK_SAMPLE_TS, SLACK_SAMPLE_SIGNATURE, SLACK_SAMPLE_BODY, now=1531420618 + 299)
    with pytest.raises(SlackAuthError, match="stale"):
        verify(SIGNING_SECRET, SLACK_SAMPLE_TS, SLACK_SAMPLE_SIGNATURE, SLACK_SAMPLE_BODY, now=1531420618 + 301)
    with pytest.raises(SlackAuthError, match="bad signature"):
        verify(SIGNING_SECRET, SLACK_SAMPLE_TS, SLACK_SAMPLE_SIGNATURE, SLACK_SAMPLE_BODY + b"x", now=1531420618)
    with pytest.raises(SlackAuthError, match="bad signature"):
        verify("another-secret", SLACK_SAMPLE_TS, SLACK_SAMPLE_SIGNATURE, SLACK_SAMPLE_BODY, now=1531420618)
    with pytest.raises(SlackAuthError, match="missing"):
        verify(SIGNING_SECRET, None, SLACK_SAMPLE_SIGNATURE, SLACK_SAMPLE_BODY)


@pytest.mark.slow
def test_slack_sample_request_is_stale_now_and_refused(stack: Stack) -> None:
    r = stack.slash("", body=SLACK_SAMPLE_BODY, timestamp=int(SLACK_SAMPLE_TS), signature=SLACK_SAMPLE_SIGNATURE)
    assert r.status_code == 401 and "stale" in r.json()["message"]


@pytest.mark.slow
def test_bad_stale_and_replayed_requests_are_refused(stack: Stack) -> None:
    before = len(stack.service.runs(1000))
    r = stack.slash("replace node7", secret="not-the-secret")
    assert r.status_code == 401 and r.json()["message"] == "bad signature"
    r = stack.slash("replace node7", timestamp=int(time.time()) - 301)
    assert r.status_code == 401 and "stale" in r.json()["message"]
    r = stack.slash("help", timestamp=int(time.time()) + 301)
    assert r.status_code == 401 and "stale" in r.json()["message"]
    ts = int(time.time())
    first = stack.slash("help", timestamp=ts)
    assert first.status_code == 200 and "/hotswap replace HOST" in first.json()["text"]
    replay = stack.slash("help", timestamp=ts)
    assert replay.status_code == 401 and "replayed" in replay.json()["message"]
    assert len(stack.service.runs(1000)) == before


@pytest.mark.slow
def test_slash_command_launches_as_the_real_person_and_reports_progress(stack: Stack) -> None:
    started = time.monotonic()
    r = stack.slash('replace node7 reason="disk errors"')
    assert time.monotonic() - started < 3
    assert r.status_code == 200 and r.json()["response_type"] == "ephemeral"
    run = wait_for(lambda: next(iter(stack.runs_by(runbook="replace-node", source="chat",
                                                      launched_by="alice")), None), what="the chat launch")["id"]
    record = stack.service.run(run)
    assert record["params"] == {"host": "node7", "reason": "disk errors"}
    assert record["launched_by_detail"]["user_id"] == "U0ALICE"
    assert record["launched_by_detail"]["principal"] == "chat:U0ALICE"
    assert stack.audit(action="launch", run=run, who="alice", source="chat")

    waiting = stack.slack.wait_message(run, "waiting for approval")
    buttons = next(b for b in waiting.body["blocks"] if b["type"] == "actions")["elements"]
    assert {(b["action_id"], b["value"]) for b in buttons} == {("hotswap_approve", f"{run}|confirm"),
                                                              ("hotswap_reject", f"{run}|confirm")}
    assert waiting.auth == f"Bearer {BOT_TOKEN}" and waiting.body["channel"] == "C0OPS"

    assert stack.click(run, "confirm").status_code == 200
    assert stack.wait(run)["status"] == "succeeded"
    done = stack.slack.wait_message(run, "succeeded")
    assert not [b for b in done.body["blocks"] if b["type"] == "actions"]
    posted = [c for c in stack.slack.messages_about(run) if c.method == "chat.postMessage"]
    updates = [c for c in stack.slack.messages_about(run) if c.method == "chat.update"]
    assert len(posted) == 1, "progress must update one message, not flood the channel"
    assert updates and all(u.body["ts"] == posted[0].reply["ts"] for u in updates)
    assert stack.service.store.decision(run, "confirm")["by"] == "alice"
    assert stack.audit(action="approve", run=run, step="confirm", who="alice", source="chat")


@pytest.mark.slow
def test_unauthorized_chat_user_is_denied_by_user_id_and_audited(stack: Stack) -> None:
    # mallory calls herself "alice" in Slack: the display name must not matter.
    r = stack.slash("replace node7", user_id="U0MALLORY", user_name="alice", n=7)
    assert r.status_code == 200
    reply = stack.slack.wait_response("may not launch")
    assert "chat:U0MALLORY" in reply.body["text"] and reply.path.startswith("/commands/T0TEAM/7/")
    denied = stack.audit(action="denied", principal="chat:U0MALLORY")
    assert denied and denied[0]["source"] == "chat" and denied[0]["runbook"] == "replace-node"
    assert not stack.runs_by(source="chat", launched_by="alice", runbook="replace-node", status="pending")

    # bob may replace on ceph-b only (the cluster is found through the host's inventory entry).
    stack.slash("replace node7", user_id="U0BOB", user_name="bob", n=8)
    assert "on cluster ceph-a" in stack.slack.wait_response("bob").body["text"]
    stack.slash("replace node9", user_id="U0BOB", user_name="bob", n=9)
    run = wait_for(lambda: next(iter(stack.runs_by(launched_by="bob", runbook="replace-node")), None),
                   what="bob's launch on ceph-b")["id"]
    stack.wait_step(run, "confirm", "waiting")
    stack.slack.wait_message(run, "waiting for approval")
    # bob may not approve; his click is refused and audited, and the gate stays open
    stack.click(run, "confirm", user_id="U0BOB", n=10)
    assert "may not approve" in stack.slack.wait_response("may not approve").body["text"]
    assert stack.audit(action="denied", principal="chat:U0BOB", verb="approve", run=run)
    assert stack.service.store.decision(run, "confirm") is None
    stack.service.cancel(run, Identity("test-admin", "cli"))


@pytest.mark.slow
def test_button_clicks_are_single_use_and_idempotent(stack: Stack) -> None:
    stack.slash("replace node7", n=11)
    run = wait_for(lambda: next(iter(stack.runs_by(launched_by="alice", runbook="replace-node", status="running")),
                                None), what="the launch")["id"]
    stack.wait_step(run, "confirm", "waiting")
    action_ts = f"{time.time():.6f}"
    assert stack.click(run, "confirm", action_ts=action_ts, n=12).status_code == 200
    # the same click delivered twice (same action_ts) is acted on once
    assert stack.click(run, "confirm", action_ts=action_ts, n=13).status_code == 200
    stack.slack.wait_response("confirm approved")
    # a second click (double-click) changes nothing and says so
    stack.click(run, "confirm", approve=False, n=14)
    assert "already approved by alice" in stack.slack.wait_response("changed nothing").body["text"]
    assert stack.wait(run)["status"] == "succeeded"
    decisions = stack.audit(run=run, step="confirm")
    assert [d["action"] for d in decisions].count("approve") == 1
    assert not [r for r in stack.slack.responses() if r.path.startswith("/commands/T0TEAM/13/")]


@pytest.mark.slow
def test_status_runs_and_help(stack: Stack) -> None:
    run = stack.api("POST", "/runs", json={"runbook": "hello"}).json()["run"]
    stack.wait(run)
    stack.slash(f"status {run}", n=21)
    text = stack.slack.wait_response(f"`{run}`").body["text"]
    assert "*succeeded*" in text and "`one` succeeded" in text
    stack.slash("runs 50", n=22)
    assert run in stack.slack.wait_response(run).body["text"]
    r = stack.slash("")
    assert "/hotswap status RUN" in r.json()["text"]
    stack.slash("frobnicate", n=23)
    assert "unknown command 'frobnicate'" in stack.slack.wait_response("frobnicate").body["text"]
