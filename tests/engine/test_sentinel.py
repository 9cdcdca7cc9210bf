"""Redis high availability for real: Debian's redis-server and redis-sentinel on 127.0.0.1, a master SIGKILLed
while a run executes on real `hotswap worker` processes, and transitions that wait for a replica (WAIT)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kombu.utils.url import url_to_parts

from actions import default_registry
from engine.celery_app import make_app
from engine.config import load_config, redis_client
from engine.errors import ConfigError
from engine.redisconn import NotReplicated, Replication, celery_urls, parse_sentinel_url
from engine.service import prepare
from engine.states import Status
from engine.store import Store
from tests.engine.conftest import Harness
from tests.support.redis_server import RedisServer, SentinelCluster, debian_redis, replica_of
from tests.support.workers import Worker, wait_for

pytestmark = pytest.mark.slow

URL = "sentinel://:s%40cret@10.0.0.1:26380,10.0.0.2,[::1]:5000/mymaster/3?sentinel_password=sp"


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_credentials() -> None:
    t = parse_sentinel_url(URL)
    assert t.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 5000))
    assert (t.service, t.db, t.username, t.password, t.sentinel_password) == ("mymaster", 3, None, "s@cret", "sp")
    assert parse_sentinel_url("sentinel://alice:pw@h1/svc").username == "alice"
    assert parse_sentinel_url("sentinel://h1:1,h2:2/svc").db == 0


def test_kombu_and_celery_get_their_own_spelling_of_a_sentinel_url() -> None:
    urls = celery_urls(URL)
    chunks = urls.broker.split(";")
    assert urls.backend == urls.broker and len(chunks) == 3
    parts = [url_to_parts(c) for c in chunks]
    assert [(p.scheme, p.hostname, p.port, p.password, p.path) for p in parts] == [
        ("sentinel", "10.0.0.1", 26380, "s@cret", "3"), ("sentinel", "10.0.0.2", 26379, "s@cret", "3"),
        ("sentinel", "::1", 5000, "s@cret", "3")]
    for options in (urls.broker_options, urls.backend_options):
        assert options["master_name"] == "mymaster" and options["sentinel_kwargs"]["password"] == "sp"
    assert celery_urls("redis://127.0.0.1:6379/0").broker == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(("url", "complaint"), [
    ("sentinel://h1:26379", "service name"),
    ("sentinel://h1:26379/svc/zero", "database must be a number"),
    ("sentinel://h1:port/svc", "is not host.:port."),
    ("sentinel://h1:99999/svc", "is not host.:port."),
    ("sentinel://h1,,h2/svc", "is not host.:port."),
    ("sentinel://:pw@h1/svc?master=x", "unknown option"),
])
def test_a_malformed_sentinel_url_is_a_config_error_that_shows_the_syntax(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as err:
        redis_client(url)
    assert "pw" not in str(err.value)


def test_min_replicas_comes_from_the_environment_or_the_config_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOTSWAP_REDIS_URL", "HOTSWAP_MIN_REPLICAS", "HOTSWAP_REPLICA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config.yaml"
    monkeypatch.setenv("HOTSWAP_CONFIG", str(config))
    config.write_text("redis_url: sentinel://127.0.0.1/hs\nmin_replicas: 1\nreplica_timeout: 0.5\n")
    assert load_config().replication == Replication(1, 0.5)
    monkeypatch.setenv("HOTSWAP_MIN_REPLICAS", "2")
    assert load_config().replication == Replication(2, 0.5)
    monkeypatch.setenv("HOTSWAP_MIN_REPLICAS", "two")
    with pytest.raises(ConfigError, match="whole number"):
        load_config()
    monkeypatch.setenv("HOTSWAP_MIN_REPLICAS", "1")
    monkeypatch.setenv("HOTSWAP_REPLICA_TIMEOUT", "60")
    with pytest.raises(ConfigError, match="at most"):
        load_config()
    monkeypatch.delenv("HOTSWAP_REPLICA_TIMEOUT")
    config.write_text("min_replicas: 1\n")
    with pytest.raises(ConfigError, match="embedded Redis has no replicas"):
        load_config()


GATED = """
name: gated
locks: ["cluster:x"]
steps:
  - parallel:
      - id: a
        action: core.echo
        with: {message: a}
      - id: b
        action: core.echo
        with: {message: b}
      - id: gate
        action: core.approve
        with: {message: "go?"}
"""


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    server, _ = debian_redis()
    master = RedisServer(tmp_path / "master", binary=server, extra=["--repl-diskless-sync-delay", "0"]).start()
    replica: RedisServer | None = None
    try:
        replica = replica_of(master, tmp_path / "replica", server)
        yield master, replica
    finally:
        if replica is not None:
            replica.thaw()
            replica.stop()
        master.stop()


def test_transitions_wait_for_a_replica_and_say_so_when_none_confirms(
        master_and_replica: tuple[RedisServer, RedisServer], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    master, replica = master_and_replica
    store = Store(redis_client(master.url, Replication(min_replicas=1, timeout=0.3)))
    on_replica = Store(redis_client(replica.url))
    (tmp_path / "rb.yaml").write_text(GATED)
    _, plan = prepare(tmp_path / "rb.yaml", {}, default_registry())
    store.create_run("r1", plan, {"launched_by": "test", "source": "cli"})

    replica.freeze()
    try:
        busy = store.acquire_locks("r1", plan)
    finally:
        replica.thaw()
    assert busy == ("cluster:x", "r1 (itself: not yet confirmed by the Redis replicas)"), "the run waits and retries"
    admin = redis_client(master.url)
    wait_for(lambda: admin.wait(1, 1000) == 1, timeout=10, what="the thawed replica to confirm the master's writes")
    assert store.acquire_locks("r1", plan) is None
    assert on_replica.lock_holders("cluster:x") == ["r1"], "a lock is on the replica once acquire_locks says so"

    assert sorted(store.start_run("r1")) == ["a", "b", "gate"]
    claim = store.claim("r1", "a", "w1")
    assert claim.ok and on_replica.statuses("r1")["a"] == "running", "a claim is on the replica when it returns"

    replica.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(NotReplicated, match=r"the claim of step b \(run r1\).*0 of the 1 replicas"):
            store.claim("r1", "b", "w1")
        assert time.monotonic() - started >= 0.3
        assert store.statuses("r1")["b"] == "running", "the claim stands; its lease ends and the step is taken over"
        with pytest.raises(NotReplicated, match="the outcome of step a"):
            store.complete("r1", "a", claim.token, Status.SUCCEEDED, result={"message": "a"})
        assert store.statuses("r1")["a"] == "succeeded"
        with caplog.at_level(logging.WARNING, logger="hotswap.redis"):
            assert store.record_decision("r1", "gate", {"approved": True, "by": "alice"}) is True
        assert "the decision on step gate (run r1) is on the Redis master but not confirmed" in caplog.text
    finally:
        replica.thaw()
    wait_for(lambda: on_replica.statuses("r1")["a"] == "succeeded", timeout=10, what="the replica to catch up")
    assert redis_client(master.url).wait(1, 1000) == 1


def test_the_result_backend_and_the_broker_reach_the_master_sentinel_names(tmp_path: Path) -> None:
    cluster = SentinelCluster(tmp_path / "cluster", replicas=1, password="s3c:r@t").start()
    try:
        app = make_app(cluster.url)
        assert type(app.backend).__name__ == "SentinelBackend"
        app.backend.store_result("task-1", {"ok": 1}, "SUCCESS")
        assert app.backend.get_task_meta("task-1")["result"] == {"ok": 1}
        assert redis_client(cluster.master().url).exists("celery-task-meta-task-1") == 1
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            assert conn.transport_options["master_name"] == "hotswap"
    finally:
        cluster.stop()


CHAIN = ["s1", "s2", "s3", "s4"]
FAN = ["p1", "p2", "p3", "p4"]
STEPS = [*CHAIN, *FAN, "last"]


def failover_runbook(work: Path) -> str:
    def step(sid: str, indent: str) -> str:
        return (f"{indent}- id: {sid}\n{indent}  action: test.phases\n"
                f'{indent}  with: {{directory: "{work / sid}", count: 1, pause: 0.5}}\n')

    return ("name: failover\nsteps:\n" + "".join(step(s, "  ") for s in CHAIN)
            + "  - parallel:\n" + "".join(step(s, "      ") for s in FAN) + step("last", "  "))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path / "cluster", replicas=2, password="fail:o@ver").start()
    try:
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize(("failover", "min_replicas"), [("sigkill", 1), ("planned", 2), ("freeze", 1)])
def test_a_run_survives_a_master_failover_with_every_step_once(failover: str, min_replicas: int,
                                                               cluster: SentinelCluster, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL: the master dies; Sentinel promotes the replica with the most data, so what one replica
    confirmed survives. Freeze (SIGSTOP, a hung or partitioned master): clients give up on it after 5 s and
    ask Sentinel again; kombu drops its stale BRPOP connection. Planned (SENTINEL FAILOVER): the old master
    takes writes until Sentinel demotes it and then discards them, and the replica not promoted confirms
    them meanwhile; only waiting for every replica (min_replicas 2 of 2) keeps such a write from being
    acted upon."""
    monkeypatch.setenv("HOTSWAP_ACTION_MODULES", "tests.support.fault_actions")
    work = tmp_path / "effects"
    for sid in STEPS:
        (work / sid).mkdir(parents=True)
    # A lease longer than the failover (about 3 s here): a step running through it keeps its lease.
    env = {"HOTSWAP_ACTION_MODULES": "tests.support.fault_actions", "HOTSWAP_LEASE_SECONDS": "10",
           "HOTSWAP_REDELIVER_SECONDS": "3", "HOTSWAP_MIN_REPLICAS": str(min_replicas),
           "HOTSWAP_REPLICA_TIMEOUT": "2.5"}
    workers = [Worker(cluster.url, tmp_path / name, concurrency=2, name=name, env=env) for name in ("w1", "w2")]
    harness = Harness(cluster.url, tmp_path)
    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(lambda w: w.start(), workers))
        run = harness.launch(failover_runbook(work))
        wait_for(lambda: (work / "s2" / "phase-0").exists(), timeout=30, what="s2 to start")
        if failover == "sigkill":
            old = cluster.kill_master()
        elif failover == "freeze":
            old = cluster.freeze_master()
        else:
            old = cluster.planned_failover()
        killed_at = time.time()
        new = cluster.wait_failover(old)
        record = harness.wait(run, timeout=45)
    finally:
        for w in workers:
            w.stop()
    assert new != old
    assert record["status"] == "succeeded", record.get("reason")
    for sid in STEPS:
        assert len((work / sid / "phase-0").read_text().splitlines()) == 1, f"{sid}'s action ran more than once"
    claims = Counter(e["step"] for _, e in harness.store.events(run)
                     if e.get("type") == "step" and e.get("status") == "running")
    if failover != "planned":
        assert claims == dict.fromkeys(STEPS, 1)
    else:  # a claim the replicas did not confirm is not acted upon: its step is taken over after the lease
        assert set(claims) == set(STEPS)
    assert harness.step(run, "last")["finished"] > killed_at, "the run went on after the failover"
