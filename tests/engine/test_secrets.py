"""Secrets: references in, values only inside the worker, never in Redis, logs, events or results."""

from __future__ import annotations

import pytest

from engine.errors import ValidationError
from tests.engine.conftest import SECRET_VALUE, Harness

pytestmark = pytest.mark.slow

RUNBOOK = """
name: secret
params:
  token: {type: secret, required: true}
steps:
  - id: use
    action: core.echo
    with: {message: "calling the API with {{ params.token }}", data: {auth: "Bearer {{ params.token }}"}}
  - id: fail
    action: core.fail
    with: {message: "API refused token {{ params.token }}"}
"""


def every_value_in_redis(engine: Harness) -> bytes:
    r = engine.store.r
    blob = bytearray()
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            blob += r.get(key) or b""
        elif kind == b"hash":
            for k, v in r.hgetall(key).items():
                blob += k + v
        elif kind == b"list":
            blob += b"".join(r.lrange(key, 0, -1))
        elif kind == b"zset":
            blob += b"".join(m for m, _ in r.zrange(key, 0, -1, withscores=True))
        elif kind == b"set":
            blob += b"".join(r.smembers(key))
        elif kind == b"stream":
            for _, fields in r.xrange(key):
                for k, v in fields.items():
                    blob += k + v
    return bytes(blob)


def test_a_secret_is_used_by_the_step_but_never_stored(engine: Harness) -> None:
    run = engine.launch(RUNBOOK, token="env:HS_TEST_TOKEN")
    record = engine.wait(run)
    assert record["status"] == "failed"
    assert record["reason"] == "step fail failed: API refused token *** (attempt 1)"
    use = engine.step(run, "use")
    assert use["result"] == {"message": "calling the API with ***", "data": {"auth": "Bearer ***"}}
    assert [line["msg"] for line in engine.store.logs(run, "use")] == ["calling the API with ***"]
    assert record["params"] == {"token": "env:HS_TEST_TOKEN"}
    assert SECRET_VALUE.encode() not in every_value_in_redis(engine)


def test_a_literal_secret_is_refused_before_anything_runs(engine: Harness) -> None:
    before = len(engine.store.list_runs(1000))
    with pytest.raises(ValidationError) as e:
        engine.launch(RUNBOOK, token=SECRET_VALUE)
    assert str(e.value).endswith("parameter 'token' takes a reference, env:NAME or file:/path, not the secret "
                                 "itself, so the secret never lands in Redis, logs or the audit trail")
    assert SECRET_VALUE not in str(e.value)
    assert len(engine.store.list_runs(1000)) == before


def test_a_missing_secret_fails_the_step_with_a_clear_reason(engine: Harness) -> None:
    run = engine.launch(RUNBOOK, token="env:HS_NOT_SET")
    record = engine.wait(run)
    assert record["reason"] == "step use failed: secret env:HS_NOT_SET: the worker has no environment variable HS_NOT_SET"
