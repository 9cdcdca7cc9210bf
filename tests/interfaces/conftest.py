"""A real hotswap server (uvicorn on 127.0.0.1) over a real redis-server with real workers, a Slack
stand-in, and helpers to send requests built to Slack's documented formats."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from actions import default_registry
from engine.celery_app import make_app, runtime
from engine.config import Config
from engine.interfaces.chatops import sign
from engine.interfaces.policy import parse_policy
from engine.interfaces.server import Server, build
from engine.interfaces.settings import CommandAlias, ServerSettings, SlackSettings, hash_token
from engine.service import Service
from engine.store import Store
from inventory.sources import load_inventory
from tests.engine import conftest as engine_fixtures
from tests.interfaces.slack_standin import SlackStandIn
from tests.support.workers import wait_for

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-0000-secret"
TOKENS = {"alice-laptop": "hs_alice_token_0123456789", "ci-reader": "hs_ci_reader_token_0123456789"}
TERMINAL = {"succeeded", "failed", "cancelled"}
redis_server = engine_fixtures.redis_server
worker = engine_fixtures.worker

INVENTORY = """
clusters:
  ceph-a: {admin_host: node7}
  ceph-b: {admin_host: node9}
hosts:
  node7: {address: 127.0.0.1, cluster: ceph-a, roles: [osd]}
  node9: {address: 127.0.0.2, cluster: ceph-b, roles: [osd]}
"""

RUNBOOKS = {
    "replace-node.yaml": """
name: replace-node
description: "Replace a node (test double: echoes, and an approval gate before the destructive part)"
params:
  host: {type: host, required: true}
  reason: {type: string, default: "unspecified"}
steps:
  - id: drain
    action: core.echo
    with: {message: "draining {{ params.host }}: {{ params.reason }}"}
  - id: confirm
    action: core.approve
    with: {message: "destroy the OSDs of {{ params.host }}?"}
  - id: destroy
    action: core.echo
    with: {message: "destroyed {{ params.host }}"}
""",
    "hello.yaml": """
name: hello
params:
  cluster: {type: string, default: ceph-a}
steps:
  - id: one
    action: core.echo
    with: {message: "hello {{ params.cluster }}"}
  - id: two
    action: core.echo
    with: {message: "bye"}
""",
    "slow.yaml": """
name: slow
params:
  cluster: {type: string, required: true}
  seconds: {type: float, default: 3}
steps:
  - id: work
    action: core.sleep
    with: {seconds: "{{ params.seconds }}"}
""",
    "flaky.yaml": """
name: flaky
params:
  cluster: {type: string, default: ceph-a}
steps:
  - id: once
    action: core.fail
    with: {message: "disk still busy", times: 1}
  - id: after
    action: core.echo
    with: {message: "ok"}
""",
    "locked.yaml": """
name: locked
params:
  cluster: {type: string, required: true}
  seconds: {type: float, default: 30}
locks: ["cluster:{{ params.cluster }}"]
steps:
  - id: work
    action: core.sleep
    with: {seconds: "{{ params.seconds }}"}
""",
    "broken.yaml": """
name: broken
steps:
  - id: a
    action: core.echo
    with: {mesage: typo}
""",
}

POLICY = """
people:
  alice: [cli:alice, chat:U0ALICE, token:alice-laptop, proxy:alice]
  bob: [chat:U0BOB]
groups:
  sre: [alice]
  oncall: [bob]
rules:
  - name: sre-everything
    who: [group:sre]
    allow: [launch, approve, cancel, resume, read, audit]
  - name: oncall-replaces-on-ceph-b
    who: [group:oncall]
    allow: [launch, read]
    runbooks: [replace-node]
    clusters: [ceph-b]
  - name: ci-reads
    who: ["token:ci-reader"]
    allow: [read]
  - name: schedules
    who: ["schedule:*"]
    allow: [launch]
    runbooks: [hello, slow, locked]
"""

SCHEDULES = """
schedules:
  - name: rebalance
    runbook: slow
    every: 6h
    clusters: [ceph-a, ceph-b]
    params: {seconds: 4}
  - name: nightly
    runbook: hello
    cron: "0 */6 * * *"
  - name: guarded
    runbook: locked
    every: 1h
    clusters: [ceph-a]
    params: {seconds: 1}
  - name: forbidden
    runbook: replace-node
    every: 1h
    params: {host: node7}
"""


class Stack:
    """The server under test and everything around it."""

    def __init__(self, url: str, tmp: Path, slack: SlackStandIn, **overrides: Any) -> None:
        self.tmp = tmp
        self.slack = slack
        self.runbooks = tmp / "runbooks"
        self.runbooks.mkdir()
        for name, text in RUNBOOKS.items():
            (self.runbooks / name).write_text(text)
        (tmp / "inventory.yaml").write_text(INVENTORY)
        (tmp / "policy.yaml").write_text(POLICY)
        (tmp / "schedules.yaml").write_text(SCHEDULES)
        self.inventory = load_inventory(tmp / "inventory.yaml")
        self.redis_url = url
        self.app = make_app(url)
        self.store: Store = runtime(self.app).store
        self.service = Service(self.store, default_registry(), runtime(self.app).publish, lambda: self.inventory)
        self.config = Config(tmp / "home", url, tmp / "inventory.yaml", self.runbooks)
        self.settings = ServerSettings(
            policy=parse_policy(POLICY, str(tmp / "policy.yaml")),
            tokens={hash_token(t): name for name, t in TOKENS.items()},
            trusted_header="X-Forwarded-User",
            slack=SlackSettings(SIGNING_SECRET, BOT_TOKEN, slack.api,
                                {"replace": CommandAlias("replace-node", ("host",))}, ("hooks.slack.com",)),
            schedules=tmp / "schedules.yaml",
        )
        self.settings = replace(self.settings, **overrides)
        self.server: Server = build(self.service, self.settings, self.config, port=0).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    # ---- HTTP API ----
    def api(self, method: str, path: str, token: str | None = "alice-laptop", **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {TOKENS[token]}"
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    # ---- Slack ----
    def slash(self, text: str, user_id: str = "U0ALICE", user_name: str = "alice.s", *,
              timestamp: int | None = None, secret: str = SIGNING_SECRET, n: int = 1,
              body: bytes | None = None, signature: str | None = None) -> requests.Response:
        """POST a slash command exactly as Slack does: form-encoded, signed, with a response_url."""
        raw = body if body is not None else urlencode({
            "token": "gIkuvaNzQIHg97ATvDxqgjtO", "team_id": "T0TEAM", "team_domain": "example",
            "channel_id": "C0OPS", "channel_name": "storage-ops", "user_id": user_id, "user_name": user_name,
            "command": "/hotswap", "text": text, "api_app_id": "A0HOTSWAP", "is_enterprise_install": "false",
            "response_url": self.slack.response_url(n), "trigger_id": f"13345224609.738474920.{n}",
        }).encode()
        return self.signed_post("/slack/commands", raw, timestamp, secret, signature)

    def click(self, run_id: str, step: str, user_id: str = "U0ALICE", approve: bool = True, *,
              action_ts: str | None = None, n: int = 2) -> requests.Response:
        """POST an interactive block_actions payload for an approval button, as Slack sends it."""
        payload = {
            "type": "block_actions", "user": {"id": user_id, "username": "someone", "name": "someone",
                                              "team_id": "T0TEAM"},
            "api_app_id": "A0HOTSWAP", "token": "gIkuvaNzQIHg97ATvDxqgjtO", "trigger_id": f"1234.5678.{n}",
            "team": {"id": "T0TEAM", "domain": "example"}, "container": {"type": "message",
                                                                       "message_ts": "1700000000.000001",
                                                                       "channel_id": "C0OPS"},
            "channel": {"id": "C0OPS", "name": "storage-ops"}, "response_url": self.slack.response_url(n),
            "actions": [{"type": "button", "block_id": f"gates:{run_id}",
                         "action_id": "hotswap_approve" if approve else "hotswap_reject",
                         "text": {"type": "plain_text", "text": f"Approve {step}"}, "value": f"{run_id}|{step}",
                         "action_ts": action_ts or f"{time.time():.6f}"}],
        }
        raw = urlencode({"payload": json.dumps(payload)}).encode()
        return self.signed_post("/slack/interactive", raw, None, SIGNING_SECRET, None)

    def signed_post(self, path: str, raw: bytes, timestamp: int | None, secret: str,
                    signature: str | None) -> requests.Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": ts,
                   "X-Slack-Signature": signature or sign(secret, ts, raw)}
        return requests.post(f"{self.url}{path}", data=raw, headers=headers, timeout=30)

    # ---- engine ----
    def wait(self, run_id: str, statuses: set[str] | None = None, timeout: float = 60) -> dict[str, Any]:
        want = statuses or TERMINAL
        return wait_for(lambda: (r := self.store.run(run_id)) and r["status"] in want and r,  # type: ignore[no-any-return]
                        timeout=timeout, what=f"run {run_id} to reach {sorted(want)}")

    def wait_step(self, run_id: str, step: str, status: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (s := self.store.step(run_id, step))["status"] == status and s,  # type: ignore[no-any-return]
                        timeout=timeout, what=f"step {step} of {run_id} to be {status}")

    def audit(self, **match: str) -> list[dict[str, str]]:
        return [e for e in self.store.audit_log(5000) if all(e.get(k) == v for k, v in match.items())]

    def runs_by(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.service.runs(1000) if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    s = SlackStandIn().start()
    yield s
    s.stop()


@pytest.fixture
def stack(redis_server: Any, worker: Any, tmp_path: Path, slack: SlackStandIn) -> Iterator[Stack]:
    s = Stack(redis_server.url, tmp_path, slack)
    yield s
    s.stop()
