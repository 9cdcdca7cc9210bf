"""The types action arguments may declare, checked the same way at validation (literal arguments) and at
run time (rendered ones), and the shape of an action catalogue as the pure core sees it.

Pure: the runbook validator types against :class:`ActionCatalog`, so it never imports the actions.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Protocol


class ParamShape(Protocol):
    """A declared action parameter."""

    @property
    def annotation(self) -> Any: ...

    @property
    def required(self) -> bool: ...


class ActionShape(Protocol):
    """What validation needs to know of an action."""

    @property
    def name(self) -> str: ...

    @property
    def params(self) -> Mapping[str, ParamShape]: ...

    @property
    def polling(self) -> bool: ...


class ActionCatalog(Protocol):
    """Actions by name (actions.base.ActionRegistry is one); ``get`` raises UnknownActionError."""

    def __contains__(self, name: object) -> bool: ...

    def get(self, name: str) -> ActionShape: ...

    def __iter__(self) -> Iterator[Any]: ...


def describe_type(annotation: Any) -> str:
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(describe_type(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(describe_type(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def check_value(annotation: Any, value: Any) -> str | None:
    """Return why ``value`` does not fit ``annotation``, or None when it does."""
    if annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        reasons = [check_value(a, value) for a in typing.get_args(annotation)]
        return None if any(r is None for r in reasons) else f"expected {describe_type(annotation)}, got {_kind(value)}"
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        return None if value in allowed else f"expected {describe_type(annotation)}, got {value!r}"
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            return f"expected a list, got {_kind(value)}"
        args = typing.get_args(annotation)
        if args:
            for i, item in enumerate(value):
                why = check_value(args[0], item)
                if why:
                    return f"item {i}: {why}"
        return None
    if origin is dict or annotation is dict:
        return None if isinstance(value, dict) else f"expected a mapping, got {_kind(value)}"
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {_kind(value)}"
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {_kind(value)}"
    if annotation is type(None):
        return None if value is None else f"expected null, got {_kind(value)}"
    if isinstance(annotation, type):
        return None if isinstance(value, annotation) else f"expected {describe_type(annotation)}, got {_kind(value)}"
    return None


def coerce_value(annotation: Any, value: Any) -> Any:
    """Convert a rendered template value to the declared scalar type where that is unambiguous
    (``"3"`` -> 3 for int, 2 -> ``"2"`` for str); anything else is returned unchanged for check_value."""
    target = annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        if check_value(annotation, value) is None:
            return value
        scalars = [a for a in args if a in (str, int, float, bool)]
        target = scalars[0] if len(scalars) == 1 else None
    try:
        if target is str and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if target is float and isinstance(value, str):
            return float(value)
        if target is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if target is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    except ValueError:
        return value
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"[:80]
