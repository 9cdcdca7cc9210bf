"""monitoring.set_downtime / clear_downtime against a real Alertmanager."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actions import monitoring
from actions.base import ActionContext, ActionRegistry
from actions.http import HttpToolkit
from engine.errors import ActionError, ConnectionFailed
from inventory import Cluster, Host, Inventory
from tests.support.alertmanager import Alertmanager, free_port, running_alertmanager
from tests.support.logs import ListLog


def make_ctx(inv: Inventory, run_id: str, *, dry_run: bool = False) -> ActionContext:
    log = ListLog()
    ctx = ActionContext(
        run_id=run_id, step_id="downtime", attempt=1, dry_run=dry_run, log=log, inventory=inv,
        run={"id": run_id, "launched_by": "alice"},
    )
    ctx.http = HttpToolkit(log=log, dry_run=dry_run, would=ctx.would)
    return ctx


def down(inv: Inventory, run_id: str, host: str = "node1", **params: Any) -> dict[str, Any]:
    ctx = make_ctx(inv, run_id)
    result: dict[str, Any] = monitoring.set_downtime(ctx, cluster="lab", host=host, **params)
    return result


def clear(inv: Inventory, run_id: str, host: str = "node1", **params: Any) -> dict[str, Any]:
    ctx = make_ctx(inv, run_id)
    result: dict[str, Any] = monitoring.clear_downtime(ctx, cluster="lab", host=host, **params)
    return result


def make_inventory(url: str, **monitoring_extra: str) -> Inventory:
    return Inventory(
        clusters={
            "lab": Cluster(
                "lab", admin_host="node1", monitoring={"alertmanager_url": url, **monitoring_extra}
            ),
            "bare": Cluster("bare", admin_host="node1"),
        },
        hosts={
            "node1": Host("node1", address="127.0.0.1", cluster="lab"),
            "node2": Host("node2", address="127.0.0.1", cluster="lab"),
        },
    )


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    with running_alertmanager(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


@pytest.fixture
def inv(am: Alertmanager) -> Inventory:
    return make_inventory(am.url)


@pytest.fixture
def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


def of_run(am: Alertmanager, run_id: str, state: str = "active") -> list[dict[str, Any]]:
    return [s for s in am.silences() if f"run={run_id} " in s["comment"] and s["status"]["state"] == state]


def test_set_downtime_creates_one_active_silence_with_host_matcher(am: Alertmanager, inv: Inventory,
                                                                    run_id: str) -> None:
    ctx = make_ctx(inv, run_id)
    result = monitoring.set_downtime(ctx, cluster="lab", host="node1", duration="6h", comment="disk swap")

    [silence] = of_run(am, run_id)
    assert silence["id"] == result["silence_id"] == ctx.memory["silence_id"]
    assert silence["matchers"] == [{"name": "host", "value": "node1", "isRegex": False, "isEqual": True}]
    assert silence["createdBy"] == f"hotswap run {run_id}"
    assert silence["comment"].startswith("disk swap ")
    assert monitoring.marker(run_id, "node1") in silence["comment"]
    assert "alice" in silence["comment"]
    ends = monitoring.parse_time(silence["endsAt"])
    assert datetime.now(UTC) + timedelta(hours=5) < ends <= datetime.now(UTC) + timedelta(hours=6)
    assert result["reused"] is False


def test_set_downtime_twice_in_one_run_reuses_the_silence(
    am: Alertmanager, inv: Inventory, run_id: str
) -> None:
    first = down(inv, run_id, duration="90m")
    again = down(inv, run_id, duration="90m")

    assert again["silence_id"] == first["silence_id"]
    assert again["reused"] is True
    assert len(of_run(am, run_id)) == 1


def test_another_run_gets_its_own_silence(am: Alertmanager, inv: Inventory, run_id: str) -> None:
    other = f"{run_id}-other"
    mine = down(inv, run_id, duration="1h")
    theirs = down(inv, other, duration="1h")

    assert mine["silence_id"] != theirs["silence_id"]
    assert [s["id"] for s in of_run(am, other)] == [theirs["silence_id"]]


def test_a_reused_silence_that_ends_too_early_is_extended(
    am: Alertmanager, inv: Inventory, run_id: str
) -> None:
    short = down(inv, run_id, duration=300)
    longer = down(inv, run_id, duration="2h")

    [silence] = of_run(am, run_id)
    assert silence["id"] == longer["silence_id"]
    extended = monitoring.parse_time(silence["endsAt"])
    assert extended > monitoring.parse_time(short["ends_at"]) + timedelta(hours=1)


def test_other_matchers_make_another_silence(am: Alertmanager, inv: Inventory, run_id: str) -> None:
    down(inv, run_id, duration="1h")
    custom = down(inv, run_id, duration="1h",
                                     matchers={"instance": "node1:9100", "job": "node"})

    silences = {s["id"]: s for s in of_run(am, run_id)}
    assert len(silences) == 2
    assert {(m["name"], m["value"]) for m in silences[custom["silence_id"]]["matchers"]} == {
        ("instance", "node1:9100"), ("job", "node"),
    }


def test_host_label_comes_from_the_inventory(am: Alertmanager, run_id: str) -> None:
    inv = make_inventory(am.url, host_label="hostname")
    down(inv, run_id, "node2", duration="10m")

    [silence] = of_run(am, run_id)
    assert [(m["name"], m["value"]) for m in silence["matchers"]] == [("hostname", "node2")]


def test_clear_downtime_expires_the_runs_silences_and_clearing_again_succeeds(
    am: Alertmanager, inv: Inventory, run_id: str
) -> None:
    created = down(inv, run_id, duration="1h")
    foreign = down(inv, f"{run_id}-x", duration="1h")

    cleared = clear(inv, run_id)
    assert cleared == {"expired": [created["silence_id"]], "already_gone": []}
    assert of_run(am, run_id) == []
    assert [s["id"] for s in of_run(am, run_id, "expired")] == [created["silence_id"]]
    assert [s["id"] for s in of_run(am, f"{run_id}-x")] == [foreign["silence_id"]]

    again = clear(inv, run_id)
    assert again == {"expired": [], "already_gone": []}


def test_clear_downtime_by_id_accepts_expired_and_unknown_silences(am: Alertmanager, inv: Inventory,
                                                                    run_id: str) -> None:
    created = down(inv, run_id, duration="1h")
    sid = created["silence_id"]

    assert clear(inv, run_id, silence_id=sid) == {
        "expired": [sid], "already_gone": [],
    }
    assert clear(inv, run_id, silence_id=sid) == {
        "expired": [], "already_gone": [sid],
    }
    unknown = str(uuid.uuid4())
    result = clear(inv, run_id, silence_id=unknown)
    assert result == {"expired": [], "already_gone": [unknown]}


def test_dry_run_creates_nothing_and_records_the_post(am: Alertmanager, inv: Inventory, run_id: str) -> None:
    ctx = make_ctx(inv, run_id, dry_run=True)
    result = monitoring.set_downtime(ctx, cluster="lab", host="node1", duration="6h")

    assert result["silence_id"] is None
    assert [s for s in am.silences() if run_id in s["comment"]] == []
    [planned] = ctx.planned
    assert planned["kind"] == "http"
    assert planned["method"] == "POST"
    assert planned["url"] == f"{am.url}/api/v2/silences"
    assert monitoring.marker(run_id, "node1") in planned["body"]


def test_dry_run_clear_records_the_delete_and_keeps_the_silence(am: Alertmanager, inv: Inventory,
                                                                run_id: str) -> None:
    created = down(inv, run_id, duration="1h")
    ctx = make_ctx(inv, run_id, dry_run=True)

    result = monitoring.clear_downtime(ctx, cluster="lab", host="node1")

    assert result["expired"] == [created["silence_id"]]
    assert [(p["method"], p["url"]) for p in ctx.planned] == [
        ("DELETE", f"{am.url}/api/v2/silence/{created['silence_id']}"),
    ]
    assert [s["id"] for s in of_run(am, run_id)] == [created["silence_id"]]


@pytest.mark.parametrize("duration", ["soon", "-5m", 0, ""])
def test_bad_durations_are_refused(inv: Inventory, run_id: str, duration: object) -> None:
    with pytest.raises(ActionError, match="duration"):
        down(inv, run_id, duration=duration)


def test_cluster_without_alertmanager_is_an_actionable_error(inv: Inventory, run_id: str) -> None:
    with pytest.raises(ActionError, match="alertmanager_url"):
        monitoring.set_downtime(make_ctx(inv, run_id), cluster="bare", host="node1", duration="1h")


def test_unreachable_alertmanager_is_a_connection_failure(run_id: str) -> None:
    inv = make_inventory(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionFailed):
        down(inv, run_id, duration="1h")


def test_parse_time_accepts_alertmanager_timestamps() -> None:
    nanos = monitoring.parse_time("2026-01-02T03:04:05.123456789Z")
    assert nanos == datetime(2026, 1, 2, 3, 4, 5, 123456, UTC)
    assert monitoring.parse_time("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, UTC)
    assert monitoring.parse_time(monitoring.format_time(stamp)) == stamp


def test_actions_are_registered() -> None:
    registry = ActionRegistry.from_modules([monitoring])
    assert [s.name for s in registry] == ["monitoring.clear_downtime", "monitoring.set_downtime"]
    assert not any(s.destructive or s.polling for s in registry)
