"""Validation: every broken runbook is rejected with file, line, column, step and what to do."""

from __future__ import annotations

import pytest

from actions import default_registry
from engine.errors import ValidationError
from engine.runbook import ForEachNode, ParallelNode, StepNode, parse_runbook

pytestmark = pytest.mark.unit

REGISTRY = default_registry()


def issues(text: str | bytes) -> list[str]:
    with pytest.raises(ValidationError) as e:
        parse_runbook(text, "rb.yaml", REGISTRY)
    return [str(i) for i in e.value.issues]


def test_a_valid_runbook_parses_into_a_tree() -> None:
    rb = parse_runbook("""
name: ok
params:
  host: {type: string, required: true}
steps:
  - id: a
    action: core.echo
    with: {message: "{{ params.host }}"}
  - parallel:
      - id: b
        action: core.sleep
        with: {seconds: 1}
      - steps:
          - id: c
            action: core.echo
            with: {message: "{{ steps.a.result.message }}"}
  - id: each
    for_each: [1, 2]
    concurrency: 1
    action: core.echo
    with: {message: "{{ item }}"}
""", "ok.yaml", REGISTRY)
    kinds = [type(n) for n in rb.steps.items]
    assert kinds == [StepNode, ParallelNode, ForEachNode]
    assert rb.params["host"].required


def test_yaml_syntax_error_names_line_and_column() -> None:
    assert issues("name: x\nsteps:\n  - id: a\n    action: [unclosed\n") == [
        "rb.yaml:5:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"]


def test_non_utf8_is_rejected() -> None:
    assert issues(b"name: \xff\xfe\nsteps: []\n") == ["rb.yaml: not UTF-8 (byte 6): save the file as UTF-8"]


def test_python_objects_are_not_constructed() -> None:
    found = issues("name: x\nsteps:\n  - id: a\n    action: !!python/object/apply:os.system [echo pwned]\n")
    assert found == ["rb.yaml:4:13: unsupported value: tag 'tag:yaml.org,2002:python/object/apply:os.system' "
                     "is not allowed"]


def test_alias_bomb_is_rejected() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    found = issues("\n".join(lines))
    assert len(found) == 1 and "expands to more than 200000 values (alias bomb?)" in found[0]


def test_unknown_action_suggests_the_close_one() -> None:
    assert issues("name: x\nsteps:\n  - id: a\n    action: core.ecko\n") == [
        "rb.yaml:4:5: step 'a': unknown action 'core.ecko' (did you mean 'core.echo'?); "
        "run 'hotswap actions' to list them"]


def test_duplicate_step_ids() -> None:
    found = issues("name: x\nsteps:\n  - id: a\n    action: core.fail\n  - id: a\n    action: core.fail\n")
    assert found == ["rb.yaml:5:5: step 'a': duplicate step id 'a' (first used at line 3)"]


def test_arguments_are_checked_against_the_action_signature() -> None:
    found = issues("""name: x
steps:
  - id: a
    action: core.sleep
    with: {secs: 3}
  - id: b
    action: core.sleep
    with: {seconds: soon}
""")
    assert found == [
        "rb.yaml:5:5: step 'a': action core.sleep needs argument 'seconds' (float)",
        "rb.yaml:5:12: step 'a': action core.sleep has no argument 'secs' (did you mean 'seconds'?); it takes: seconds",
        "rb.yaml:8:12: step 'b': argument 'seconds' of core.sleep: expected a number, got str 'soon'",
    ]


def test_template_syntax_error() -> None:
    found = issues("name: x\nsteps:\n  - id: a\n    action: core.echo\n    with: {message: '{{ params.x '}\n")
    assert len(found) == 1 and found[0].startswith("rb.yaml:5:12: step 'a': template syntax error:")


def test_reference_to_a_later_step() -> None:
    found = issues("""name: x
steps:
  - id: a
    action: core.echo
    with: {message: "{{ steps.b.result }}"}
  - id: b
    action: core.echo
    with: {message: hi}
""")
    assert found == ["rb.yaml:5:12: step 'a': template refers to step 'b', which does not run before this step; "
                     "move it earlier or depend on a step that does"]


def test_reference_to_a_parallel_sibling_is_not_earlier() -> None:
    found = issues("""name: x
steps:
  - parallel:
      - id: a
        action: core.echo
        with: {message: hi}
      - id: b
        action: core.echo
        with: {message: "{{ steps.a.result }}"}
""")
    assert "template refers to step 'a', which does not run before this step" in found[0]


def test_reference_to_a_missing_step_and_parameter() -> None:
    found = issues("""name: x
params:
  host: string
steps:
  - id: a
    action: core.echo
    with: {message: "{{ steps.nope.result }} {{ params.hots }} {{ secret }}"}
""")
    assert found == [
        "rb.yaml:7:12: step 'a': template uses unknown name 'secret'; available: inventory, now, params, poll, run, steps",
        "rb.yaml:7:12: step 'a': template refers to parameter 'hots', which the runbook does not declare "
        "(did you mean 'host'?)",
        "rb.yaml:7:12: step 'a': template refers to step 'nope', which does not exist",
    ]


def test_schema_errors() -> None:
    found = issues("""name: x
stepz: []
params:
  n: {type: integer}
steps:
  - id: 1bad
    action: core.echo
    with: {message: hi}
    retry: {attempts: 0}
    timeout: soon
  - id: gate
    action: core.echo
    with: {message: hi}
    approval: {message: proceed, on_timeout: explode}
  - for_each: [1]
    action: core.echo
""")
    assert found == EXPECTED_SCHEMA_ERRORS


EXPECTED_SCHEMA_ERRORS = [
    "rb.yaml:2:1: unknown key 'stepz' (did you mean 'steps'?)",
    "rb.yaml:4:7: parameter 'n': unknown type 'integer'; use one of string, int, float, bool, duration, host, list, secret",
    "rb.yaml:6:5: step id '1bad' must start with a letter or '_' and use letters, digits, '_' or '-'",
    "rb.yaml:9:13: step '1bad': 'attempts' must be an integer from 1 to 100",
    "rb.yaml:10:5: step '1bad': 'soon' is not a duration (use e.g. 90s, 15m, 6h, 1h30m)",
    "rb.yaml:14:34: step 'gate': 'on_timeout' must be one of reject, approve, fail",
    "rb.yaml:15:5: a for_each block needs an 'id'",
]


def test_empty_and_non_mapping_documents() -> None:
    assert issues("") == ["rb.yaml: a runbook must be a mapping with at least 'name' and 'steps'"]
    assert issues("- a\n- b\n") == ["rb.yaml:1:1: a runbook must be a mapping with at least 'name' and 'steps'"]


def test_huge_document_is_rejected_before_parsing() -> None:
    found = issues("name: x\nsteps: []\n# " + "x" * 1_000_001)
    assert found == ["rb.yaml: document is 1000021 characters; the limit is 1000000"]


def test_every_shipped_runbook_validates() -> None:
    from pathlib import Path

    from engine.runbook import load_runbook

    for path in sorted(Path("runbooks").glob("*.yaml")):
        load_runbook(path, REGISTRY)
