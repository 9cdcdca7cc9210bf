"""The client-impact gate between the weight steps of a gradual reweight (CERN ceph-gentle-reweight).

Before each step: inside the allowed time window only; no SLOW_OPS; a small 4 KiB write latency probe
(``rados bench -p POOL SECONDS write -t 1 -b 4096``) under the threshold. While any of these, or the
settle limits, hold the step back, the step parks with the reason; once paused longer than
``notify_after`` it says — in its log and, when the cluster has a chat webhook, in chat — which check
and which OSDs hold it, and after ``max_pause`` it fails.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from actions import cephjson as cj
from actions.base import ActionContext
from actions.ceph.common import now, read
from engine.errors import ActionError, HotswapError, SafetyCheckFailed

LATENCY_RE = re.compile(r"^Average Latency\(s\):\s+([0-9.eE+-]+)", re.MULTILINE)
OSD_RE = re.compile(r"\bosd\.(\d+)\b")
WINDOW_RE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


@dataclass(frozen=True)
class ClientGate:
    """When the next weight step may go (all off by default except the SLOW_OPS pause)."""

    pause_on_slow_ops: bool = True
    max_write_latency_ms: float = 0.0
    """0: no latency probe."""
    probe_pool: str | None = None
    probe_seconds: int = 5
    window: str | None = None
    """``HH:MM-HH:MM`` in UTC (may wrap midnight): steps are applied only inside it."""
    notify_after: float = 0.0
    """Seconds paused before telling which check and which OSDs hold the step (0: never)."""
    max_pause: float = 0.0
    """Seconds paused before failing the step (0: only the step's timeout bounds it)."""

    def __post_init__(self) -> None:
        if self.max_write_latency_ms > 0 and not self.probe_pool:
            raise ActionError("max_write_latency_ms needs probe_pool: the pool the 4 KiB write probe writes to")
        if self.window is not None and not WINDOW_RE.match(self.window):
            raise ActionError(f"window {self.window!r}: write it HH:MM-HH:MM (UTC), e.g. 22:00-06:00")
        if self.probe_seconds < 1:
            raise ActionError("probe_seconds must be at least 1")


def in_window(window: str | None, at: datetime.datetime) -> bool:
    if window is None:
        return True
    match = WINDOW_RE.match(window)
    assert match is not None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end, minute = h1 * 60 + m1, h2 * 60 + m2, at.hour * 60 + at.minute
    return start <= minute < end if start <= end else (minute >= start or minute < end)


def slow_ops_osds(health: cj.Health) -> list[int]:
    check = health.checks.get("SLOW_OPS")
    if check is None:
        return []
    text = " ".join([check.message, *check.detail])
    return sorted({int(m) for m in OSD_RE.findall(text)})


def parse_bench_latency(stdout: str) -> float:
    """Average latency in ms from ``rados bench`` (plain output: ``Average Latency(s): 0.0011``)."""
    match = LATENCY_RE.search(stdout)
    if match is None:
        raise ActionError(f"rados bench printed no 'Average Latency(s)' line: {stdout.strip()[-200:]!r}")
    return float(match.group(1)) * 1000.0


def probe_latency(ctx: ActionContext, cluster: Any, gate: ClientGate) -> float:
    assert gate.probe_pool is not None
    argv = ["rados", "-p", gate.probe_pool, "bench", str(gate.probe_seconds), "write", "-t", "1", "-b", "4096"]
    result = ctx.ssh.run(cluster.admin_host, argv, timeout=gate.probe_seconds + 120.0, mutating=False)
    return parse_bench_latency(result.stdout)


def slowest_osds(perf: dict[str, Any], count: int = 3) -> list[tuple[int, float]]:
    """The OSDs with the highest apply latency in ``osd perf``."""
    infos = (perf.get("osdstats") or perf).get("osd_perf_infos") or []
    ranked = sorted(((int(i["id"]), float(i["perf_stats"].get("apply_latency_ms", 0))) for i in infos),
                    key=lambda kv: -kv[1])
    return [kv for kv in ranked[:count] if kv[1] > 0]


def client_blockers(
    ctx: ActionContext, cluster: Any, gate: ClientGate, health: cj.Health
) -> tuple[list[str], list[int], float | None]:
    """Why clients say "not now" (reasons, OSDs to name, the probed latency in ms); no reasons when
    the step may go."""
    if not in_window(gate.window, datetime.datetime.now(datetime.UTC)):
        return [f"outside the allowed window {gate.window} UTC"], [], None
    if gate.pause_on_slow_ops and "SLOW_OPS" in health.checks:
        return [f"SLOW_OPS: {health.checks['SLOW_OPS'].message}"], slow_ops_osds(health), None
    if gate.max_write_latency_ms <= 0:
        return [], [], None
    latency = probe_latency(ctx, cluster, gate)
    if latency <= gate.max_write_latency_ms:
        return [], [], latency
    slow = slowest_osds(read(ctx, cluster, "osd", "perf"))
    shown = (", slowest " + ", ".join(f"osd.{o} {ms:g} ms" for o, ms in slow)) if slow else ""
    return [f"client write latency {latency:.1f} ms > {gate.max_write_latency_ms:g} ms (4 KiB rados bench on pool "
            f"{gate.probe_pool}{shown})"], [o for o, _ in slow], latency


def note_pause(ctx: ActionContext, cluster: Any, memory: dict[str, Any], gate: ClientGate, reasons: list[str],
               osds: list[int], what: str) -> str:
    """Track how long the step has been held back; past ``notify_after`` say so once (log and chat),
    past ``max_pause`` fail. Returns the reason to park with."""
    since = float(memory.setdefault("paused_since", now()))
    paused = now() - since
    held = f" (held by {cj.names(osds)})" if osds else ""
    reason = f"{what}: {'; '.join(reasons)}{held}"
    if gate.max_pause > 0 and paused > gate.max_pause:
        raise SafetyCheckFailed(f"paused for {paused:.0f}s, more than max_pause {gate.max_pause:g}s: {reason}: fix "
                                "this, then resume the run")
    if gate.notify_after > 0 and paused > gate.notify_after and not memory.get("pause_notified"):
        memory["pause_notified"] = True
        message = f"run {ctx.run.get('id', ctx.run_id)} step {ctx.step_id} paused for {paused:.0f}s: {reason}"
        ctx.attention(message)  # logged, and sent to the notifications configured for 'attention'
        _chat(ctx, cluster, message)
    return reason + (f" [paused {paused:.0f}s]" if paused >= 1 else "")


def resume(memory: dict[str, Any]) -> None:
    memory.pop("paused_since", None)
    memory.pop("pause_notified", None)


def _chat(ctx: ActionContext, cluster: Any, message: str) -> None:
    if not cluster.chat_webhook or ctx.http is None:
        return
    try:
        ctx.http.request("POST", cluster.chat_webhook, json={"text": message})
    except HotswapError as e:
        ctx.log.warning(f"could not tell chat that the step is paused: {e}")
