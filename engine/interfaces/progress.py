"""Following a run's event stream: one chat message kept up to date, and notifications on success,
failure and waiting for approval."""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

from actions.chat import safe_url
from engine.durations import format_duration
from engine.errors import HotswapError
from engine.interfaces.facade import once
from engine.interfaces.settings import Notification
from engine.service import Service
from engine.states import FINISHED_RUN, run_settled

log = logging.getLogger("hotswap.progress")
APPROVE_ACTION = "hotswap_approve"
REJECT_ACTION = "hotswap_reject"
MAX_GATE_BUTTONS = 10


@dataclass
class RunView:
    """A run as its events tell it, folded into what a chat message shows."""

    run_id: str
    runbook: str
    launched_by: str
    total: int
    user_id: str = ""
    status: str = "pending"
    reason: str = ""
    started: float | None = None
    finished: float | None = None
    steps: dict[str, str] = field(default_factory=dict)
    gates: dict[str, str] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    attention: list[tuple[str, str]] = field(default_factory=list)
    """(step, reason) a step raised for a human, in order, without failing."""

    @classmethod
    def of(cls, service: Service, run_id: str) -> RunView:
        rec = service.run(run_id)
        detail = rec.get("launched_by_detail") or {}
        return cls(run_id, str(rec.get("runbook")), str(rec.get("launched_by")), int(rec.get("n_steps") or 0),
                   user_id=str(detail.get("user_id") or ""))

    def apply(self, ev: dict[str, str]) -> None:
        kind = ev.get("type")
        t = float(ev.get("t") or time.time())
        if kind == "run":
            self.status = ev.get("status", self.status)
            if self.status == "running":
                self.started = self.started or t
                self.finished = None
                self.reason = ""
            elif self.status in FINISHED_RUN:
                self.finished = t
                self.reason = ev.get("reason", "")
                self.gates.clear()
        elif kind == "step":
            step, status = ev.get("step", ""), ev.get("status", "")
            self.steps[step] = status
            if status != "waiting":
                self.gates.pop(step, None)
        elif kind == "approval_requested":
            self.gates[ev.get("step", "")] = ev.get("message", "")
        elif kind == "attention":
            self.attention.append((ev.get("step", ""), ev.get("reason", "")))
        elif kind == "approval":
            step = ev.get("step", "")
            self.gates.pop(step, None)
            verb = "approved" if ev.get("approved") in ("True", "1", "true") else "rejected"
            self.decisions.append(f"{step} {verb} by {ev.get('by', '?')}")

    @property
    def done(self) -> int:
        return sum(1 for s in self.steps.values() if s in ("succeeded", "skipped"))

    @property
    def running(self) -> list[str]:
        return [s for s, st in self.steps.items() if st == "running"]

    def headline(self) -> str:
        if self.status == "succeeded":
            took = format_duration((self.finished or time.time()) - (self.started or self.finished or time.time()))
            return f"✅ succeeded in {took} ({self.done}/{self.total} steps)"
        if self.status == "failed":
            return f"❌ failed: {self.reason or 'see hotswap status'}"
        if self.status == "cancelled":
            return f"⊘ {self.reason or 'cancelled'}"
        if self.gates:
            return "⏸ waiting for approval: " + "; ".join(f"*{s}* — {m}" if m else f"*{s}*" for s, m in self.gates.items())
        if self.status == "running":
            now = f"; now: {', '.join(self.running[:5])}" if self.running else ""
            return f"▶ running: {self.done}/{self.total} steps done{now}"
        return f"· {self.status}"

    def text(self) -> str:
        who = f"<@{self.user_id}>" if self.user_id else self.launched_by
        return f"*{self.runbook}* run `{self.run_id}` by {who}\n{self.headline()}"

    def blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": self.text()}}]
        if self.decisions:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "; ".join(self.decisions[-5:])}]})
        buttons = []
        for step in list(self.gates)[:MAX_GATE_BUTTONS]:
            value = f"{self.run_id}|{step}"
            buttons.append({"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
                            "text": {"type": "plain_text", "text": f"Approve {step}"[:75]}})
            buttons.append({"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
                            "text": {"type": "plain_text", "text": f"Reject {step}"[:75]}})
        if buttons:
            blocks.append({"type": "actions", "block_id": f"gates:{self.run_id}", "elements": buttons})
        return blocks


def follow(service: Service, run_id: str, on_change: Callable[[RunView], None], stop: threading.Event,
           block_ms: int = 1000) -> RunView:
    """Replay a run's events from the start and follow them until it ends (or ``stop``); call
    ``on_change`` once per batch of events that changed what a message would show."""
    view = RunView.of(service, run_id)
    last = "0-0"
    shown = ""
    while not stop.is_set():
        batch = service.events(run_id, last, block_ms=block_ms)
        for eid, ev in batch:
            last = eid
            view.apply(ev)
        rendered = json.dumps(view.blocks())
        if rendered != shown:
            shown = rendered
            on_change(view)
        if view.status in FINISHED_RUN and run_settled(service.run(run_id)) and not service.events(run_id, last):
            break
    return view


_DONE = threading.Thread(name="done")
"""Stands for a finished watcher, so its thread object can be freed while the run stays known."""


class Notifier:
    """Watches runs and sends the configured notifications (chat and/or webhook) when a run succeeds,
    fails or starts waiting for an approval. Each notification is sent once, across restarts."""

    def __init__(self, service: Service, notifications: Iterable[Notification], bot: Any = None,
                 poll: float = 1.0) -> None:
        self.service = service
        self.notifications = tuple(notifications)
        self.bot = bot
        self.poll = poll
        self.stop_event = threading.Event()
        self.watching: dict[str, threading.Thread] = {}
        self.thread = threading.Thread(target=self._watch_loop, name="hotswap-notifier", daemon=True)
        self.since = time.time()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        for t in list(self.watching.values()):
            if t is not _DONE:
                t.join(10)

    def matching(self, runbook: str) -> list[Notification]:
        return [n for n in self.notifications if any(fnmatch.fnmatchcase(runbook, p) for p in n.runbooks)]

    def _watch_loop(self) -> None:
        while not self.stop_event.wait(self.poll):
            try:
                self._scan()
            except (OSError, HotswapError) as e:
                log.warning("notifier: %s (retrying)", e)

    def _scan(self) -> None:
        for rid in [r for r, t in self.watching.items() if not t.is_alive()]:
            self.watching[rid] = _DONE
        for rec in self.service.runs(limit=100):
            rid = rec["id"]
            if rid in self.watching or (rec["status"] in FINISHED_RUN and (rec.get("created") or 0) < self.since):
                continue
            targets = self.matching(str(rec.get("runbook")))
            if not targets:
                continue
            t = threading.Thread(target=self._watch_run, args=(rid, targets), name=f"notify-{rid}", daemon=True)
            self.watching[rid] = t
            t.start()

    def _watch_run(self, run_id: str, targets: list[Notification]) -> None:
        sent_gates: set[str] = set()
        sent_attention = 0

        def changed(view: RunView) -> None:
            nonlocal sent_attention
            events = []
            for gate, message in view.gates.items():
                if gate not in sent_gates:
                    sent_gates.add(gate)
                    events.append(("waiting", f"{gate}: {message}"))
            for step, reason in view.attention[sent_attention:]:
                events.append(("attention", f"{step}: {reason}"))
            sent_attention = len(view.attention)
            if view.status == "succeeded":
                events.append(("success", view.headline()))
            elif view.status == "failed":
                events.append(("failure", view.reason))
            for event, detail in events:
                for n in targets:
                    if event in n.on:
                        self._send(n, view, event, detail)

        try:
            follow(self.service, run_id, changed, self.stop_event)
        except (OSError, HotswapError) as e:
            log.warning("notifier stopped following %s: %s", run_id, e)

    def _send(self, n: Notification, view: RunView, event: str, detail: str) -> None:
        target = n.chat or n.webhook or ""
        if not once(self.service, f"notify:{view.run_id}:{event}:{detail}:{target}", 7 * 86400):
            return
        text = f"hotswap: {view.runbook} run {view.run_id} " + {
            "success": "succeeded", "failure": f"failed: {detail}", "waiting": f"is waiting for approval ({detail})",
            "attention": f"needs attention: {detail}"}[event]
        try:
            if n.chat and self.bot is not None:
                self.bot.web.call("chat.postMessage", {"channel": n.chat, "text": text, "blocks": view.blocks()})
            if n.webhook:
                resp = requests.post(n.webhook, json={"event": event, "run": view.run_id, "runbook": view.runbook,
                                                      "status": view.status, "detail": detail, "text": text},
                                     timeout=10)
                resp.raise_for_status()
        except requests.RequestException as e:
            # the exception text may quote the webhook URL, whose path is often its secret
            log.warning("notification %s for run %s to %s failed: %s", event, view.run_id,
                        safe_url(n.webhook or ""), type(e).__name__)
        except HotswapError as e:
            log.warning("notification %s for run %s failed: %s", event, view.run_id, e)
