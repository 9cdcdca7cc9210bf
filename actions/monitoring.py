"""Monitoring actions: silence a host's alerts in Prometheus Alertmanager while it is being replaced.

Silences are found again by a marker in their comment, ``[hotswap run=<run id> host=<host>]``, so a
retried or resumed step reuses the silence it made instead of stacking a second one, and
``monitoring.clear_downtime`` expires exactly the silences its run created for that host.

Which alerts belong to a host: by default one matcher ``host="<host>"`` (the inventory name). Set
``monitoring.host_label`` on the cluster in the inventory to use another label (e.g. ``hostname``),
or pass ``matchers:`` to the step. Matchers are exact (not regex) and all must match (Alertmanager
ANDs them), so do not add labels your alerts may lack.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from actions.base import ActionContext, action
from engine.durations import format_duration, parse_duration
from engine.errors import ActionError

EXTEND_SLACK = timedelta(seconds=60)
"""A reused silence ending less than this before the requested end is left as it is."""


def marker(run_id: str, host: str) -> str:
    return f"[hotswap run={run_id} host={host}]"


def _base_url(ctx: ActionContext, cluster: str) -> str:
    url = ctx.inventory.cluster(cluster).monitoring.get("alertmanager_url")
    if not url:
        raise ActionError(
            f"cluster '{cluster}' has no monitoring.alertmanager_url in the inventory: "
            "add it, or drop the downtime steps from the runbook"
        )
    return str(url).rstrip("/")


def _matchers(ctx: ActionContext, cluster: str, host: str, given: dict[str, str] | None) -> dict[str, str]:
    if given:
        return {str(k): str(v) for k, v in given.items()}
    label = ctx.inventory.cluster(cluster).monitoring.get("host_label") or "host"
    return {str(label): host}


def _as_api(matchers: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(matchers.items())]


def _from_api(matchers: list[dict[str, Any]]) -> dict[str, str] | None:
    """The silence's matchers as a mapping, or None if any is a regex or negative matcher."""
    if any(m.get("isRegex") or not m.get("isEqual", True) for m in matchers):
        return None
    return {str(m["name"]): str(m["value"]) for m in matchers}


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> datetime:
    """An Alertmanager timestamp (RFC 3339, up to nanoseconds) as an aware datetime."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text.strip())
    parsed = datetime.fromisoformat(trimmed.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _seconds(duration: str | int | float) -> float:
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ActionError(f"monitoring.set_downtime: {exc}") from None
    if seconds <= 0:
        raise ActionError("monitoring.set_downtime: duration must be positive (e.g. 6h, 90m)")
    return seconds


def _silences(ctx: ActionContext, base: str) -> list[dict[str, Any]]:
    result = ctx.http.request("GET", f"{base}/api/v2/silences")
    data = result.json()
    if not isinstance(data, list):
        raise ActionError(f"{base}/api/v2/silences did not return a list of silences")
    return data


def _own_live(silences: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [
        s for s in silences
        if tag in str(s.get("comment", "")) and s.get("status", {}).get("state") in ("active", "pending")
    ]


@action("monitoring.set_downtime")
def set_downtime(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    duration: str | int | float,
    comment: str = "",
    matchers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Silence the host's alerts in Alertmanager for ``duration`` (e.g. 6h, 90m, 30s or seconds).

    Idempotent within a run: a live silence this run already made for the same host and matchers is
    reused (and extended if it would end before now + duration). Returns ``silence_id`` and
    ``ends_at``; in dry-run nothing is created and ``silence_id`` is null.
    """
    seconds = _seconds(duration)
    base = _base_url(ctx, cluster)
    wanted = _matchers(ctx, cluster, host, matchers)
    tag = marker(ctx.run_id, host)
    ends = datetime.now(UTC) + timedelta(seconds=seconds)

    mine = [s for s in _own_live(_silences(ctx, base), tag) if _from_api(s.get("matchers", [])) == wanted]
    if mine:
        current = max(mine, key=lambda s: parse_time(s["endsAt"]))
        if parse_time(current["endsAt"]) >= ends - EXTEND_SLACK:
            ctx.memory["silence_id"] = current["id"]
            ctx.log.info(f"reusing silence {current['id']} for {host} (ends {current['endsAt']})")
            return {"silence_id": current["id"], "ends_at": current["endsAt"], "reused": True}
        body = _silence_body(
            ctx, tag, comment, wanted, ends, starts=current["startsAt"], silence_id=current["id"]
        )
    else:
        body = _silence_body(ctx, tag, comment, wanted, ends)

    result = ctx.http.request("POST", f"{base}/api/v2/silences", json=body)
    if ctx.dry_run:
        return {"silence_id": None, "ends_at": body["endsAt"], "reused": False}
    silence_id = str(result.json()["silenceID"])
    ctx.memory["silence_id"] = silence_id
    labels = ", ".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    ctx.log.info(f"silenced {labels} for {format_duration(seconds)}: silence {silence_id}")
    return {"silence_id": silence_id, "ends_at": body["endsAt"], "reused": bool(mine)}


def _silence_body(
    ctx: ActionContext,
    tag: str,
    comment: str,
    matchers: dict[str, str],
    ends: datetime,
    *,
    starts: str | None = None,
    silence_id: str | None = None,
) -> dict[str, Any]:
    text = f"{comment} {tag}".strip() if comment else f"hotswap maintenance {tag}"
    launched_by = ctx.run.get("launched_by")
    if launched_by:
        text += f" launched by {launched_by}"
    body: dict[str, Any] = {
        "matchers": _as_api(matchers),
        "startsAt": starts or format_time(datetime.now(UTC)),
        "endsAt": format_time(ends),
        "createdBy": f"hotswap run {ctx.run_id}",
        "comment": text,
    }
    if silence_id:
        body["id"] = silence_id
    return body


@action("monitoring.clear_downtime")
def clear_downtime(
    ctx: ActionContext, *, cluster: str, host: str, silence_id: str | None = None
) -> dict[str, Any]:
    """Expire the silences this run made for ``host`` (or just ``silence_id`` when given).

    A silence that is already expired or gone counts as cleared. Returns the ids ``expired`` now
    and those ``already_gone``.
    """
    base = _base_url(ctx, cluster)
    if silence_id:
        targets = [silence_id]
    else:
        targets = [str(s["id"]) for s in _own_live(_silences(ctx, base), marker(ctx.run_id, host))]
        if not targets:
            ctx.log.info(f"no live silence of run {ctx.run_id} for {host}")
    expired: list[str] = []
    gone: list[str] = []
    for sid in targets:
        (expired if _expire(ctx, base, sid) else gone).append(sid)
    if expired:
        ctx.log.info(f"expired silence(s) {', '.join(expired)} for {host}")
    return {"expired": expired, "already_gone": gone}


def _state(ctx: ActionContext, base: str, silence_id: str) -> str | None:
    """The silence's state, or None when Alertmanager does not know it."""
    result = ctx.http.request("GET", f"{base}/api/v2/silence/{quote(silence_id, safe='')}", ok=(404,))
    if result.status == 404:
        return None
    return str(result.json().get("status", {}).get("state", ""))


def _expire(ctx: ActionContext, base: str, silence_id: str) -> bool:
    """Expire one silence; False when it was already expired or unknown."""
    if _state(ctx, base, silence_id) in (None, "expired"):
        return False
    # Alertmanager answers 500 "silence not found" (older) or 404 (newer) for unknown ids.
    url = f"{base}/api/v2/silence/{quote(silence_id, safe='')}"
    result = ctx.http.request("DELETE", url, ok=(404, 500))
    if ctx.dry_run or 200 <= result.status < 300:
        return True
    if _state(ctx, base, silence_id) in (None, "expired"):
        return False
    raise ActionError(
        f"Alertmanager refused to expire silence {silence_id}: HTTP {result.status} {result.body!r}"
    )
