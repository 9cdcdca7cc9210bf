"""Builds what actions get through their context: the inventory and the SSH/HTTP toolkits.

Loaded once per process and shared by every step the process runs (SSH connections are pooled).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from typing import Any

from engine.config import load_config
from engine.executor import ToolkitFactory, Toolkits


@functools.lru_cache(maxsize=1)
def load_inventory() -> Any:
    """The configured inventory, or None when none is configured."""
    cfg = load_config()
    if cfg.inventory is None:
        return None
    from inventory.sources import load_inventory as load

    return load(cfg.inventory)


@functools.lru_cache(maxsize=1)
def _http_session(pid: int) -> Any:
    """One requests session per process (keyed by pid so a forked child makes its own)."""
    import requests

    return requests.Session()


@functools.lru_cache(maxsize=32)
def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def toolkit_factory() -> ToolkitFactory:
    def make(run_id: str, log: Any, dry_run: bool, would: Callable[..., None], secrets: list[str],
             cancelled: Callable[[], bool]) -> Toolkits:
        inventory = load_inventory()
        ssh = http = None
        if _has("actions.http"):
            from actions.http import HttpToolkit

            http = HttpToolkit(log=log, dry_run=dry_run, would=would, secrets=secrets, session=_http_session(os.getpid()))
        if inventory is not None and _has("actions.ssh"):
            from actions.ssh import SSHSettings, SSHToolkit

            s = inventory.ssh
            settings = SSHSettings(user=s.user, port=s.port, known_hosts=s.known_hosts, key_file=s.key_file,
                                   trust_on_first_use=s.trust_on_first_use, connect_timeout=s.connect_timeout,
                                   command_timeout=s.command_timeout, sudo=s.sudo)
            ssh = SSHToolkit(settings, inventory.host, log=log, dry_run=dry_run, would=would, secrets=secrets,
                             cancelled=cancelled)
        return Toolkits(inventory=inventory, ssh=ssh, http=http)

    return make
