"""Actions: small, idempotent, parameterized functions that runbooks compose."""

from __future__ import annotations

import importlib

from actions.base import ActionContext, ActionRegistry, ActionSpec, NotYet, action

ACTION_MODULES = ["actions.core", "actions.monitoring", "actions.dc", "actions.chat"]
"""Modules whose @action functions make up the default registry."""


def default_registry() -> ActionRegistry:
    return ActionRegistry.from_modules([importlib.import_module(m) for m in ACTION_MODULES])


__all__ = ["ACTION_MODULES", "ActionContext", "ActionRegistry", "ActionSpec", "NotYet", "action", "default_registry"]
