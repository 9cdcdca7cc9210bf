"""Actions: small, idempotent, parameterized functions that runbooks compose."""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType

from actions.base import ActionContext, ActionRegistry, ActionSpec, NotYet, action

ACTION_MODULES = [
    "actions.core", "actions.host", "actions.ceph", "actions.ceph_devices", "actions.monitoring", "actions.dc", "actions.chat",
]
"""Modules whose @action functions make up the default registry (a package stands for its modules)."""


def default_registry() -> ActionRegistry:
    """Actions of ACTION_MODULES plus any listed in $HOTSWAP_ACTION_MODULES (comma-separated, for site actions)."""
    extra = [m.strip() for m in os.environ.get("HOTSWAP_ACTION_MODULES", "").split(",") if m.strip()]
    return ActionRegistry.from_modules([mod for m in [*ACTION_MODULES, *extra] for mod in _expand(m)])


def _expand(name: str) -> list[ModuleType]:
    module = importlib.import_module(name)
    if not hasattr(module, "__path__"):
        return [module]
    return [module, *(importlib.import_module(f"{name}.{info.name}") for info in pkgutil.iter_modules(module.__path__))]


__all__ = ["ACTION_MODULES", "ActionContext", "ActionRegistry", "ActionSpec", "NotYet", "action", "default_registry"]
