"""Nothing ran and nothing was lost: launching an invalid runbook through Service.launch, with a real
redis-server and real workers, raises ValidationError and creates no run, no Redis key for a run, and
leaves earlier runs exactly as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.errors import ValidationError
from tests.engine.conftest import Harness

pytestmark = pytest.mark.slow

VALID = "name: ok\nsteps:\n  - id: a\n    action: core.echo\n    with: {message: hi}\n"


def run_ids(h: Harness) -> set[str]:
    """Every run id that has any key in Redis."""
    prefix = h.store.keys.prefix + "run:"
    return {key.decode()[len(prefix):].split(":", 1)[0] for key in h.store.r.scan_iter(match=prefix + "*", count=1000)}


def snapshot(h: Harness, run_id: str) -> dict[str, Any]:
    """The raw content of every key of one run."""
    prefix = f"{h.store.keys.prefix}run:{run_id}"
    keys = sorted(h.store.r.scan_iter(match=prefix + "*", count=1000))
    return {key: h.store.r.dump(key) for key in keys}


def refused(h: Harness, text: str, **params: Any) -> list[str]:
    runs, ids = len(h.store.list_runs(limit=100_000)), run_ids(h)
    with pytest.raises(ValidationError) as e:
        h.launch(text, **params)
    assert len(h.store.list_runs(limit=100_000)) == runs
    assert run_ids(h) == ids
    return [str(i) for i in e.value.issues]


CASES = {
    "YAML syntax": ("name: x\nsteps:\n  - id: a\n    action: [unclosed\n", {},
                    ["{rb}:5:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"]),
    "unknown action": ("name: x\nsteps:\n  - id: a\n    action: os.system\n", {},
                       ["{rb}:4:5: step 'a': unknown action 'os.system'; run 'hotswap actions' to list them"]),
    "python tag": ("name: x\nsteps:\n  - id: a\n    action: !!python/object/apply:os.system [touch {marker}]\n", {},
                   ["{rb}:4:13: unsupported value: tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed"]),
    "missing parameter": ("name: x\nparams:\n  node: {type: string, required: true}\nsteps:\n  - id: a\n"
                          "    action: core.echo\n    with: {message: '{{ params.node }}'}\n", {},
                          ["{rb}:3:3: parameter 'node' is required: pass -p node=VALUE"]),
    "unknown parameter": (VALID, {"node": "$(touch {marker})"},
                          ["{rb}:1:1: unknown parameter 'node'; this runbook takes: none"]),
    "parameter pattern": ("name: x\nparams:\n  node: {type: string, pattern: '[a-z0-9-]+'}\nsteps:\n  - id: a\n"
                          "    action: core.echo\n    with: {message: '{{ params.node }}'}\n", {"node": "n2; touch {marker}"},
                          ["{rb}:3:3: parameter 'node' 'n2; touch {marker}' does not match the pattern '[a-z0-9-]+'"]),
    "for_each over a non-list": ("name: x\nsteps:\n  - id: f\n    for_each: '{{ 5 }}'\n    action: core.echo\n"
                                 "    with: {message: hi}\n", {},
                                 ["{rb}:4:5: step 'f': for_each must produce a list, got int"]),
    "template escape": ("name: x\nsteps:\n  - id: a\n    action: core.echo\n"
                        "    with: {message: \"{{ cycler.__init__.__globals__.os.system('touch {marker}') }}\"}\n", {},
                        ["{rb}:5:12: step 'a': template uses unknown name 'cycler'; "
                         "available: inventory, now, params, poll, run, steps",
                         "{rb}:5:12: step 'a': template uses '__globals__', '__init__', which the sandbox forbids: "
                         "names starting with '_' are private"]),
    "10,000 nested lists": ("name: x\nsteps: " + "[" * 10_000 + "]" * 10_000 + "\n", {},
                            ["{rb}:2:107: YAML syntax error: collections nested more than 100 levels deep"]),
    "a recursive anchor": ("name: x\nsteps: &s [*s]\n", {},
                           ["{rb}:2:8: an alias refers to the collection that contains it (recursive anchor)"]),
    "an impossible date": ("name: x\nsteps:\n  - id: a\n    action: core.echo\n    with: {message: 2020-02-30}\n", {},
                           ["{rb}:5:21: unsupported value: '2020-02-30' is not a valid timestamp "
                            "(quote it to use it as a string)"]),
}


@pytest.mark.parametrize("case", CASES)
def test_an_invalid_launch_creates_no_run_and_runs_nothing(case: str, engine: Harness, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text, params, expected = CASES[case]
    rb = engine.tmp / "rb.yaml"
    given = {k: v.replace("{marker}", str(marker)) for k, v in params.items()}
    assert refused(engine, text.replace("{marker}", str(marker)), **given) == [
        e.replace("{rb}", str(rb)).replace("{marker}", str(marker)) for e in expected]
    assert not marker.exists()


def test_refused_launches_leave_an_earlier_run_untouched(engine: Harness) -> None:
    run_id = engine.launch(VALID)
    assert engine.wait(run_id)["status"] == "succeeded"
    before = snapshot(engine, run_id)
    for text, params, _ in CASES.values():
        with pytest.raises(ValidationError):
            engine.launch(text.replace("{marker}", "/nonexistent/pwned"), **params)
    assert snapshot(engine, run_id) == before
    assert engine.store.run(run_id)["status"] == "succeeded"
