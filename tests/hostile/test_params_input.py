"""Hostile and wrong parameter values: resolve_params refuses each with one exact message, and values it
accepts are kept literally (never re-rendered as templates, never split or unquoted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actions import default_registry
from engine import templating
from engine.errors import ValidationError
from engine.params import resolve_params
from engine.plan import build_plan
from engine.runbook import Runbook, parse_runbook
from inventory.sources import load_inventory

pytestmark = pytest.mark.unit

REGISTRY = default_registry()
ROOT = Path(__file__).resolve().parents[2]

RUNBOOK = parse_runbook("""name: p
params:
  n: {type: int, min: 1, max: 10}
  f: {type: float, min: 0.5, max: 2.5}
  b: bool
  d: duration
  l: list
  s: {type: string, pattern: '[a-z]+[0-9]'}
  c: {type: string, choices: [fast, slow]}
  h: host
  r: {type: string, required: true, help: the node to replace}
  free: string
steps:
  - id: a
    action: core.echo
    with: {message: "{{ params.free }}"}
""", "p.yaml", REGISTRY)


@pytest.fixture(scope="module")
def inventory() -> Any:
    return load_inventory(ROOT / "inventory" / "example.yaml")


def refused(given: dict[str, Any], inventory: Any = None, runbook: Runbook = RUNBOOK) -> list[str]:
    with pytest.raises(ValidationError) as e:
        resolve_params(runbook, {"r": "node1", **given}, inventory)
    return [str(i) for i in e.value.issues]


WRONG: dict[str, tuple[dict[str, Any], str]] = {
    # ints
    "int from words": ({"n": "three"}, "p.yaml:3:3: parameter 'n' must be an integer, got 'three'"),
    "int from a fraction": ({"n": 2.5}, "p.yaml:3:3: parameter 'n' must be an integer, got 2.5"),
    "int from a bool": ({"n": True}, "p.yaml:3:3: parameter 'n' must be an integer, got True"),
    "int from a list": ({"n": [1]}, "p.yaml:3:3: parameter 'n' must be an integer, got [1]"),
    "int from null": ({"n": None}, "p.yaml:3:3: parameter 'n' must be an integer, got None"),
    "int from infinity": ({"n": float("inf")}, "p.yaml:3:3: parameter 'n' must be an integer, got inf"),
    "int from nan": ({"n": float("nan")}, "p.yaml:3:3: parameter 'n' must be an integer, got nan"),
    "int from shell": ({"n": "1; reboot"}, "p.yaml:3:3: parameter 'n' must be an integer, got '1; reboot'"),
    "int below min": ({"n": 0}, "p.yaml:3:3: parameter 'n' must be at least 1, got 0"),
    "int above max": ({"n": "11"}, "p.yaml:3:3: parameter 'n' must be at most 10, got 11"),
    # floats
    "float from words": ({"f": "abc"}, "p.yaml:4:3: parameter 'f' must be a number, got 'abc'"),
    "float from a bool": ({"f": False}, "p.yaml:4:3: parameter 'f' must be a number, got False"),
    "float from a list": ({"f": [1]}, "p.yaml:4:3: parameter 'f' must be a number, got [1]"),
    "float below min": ({"f": 0.1}, "p.yaml:4:3: parameter 'f' must be at least 0.5, got 0.1"),
    "float infinity": ({"f": "inf"}, "p.yaml:4:3: parameter 'f' must be a finite number, got inf"),
    "float minus infinity": ({"f": "-inf"}, "p.yaml:4:3: parameter 'f' must be a finite number, got -inf"),
    # bools
    "bool from maybe": ({"b": "maybe"}, "p.yaml:5:3: parameter 'b' must be true or false, got 'maybe'"),
    "bool from 2": ({"b": 2}, "p.yaml:5:3: parameter 'b' must be true or false, got 2"),
    "bool from a list": ({"b": []}, "p.yaml:5:3: parameter 'b' must be true or false, got []"),
    # durations
    "duration from words": ({"d": "soon"}, "p.yaml:6:3: parameter 'd' 'soon' is not a duration (use e.g. 90s, 15m, 6h, 1h30m)"),
    "negative duration": ({"d": "-5s"}, "p.yaml:6:3: parameter 'd' '-5s' is not a duration (use e.g. 90s, 15m, 6h, 1h30m)"),
    "negative number duration": ({"d": -5}, "p.yaml:6:3: parameter 'd' duration -5 is negative"),
    "duration from a list": ({"d": [1]}, "p.yaml:6:3: parameter 'd' [1] is not a duration (use e.g. 90s, 15m, 6h, 1h30m)"),
    "duration with shell": ({"d": "5s; reboot"},
                            "p.yaml:6:3: parameter 'd' '5s; reboot' is not a duration (use e.g. 90s, 15m, 6h, 1h30m)"),
    # lists
    "list from a mapping": ({"l": {"a": 1}}, "p.yaml:7:3: parameter 'l' must be a list, got {'a': 1}"),
    "list from a number": ({"l": 5}, "p.yaml:7:3: parameter 'l' must be a list, got 5"),
    "list from broken JSON": ({"l": "[1, 2"}, "p.yaml:7:3: parameter 'l' is not a JSON list: Expecting ',' delimiter"),
    # strings, patterns, choices
    "string from a mapping": ({"s": {"a": 1}}, "p.yaml:8:3: parameter 's' must be a string, got dict"),
    "pattern mismatch": ({"s": "abc"}, "p.yaml:8:3: parameter 's' 'abc' does not match the pattern '[a-z]+[0-9]'"),
    "pattern is anchored": ({"s": "ab1; rm -rf /"},
                            "p.yaml:8:3: parameter 's' 'ab1; rm -rf /' does not match the pattern '[a-z]+[0-9]'"),
    "pattern and a newline": ({"s": "ab1\nrm -rf /"},
                              "p.yaml:8:3: parameter 's' 'ab1\\nrm -rf /' does not match the pattern '[a-z]+[0-9]'"),
    "not a choice": ({"c": "medium"}, "p.yaml:9:3: parameter 'c' must be one of fast, slow, got 'medium'"),
    "a number is not a string choice": ({"c": 5}, "p.yaml:9:3: parameter 'c' must be one of fast, slow, got '5'"),
    # required and unknown
    "required given as null": ({"r": None}, "p.yaml:11:3: parameter 'r' must be a string, got NoneType"),
    "unknown parameter": ({"zz": 1}, "p.yaml:1:1: unknown parameter 'zz'; this runbook takes: n, f, b, d, l, s, c, h, r, free"),
    "unknown parameter with shell in its name": (
        {"x; rm -rf /": 1}, "p.yaml:1:1: unknown parameter 'x; rm -rf /'; this runbook takes: n, f, b, d, l, s, c, h, r, free"),
    # size
    "oversized string": ({"free": "a" * 5000}, "p.yaml:12:3: parameter 'free' is 5000 characters long; the limit is 4096"),
    "oversized int text": ({"n": "9" * 5000}, "p.yaml:3:3: parameter 'n' is 5000 characters long; the limit is 4096"),
    "oversized list text": ({"l": ",".join(["a"] * 3000)}, "p.yaml:7:3: parameter 'l' is 5999 characters long; the limit is 4096"),
}


@pytest.mark.parametrize("case", WRONG)
def test_wrong_values_are_refused_with_one_exact_message(case: str) -> None:
    given, message = WRONG[case]
    assert refused(given) == [message]


def test_a_missing_required_parameter_says_how_to_pass_it() -> None:
    with pytest.raises(ValidationError) as e:
        resolve_params(RUNBOOK, {})
    assert [str(i) for i in e.value.issues] == [
        "p.yaml:11:3: parameter 'r' is required (the node to replace): pass -p r=VALUE"]


def test_every_problem_is_reported_at_once() -> None:
    assert refused({"n": "x", "b": "maybe", "zz": 1}) == [
        "p.yaml:1:1: unknown parameter 'zz'; this runbook takes: n, f, b, d, l, s, c, h, r, free",
        "p.yaml:3:3: parameter 'n' must be an integer, got 'x'",
        "p.yaml:5:3: parameter 'b' must be true or false, got 'maybe'",
    ]


# ---- hosts against the real example inventory ------------------------------------------------------------

HOSTS = {
    "a near miss": ("par-osd9", "names host 'par-osd9', which is not in the inventory (did you mean 'par-osd3'?): "
                                "see 'hotswap inventory'"),
    "nothing close": ("zzz", "names host 'zzz', which is not in the inventory: see 'hotswap inventory'"),
    "a host with a command": ("par-osd2; rm -rf /", "names host 'par-osd2; rm -rf /', which is not in the inventory "
                                                    "(did you mean 'par-osd2'?): see 'hotswap inventory'"),
    "a substitution": ("$(touch /tmp/pwned)", "names host '$(touch /tmp/pwned)', which is not in the inventory: "
                                              "see 'hotswap inventory'"),
    "an address instead of a name": ("10.10.1.22", "names host '10.10.1.22', which is not in the inventory: "
                                                   "see 'hotswap inventory'"),
}


@pytest.mark.parametrize("case", HOSTS)
def test_a_host_not_in_the_inventory_is_refused(case: str, inventory: Any) -> None:
    value, message = HOSTS[case]
    assert refused({"h": value}, inventory) == [f"p.yaml:10:3: parameter 'h' {message}"]


def test_a_host_in_the_inventory_is_accepted(inventory: Any) -> None:
    assert resolve_params(RUNBOOK, {"r": "x", "h": "par-osd2"}, inventory)["h"] == "par-osd2"


# ---- accepted values stay literal ---------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "node2; rm -rf /tmp/x",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a\nb",
    "it's \"quoted\"",
    "{{ 7 * 7 }}",
    "{% for i in range(3) %}x{% endfor %}",
    "${HOME}",
    "--force",
    "*",
]


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_a_free_string_arrives_in_the_rendered_step_exactly_as_given(value: str) -> None:
    params = resolve_params(RUNBOOK, {"r": "x", "free": value})
    plan = build_plan(RUNBOOK, params, {})
    args = templating.render(plan.steps["a"].args, {"params": plan.params})
    assert args == {"message": value}


def test_a_list_parameter_is_split_on_commas_only() -> None:
    params = resolve_params(RUNBOOK, {"r": "x", "l": "a b; c,$(d)"})
    assert params["l"] == ["a b; c", "$(d)"]


# ---- bugs ------------------------------------------------------------------------------------------------

def test_nan_is_not_a_number_within_bounds() -> None:
    assert refused({"f": "nan"}) == ["p.yaml:4:3: parameter 'f' must be a finite number, got nan"]


def test_an_oversized_list_item_is_refused() -> None:
    assert refused({"l": ["a" * 5000]}) == ["p.yaml:7:3: parameter 'l' item 0 is 5000 characters long; the limit is 4096"]


def test_a_nul_byte_in_a_string_parameter_is_refused() -> None:
    assert refused({"free": "node2\x00; reboot"}) == ["p.yaml:12:3: parameter 'free' must not contain NUL bytes"]


@pytest.mark.parametrize("given, message", [
    ({"free": "a\x07b"}, "p.yaml:12:3: parameter 'free' must not contain control characters, found '\\x07'"),
    ({"h": "node2\x1b[2J"}, "p.yaml:10:3: parameter 'h' must not contain control characters, found '\\x1b'"),
    ({"l": ["a", "b\x00"]}, "p.yaml:7:3: parameter 'l' item 1 must not contain NUL bytes"),
    ({"l": ["a"] * 1001}, "p.yaml:7:3: parameter 'l' has 1001 items; the limit is 1000"),
    ({"l": [{"k": "a" * 5000}]}, "p.yaml:7:3: parameter 'l' item 0 is 5009 characters long; the limit is 4096"),
])
def test_control_characters_and_oversized_lists_are_refused(given: dict[str, Any], message: str) -> None:
    assert refused(given) == [message]


def test_tabs_and_line_ends_are_kept() -> None:
    assert resolve_params(RUNBOOK, {"r": "x", "free": "a\tb\r\nc"})["free"] == "a\tb\r\nc"
