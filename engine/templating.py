"""Jinja2 templating, always sandboxed.

A string that is exactly one ``{{ expression }}`` renders to the expression's native value (a list
stays a list, an int an int); any other string containing template syntax renders to a string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import HotswapError

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_MAX_OUTPUT = 1_000_000


class TemplateError(HotswapError):
    """A template failed to compile or render."""


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox where ``a.b`` on a mapping means the key ``b`` first, so ``params.items`` is a parameter."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    env.globals.pop("cycler", None)
    env.globals.pop("joiner", None)
    env.globals.pop("namespace", None)
    return env


ENV = _environment()


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value or "{#" in value


@functools.lru_cache(maxsize=4096)
def _compiled_expression(expr: str) -> Any:
    return ENV.compile_expression(expr, undefined_to_none=False)


@functools.lru_cache(maxsize=4096)
def _compiled_template(source: str) -> jinja2.Template:
    return ENV.from_string(source)


def _single_expression(text: str) -> str | None:
    match = _SINGLE_EXPR.match(text)
    if not match:
        return None
    expr = match.group("expr")
    return None if "}}" in expr or "{{" in expr else expr


def render_string(text: str, context: Mapping[str, Any]) -> Any:
    if not is_template(text):
        return text
    try:
        expr = _single_expression(text)
        if expr is not None:
            value = _compiled_expression(expr)(**context)
            if isinstance(value, jinja2.Undefined):
                str(value)  # raises UndefinedError with the missing name
            return value
        out = _compiled_template(text).render(**context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message}") from None
    except jinja2.exceptions.SecurityError as e:
        raise TemplateError(f"template tried something the sandbox forbids: {e}") from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template refers to something undefined: {e.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as e:
        raise TemplateError(f"template failed: {type(e).__name__}: {e}") from None
    if len(out) > _MAX_OUTPUT:
        raise TemplateError(f"template output is {len(out)} characters; the limit is {_MAX_OUTPUT}")
    return out


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def syntax_error(text: str) -> str | None:
    """Why ``text`` is not a valid template, or None."""
    if not is_template(text):
        return None
    try:
        expr = _single_expression(text)
        if expr is not None:
            ENV.parse("{{" + expr + "}}")
        else:
            ENV.parse(text)
    except jinja2.TemplateSyntaxError as e:
        return f"template syntax error: {e.message}"
    return None


def strings_in(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside ``value`` with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings_in(v, (*path, i))


def references(text: str, root: str) -> set[str]:
    """Names used as ``root.NAME`` or ``root['NAME']`` in a (syntactically valid) template."""
    if not is_template(text) or syntax_error(text):
        return set()
    expr = _single_expression(text)
    tree = ENV.parse("{{" + expr + "}}" if expr is not None else text)
    found: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        if isinstance(node.node, nodes.Name) and node.node.name == root:
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        assert isinstance(item, nodes.Getitem)
        if (isinstance(item.node, nodes.Name) and item.node.name == root and isinstance(item.arg, nodes.Const)
                and isinstance(item.arg.value, str)):
            found.add(item.arg.value)
    return found


def top_level_names(text: str) -> set[str]:
    """Undeclared top-level variables a template uses."""
    from jinja2 import meta

    if not is_template(text) or syntax_error(text):
        return set()
    expr = _single_expression(text)
    tree = ENV.parse("{{" + expr + "}}" if expr is not None else text)
    return set(meta.find_undeclared_variables(tree))
