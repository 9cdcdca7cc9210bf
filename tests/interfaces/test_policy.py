"""The policy file: parsing with locations, principals, people, groups, clusters, gates; settings loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Config
from engine.errors import ConfigError
from engine.interfaces.policy import Request, parse_policy
from engine.interfaces.settings import hash_token, load_settings, token_name
from engine.service import Identity
from inventory.sources import load_inventory
from tests.interfaces.conftest import INVENTORY, POLICY

ROOT = Path(__file__).resolve().parents[2]


def chat(user_id: str, name: str = "someone") -> Identity:
    return Identity(f"chat:{user_id}", "chat", {"principal": f"chat:{user_id}", "user_name": name})


def test_people_groups_runbooks_and_clusters() -> None:
    p = parse_policy(POLICY, "policy.yaml")
    alice = p.resolve(chat("U0ALICE"))
    assert alice.name == "alice" and alice.detail["as"] == "chat:U0ALICE"
    assert p.check(alice, Request("launch", "replace-node", ("ceph-a",))).allowed
    bob = chat("U0BOB")
    assert p.check(bob, Request("launch", "replace-node", ("ceph-b",))).allowed
    no = p.check(bob, Request("launch", "replace-node", ("ceph-a",)))
    assert not no.allowed and no.reason == ("chat:U0BOB may not launch 'replace-node' on cluster ceph-a: no rule in "
                                            "policy.yaml allows it")
    assert not p.check(bob, Request("launch", "replace-node")).allowed, "an unknown cluster never matches a restricted rule"
    assert not p.check(bob, Request("launch", "hello", ("ceph-b",))).allowed
    assert not p.check(bob, Request("approve", "replace-node", ("ceph-b",), gate="confirm")).allowed
    assert p.check(Identity("x", "schedule", {"schedule": "nightly"}), Request("launch", "hello")).allowed
    assert p.check(Identity("alice", "cli"), Request("cancel", "anything")).allowed


def test_display_names_and_unverified_identities_grant_nothing() -> None:
    p = parse_policy(POLICY, "policy.yaml")
    assert p.person(chat("U0MALLORY", name="alice")) is None
    assert not p.check(chat("U0MALLORY", name="alice"), Request("read")).allowed
    assert not p.check(Identity("alice", "chat"), Request("read")).allowed, "no principal: refused"
    assert not p.check(Identity("alice", "api"), Request("read")).allowed


def test_gates_and_host_clusters_through_the_inventory(tmp_path: Path) -> None:
    p = parse_policy("""
rules:
  - who: ["chat:U1"]
    allow: [approve]
    runbooks: [replace-*]
    gates: ["confirm*"]
""", "p.yaml")
    u1 = chat("U1")
    assert p.check(u1, Request("approve", "replace-node", gate="confirm")).allowed
    assert not p.check(u1, Request("approve", "replace-node", gate="destroy")).allowed
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    inv = load_inventory(tmp_path / "inv.yaml")
    assert p.clusters_of({"host": "node9", "cluster": "ceph-x", "hosts": ["node7", "node9"]}, inv) == \
        ("ceph-b", "ceph-x", "ceph-a")


def test_policy_errors_have_locations() -> None:
    with pytest.raises(ConfigError) as e:
        parse_policy("""people:
  alice: [alice]
rules:
  - who: [group:nope, carol]
    allow: [launch, destroy]
    clusterz: [a]
""", "p.yaml")
    text = str(e.value)
    assert "p.yaml:2:11: 'alice' is not a principal" in text
    assert "p.yaml:4:11: unknown group 'nope'" in text
    assert "p.yaml:4:23: 'carol' is neither a person" in text
    assert "p.yaml:5:21: unknown permission 'destroy'" in text
    assert "p.yaml:6:5: unknown key 'clusterz'" in text


def test_example_files_are_valid() -> None:
    from engine.interfaces.policy import load_policy
    from engine.interfaces.schedules import load_schedules

    assert load_policy(ROOT / "docs" / "policy.example.yaml").rules
    assert load_schedules(ROOT / "docs" / "schedules.example.yaml")


def test_settings_from_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tokens.yaml").write_text(f"tokens:\n  - name: ci\n    sha256: {hash_token('hs_secret')}\n")
    (tmp_path / "signing").write_text("s3cret-signing\n")
    (tmp_path / "server.yaml").write_text("""
listen: 0.0.0.0:9000
policy: policy.yaml
tokens: tokens.yaml
trusted_header: X-Remote-User
slack:
  signing_secret_file: signing
  commands:
    replace: {runbook: replace-node, args: [host]}
notifications:
  - runbooks: [rebalance]
    on: [failure]
    webhook: http://127.0.0.1:1/hook
""")
    monkeypatch.setenv("HOTSWAP_SERVER_CONFIG", str(tmp_path / "server.yaml"))
    monkeypatch.setenv("HOTSWAP_SLACK_BOT_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("HOTSWAP_SLACK_API", "http://127.0.0.1:9/api")
    s = load_settings(Config(tmp_path, None, None, tmp_path))
    assert (s.host, s.port, s.trusted_header) == ("0.0.0.0", 9000, "X-Remote-User")
    assert token_name(s.tokens, "hs_secret") == "ci" and token_name(s.tokens, "hs_other") is None
    assert s.slack is not None and s.slack.signing_secret == "s3cret-signing" and s.slack.bot_token == "xoxb-from-env"
    assert s.slack.api == "http://127.0.0.1:9/api/" and s.slack.commands["replace"].args == ("host",)
    assert s.notifications[0].on == {"failure"}
    shown = repr(s)
    assert "s3cret" not in shown and "xoxb" not in shown and hash_token("hs_secret") not in shown

    (tmp_path / "server.yaml").write_text("slack: {channel: C0OPS}\n")
    monkeypatch.delenv("HOTSWAP_SLACK_BOT_TOKEN")
    with pytest.raises(ConfigError, match="no signing secret"):
        load_settings(Config(tmp_path, None, None, tmp_path))
