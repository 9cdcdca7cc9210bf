"""Parameter values: coerce what the operator gave (strings from the CLI, JSON from the API) to the
declared types, apply defaults (which may be templates over earlier parameters), check constraints."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from engine import templating
from engine.durations import parse_duration
from engine.errors import ValidationError, ValidationIssue
from engine.runbook import ParamDef, Runbook
from engine.secrets import check_reference

MAX_VALUE_CHARS = 4096
MAX_LIST_ITEMS = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def resolve_params(runbook: Runbook, given: Mapping[str, Any], inventory: Any = None) -> dict[str, Any]:
    issues: list[ValidationIssue] = []
    for name in given:
        if name not in runbook.params:
            known = ", ".join(runbook.params) or "none"
            issues.append(ValidationIssue(runbook.location(()), f"unknown parameter '{name}'; this runbook takes: {known}"))
    values: dict[str, Any] = {}
    for name, spec in runbook.params.items():
        where = runbook.location(("params", name))
        try:
            if name in given:
                value = coerce(spec, given[name])
            elif spec.default is not None:
                context = {"params": values, "inventory": _inventory_context(inventory)}
                value = coerce(spec, templating.render(spec.default, context))
            elif spec.required:
                hint = f" ({spec.help})" if spec.help else ""
                raise ValueError(f"is required{hint}: pass -p {name}=VALUE")
            else:
                value = None
            if value is not None:
                check_constraints(spec, value, inventory)
            values[name] = value
        except (ValueError, templating.TemplateError) as e:
            issues.append(ValidationIssue(where, f"parameter '{name}' {e}"))
    if issues:
        raise ValidationError(issues)
    return values


def coerce(spec: ParamDef, raw: Any) -> Any:
    if isinstance(raw, str) and len(raw) > MAX_VALUE_CHARS:
        raise ValueError(f"is {len(raw)} characters long; the limit is {MAX_VALUE_CHARS}")
    kind = spec.type
    if kind == "secret":
        why = check_reference(raw) if isinstance(raw, str) else "must be a reference string"
        if why:
            raise ValueError(why)
        return raw
    if kind in ("string", "host"):
        if isinstance(raw, dict | list) or raw is None:
            raise ValueError(f"must be a {kind}, got {type(raw).__name__}")
        return _printable(str(raw))
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError(f"must be an integer, got {raw!r}")
        try:
            return int(raw) if not isinstance(raw, float) or raw.is_integer() else _bad("an integer", raw)
        except (TypeError, ValueError):
            _bad("an integer", raw)
    if kind == "float":
        if isinstance(raw, bool):
            _bad("a number", raw)
        try:
            number = float(raw)
        except (TypeError, ValueError):
            _bad("a number", raw)
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {number}")
        return number
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        _bad("true or false", raw)
    if kind == "duration":
        return parse_duration(raw)
    if kind == "list":
        return _bounded_items(_as_list(raw))
    raise ValueError(f"has unknown type {kind}")


def _printable(text: str, what: str = "") -> str:
    """``text`` if it has no NUL or other control character but tab, newline and carriage return: no remote
    program can receive a NUL in an argument, and the others are a paste accident or an attempt to forge output."""
    found = _CONTROL.search(text)
    if found is None:
        return text
    if found.group() == "\x00":
        raise ValueError(f"{what}must not contain NUL bytes")
    raise ValueError(f"{what}must not contain control characters, found {found.group()!r}")


def _bounded_items(items: list[Any]) -> list[Any]:
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(f"has {len(items)} items; the limit is {MAX_LIST_ITEMS}")
    for i, item in enumerate(items):
        text = item if isinstance(item, str) else json.dumps(item, default=str)
        if len(text) > MAX_VALUE_CHARS:
            raise ValueError(f"item {i} is {len(text)} characters long; the limit is {MAX_VALUE_CHARS}")
        if isinstance(item, str):
            _printable(item, f"item {i} ")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"item {i} must be a finite number, got {item}")
    return items


def _as_list(raw: Any) -> list[Any]:
    if isinstance(raw, list):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"is not a JSON list: {e.msg}") from None
            if isinstance(value, list):
                return value
        return [part.strip() for part in text.split(",") if part.strip()]
    _bad("a list", raw)


def _bad(what: str, raw: Any) -> NoReturn:
    raise ValueError(f"must be {what}, got {raw!r}")


def check_constraints(spec: ParamDef, value: Any, inventory: Any) -> None:
    if spec.choices and value not in spec.choices:
        raise ValueError(f"must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if spec.pattern and isinstance(value, str) and not re.fullmatch(spec.pattern, value):
        raise ValueError(f"{value!r} does not match the pattern {spec.pattern!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(f"must be at least {spec.minimum}, got {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise ValueError(f"must be at most {spec.maximum}, got {value}")
    if spec.type == "host" and inventory is not None:
        hosts = getattr(inventory, "hosts", {})
        if value not in hosts:
            import difflib

            close = difflib.get_close_matches(value, list(hosts), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"names host {value!r}, which is not in the inventory{hint}: see 'hotswap inventory'")


def _inventory_context(inventory: Any) -> Any:
    if inventory is None:
        return {}
    as_ctx = getattr(inventory, "as_template_context", None)
    return as_ctx() if callable(as_ctx) else inventory
