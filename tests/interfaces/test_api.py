"""The HTTP API against a real server (uvicorn), real redis-server and real workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.interfaces.conftest import Stack

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_every_request_needs_authentication(stack: Stack) -> None:
    r = stack.api("GET", "/runs", token=None)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and "Bearer" in r.json()["message"]
    r = stack.api("GET", "/runs", token=None, headers={"Authorization": "Bearer hs_not_a_real_token"})
    assert r.status_code == 401 and r.json()["message"] == "invalid API token"
    assert requests.get(f"{stack.url}/api/v1/nope", timeout=10).status_code == 404


def test_launch_follow_and_read_a_run(stack: Stack) -> None:
    r = stack.api("POST", "/runs", json={"runbook": "hello", "params": {"cluster": "ceph-a"}})
    assert r.status_code == 201, r.text
    run = r.json()["run"]
    assert stack.wait(run)["status"] == "succeeded"
    data = stack.api("GET", f"/runs/{run}").json()
    assert data["run"]["launched_by"] == "alice" and data["run"]["source"] == "api"
    assert data["run"]["launched_by_detail"]["principal"] == "token:alice-laptop"
    assert [(s["id"], s["status"]) for s in data["steps"]] == [("one", "succeeded"), ("two", "succeeded")]
    logs = stack.api("GET", f"/runs/{run}/logs", params={"step": "one"}).json()
    assert any("hello ceph-a" in line["msg"] for line in logs)
    listed = stack.api("GET", "/runs", params={"runbook": "hello", "status": "succeeded", "limit": 50}).json()
    assert run in [x["id"] for x in listed]
    assert all(x["runbook"] == "hello" for x in listed)
    assert stack.audit(action="launch", run=run, who="alice", source="api")


def test_events_stream_as_server_sent_events_until_the_run_ends(stack: Stack) -> None:
    run = stack.api("POST", "/runs", json={"runbook": "hello"}).json()["run"]
    with stack.api("GET", f"/runs/{run}/events", stream=True) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = []
        current: dict[str, str] = {}
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith(("event:", "data:", "id:")):
                key, _, value = line.partition(": ")
                current[key] = value
            elif not line and current:
                events.append(current)
                current = {}
                if events[-1].get("event") == "end":
                    break
    kinds = [(e["event"], json.loads(e["data"]).get("status")) for e in events]
    assert ("run", "succeeded") in kinds and kinds[-1][0] == "end"
    assert [k for k in kinds if k[0] == "step"].count(("step", "succeeded")) == 2


def test_validation_errors_carry_file_and_line(stack: Stack) -> None:
    r = stack.api("POST", "/runs", json={"runbook": "replace-node", "params": {"host": "node404"}})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation"
    issue = body["issues"][0]
    assert issue["file"].endswith("replace-node.yaml") and issue["line"] == 5 and "node404" in issue["message"]
    r = stack.api("POST", "/runs", json={"runbook": "broken"})
    assert r.status_code == 422
    messages = {(i["line"], i["message"]) for i in r.json()["issues"]}
    assert any(line == 6 and "mesage" in m for line, m in messages), messages
    r = stack.api("POST", "/runs", json={"runbook": "nope"})
    assert r.status_code == 404 and "known runbooks are" in r.json()["message"]
    r = stack.api("POST", "/runs", json={"params": {}})
    assert r.status_code == 422 and "runbook" in r.json()["message"]


def test_policy_denials_are_403_and_audited(stack: Stack) -> None:
    r = stack.api("POST", "/runs", token="ci-reader", json={"runbook": "hello"})
    assert r.status_code == 403
    assert "token:ci-reader" in r.json()["message"] and "may not launch 'hello'" in r.json()["message"]
    denied = stack.audit(action="denied", principal="token:ci-reader", verb="launch")
    assert denied and denied[0]["source"] == "api" and denied[0]["runbook"] == "hello"
    assert stack.api("GET", "/runs", token="ci-reader").status_code == 200
    assert stack.api("GET", "/audit", token="ci-reader").status_code == 403


def test_approve_cancel_and_resume(stack: Stack) -> None:
    run = stack.api("POST", "/runs", json={"runbook": "replace-node", "params": {"host": "node7"}}).json()["run"]
    stack.wait_step(run, "confirm", "waiting")
    gate = next(s for s in stack.api("GET", f"/runs/{run}").json()["steps"] if s["id"] == "confirm")
    assert gate["needs_approval"]
    r = stack.api("POST", f"/runs/{run}/steps/confirm/approve", json={"comment": "go"})
    assert r.status_code == 200 and r.json() == {"run": run, "step": "confirm", "approved": True, "first": True}
    again = stack.api("POST", f"/runs/{run}/steps/confirm/approve")
    assert again.json()["first"] is False
    assert stack.wait(run)["status"] == "succeeded"
    assert stack.api("POST", f"/runs/{run}/cancel").status_code == 409

    flaky = stack.api("POST", "/runs", json={"runbook": "flaky"}).json()["run"]
    assert stack.wait(flaky)["status"] == "failed"
    r = stack.api("POST", f"/runs/{flaky}/resume")
    assert r.status_code == 200 and r.json()["steps"] == ["once"]
    assert stack.wait(flaky)["status"] == "succeeded"
    assert stack.audit(action="resume", run=flaky, who="alice", source="api")

    waiting = stack.api("POST", "/runs", json={"runbook": "replace-node", "params": {"host": "node9"}}).json()["run"]
    stack.wait_step(waiting, "confirm", "waiting")
    assert stack.api("POST", f"/runs/{waiting}/cancel").status_code == 200
    assert stack.wait(waiting)["status"] == "cancelled"
    assert stack.api("GET", "/runs/no-such-run").status_code == 404


def test_catalogue_listings(stack: Stack) -> None:
    books = {b["name"]: b for b in stack.api("GET", "/runbooks").json()}
    assert books["replace-node"]["params"]["host"]["required"] is True
    assert {i["line"] for i in books["broken"]["issues"]} == {6}
    actions = {a["name"] for a in stack.api("GET", "/actions").json()}
    assert {"core.echo", "core.approve"} <= actions
    hosts = stack.api("GET", "/inventory", params={"cluster": "ceph-b"}).json()
    assert [h["name"] for h in hosts] == ["node9"]
    entries = {s["entry"] for s in stack.api("GET", "/schedules").json()}
    assert {"rebalance@ceph-a", "rebalance@ceph-b", "nightly"} <= entries


def test_trusted_proxy_header(stack: Stack) -> None:
    r = stack.api("POST", "/runs", token=None, headers={"X-Forwarded-User": "alice"}, json={"runbook": "hello"})
    assert r.status_code == 201
    assert stack.service.run(r.json()["run"])["launched_by_detail"]["principal"] == "proxy:alice"
    r = stack.api("POST", "/runs", token=None, headers={"X-Forwarded-User": "mallory"}, json={"runbook": "hello"})
    assert r.status_code == 403


def test_audit_query(stack: Stack) -> None:
    run = stack.api("POST", "/runs", json={"runbook": "hello"}).json()["run"]
    entries = stack.api("GET", "/audit", params={"run": run}).json()
    assert [e["action"] for e in entries] == ["launch"]
    assert entries[0]["who"] == "alice" and entries[0]["source"] == "api"


def test_openapi_document_is_served_and_committed_copy_is_current(stack: Stack) -> None:
    served = requests.get(f"{stack.url}/openapi.json", timeout=10).json()
    assert "/api/v1/runs/{run_id}/steps/{step_id}/approve" in served["paths"]
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert committed == served, "docs/openapi.json is stale: regenerate with hotswap server --print-openapi"
