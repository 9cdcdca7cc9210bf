"""Templates that try to leave the sandbox or exhaust the worker.

Each one is refused at validation (parse_runbook) when that is detectable, and otherwise fails its
single step at run time (engine.templating.render) with a clear TemplateError: never executing
anything, never returning Python internals, never eating unbounded memory or time. Cases that could
allocate a lot run in a child process with a capped address space (tests/hostile/isolated.py).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from actions import default_registry
from engine import templating
from engine.errors import ValidationError
from engine.runbook import Runbook, parse_runbook
from tests.hostile.isolated import render_isolated

pytestmark = pytest.mark.unit

REGISTRY = default_registry()
CONTEXT: dict[str, Any] = {"params": {"host": "n1", "n": 3}, "inventory": {}, "steps": {}}
FORBIDS = "template tried something the sandbox forbids: "


def render_error(text: str, context: dict[str, Any] | None = None) -> str:
    with pytest.raises(templating.TemplateError) as e:
        templating.render(text, CONTEXT if context is None else context)
    return str(e.value)


def runbook_with(message: str) -> str:
    escaped = message.replace("'", "''")
    return f"name: x\nparams: {{host: string}}\nsteps:\n  - id: a\n    action: core.echo\n    with: {{message: '{escaped}'}}\n"


def parse(message: str) -> Runbook:
    return parse_runbook(runbook_with(message), "rb.yaml", REGISTRY)


def validation_issues(message: str) -> list[str]:
    with pytest.raises(ValidationError) as e:
        parse(message)
    return [str(i) for i in e.value.issues]


# ---- escapes refused at run time -------------------------------------------------------------------------

ESCAPES = {
    "str mro subclasses": ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                           FORBIDS + "access to attribute '__class__' of 'str' object is unsafe."),
    "mro subclasses inside text": ("x {{ ''.__class__.__mro__[1].__subclasses__() }} y",
                                   FORBIDS + "access to attribute '__class__' of 'str' object is unsafe."),
    "tuple base": ("{{ ().__class__.__base__ }}", FORBIDS + "access to attribute '__class__' of 'tuple' object is unsafe."),
    "cycler globals": ("{{ cycler.__init__.__globals__ }}",
                       FORBIDS + "access to attribute '__init__' of 'StrictUndefined' object is unsafe."),
    "joiner globals": ("{{ joiner.__init__.__globals__ }}",
                       FORBIDS + "access to attribute '__init__' of 'StrictUndefined' object is unsafe."),
    "template reference context": ("{{ self._TemplateReference__context }}",
                                   FORBIDS + "access to attribute '_TemplateReference__context' of 'TemplateReference' "
                                             "object is unsafe."),
    "function globals": ("{{ range.__globals__ }}", FORBIDS + "access to attribute '__globals__' of 'function' object is unsafe."),
    "function globals os": ("{{ range.__globals__['os'].popen('touch MARKER') }}",
                          FORBIDS + "access to attribute '__globals__' of 'function' object is unsafe."),
    "format string attribute walk": ("{{ '{0.__init__.__globals__}'.format(range) }}",
                                     FORBIDS + "access to attribute '__init__' of 'function' object is unsafe."),
    "format string class": ("{{ '{0.__class__}'.format(params.host) }}",
                            FORBIDS + "access to attribute '__class__' of 'str' object is unsafe."),
    "dict class": ("{{ params.__class__ }}", FORBIDS + "access to attribute '__class__' of 'dict' object is unsafe."),
    "dict class by subscript": ("{{ params['__class__'] }}", FORBIDS + "access to attribute '__class__' of 'dict' object is unsafe."),
    "attr filter": ("{{ params|attr('__class__') }}", FORBIDS + "access to attribute '__class__' of 'dict' object is unsafe."),
    "selectattr": ("{{ params|selectattr('__class__')|list }}",
                   FORBIDS + "access to attribute '__class__' of 'str' object is unsafe."),
    "type mro": ("{{ dict.mro() }}", FORBIDS + "access to attribute 'mro' of 'type' object is unsafe."),
    "type subclasses": ("{{ dict.__subclasses__() }}", FORBIDS + "access to attribute '__subclasses__' of 'type' object is unsafe."),
    "dunder method": ("{{ params.host.__len__() }}", FORBIDS + "access to attribute '__len__' of 'str' object is unsafe."),
    "mutating params": ("{{ params.update({'host': 'evil'}) }}", FORBIDS + "access to attribute 'update' of 'dict' object is unsafe."),
    "mutating a list": ("{{ [].append(1) }}", FORBIDS + "access to attribute 'append' of 'list' object is unsafe."),
    "mutating through set": ("{% set u = params.update %}{{ u }}",
                             FORBIDS + "access to attribute 'update' of 'dict' object is unsafe."),
    "popping a dict": ("{{ dict(a=1).pop('a') }}", FORBIDS + "access to attribute 'pop' of 'dict' object is unsafe."),
    "mro attribute": ("{{ params.host.mro }}", "template refers to something undefined: 'str object' has no attribute 'mro'"),
    "func_globals": ("{{ range.func_globals }}",
                     "template refers to something undefined: 'function object' has no attribute 'func_globals'"),
    "request": ("{{ request }}", "template refers to something undefined: 'request' is undefined"),
    "config": ("{{ config.items() }}", "template refers to something undefined: 'config' is undefined"),
    "__import__": ("{{ __import__('os').system('touch MARKER') }}",
                   "template refers to something undefined: '__import__' is undefined"),
    "getattr builtin": ("{{ getattr(params, '__class__') }}", "template refers to something undefined: 'getattr' is undefined"),
    "include a file": ("{% include '/etc/passwd' %}", "template failed: TypeError: no loader for this environment specified"),
    "import a module": ("{% import 'os' as os %}{{ os.system('touch MARKER') }}",
                        "template failed: TypeError: no loader for this environment specified"),
    "extends a file": ("{% extends '/etc/passwd' %}", "template failed: TypeError: no loader for this environment specified"),
    "a billion-item range": ("{{ range(10**9) }}",
                             "template failed: OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)."),
    "a billion-item range as a list": ("{{ range(10**9)|list }}",
                                       "template failed: OverflowError: Range too big. The sandbox blocks ranges larger "
                                       "than MAX_RANGE (100000)."),
}


@pytest.mark.parametrize("case", ESCAPES)
def test_escapes_fail_the_step_with_a_clear_message_and_run_nothing(case: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text, message = ESCAPES[case]
    assert render_error(text.replace("MARKER", str(marker))) == message
    assert not marker.exists()


def test_the_parameters_are_unchanged_after_a_mutation_attempt() -> None:
    context = {"params": {"host": "n1"}}
    render_error("{{ params.update({'host': 'evil'}) }}", context)
    assert context == {"params": {"host": "n1"}}


# ---- refused at validation when detectable --------------------------------------------------------------

def test_unknown_globals_are_refused_at_validation() -> None:
    available = "available: inventory, now, params, poll, run, steps"
    for name in ("request", "config", "cycler", "joiner", "namespace", "__import__", "getattr", "os"):
        assert validation_issues(f"{{{{ {name}.x }}}}") == [
            f"rb.yaml:6:12: step 'a': template uses unknown name '{name}'; {available}"]


def test_a_private_name_as_a_parameter_subscript_is_refused_at_validation() -> None:
    assert validation_issues("{{ params['__class__'] }}") == [
        "rb.yaml:6:12: step 'a': template refers to parameter '__class__', which the runbook does not declare"]


PRIVATE = {
    "class": ("{{ params.host.__class__ }}", "__class__"),
    "mro chain": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__', '__mro__', '__subclasses__"),
    "globals": ("{{ range.__globals__ }}", "__globals__"),
    "template reference": ("{{ self._TemplateReference__context }}", "_TemplateReference__context"),
    "attr filter": ("{{ params|attr('__class__') }}", "__class__"),
    "inside text": ("x {{ params.host.__len__() }}", "__len__"),
}


@pytest.mark.parametrize("case", PRIVATE)
def test_private_attribute_access_is_refused_at_validation(case: str) -> None:
    text, attr = PRIVATE[case]
    assert validation_issues(text) == [
        f"rb.yaml:6:12: step 'a': template uses '{attr}', which the sandbox forbids: names starting with '_' are private"]


def test_lipsum_is_not_available() -> None:
    assert render_error("{{ lipsum(1) }}") == "template refers to something undefined: 'lipsum' is undefined"


def test_lipsum_is_refused_at_validation() -> None:
    assert validation_issues("{{ lipsum(100000) }}") == [
        "rb.yaml:6:12: step 'a': template uses unknown name 'lipsum'; available: inventory, now, params, poll, run, steps"]


@pytest.mark.parametrize("text, kind", [("{{ ''.join }}", "builtin_function_or_method"), ("{{ self }}", "TemplateReference")])
def test_only_plain_data_comes_out_of_a_template(text: str, kind: str) -> None:
    assert render_error(text) == (f"template produced a {kind}; only text, numbers, booleans, lists and mappings "
                                  "are allowed")


# ---- resource exhaustion -------------------------------------------------------------------------------------

def test_a_loop_building_a_huge_string_fails_on_the_output_limit() -> None:
    assert render_error("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}") == (
        "template output is 10000000 characters; the limit is 1000000")


def test_a_huge_repeated_string_fails_cleanly_without_eating_memory() -> None:
    result = render_isolated("{{ 'x' * 100000000 }}")
    assert (result["outcome"], result["message"]) == (
        "TemplateError", "template output is 100000000 characters; the limit is 1000000")
    assert result["peak_mb"] < 50


def test_a_huge_repeated_string_inside_text_is_refused_before_it_is_built() -> None:
    result = render_isolated("a{{ 'x' * 100000000 }}")
    assert (result["outcome"], result["message"]) == (
        "TemplateError", "template output is 100000000 characters; the limit is 1000000")
    assert result["peak_mb"] < 50


def test_a_repetition_count_from_a_parameter_is_bounded() -> None:
    result = render_isolated("{{ 'x' * params.n }}", {"params": {"n": 100_000_000}})
    assert (result["outcome"], result["message"]) == (
        "TemplateError", "template output is 100000000 characters; the limit is 1000000")
    assert result["peak_mb"] < 50


def test_a_huge_repeated_list_is_refused() -> None:
    assert render_error("{{ [1] * params.n }}", {"params": {"n": 2_000_000}}) == (
        "template output is a list of 2000000 items; the limit is 1000000")


def test_constant_expressions_are_not_folded_into_generated_code() -> None:
    tracemalloc.start()
    try:
        value = templating.render("{{ [0] * 50000 }}", {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value == [0] * 50000
    assert peak < 8 * 2**20


def test_a_concatenation_over_the_limit_is_refused() -> None:
    assert render_error("{{ params.a ~ params.a }}", {"params": {"a": "x" * 600_000}}) == (
        "template output is 1200000 characters; the limit is 1000000")


def test_a_huge_power_is_refused_before_it_is_computed() -> None:
    assert render_error("{{ 2 ** params.e }}", {"params": {"e": 100_000_000}}) == (
        "template failed: 2 ** 100000000 is too large to compute")


def test_a_huge_constant_power_does_not_crash_validation() -> None:
    assert parse("{{ 2 ** 100000000 }}").name == "x"


def test_nested_loops_have_an_iteration_budget() -> None:
    assert render_error("{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}") == (
        "template iterates more than 1000000 times; the limit is 1000000")


def test_a_recursive_macro_fails_cleanly() -> None:
    assert render_error("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}") == "template recursed too deeply"


# ---- other ways to build big values or burn time: refused before the work is done ------------------------------

AMPLIFIERS = {
    "str method padding": ("{{ 'x'.center(10**9) }}", "template output is 1000000000 characters; the limit is 1000000"),
    "center filter": ("{{ 'x'|center(10**9) }}", "template output is 1000000000 characters; the limit is 1000000"),
    "indent filter": ("{{ 'x'|indent(10**9, true) }}", "template output is 1000000001 characters; the limit is 1000000"),
    "printf width": ("{{ '%0999999999d' % 1 }}", "template output is 999999999 characters; the limit is 1000000"),
    "printf star width": ("{{ '%*d' % (10**9, 1) }}", "template output is 1000000000 characters; the limit is 1000000"),
    "format width": ("{{ '{:>999999999}'.format(1) }}", "template output is 999999999 characters; the limit is 1000000"),
    "nested format width": ("{{ '{:{w}}'.format(1, w=10**9) }}",
                            "template failed: nested format specifications are not allowed"),
    "replace": ("{{ ('a' * 1000000).replace('a', 'bb') }}", "template output is 2000000 characters; the limit is 1000000"),
    "batch fill": ("{{ [1]|batch(10**9, 0)|list }}", "template output is a list of 1000000000 items; the limit is 1000000"),
    "slice count": ("{{ [1]|slice(10**9)|list }}", "template output is a list of 1000000000 items; the limit is 1000000"),
    "join with a big separator": ("{{ range(100000)|map('string')|join('x' * 100000) }}",
                                  "template output is 10000388890 characters; the limit is 1000000"),
    "shared sublists as text": ("{{ ([[0] * 999999] * 1000)|string }}",
                                "template value holds more than 1000000 characters and items; the limit is 1000000"),
    "shared sublists as JSON": ("{{ ([[0] * 999999] * 1000)|tojson }}",
                                "template value holds more than 1000000 characters and items; the limit is 1000000"),
    "shared sublists summed": ("{{ ([[0] * 999999] * 999)|sum(start=[]) }}",
                               "template value holds more than 1000000 characters and items; the limit is 1000000"),
    "a big product": ("{{ 10**4000 * 10**4000 }}",
                      "template failed: a product of 4001-digit and 4001-digit numbers is too large to compute"),
    "fresh big strings in a loop": ("{% for i in range(100000) %}{{ 'y' * 999999 }}{% endfor %}",
                                    "template builds more than 20000000 characters and items; the limit is 20000000"),
    "a macro building in a loop": ("{% macro m() %}{% for i in range(100000) %}{{ 'x' * 999 }}{% endfor %}{% endmacro %}"
                                   "{{ m() }}",
                                   "template builds more than 20000000 characters and items; the limit is 20000000"),
    "one big string output many times": ("{% set a = 'x' * 999999 %}{% for i in range(100000) %}{{ a }}{% endfor %}",
                                         "template output is 99999900000 characters; the limit is 1000000"),
    "membership tests in a loop": ("{% set l = range(100000)|list %}{% for i in range(100000) %}{% if -1 in l %}{% endif %}"
                                   "{% endfor %}", "template iterates more than 1000000 times; the limit is 1000000"),
    "filters in a loop": ("{% set a = 'x' * 999999 %}{% for i in range(100000) %}{{ a|length }}{% endfor %}",
                          "template iterates more than 1000000 times; the limit is 1000000"),
}


@pytest.mark.parametrize("case", AMPLIFIERS)
def test_other_amplifiers_are_refused_before_they_build(case: str) -> None:
    text, message = AMPLIFIERS[case]
    result = render_isolated(text)
    assert (result["outcome"], result["message"]) == ("TemplateError", message)
    assert result["peak_mb"] < 50


PLAIN = {
    "a range becomes a list": ("{{ range(3) }}", [0, 1, 2]),
    "a tuple becomes a list": ("{{ (1, 'a') }}", [1, "a"]),
    "nested data": ("{{ {'a': [1, 2.5, none, true]} }}", {"a": [1, 2.5, None, True]}),
    "printf": ("{{ '%s-%03d' % ('n', 7) }}", "n-007"),
    "concatenation": ("{{ 'a' ~ 1 ~ [1, 2] }}", "a1[1, 2]"),
    "membership and comparison": ("{{ 3 in [1, 2, 3] and 'a' not in 'bcd' and 1 < 2 <= 3 and 1 is in([1]) }}", True),
    "a filtered loop": ("{% for x in range(10) if x > 6 %}{{ x }}{% endfor %}", "789"),
    "a slice": ("{{ range(10)[2:5]|list }}", [2, 3, 4]),
    "a negative power": ("{{ 2 ** -2 }}", 0.25),
}


@pytest.mark.parametrize("case", PLAIN)
def test_ordinary_templates_still_work(case: str) -> None:
    text, expected = PLAIN[case]
    assert templating.render(text, {}) == expected


@pytest.mark.parametrize("text", ["{{ params._x }}", "{% for s in params.l %}{{ s._y }}{% endfor %}"])
def test_underscore_keys_of_data_are_not_private_attributes(text: str) -> None:
    assert templating.unsafe_access(text, {"params", "s"}) is None
    assert templating.unsafe_access(text.replace("._", ".__"), {"params", "s"}) is not None
