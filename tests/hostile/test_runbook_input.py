"""Hostile and broken runbook files: every one is refused with one exact, located message, and loading
one never constructs objects, runs anything or crashes with anything but ValidationError."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions import default_registry
from engine.errors import ValidationError
from engine.params import resolve_params
from engine.plan import build_plan
from engine.runbook import load_runbook, parse_runbook

pytestmark = pytest.mark.unit

REGISTRY = default_registry()
ECHO = "    action: core.echo\n    with: {message: hi}\n"


def issues(text: str | bytes) -> list[str]:
    with pytest.raises(ValidationError) as e:
        parse_runbook(text, "rb.yaml", REGISTRY)
    return [str(i) for i in e.value.issues]


def plan_issues(text: str, **params: object) -> list[str]:
    """Issues found only once parameters are known and for_each blocks are expanded."""
    runbook = parse_runbook(text, "rb.yaml", REGISTRY)
    with pytest.raises(ValidationError) as e:
        build_plan(runbook, resolve_params(runbook, params), {})
    return [str(i) for i in e.value.issues]


# ---- malformed YAML ------------------------------------------------------------------------------

MALFORMED = {
    "tab indentation": ("name: x\n\tsteps: []\n",
                        "rb.yaml:2:1: YAML syntax error: found character '\\t' that cannot start any token"),
    "unclosed quote": ("name: 'x\nsteps: []\n", "rb.yaml:3:1: YAML syntax error: found unexpected end of stream"),
    "unclosed flow list": ("name: x\nsteps:\n  - id: a\n    action: [unclosed\n",
                           "rb.yaml:5:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
    "bad indentation": ("name: x\nsteps:\n  - id: a\n   action: core.echo\n",
                        "rb.yaml:4:4: YAML syntax error: expected <block end>, but found '<block mapping start>'"),
    "key outside its list item": ("name: x\nsteps:\n  - id: a\n  action: core.echo\n",
                                  "rb.yaml:4:3: YAML syntax error: expected <block end>, but found '?'"),
    "colon in plain scalar": ("name: x: y\nsteps: []\n", "rb.yaml:1:8: YAML syntax error: mapping values are not allowed here"),
    "two documents": ("name: x\n---\nname: y\n", "rb.yaml:2:1: YAML syntax error: but found another document"),
    "undefined alias": ("name: *nope\nsteps: []\n", "rb.yaml:1:7: YAML syntax error: found undefined alias 'nope'"),
    "unsupported YAML version": ("%YAML 2.0\n---\nname: x\n",
                                 "rb.yaml:1:1: YAML syntax error: found incompatible YAML document (version 1.* is required)"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_yaml_is_one_located_syntax_error(case: str) -> None:
    text, message = MALFORMED[case]
    assert issues(text) == [message]


@pytest.mark.parametrize("char, column", [("\x00", 8), ("\x07", 8), ("\ud800", 8)])
def test_unacceptable_characters_are_located(char: str, column: int) -> None:
    assert issues(f"name: x{char}\nsteps: []\n") == [
        f"rb.yaml:1:{column}: YAML syntax error: unacceptable character #x{ord(char):04x}: "
        "special characters are not allowed"]


# ---- encodings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("data, byte", [
    (b"name: x\nsteps: []\n# \xc3\x28\n", 20),
    ("name: caf\u00e9\n".encode("latin-1"), 9),
    ("name: x\n".encode("utf-16"), 0),
])
def test_non_utf8_is_refused(data: bytes, byte: int) -> None:
    assert issues(data) == [f"rb.yaml: not UTF-8 (byte {byte}): save the file as UTF-8"]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_utf8_bom_is_accepted(tmp_path: Path, as_bytes: bool) -> None:
    text = "\ufeffname: bom\nsteps:\n  - id: a\n" + ECHO
    runbook = parse_runbook(text.encode() if as_bytes else text, "rb.yaml", REGISTRY)
    assert runbook.name == "bom"
    path = tmp_path / "bom.yaml"
    path.write_bytes(text.encode("utf-8"))
    assert load_runbook(path, REGISTRY).steps.items[0].id == "a"  # type: ignore[union-attr]


def test_an_unreadable_file_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as e:
        load_runbook(tmp_path / "missing.yaml", REGISTRY)
    assert str(e.value) == f"{tmp_path / 'missing.yaml'}: cannot read runbook: No such file or directory"


# ---- size, expansion and depth ---------------------------------------------------------------------

def test_a_document_over_one_megabyte_is_refused_before_parsing() -> None:
    data = b"name: x\nsteps: []\n# " + b"x" * 1_000_001
    assert issues(data) == ["rb.yaml: document is 1000021 bytes; the limit is 1000000"]


@pytest.mark.slow
def test_a_document_with_too_many_values_is_refused() -> None:
    """Slow (~13 s): the whole 750 KB document is composed by pure-Python PyYAML before the count is checked."""
    text = "name: x\nsteps: [" + ", ".join(["1"] * 250_000) + "]\n"
    assert issues(text) == ["rb.yaml:2:599994: document expands to more than 200000 values (alias bomb?)"]


def _alias_bomb(open_: str, item: str, close: str) -> str:
    lines = [f"a: &a {open_}" + ", ".join(item.format(prev="x", i=j) for j in range(10)) + close]
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} {open_}" + ", ".join(item.format(prev=f"*{prev}", i=j) for j in range(10)) + close)
    return "\n".join(lines) + "\nname: x\nsteps: []\n"


@pytest.mark.parametrize("kind, text", [
    ("lists", _alias_bomb("[", "{prev}", "]")),
    ("mappings", _alias_bomb("{", "k{i}: {prev}", "}")),
])
def test_alias_bombs_are_refused(kind: str, text: str) -> None:
    found = issues(text)
    assert len(found) == 1
    assert found[0].endswith(": document expands to more than 200000 values (alias bomb?)")


def test_a_merge_key_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 {" + ", ".join(f"k{j}: x" for j in range(10)) + "}"]
    for i in range(1, 7):
        lines.append(f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 10) + f"], own{i}: [*a{i - 1}, *a{i - 1}, *a{i - 1}]}}")
    found = issues("\n".join(lines) + "\nname: x\nsteps: []\n")
    assert len(found) == 1 and found[0].endswith(": document expands to more than 200000 values (alias bomb?)")


DEEP = {
    "10,000 nested flow lists": ("name: x\nsteps: " + "[" * 10_000 + "]" * 10_000 + "\n", "2:107"),
    "10,000 nested flow mappings": ("name: x\nsteps: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "2:404"),
    "10,000 nested block sequences": ("name: x\nsteps:\n" + "- " * 10_000 + "x\n", "3:199"),
}


@pytest.mark.parametrize("case", DEEP)
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(case: str) -> None:
    text, where = DEEP[case]
    assert issues(text) == [f"rb.yaml:{where}: YAML syntax error: collections nested more than 100 levels deep"]


def test_moderate_nesting_in_arguments_still_loads() -> None:
    data = "[" * 40 + "1" + "]" * 40
    runbook = parse_runbook(f"name: x\nsteps:\n  - id: a\n    action: core.echo\n    with: {{message: hi, data: {data}}}\n",
                            "rb.yaml", REGISTRY)
    assert runbook.steps.items[0].args["data"] == eval(data)  # type: ignore[union-attr]


def test_a_recursive_anchor_is_refused() -> None:
    assert issues("name: x\nsteps: &s [*s]\n") == [
        "rb.yaml:2:8: an alias refers to the collection that contains it (recursive anchor)"]


# ---- tags: nothing is ever constructed ----------------------------------------------------------------

TAGS = {
    "python/object/apply sequence": (
        "name: x\nsteps:\n  - id: a\n    action: !!python/object/apply:os.system [touch {marker}]\n",
        "rb.yaml:4:13: unsupported value: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"),
    "python/object/apply scalar": (
        "name: !!python/object/apply:os.system touch {marker}\nsteps: []\n",
        "rb.yaml:1:7: unsupported value: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"),
    "python/object/new mapping": (
        "name: x\nsteps:\n  - !!python/object/new:os.system {{args: [touch {marker}]}}\n",
        "rb.yaml:3:5: unsupported value: tag 'tag:yaml.org,2002:python/object/new:os.system' is not allowed"),
    "python/object": (
        "name: !!python/object:os.system x\nsteps: []\n",
        "rb.yaml:1:7: unsupported value: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'"),
    "python/name": (
        "name: !!python/name:os.system ''\nsteps: []\n",
        "rb.yaml:1:7: unsupported value: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'"),
    "custom scalar tag": ("name: !env HOME\nsteps: []\n",
                          "rb.yaml:1:7: unsupported value: could not determine a constructor for the tag '!env'"),
    "custom mapping tag": ("name: x\nsteps:\n  - !step {{id: a, action: core.echo}}\n",
                           "rb.yaml:3:5: unsupported value: tag '!step' is not allowed"),
    "TAG directive": ("%TAG !e! tag:example.com,2000:\n---\nname: !e!foo x\nsteps: []\n",
                      "rb.yaml:3:7: unsupported value: could not determine a constructor for the tag "
                      "'tag:example.com,2000:foo'"),
    "set": ("name: x\nsteps: !!set {{a, b}}\n", "rb.yaml:2:8: unsupported value: tag 'tag:yaml.org,2002:set' is not allowed"),
    "omap": ("name: x\nsteps: !!omap [a: 1]\n", "rb.yaml:2:8: unsupported value: tag 'tag:yaml.org,2002:omap' is not allowed"),
    "str tag on a mapping": ("name: !!str {{a: 1}}\nsteps: []\n",
                             "rb.yaml:1:7: unsupported value: tag 'tag:yaml.org,2002:str' is not allowed"),
    "map tag on a scalar": ("name: !!map x\nsteps: []\n",
                            "rb.yaml:1:7: unsupported value: expected a mapping node, but found scalar"),
}


@pytest.mark.parametrize("case", TAGS)
def test_tags_are_refused_and_nothing_is_constructed(case: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text, message = TAGS[case]
    assert issues(text.format(marker=marker)) == [message]
    assert not marker.exists()


def test_a_plain_str_tag_on_a_scalar_is_fine() -> None:
    assert parse_runbook("name: !!str 2024\nsteps:\n  - id: a\n" + ECHO, "rb.yaml", REGISTRY).name == "2024"


# ---- scalars that look typed but are not valid ---------------------------------------------------------

BAD_SCALARS = {
    "impossible date": ("message: 2020-02-30", "5:21", "'2020-02-30' is not a valid timestamp"),
    "impossible time": ("message: 2020-01-01 25:00:00", "5:21", "'2020-01-01 25:00:00' is not a valid timestamp"),
    "empty hex": ("message: 0x_", "5:21", "'0x_' is not a valid int"),
    "explicit int": ("message: !!int abc", "5:21", "'abc' is not a valid int"),
    "explicit float": ("message: !!float abc", "5:21", "'abc' is not a valid float"),
    "explicit bool": ("message: !!bool abc", "5:21", "'abc' is not a valid bool"),
    "explicit timestamp": ("message: !!timestamp abc", "5:21", "'abc' is not a valid timestamp"),
    "explicit empty int": ("message: !!int ''", "5:21", "'' is not a valid int"),
    "explicit empty bool": ("message: !!bool ''", "5:21", "'' is not a valid bool"),
    "5000-digit int": ("message: " + "9" * 5000, "5:21", "'" + "9" * 40 + "...' is not a valid int"),
}


@pytest.mark.parametrize("case", BAD_SCALARS)
def test_invalid_typed_scalars_are_validation_errors(case: str) -> None:
    value, where, why = BAD_SCALARS[case]
    assert issues(f"name: x\nsteps:\n  - id: a\n    action: core.echo\n    with: {{{value}}}\n") == [
        f"rb.yaml:{where}: unsupported value: {why} (quote it to use it as a string)"]


# ---- keys ----------------------------------------------------------------------------------------

DUPLICATES = {
    "top level": ("name: x\nname: y\nsteps: []\n", "rb.yaml:2:1: duplicate key 'name'"),
    "in a step": ("name: x\nsteps:\n  - id: a\n    id: b\n" + ECHO, "rb.yaml:4:5: duplicate key 'id'"),
    "in with": ("name: x\nsteps:\n  - id: a\n    action: core.echo\n    with: {message: a, message: b}\n",
                "rb.yaml:5:24: duplicate key 'message'"),
    "in params": ("name: x\nparams:\n  n: int\n  n: string\nsteps: []\n", "rb.yaml:4:3: duplicate key 'n'"),
    "int and string spelling": ("name: x\n1: a\n'1': b\nsteps: []\n", "rb.yaml:3:1: duplicate key '1'"),
}


@pytest.mark.parametrize("case", DUPLICATES)
def test_duplicate_keys_are_refused(case: str) -> None:
    text, message = DUPLICATES[case]
    assert issues(text) == [message]


@pytest.mark.parametrize("text, where", [
    ("name: x\n? [a, b]\n: 1\nsteps: []\n", "2:3"),
    ("name: x\n~: 1\nsteps: []\n", "2:1"),
    ("m: &m {x: 1}\nname: x\n*m : 2\nsteps: []\n", "1:4"),
])
def test_non_scalar_keys_are_refused(text: str, where: str) -> None:
    assert issues(text) == [f"rb.yaml:{where}: mapping keys must be plain scalars"]


# ---- document shape ----------------------------------------------------------------------------------

SHAPES = {
    "empty document": ("", ["rb.yaml: a runbook must be a mapping with at least 'name' and 'steps'"]),
    "a list": ("- a\n", ["rb.yaml:1:1: a runbook must be a mapping with at least 'name' and 'steps'"]),
    "a scalar": ("hello\n", ["rb.yaml:1:1: a runbook must be a mapping with at least 'name' and 'steps'"]),
    "no steps": ("name: x\n", ["rb.yaml:1:1: 'steps' is required: a list of steps",
                               "rb.yaml:1:1: the list of steps is empty"]),
    "empty steps": ("name: x\nsteps: []\n", ["rb.yaml:2:1: the list of steps is empty"]),
    "null steps": ("name: x\nsteps:\n", ["rb.yaml:2:1: the list of steps is empty"]),
    "steps is a string": ("name: x\nsteps: hello\n", ["rb.yaml:2:1: expected a list of steps"]),
    "a step is a string": ("name: x\nsteps:\n  - core.echo\n",
                           ["rb.yaml:3:5: a step must be a mapping with 'action', 'parallel' or 'for_each'"]),
    "a step is a number": ("name: x\nsteps:\n  - 3\n",
                           ["rb.yaml:3:5: a step must be a mapping with 'action', 'parallel' or 'for_each'"]),
    "a step is null": ("name: x\nsteps:\n  -\n",
                       ["rb.yaml:3:4: a step must be a mapping with 'action', 'parallel' or 'for_each'"]),
    "a step without action": ("name: x\nsteps:\n  - id: a\n",
                              ["rb.yaml:3:5: step 'a': a step needs 'action' (or 'parallel', 'for_each', 'steps')"]),
    "a step without id": ("name: x\nsteps:\n  - action: core.echo\n    with: {message: hi}\n",
                          ["rb.yaml:3:5: a step needs an 'id' so later steps, logs and resume can name it"]),
    "nested steps not a list": ("name: x\nsteps:\n  - steps: 3\n", ["rb.yaml:3:5: expected a list of steps"]),
    "empty parallel": ("name: x\nsteps:\n  - parallel: []\n", ["rb.yaml:3:5: 'parallel' must be a non-empty list of branches"]),
    "parallel is a string": ("name: x\nsteps:\n  - parallel: abc\n",
                             ["rb.yaml:3:5: 'parallel' must be a non-empty list of branches"]),
    "a branch is a string": ("name: x\nsteps:\n  - parallel: [abc]\n",
                             ["rb.yaml:3:16: a step must be a mapping with 'action', 'parallel' or 'for_each'"]),
    "name is a list": ("name: [x]\nsteps:\n  - id: a\n" + ECHO, ["rb.yaml:1:1: 'name' is required and must be a string"]),
    "name is a date": ("name: 2020-01-01\nsteps:\n  - id: a\n" + ECHO, ["rb.yaml:1:1: 'name' is required and must be a string"]),
    "unknown top-level key": ("name: x\nstpes: []\nsteps:\n  - id: a\n" + ECHO,
                              ["rb.yaml:2:1: unknown key 'stpes' (did you mean 'steps'?)"]),
    "params is a list": ("name: x\nparams: [a]\nsteps:\n  - id: a\n" + ECHO,
                         ["rb.yaml:2:1: 'params' must be a mapping of name -> {type, required, default, ...}"]),
}


@pytest.mark.parametrize("case", SHAPES)
def test_wrong_document_shapes(case: str) -> None:
    text, expected = SHAPES[case]
    assert issues(text) == expected


# ---- ids ---------------------------------------------------------------------------------------------

IDS = {
    "integer": ("id: 3", "rb.yaml:3:5: step id 3 must start with a letter or '_' and use letters, digits, '_' or '-'"),
    "list": ("id: [a]", "rb.yaml:3:5: step id ['a'] must start with a letter or '_' and use letters, digits, '_' or '-'"),
    "shell": ("id: 'a; rm -rf /'",
              "rb.yaml:3:5: step id 'a; rm -rf /' must start with a letter or '_' and use letters, digits, '_' or '-'"),
    "template": ("id: '{{ params.x }}'",
                 "rb.yaml:3:5: step id '{{ params.x }}' must start with a letter or '_' and use letters, digits, '_' or '-'"),
    "reserved": ("id: items", "rb.yaml:3:5: step id 'items' is reserved; choose another"),
}


@pytest.mark.parametrize("case", IDS)
def test_invalid_step_ids(case: str) -> None:
    line, message = IDS[case]
    assert issues(f"name: x\nsteps:\n  - {line}\n" + ECHO) == [message]


def test_an_overlong_id_says_what_the_limit_is() -> None:
    long_id = "a" * 65
    assert issues(f"name: x\nsteps:\n  - id: {long_id}\n" + ECHO) == [
        f"rb.yaml:3:5: step id '{long_id}' must start with a letter or '_', use letters, digits, '_' or '-', "
        "and be at most 64 characters"]


@pytest.mark.parametrize("text, message", [
    ("name: x\nsteps:\n  - parallel:\n      - id: a\n" + ECHO.replace("    ", "        ") + "      - id: a\n"
     + ECHO.replace("    ", "        "), "rb.yaml:7:9: step 'a': duplicate step id 'a' (first used at line 4)"),
    ("name: x\nsteps:\n  - id: a\n" + ECHO + "cleanup:\n  - id: a\n" + ECHO,
     "rb.yaml:7:5: step 'a': duplicate step id 'a' (first used at line 3)"),
    ("name: x\nsteps:\n  - id: f\n    for_each: [1]\n    steps:\n      - id: f\n" + ECHO.replace("    ", "        "),
     "rb.yaml:6:9: step 'f': duplicate step id 'f' (first used at line 3)"),
])
def test_duplicate_ids_anywhere(text: str, message: str) -> None:
    assert issues(text) == [message]


# ---- references that would form cycles or point nowhere -------------------------------------------------

def _echo(sid: str, message: str) -> str:
    return f"  - id: {sid}\n    action: core.echo\n    with: {{message: '{message}'}}\n"


REFERENCES = {
    "a step reading itself": (
        _echo("a", "{{ steps.a.result }}"),
        ["rb.yaml:5:12: step 'a': template refers to step 'a', which does not run before this step; "
         "move it earlier or depend on a step that does"]),
    "two steps reading each other": (
        _echo("a", "{{ steps.b.result }}") + _echo("b", "{{ steps.a.result }}"),
        ["rb.yaml:5:12: step 'a': template refers to step 'b', which does not run before this step; "
         "move it earlier or depend on a step that does"]),
    "a missing step": (_echo("a", "{{ steps.nope.result }}"),
                       ["rb.yaml:5:12: step 'a': template refers to step 'nope', which does not exist"]),
    "a condition reading a later step": (
        "  - id: a\n    action: core.echo\n    with: {message: hi}\n    when: steps.b.result\n" + _echo("b", "hi"),
        ["rb.yaml:6:5: step 'a': template refers to step 'b', which does not run before this step; "
         "move it earlier or depend on a step that does"]),
    "an unknown root name": (_echo("a", "{{ os.system }}"),
                             ["rb.yaml:5:12: step 'a': template uses unknown name 'os'; "
                              "available: inventory, now, params, poll, run, steps"]),
}


@pytest.mark.parametrize("case", REFERENCES)
def test_references_that_cannot_be_satisfied(case: str) -> None:
    steps, expected = REFERENCES[case]
    assert issues("name: x\nsteps:\n" + steps) == expected


# ---- actions and their arguments ---------------------------------------------------------------------------

ACTIONS = {
    "unknown": ("action: os.system", "unknown action 'os.system'; run 'hotswap actions' to list them"),
    "misspelt": ("action: core.ecko", "unknown action 'core.ecko' (did you mean 'core.echo'?); run 'hotswap actions' to list them"),
    "a number": ("action: 3", "unknown action 3; run 'hotswap actions' to list them"),
    "a list": ("action: [core.echo]",
               "unknown action ['core.echo'] (did you mean 'core.echo'?); run 'hotswap actions' to list them"),
    "a template": ("action: '{{ params.a }}'", "unknown action '{{ params.a }}'; run 'hotswap actions' to list them"),
}


@pytest.mark.parametrize("case", ACTIONS)
def test_unknown_actions(case: str) -> None:
    line, message = ACTIONS[case]
    assert issues(f"name: x\nsteps:\n  - id: a\n    {line}\n") == [f"rb.yaml:4:5: step 'a': {message}"]


ARGS = {
    "list for a string": ("core.echo", "{message: [1]}", "5:12", "argument 'message' of core.echo: expected str, got list [1]"),
    "mapping for a string": ("core.echo", "{message: {a: 1}}", "5:12",
                             "argument 'message' of core.echo: expected str, got dict {'a': 1}"),
    "date for a string": ("core.echo", "{message: 2020-01-01}", "5:12",
                          "argument 'message' of core.echo: expected str, got date datetime.date(2020, 1, 1)"),
    "string for a number": ("core.sleep", "{seconds: soon}", "5:12",
                            "argument 'seconds' of core.sleep: expected a number, got str 'soon'"),
    "bool for a number": ("core.sleep", "{seconds: true}", "5:12",
                          "argument 'seconds' of core.sleep: expected a number, got bool True"),
    "bool for an integer": ("core.fail", "{times: true}", "5:12", "argument 'times' of core.fail: expected an integer, got bool True"),
    "float for an integer": ("core.fail", "{times: 1.5}", "5:12", "argument 'times' of core.fail: expected an integer, got float 1.5"),
    "out of a Literal": ("core.approve", "{message: ok, on_timeout: explode}", "5:25",
                         "argument 'on_timeout' of core.approve: expected one of 'reject', 'approve', 'fail', got 'explode'"),
    "string for a list": ("core.approve", "{message: ok, approvers: alice}", "5:25",
                          "argument 'approvers' of core.approve: expected list[str] | null, got str 'alice'"),
    "unknown argument": ("core.echo", "{message: hi, shell: 'rm -rf /'}", "5:25",
                         "action core.echo has no argument 'shell'; it takes: message, data"),
    "with is a list": ("core.echo", "[message, hi]", "5:5", "'with' must be a mapping of argument -> value"),
}


@pytest.mark.parametrize("case", ARGS)
def test_wrong_argument_types(case: str) -> None:
    action, with_, where, message = ARGS[case]
    found = issues(f"name: x\nsteps:\n  - id: a\n    action: {action}\n    with: {with_}\n")
    assert found[0] == f"rb.yaml:{where}: step 'a': {message}"


# ---- step options ------------------------------------------------------------------------------------------

OPTIONS = {
    "negative timeout": ("timeout: -5", "6:5", "duration -5 is negative"),
    "list timeout": ("timeout: [1]", "6:5", "[1] is not a duration (use e.g. 90s, 15m, 6h, 1h30m)"),
    "retry -1": ("retry: -1", "6:5", "'attempts' must be an integer from 1 to 100"),
    "retry 1000": ("retry: 1000", "6:5", "'attempts' must be an integer from 1 to 100"),
    "retry a string": ("retry: lots", "6:5", "'retry' is a number of attempts or {attempts, backoff, max_delay, jitter}"),
    "approval a list": ("approval: [1]", "6:5", "'approval' is a message or {message, approvers, timeout, on_timeout}"),
    "approvers a string": ("approval: {message: ok, approvers: alice}", "6:29", "'approvers' must be a list of identities (or a template of one)"),
}


@pytest.mark.parametrize("case", OPTIONS)
def test_wrong_step_options(case: str) -> None:
    line, where, message = OPTIONS[case]
    assert issues(f"name: x\nsteps:\n  - id: a\n{ECHO}    {line}\n") == [f"rb.yaml:{where}: step 'a': {message}"]


def test_a_condition_syntax_error_is_reported_once() -> None:
    assert issues(f"name: x\nsteps:\n  - id: a\n{ECHO}    when: '{{{{ 1 +'\n") == [
        "rb.yaml:6:5: step 'a': template syntax error: unexpected 'end of template'"]


# ---- for_each ------------------------------------------------------------------------------------------------

def _for_each(items: str, extra: str = "") -> str:
    return f"name: x\nparams: {{l: list}}\nsteps:\n  - id: f\n    for_each: {items}\n{extra}" + ECHO


FOR_EACH_STATIC = {
    "a number": ("3", "", "rb.yaml:5:5: step 'f': 'for_each' must be a list or a template rendering to a list"),
    "a mapping": ("{a: 1}", "", "rb.yaml:5:5: step 'f': 'for_each' must be a list or a template rendering to a list"),
    "concurrency 0": ("[1]", "    concurrency: 0\n", "rb.yaml:6:5: step 'f': 'concurrency' must be a positive integer"),
    "concurrency true": ("[1]", "    concurrency: true\n", "rb.yaml:6:5: step 'f': 'concurrency' must be a positive integer"),
    "concurrency a string": ("[1]", "    concurrency: '2'\n", "rb.yaml:6:5: step 'f': 'concurrency' must be a positive integer"),
    "as params": ("[1]", "    as: params\n",
                  "rb.yaml:6:5: step 'f': 'as' must be a plain name not in ['inventory', 'now', 'params', 'poll', 'run', 'steps']"),
    "as a shell string": ("[1]", "    as: '$(id)'\n",
                          "rb.yaml:6:5: step 'f': 'as' must be a plain name not in ['inventory', 'now', 'params', 'poll', 'run', 'steps']"),
    "both action and steps": ("[1]", "    steps: []\n",
                              "rb.yaml:4:5: step 'f': a for_each block has either 'action' (one step) or 'steps', not both"),
}


@pytest.mark.parametrize("case", FOR_EACH_STATIC)
def test_for_each_shape_errors(case: str) -> None:
    items, extra, message = FOR_EACH_STATIC[case]
    assert issues(_for_each(items, extra)) == [message]


FOR_EACH_RENDERED = {
    "an integer": ("'{{ 5 }}'", "rb.yaml:5:5: step 'f': for_each must produce a list, got int"),
    "a string": ("'{{ \"abc\" }}'", "rb.yaml:5:5: step 'f': for_each must produce a list, got str"),
    "mixed text": ("'a{{ 1 }}'", "rb.yaml:5:5: step 'f': for_each must produce a list, got str"),
    "none": ("'{{ none }}'", "rb.yaml:5:5: step 'f': for_each must produce a list, got NoneType"),
    "an unset list parameter": ("'{{ params.l }}'", "rb.yaml:5:5: step 'f': for_each must produce a list, got NoneType"),
    "a failing template": ("'{{ 1 / 0 }}'", "rb.yaml:5:5: step 'f': template failed: ZeroDivisionError: division by zero"),
    "a range beyond the sandbox": ("'{{ range(10**9)|list }}'",
                                   "rb.yaml:5:5: step 'f': template failed: OverflowError: Range too big. "
                                   "The sandbox blocks ranges larger than MAX_RANGE (100000)."),
}


@pytest.mark.parametrize("case", FOR_EACH_RENDERED)
def test_for_each_rendering_to_a_non_list(case: str) -> None:
    items, message = FOR_EACH_RENDERED[case]
    assert plan_issues(_for_each(items)) == [message]


def test_for_each_over_an_earlier_result_is_refused() -> None:
    text = "name: x\nsteps:\n" + _echo("a", "hi") + "  - id: f\n    for_each: '{{ steps.a.result }}'\n" + ECHO
    assert plan_issues(text) == [
        "rb.yaml:7:5: step 'f': for_each over an earlier step's result is not supported yet: fan out over "
        "parameters or inventory, or let the action handle the list"]


def test_a_for_each_of_100k_items_is_one_clear_error() -> None:
    assert plan_issues(_for_each("'{{ range(100000)|list }}'")) == [
        "rb.yaml:5:5: step 'f': for_each produced 100000 items; the limit is 20000"]


def test_nested_for_each_over_the_plan_limit_is_one_clear_error() -> None:
    text = ("name: x\nsteps:\n  - id: f\n    for_each: '{{ range(300)|list }}'\n    steps:\n"
            "      - id: g\n        for_each: '{{ range(300)|list }}'\n        action: core.echo\n"
            "        with: {message: hi}\n")
    assert plan_issues(text) == ["rb.yaml:6:9: the plan exceeds 50000 steps; split the work into several runs"]


# ---- parameter definitions ---------------------------------------------------------------------------------

PARAM_DEFS = {
    "unknown type": ("n: {type: integer}",
                     "rb.yaml:3:7: parameter 'n': unknown type 'integer'; use one of string, int, float, bool, "
                     "duration, host, list, secret"),
    "type is a list": ("n: {type: [int]}",
                       "rb.yaml:3:7: parameter 'n': unknown type '['int']'; use one of string, int, float, bool, "
                       "duration, host, list, secret"),
    "bad regular expression": ("n: {type: string, pattern: '('}",
                               "rb.yaml:3:21: invalid regular expression: missing ), unterminated subpattern at position 0"),
    "bad name": ("'a b': string", "rb.yaml:3:3: parameter name 'a b' must be letters, digits, '_' or '-'"),
    "a number as spec": ("n: 5", "rb.yaml:3:3: a parameter is a mapping like {type: string, required: true}"),
    "unknown key": ("n: {type: int, minimum: 3}", "rb.yaml:3:18: unknown parameter key 'minimum' (did you mean 'min'?)"),
    "choices a string": ("n: {type: string, choices: abc}", "rb.yaml:3:21: 'choices' must be a list"),
    "default template syntax": ("n: {type: string, default: '{{ x'}",
                                "rb.yaml:3:21: template syntax error: unexpected end of template, "
                                "expected 'end of print statement'."),
}


@pytest.mark.parametrize("case", PARAM_DEFS)
def test_bad_parameter_definitions(case: str) -> None:
    line, message = PARAM_DEFS[case]
    assert issues(f"name: x\nparams:\n  {line}\nsteps:\n  - id: a\n" + ECHO) == [message]


@pytest.mark.parametrize("key", ["min", "max"])
def test_a_non_numeric_bound_is_refused_at_validation(key: str) -> None:
    assert issues(f"name: x\nparams:\n  n: {{type: int, {key}: lots}}\nsteps:\n  - id: a\n" + ECHO) == [
        f"rb.yaml:3:18: '{key}' must be a number"]  # located at the key, like every other parameter-definition issue


# ---- locks ---------------------------------------------------------------------------------------------------

def test_a_lock_template_failing_at_plan_time_is_a_located_validation_error() -> None:
    text = "name: x\nlocks: ['{{ 1 / 0 }}']\nsteps:\n  - id: a\n" + ECHO
    assert plan_issues(text) == ["rb.yaml:2:9: template failed: ZeroDivisionError: division by zero"]


# ---- oversized values ------------------------------------------------------------------------------------------

def test_an_oversized_with_value_is_bounded_by_the_document_limit() -> None:
    text = "name: x\nsteps:\n  - id: a\n    action: core.echo\n    with: {message: '" + "x" * 1_000_000 + "'}\n"
    assert issues(text) == ["rb.yaml: document is 1000071 characters; the limit is 1000000"]


# ---- more of the same, found while fixing the above -------------------------------------------------------------

def test_nesting_built_up_through_aliases_is_refused() -> None:
    lines = ["a0: &a0 " + "[" * 90 + "]" * 90]
    lines += [f"a{i}: &a{i} " + "[" * 90 + f"*a{i - 1}" + "]" * 90 for i in range(1, 5)]
    found = issues("\n".join(lines) + "\nname: x\nsteps: []\n")
    assert len(found) == 1 and found[0].endswith(": collections nested more than 100 levels deep (through aliases)")


def test_a_for_each_syntax_error_is_reported_once() -> None:
    assert issues(_for_each("'{{ 1 +'")) == ["rb.yaml:5:5: step 'f': template syntax error: unexpected 'end of template'"]


def test_a_lock_limit_failing_at_plan_time_is_located() -> None:
    text = "name: x\nlocks:\n  - {name: a, limit: '{{ 1 / 0 }}'}\nsteps:\n  - id: a\n" + ECHO
    assert plan_issues(text) == ["rb.yaml:3:15: lock 'a': template failed: ZeroDivisionError: division by zero"]
