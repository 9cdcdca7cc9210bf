"""Jinja2 templating, always sandboxed.

A string that is exactly one ``{{ expression }}`` renders to the expression's native value (a list
stays a list, an int an int), which must be plain data (text, numbers, booleans, null, lists and
mappings of those); any other string containing template syntax renders to a string.

Templates come from runbooks and may be hostile, so besides Jinja's sandbox (no private attributes,
no mutation of data) every render is bounded: values a template builds (repetition, concatenation,
padding, replacing, joining, big powers) are checked *before* they are built, and one render may run
at most ``MAX_ITERATIONS`` loop iterations and items of work and build at most ``MAX_BUILT`` characters
in all. The operators that could build big values are intercepted, which also keeps Jinja from
computing them at compile time (constant folding) where no bound applies.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import string
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, operators
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import _PassArg

from engine.errors import HotswapError

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_MAX_OUTPUT = 1_000_000
"""Characters of rendered text, or characters and items of a returned value (and of any one value built)."""
MAX_ITERATIONS = 1_000_000
"""Loop iterations, range items and items handed to filters and methods, per render."""
MAX_BUILT = 20_000_000
"""Characters and items built by bounded operations, per render."""
_MAX_INT_DIGITS = 4300
"""Python refuses to turn longer integers into text anyway (sys.get_int_max_str_digits)."""
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class TemplateError(HotswapError):
    """A template failed to compile or render."""


# ---- the per-render work budget ----------------------------------------------------------------------------

class _Budget:
    __slots__ = ("built", "iterations")

    def __init__(self) -> None:
        self.iterations = 0
        self.built = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("template_budget", default=None)


def _charge(iterations: int = 0, built: int = 0) -> None:
    """Count work against the current render's budget (none outside a render, e.g. at compile time)."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.iterations += iterations
    budget.built += built
    if budget.iterations > MAX_ITERATIONS:
        raise TemplateError(f"template iterates more than {MAX_ITERATIONS} times; the limit is {MAX_ITERATIONS}")
    if budget.built > MAX_BUILT:
        raise TemplateError(f"template builds more than {MAX_BUILT} characters and items; the limit is {MAX_BUILT}")


def _input_cost(value: Any) -> int:
    """Work units for handing ``value`` to a filter or method: an item each, a unit per 100 characters."""
    if isinstance(value, str):
        return len(value) // 100
    if isinstance(value, list | tuple | dict | set | frozenset | range):
        return len(value)
    return 0


def _counted(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _charge(iterations=1)
        yield item


def _range(*args: int) -> range:
    items = safe_range(*args)
    _charge(iterations=len(items))
    return items


# ---- sizes ---------------------------------------------------------------------------------------------------

def _size_error(value_type: type, size: int) -> TemplateError:
    if issubclass(value_type, str):
        return TemplateError(f"template output is {size} characters; the limit is {_MAX_OUTPUT}")
    if issubclass(value_type, Mapping):
        return TemplateError(f"template output is a mapping of {size} items; the limit is {_MAX_OUTPUT}")
    return TemplateError(f"template output is a list of {size} items; the limit is {_MAX_OUTPUT}")


def _check_size(value_type: type, size: int) -> None:
    """Refuse to build a ``value_type`` of ``size`` characters/items; else count it as built."""
    if size > _MAX_OUTPUT:
        raise _size_error(value_type, size)
    _charge(built=size)


def _built(value: Any) -> Any:
    """``value`` once checked: a string or collection is at most _MAX_OUTPUT long and counts as built."""
    if isinstance(value, str | list | tuple | dict | set | frozenset):
        _check_size(type(value), len(value))
    return value


def _plain(value: Any, seen: list[int]) -> Any:
    """``value`` as plain data (ranges and tuples become lists), counting characters and items in ``seen``."""
    if isinstance(value, str):
        if len(value) > _MAX_OUTPUT:
            raise _size_error(str, len(value))
        seen[0] += len(value)
    elif isinstance(value, _PLAIN_SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            raise TemplateError(f"template produced {value}, not a finite number")
        seen[0] += 1
    elif isinstance(value, list | tuple | range | dict):
        if len(value) > _MAX_OUTPUT:
            raise _size_error(type(value), len(value))
        seen[0] += len(value)
    else:
        if isinstance(value, jinja2.Undefined):
            str(value)  # raises UndefinedError with the missing name
        raise TemplateError(f"template produced a {type(value).__name__}; only text, numbers, booleans, lists and "
                            "mappings are allowed")
    if seen[0] > _MAX_OUTPUT:
        raise TemplateError(f"template output holds more than {_MAX_OUTPUT} characters and items; "
                            f"the limit is {_MAX_OUTPUT}")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, _PLAIN_SCALARS):
                raise TemplateError(f"template produced a mapping key of type {type(k).__name__}; keys must be text "
                                    "or numbers")
            out[k] = _plain(v, seen)
        return out
    if isinstance(value, list | tuple | range):
        return [_plain(v, seen) for v in value]
    return value


def _measure(value: Any) -> Any:
    """``value`` once checked to hold at most _MAX_OUTPUT characters and items all told (shared parts count
    each time they appear, as they would in text or JSON), so turning it into text or copying it is bounded."""
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return value
    seen = 0
    todo: list[Any] = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            seen += len(item)
        elif isinstance(item, dict):
            seen += len(item)
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            seen += len(item)
            todo.extend(item)
        else:
            seen += 1
        if seen > _MAX_OUTPUT:
            raise TemplateError(f"template value holds more than {_MAX_OUTPUT} characters and items; "
                                f"the limit is {_MAX_OUTPUT}")
    _charge(iterations=seen // 10)
    return value


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` inside text: a collection must be small enough to turn into text."""
    return _measure(value)


def _materialized(value: Any) -> Any:
    """An iterator as a list (each item counted), so what is built from it can be checked first."""
    if isinstance(value, str | list | tuple | dict | set | frozenset | range) or not hasattr(value, "__iter__"):
        return value
    return list(_counted(value))


# ---- checks made before an operation builds its result -----------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(seq: Any, times: Any) -> None:
    if isinstance(seq, str | list | tuple) and _is_int(times):
        _check_size(type(seq), len(seq) * max(times, 0))


def _check_multiply(left: Any, right: Any) -> None:
    _check_repeat(left, right)
    _check_repeat(right, left)
    if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > _MAX_INT_DIGITS * 3.33:
        raise TemplateError(f"template failed: a product of {_digits(left)}-digit and {_digits(right)}-digit "
                            "numbers is too large to compute")


def _digits(n: int) -> int:
    return max(1, int(abs(n).bit_length() * math.log10(2)) + 1)


def _check_power(base: Any, exponent: Any) -> None:
    if not (_is_int(base) and _is_int(exponent)) or exponent <= 0 or abs(base) <= 1:
        return
    if exponent * math.log10(abs(base)) > _MAX_INT_DIGITS:
        raise TemplateError(f"template failed: {base if _digits(base) <= 20 else 'a big number'} ** {exponent} "
                            "is too large to compute")


def _check_add(left: Any, right: Any) -> None:
    if type(left) is type(right) and isinstance(left, str | list | tuple):
        _check_size(type(left), len(left) + len(right))


def _check_width(kind: type, width: Any, base: int = 0) -> None:
    if _is_int(width):
        _check_size(kind, max(width, base))


def _check_printf(fmt: Any, args: Any) -> None:
    """``fmt % args`` with a field width or precision beyond the output limit is refused."""
    if not isinstance(fmt, str):
        return
    values = args if isinstance(args, tuple) else (args,)
    for match in _PRINTF_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                for value in values:
                    _check_width(str, value)
            elif part is not None:
                _check_width(str, int(part))


def _check_format_spec(fmt: str) -> None:
    """``fmt.format(...)`` with a width beyond the output limit, or a nested spec, is refused."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format reports the same error itself
    for _, _, spec, _ in fields:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateError("template failed: nested format specifications are not allowed")
        for number in re.findall(r"\d+", spec):
            _check_width(str, int(number))


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        times = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            times = min(times, count)
        _check_size(str, len(text) + times * (len(new) - len(old)))


def _check_join(separator: Any, items: Any) -> None:
    if isinstance(separator, str) and isinstance(items, list | tuple):
        _charge(iterations=len(items))
        size = len(separator) * max(len(items) - 1, 0)
        _check_size(str, size + sum(len(i) if isinstance(i, str) else 1 for i in items))


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    arg = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_width(str, arg, len(text))
    elif name == "expandtabs":
        tab = arg if arg is not None else kwargs.get("tabsize", 8)
        if _is_int(tab):
            _check_size(str, len(text) + text.count("\t") * max(tab, 0))
    elif name == "replace":
        _check_replace(text, *args[:3])
    elif name == "join":
        _check_join(text, arg)
    elif name in ("format", "format_map"):
        _check_format_spec(text)


def _check_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    text = str(value)
    per_line = len(width) if isinstance(width, str) else width if _is_int(width) else 0
    _check_size(str, len(text) + max(per_line, 0) * (text.count("\n") + 1))


def _check_wordwrap(value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None,
                    *_: Any, **kwargs: Any) -> None:
    wrap = kwargs.get("wrapstring", wrapstring)
    text = str(value)
    _check_size(str, len(text) * (1 + (len(wrap) if isinstance(wrap, str) else 1)))


def _check_sum(value: Any, attribute: Any = None, start: Any = 0, **kwargs: Any) -> None:
    start = kwargs.get("start", start)
    if isinstance(start, str | list | tuple) and isinstance(value, list | tuple):
        _check_size(type(start), len(start) + sum(len(v) for v in value if isinstance(v, str | list | tuple)))


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": lambda value, width=80, *_, **__: _check_width(str, width, len(str(value))),
    "indent": _check_indent,
    "batch": lambda value, linecount, *_, **__: _check_width(list, linecount),
    "slice": lambda value, slices, *_, **__: _check_width(list, slices),
    "format": lambda value, *args, **kwargs: _check_printf(value, kwargs or args),
    "replace": lambda value, old, new, count=None, **__: _check_replace(value, old, new, count),
    "join": lambda value, d="", *_, **__: _check_join(d, value),
    "wordwrap": _check_wordwrap,
    "sum": _check_sum,
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` charging its input to the budget, pre-checked where it can amplify, its result checked."""
    skip = 0 if _PassArg.from_obj(func) is None else 1
    check = _FILTER_CHECKS.get(name)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            value = _measure(_materialized(args[skip]) if check is not None else args[skip])
            args = (*args[:skip], value, *args[skip + 1:])
            _charge(iterations=_input_cost(value))
            if check is not None:
                check(value, *args[skip + 1:], **kwargs)
        return _built(func(*args, **kwargs))

    return guarded


def _guard_test(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (``x is in(y)``, ``x is eq(y)``...) charging what it compares to the budget."""
    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _charge(iterations=sum(_input_cost(a) for a in args))
        return func(*args, **kwargs)

    return guarded


# ---- the environment -----------------------------------------------------------------------------------------

class _CodeGenerator(CodeGenerator):
    """Counts every for-loop iteration and the items compared (``in``, ``==``...), and bounds ``~``
    concatenation before it is built."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not isinstance(node.iter, nodes.Call) or not _is_counter(node.iter.node):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("counted"), [node.iter], [], None, None,
                                   lineno=node.iter.lineno)
        super().visit_For(node, frame)

    def visit_Operand(self, node: nodes.Operand, frame: Frame) -> None:
        self.write(f" {operators[node.op]} environment.compared(")
        self.visit(node.expr, frame)
        self.write(")")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _is_counter(node: nodes.Node) -> bool:
    return isinstance(node, nodes.EnvironmentAttribute) and node.name == "counted"


class _Environment(ImmutableSandboxedEnvironment):
    """Sandbox where ``a.b`` on a mapping means the key ``b`` first, so ``params.items`` is a parameter;
    with bounded operators, loops, filters and calls (see the module docstring)."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    @staticmethod
    def counted(iterable: Any) -> Iterator[Any]:
        return _counted(iterable)

    @staticmethod
    def compared(value: Any) -> Any:
        _charge(iterations=_input_cost(value))
        return value

    @staticmethod
    def joined(parts: tuple[Any, ...]) -> str:
        texts = [p if isinstance(p, str) else str(_finalize(p)) for p in parts]
        _check_size(str, sum(len(t) for t in texts))
        return "".join(texts)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_multiply(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "+":
            _check_add(left, right)
        elif operator == "%":
            _check_printf(left, _measure(right))
        return _built(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        target = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        _charge(iterations=_input_cost(target))
        if isinstance(target, str):
            args = tuple(_measure(_materialized(a)) for a in args)
            kwargs = {k: _measure(v) for k, v in kwargs.items()}
            _check_str_method(target, getattr(__obj, "__name__", ""), args, kwargs)
        return _built(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            _charge(iterations=_input_cost(value))
            return _built(value)
        return value


def _environment() -> _Environment:
    env = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize)
    for name in ("cycler", "joiner", "namespace", "lipsum"):
        env.globals.pop(name, None)
    env.globals["range"] = _range
    env.filters = {name: _guard_filter(name, func) for name, func in env.filters.items()}
    env.tests = {name: _guard_test(cast(Callable[..., Any], func)) for name, func in env.tests.items()}
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


def _render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render to text, keeping at most the output limit in memory but counting the whole length."""
    parts: list[str] = []
    total = 0
    for chunk in _compiled_template(text).generate(**context):
        total += len(chunk)
        if total <= _MAX_OUTPUT:
            parts.append(chunk)
    if total > _MAX_OUTPUT:
        raise _size_error(str, total)
    return "".join(parts)


def _evaluate(text: str, context: Mapping[str, Any]) -> Any:
    expr = _single_expression(text)
    if expr is None:
        return _render_text(text, context)
    return _plain(_compiled_expression(expr)(**context), [0])


def render_string(text: str, context: Mapping[str, Any]) -> Any:
    if not is_template(text):
        return text
    token = _BUDGET.set(_Budget())
    try:
        return _evaluate(text, context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template syntax error: {e.message}") from None
    except jinja2.exceptions.SecurityError as e:
        raise TemplateError(f"template tried something the sandbox forbids: {e}") from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template refers to something undefined: {e.message}") from None
    except RecursionError:
        raise TemplateError("template recursed too deeply") from None
    except MemoryError:
        raise TemplateError("template needs more memory than is available") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as e:
        raise TemplateError(f"template failed: {type(e).__name__}: {e}") from None
    finally:
        _BUDGET.reset(token)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value`` (dicts and lists recursively)."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> nodes.Template:
    """The parsed tree (cached: a generated runbook repeats the same template thousands of times; the
    analyses below only read it)."""
    expr = _single_expression(text)
    return ENV.parse("{{" + expr + "}}" if expr is not None else text)


@functools.lru_cache(maxsize=4096)
def syntax_error(text: str) -> str | None:
    """Why ``text`` is not a valid template, or None."""
    if not is_template(text):
        return None
    try:
        _parse(text)
    except jinja2.TemplateSyntaxError as e:
        return f"template syntax error: {e.message}"
    except RecursionError:
        return "template syntax error: nested too deeply"
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


@functools.lru_cache(maxsize=4096)
def references(text: str, root: str) -> frozenset[str]:
    """Names used as ``root.NAME`` or ``root['NAME']`` in a (syntactically valid) template."""
    if not is_template(text) or syntax_error(text):
        return frozenset()
    tree = _parse(text)
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
    return frozenset(found)


@functools.lru_cache(maxsize=4096)
def top_level_names(text: str) -> frozenset[str]:
    """Undeclared top-level variables a template uses."""
    from jinja2 import meta

    if not is_template(text) or syntax_error(text):
        return frozenset()
    try:
        return frozenset(meta.find_undeclared_variables(_parse(text)))
    except RecursionError:
        return frozenset()


def unsafe_access(text: str, data_names: Collection[str] = ()) -> str | None:
    """Why ``text`` visibly uses attributes the sandbox forbids (names starting with '_'), or None.

    ``data_names`` are variables holding mappings (params, steps, loop items...), where ``name._x`` reads
    the key ``_x``; a '_x' on anything else, and any '__x', is an attribute and always refused at run time."""
    if not is_template(text) or syntax_error(text):
        return None
    tree = _parse(text)
    private: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        assert isinstance(node, nodes.Getattr)
        key_of_data = isinstance(node.node, nodes.Name) and node.node.name in data_names
        if node.attr.startswith("_") and (node.attr.startswith("__") or not key_of_data):
            private.add(node.attr)
    for flt in tree.find_all(nodes.Filter):
        assert isinstance(flt, nodes.Filter)
        if flt.name == "attr" and flt.args and isinstance(flt.args[0], nodes.Const):
            name = flt.args[0].value
            if isinstance(name, str) and name.startswith("_"):
                private.add(name)
    if not private:
        return None
    names = "', '".join(sorted(private))
    return f"template uses '{names}', which the sandbox forbids: names starting with '_' are private"
