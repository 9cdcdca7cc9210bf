"""Server settings: ``$HOTSWAP_SERVER_CONFIG`` (else ``<state dir>/server.yaml``) overridden by environment.

Secrets never live in that file: the Slack signing secret and bot token come from the environment
(``HOTSWAP_SLACK_SIGNING_SECRET``, ``HOTSWAP_SLACK_BOT_TOKEN``) or from files named by ``*_file`` keys;
API tokens are stored as SHA-256 hashes in the tokens file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.config import Config
from engine.errors import ConfigError
from engine.interfaces.policy import Policy, load_policy

SERVER_KEYS = {"listen", "policy", "tokens", "trusted_header", "trusted_proxies", "slack", "schedules",
               "notifications"}
SLACK_KEYS = {"api", "signing_secret_file", "bot_token_file", "commands", "response_hosts", "channel"}
DEFAULT_SLACK_API = "https://slack.com/api/"


@dataclass(frozen=True)
class CommandAlias:
    """``/hotswap replace node7 reason="disk errors"`` -> runbook replace-node, host=node7, reason=..."""

    runbook: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlackSettings:
    signing_secret: str = field(repr=False)
    bot_token: str = field(repr=False)
    api: str = DEFAULT_SLACK_API
    commands: Mapping[str, CommandAlias] = field(default_factory=dict)
    response_hosts: tuple[str, ...] = ("hooks.slack.com",)
    channel: str | None = None
    """Where progress of runs launched elsewhere (API, schedules) goes when a notification asks for chat."""


NOTIFY_EVENTS = frozenset({"success", "failure", "waiting", "attention"})
"""attention: a step asks for a human without failing (a drain paused by a safety check for long, a step
waiting for a worker with its planned action after a deploy)."""


@dataclass(frozen=True)
class Notification:
    runbooks: tuple[str, ...] = ("*",)
    on: frozenset[str] = frozenset(NOTIFY_EVENTS)
    chat: str | None = None
    webhook: str | None = None


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    policy: Policy | None = None
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    """sha256 hex digest -> token name."""
    trusted_header: str | None = None
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    slack: SlackSettings | None = None
    schedules: Path | None = None
    notifications: tuple[Notification, ...] = ()

    def require_policy(self) -> Policy:
        if self.policy is None:
            raise ConfigError("no policy configured: set 'policy:' in the server config or HOTSWAP_POLICY="
                              "path/to/policy.yaml (see docs/policy.md)")
        return self.policy


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "hs_" + secrets.token_urlsafe(32)


def token_name(tokens: Mapping[str, str], presented: str) -> str | None:
    """The name of the token whose hash matches, compared in constant time against every entry."""
    digest = hash_token(presented)
    found = None
    for stored, name in tokens.items():
        if hmac.compare_digest(stored, digest):
            found = name
    return found


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping")
    return data


def _path(base: Path, value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _secret(env: str, data: Mapping[str, Any], key: str, base: Path) -> str:
    value = os.environ.get(env)
    if value:
        return value.strip()
    file = os.environ.get(f"{env}_FILE") or data.get(key)
    if file:
        path = _path(base, file, key)
        try:
            return path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read {key}: {e.strerror}") from None
    return ""


def load_tokens(file: Path) -> dict[str, str]:
    data = _read_yaml(file)
    entries = data.get("tokens") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: 'tokens' must be a list of {{name, sha256}}")
    out: dict[str, str] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or \
                not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
            raise ConfigError(f"{file}: tokens[{i}] must have 'name' and 'sha256' (64 hex digits); create one with "
                              "'hotswap token NAME'")
        out[entry["sha256"].lower()] = entry["name"]
    return out


def load_slack(data: Mapping[str, Any], base: Path) -> SlackSettings | None:
    signing = _secret("HOTSWAP_SLACK_SIGNING_SECRET", data, "signing_secret_file", base)
    token = _secret("HOTSWAP_SLACK_BOT_TOKEN", data, "bot_token_file", base)
    if not data and not signing:
        return None
    unknown = set(data) - SLACK_KEYS
    if unknown:
        raise ConfigError(f"slack: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(SLACK_KEYS))}")
    if not signing:
        raise ConfigError("slack is configured but has no signing secret: set HOTSWAP_SLACK_SIGNING_SECRET")
    commands: dict[str, CommandAlias] = {}
    for name, spec in (data.get("commands") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("runbook"), str):
            raise ConfigError(f"slack.commands.{name} must have 'runbook' (and optionally 'args': [param, ...])")
        commands[str(name)] = CommandAlias(spec["runbook"], tuple(str(a) for a in spec.get("args") or ()))
    api = os.environ.get("HOTSWAP_SLACK_API") or data.get("api") or DEFAULT_SLACK_API
    api = api if api.endswith("/") else api + "/"
    hosts = tuple(data.get("response_hosts") or ("hooks.slack.com",))
    return SlackSettings(signing, token, api, commands, hosts, data.get("channel"))


def load_notifications(raw: Any) -> tuple[Notification, ...]:
    if not raw:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("notifications must be a list of {runbooks, on, chat, webhook}")
    out = []
    for i, n in enumerate(raw):
        if not isinstance(n, dict) or not (n.get("chat") or n.get("webhook")):
            raise ConfigError(f"notifications[{i}] needs 'chat' (a channel) or 'webhook' (a URL)")
        # YAML 1.1 reads a bare `on:` key as the boolean true
        on = n.get("on") or n.get(True) or sorted(NOTIFY_EVENTS)
        bad = set(on) - NOTIFY_EVENTS
        if bad:
            raise ConfigError(f"notifications[{i}].on: unknown event(s) {', '.join(sorted(bad))}; use success, "
                              "failure, waiting, attention")
        runbooks = n.get("runbooks") or ["*"]
        out.append(Notification(tuple([runbooks] if isinstance(runbooks, str) else runbooks), frozenset(on),
                                n.get("chat"), n.get("webhook")))
    return tuple(out)


def load_settings(config: Config) -> ServerSettings:
    file = Path(os.environ.get("HOTSWAP_SERVER_CONFIG") or config.state_dir / "server.yaml")
    data = _read_yaml(file) if file.exists() else {}
    base = file.parent
    unknown = set(data) - SERVER_KEYS
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(SERVER_KEYS))}")
    host, _, port = str(os.environ.get("HOTSWAP_LISTEN") or data.get("listen") or "127.0.0.1:8080").rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"listen must look like HOST:PORT, got {data.get('listen')!r}")
    policy_file = os.environ.get("HOTSWAP_POLICY") or data.get("policy")
    tokens_file = os.environ.get("HOTSWAP_TOKENS") or data.get("tokens")
    schedules = os.environ.get("HOTSWAP_SCHEDULES") or data.get("schedules")
    proxies = data.get("trusted_proxies") or ["127.0.0.1", "::1"]
    return ServerSettings(
        host=host or "127.0.0.1",
        port=int(port),
        policy=load_policy(_path(base, policy_file, "policy")) if policy_file else None,
        tokens=load_tokens(_path(base, tokens_file, "tokens")) if tokens_file else {},
        trusted_header=os.environ.get("HOTSWAP_TRUSTED_HEADER") or data.get("trusted_header"),
        trusted_proxies=tuple(str(p) for p in proxies),
        slack=load_slack(data.get("slack") or {}, base),
        schedules=_path(base, schedules, "schedules") if schedules else None,
        notifications=load_notifications(data.get("notifications")),
    )
