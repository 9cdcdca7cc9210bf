"""Actions: small, idempotent, parameterized functions that runbooks compose."""

from __future__ import annotations

import importlib
import os

from actions.base import ActionContext, ActionRegistry, ActionSpec, NotYet, action

ACTION_MODULES = ["actions.core", "actions.host", "actions.ceph", "actions.monitoring", "actions.dc", "actions.chat"]
"""Modules whose @action functions make up the default registry."""


def default_registry() -> ActionRegistry:
    """Actions of ACTION_MODULES plus any listed in $HOTSWAP_ACTION_MODULES (comma-separated, for site actions)."""
    extra = [m.strip() for m in os.environ.get("HOTSWAP_ACTION_MODULES", "").split(",") if m.strip()]
    return ActionRegistry.from_modules([importlib.import_module(m) for m in [*ACTION_MODULES, *extra]])


__all__ = ["ACTION_MODULES", "ActionContext", "ActionRegistry", "ActionSpec", "NotYet", "action", "default_registry"]
