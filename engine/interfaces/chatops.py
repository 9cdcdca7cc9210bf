"""Slack-style chatops: a slash command (``/hotswap ...``) and interactive approval buttons.

Every request is verified as Slack specifies: ``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<raw body>``
keyed with the signing secret, compared in constant time, timestamps more than five minutes off
refused, and each signature accepted once (replays refused). The endpoint answers at once and does the
work on a thread pool; results go to the command's ``response_url`` and progress to one channel message
kept up to date with ``chat.postMessage`` / ``chat.update``.

Chat users are authorized by their Slack user id (principal ``chat:<user id>``), never their name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.errors import HotswapError, InvalidTransition, ValidationError
from engine.interfaces.facade import RunbookCatalog, once
from engine.interfaces.guard import GuardedService
from engine.interfaces.policy import Policy
from engine.interfaces.progress import APPROVE_ACTION, REJECT_ACTION, RunView, follow
from engine.interfaces.settings import SlackSettings
from engine.service import Identity, Service
from engine.states import FINISHED_RUN

log = logging.getLogger("hotswap.chatops")
MAX_SKEW_SECONDS = 300
REPLAY_TTL_SECONDS = 2 * MAX_SKEW_SECONDS + 60
MAX_BODY_BYTES = 64 * 1024
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


class SlackAuthError(HotswapError):
    """A request that is not provably from Slack, or is stale or replayed."""


class SlackApiError(HotswapError):
    pass


# ---- signatures ------------------------------------------------------------------------------------
def sign(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float | None = None) -> None:
    """Raise SlackAuthError unless ``signature`` is Slack's signature of this body at a current timestamp."""
    if not timestamp or not signature:
        raise SlackAuthError("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SlackAuthError("X-Slack-Request-Timestamp is not a number") from None
    if abs((time.time() if now is None else now) - ts) > MAX_SKEW_SECONDS:
        raise SlackAuthError("stale request: the timestamp is more than 5 minutes off")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode()):
        raise SlackAuthError("bad signature")


# ---- the Web API --------------------------------------------------------------------------------------
class SlackWebApi:
    """chat.postMessage and friends, as JSON POSTs with the bot token. The token is never logged."""

    def __init__(self, base: str, token: str, timeout: float = 10) -> None:
        self.base = base
        self._token = token
        self.timeout = timeout
        self.session = requests.Session()

    def call(self, method: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        try:
            resp = self.session.post(self.base + method, json=payload, timeout=self.timeout,
                                     headers={"Authorization": f"Bearer {self._token}"})
        except requests.RequestException as e:
            raise SlackApiError(f"{method}: {type(e).__name__}") from None
        if resp.status_code == 429:
            raise SlackApiError(f"{method}: rate limited (retry after {resp.headers.get('Retry-After', '?')}s)")
        try:
            data: dict[str, Any] = resp.json()
        except ValueError:
            raise SlackApiError(f"{method}: HTTP {resp.status_code}, not JSON") from None
        if not data.get("ok"):
            raise SlackApiError(f"{method}: {data.get('error', f'HTTP {resp.status_code}')}")
        return data

    def respond(self, url: str, payload: Mapping[str, Any]) -> None:
        try:
            resp = self.session.post(url, json=payload, timeout=self.timeout)
            resp.raise_for_status()
        except requests.RequestException as e:
            raise SlackApiError(f"response_url: {type(e).__name__}") from None


HELP = """*hotswap* — run and follow runbooks from chat
• `/hotswap run RUNBOOK key=value … [--dry-run]` — launch a runbook
{aliases}• `/hotswap status RUN` — a run and its steps
• `/hotswap runs [N]` — recent runs
• `/hotswap approve RUN STEP` / `reject RUN STEP` — decide an approval gate
• `/hotswap cancel RUN` / `resume RUN`
• `/hotswap help` — this text"""


# ---- the bot ------------------------------------------------------------------------------------------
class SlackBot:
    def __init__(self, service: Service, policy: Policy, catalog: RunbookCatalog, settings: SlackSettings,
                 inventory: Callable[[], Any] | None = None, workers: int = 8) -> None:
        self.service = service
        self.policy = policy
        self.catalog = catalog
        self.settings = settings
        self.inventory = inventory
        self.web = SlackWebApi(settings.api, settings.bot_token)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slack")
        self.stop_event = threading.Event()
        self.followers: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.stop_event.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for t in list(self.followers.values()):
            t.join(10)

    # ---- requests ----
    def check(self, headers: Mapping[str, str], body: bytes) -> None:
        if len(body) > MAX_BODY_BYTES:
            raise SlackAuthError("request body too large")
        signature = headers.get("x-slack-signature")
        verify(self.settings.signing_secret, headers.get("x-slack-request-timestamp"), signature, body)
        if not once(self.service, f"slack-signature:{signature}", REPLAY_TTL_SECONDS):
            raise SlackAuthError("replayed request: this signature was already used")

    def identity(self, user_id: str, user_name: str, team_id: str, channel_id: str) -> Identity:
        return Identity(f"chat:{user_id}", "chat", {"principal": f"chat:{user_id}", "user_id": user_id,
                                                    "user_name": user_name, "team_id": team_id,
                                                    "channel_id": channel_id, "via": "slack"})

    def guard(self, who: Identity) -> GuardedService:
        return GuardedService(self.service, self.policy, who, self.catalog, self.inventory)

    def command(self, form: Mapping[str, str]) -> dict[str, Any]:
        """Answer a verified slash command at once; the work goes to the pool."""
        who = self.identity(form.get("user_id", ""), form.get("user_name", ""), form.get("team_id", ""),
                            form.get("channel_id", ""))
        text = form.get("text", "").translate(_QUOTES).strip()
        try:
            words = shlex.split(text)
        except ValueError as e:
            return _ephemeral(f"cannot parse that command: {e}")
        if not words or words[0] in ("help", "-h", "--help"):
            return _ephemeral(self.help())
        verb, args = words[0].lower(), words[1:]
        response_url = form.get("response_url", "")
        channel = form.get("channel_id", "")
        self.pool.submit(self._work, verb, args, who, channel, response_url)
        return _ephemeral(f"working on `{text}`…")

    def help(self) -> str:
        aliases = "".join(f"• `/hotswap {name} {' '.join(a.upper() for a in alias.args)} key=value …` — launch "
                          f"{alias.runbook}\n" for name, alias in sorted(self.settings.commands.items()))
        return HELP.format(aliases=aliases)

    def _work(self, verb: str, args: list[str], who: Identity, channel: str, response_url: str) -> None:
        try:
            reply = self._dispatch(verb, args, who, channel)
        except ValidationError as e:
            reply = "the runbook or its parameters are invalid:\n" + "\n".join(f"• `{i}`" for i in e.issues)
        except HotswapError as e:
            reply = f"⛔ {e}"
        except Exception:
            log.exception("chat command %s failed", verb)
            reply = "⛔ internal error; see the hotswap server log"
        if reply and response_url:
            self.respond(response_url, _ephemeral(reply))

    def respond(self, url: str, payload: Mapping[str, Any]) -> None:
        host = urlsplit(url).hostname or ""
        allowed = {*self.settings.response_hosts, urlsplit(self.settings.api).hostname or ""}
        if host not in allowed:
            log.warning("response_url host %s is not allowed; not answering", host)
            return
        try:
            self.web.respond(url, payload)
        except SlackApiError as e:
            log.warning("could not answer the command: %s", e)

    def _dispatch(self, verb: str, args: list[str], who: Identity, channel: str) -> str:
        g = self.guard(who)
        if verb == "run":
            if not args:
                return "usage: `/hotswap run RUNBOOK key=value …`"
            return self._launch(g, args[0], args[1:], (), channel)
        if verb in self.settings.commands:
            alias = self.settings.commands[verb]
            return self._launch(g, alias.runbook, args, alias.args, channel)
        if verb == "status":
            return _status_text(g.status(_one(args, "status RUN")))
        if verb == "runs":
            n = int(args[0]) if args and args[0].isdigit() else 10
            rows = [f"`{r['id']}` {r['runbook']} *{r['status']}* by {r.get('launched_by')} via {r.get('source')}"
                    for r in g.runs(n)]
            return "\n".join(rows) or "no runs yet"
        if verb in ("approve", "reject"):
            if len(args) != 2:
                return f"usage: `/hotswap {verb} RUN STEP`"
            first = g.approve(args[0], args[1], approved=verb == "approve")
            return f"{args[1]} {verb}d" if first else f"{args[1]} was already decided; nothing changed"
        if verb == "cancel":
            g.cancel(_one(args, "cancel RUN"))
            return f"run {args[0]} cancelled"
        if verb == "resume":
            ready = g.resume(_one(args, "resume RUN"))
            self.follow(args[0], channel)
            return f"run {args[0]} resumed from {', '.join(ready) or 'its waiting steps'}"
        return f"unknown command '{verb}'. " + self.help()

    def _launch(self, g: GuardedService, runbook: str, words: list[str], positional: tuple[str, ...],
                channel: str) -> str:
        params: dict[str, str] = {}
        dry_run = False
        names = list(positional)
        for word in words:
            if word == "--dry-run":
                dry_run = True
            elif "=" in word and not word.startswith("="):
                key, _, value = word.partition("=")
                params[key] = value
            elif names:
                params[names.pop(0)] = word
            else:
                return f"unexpected argument '{word}': pass parameters as key=value"
        run_id = g.launch(runbook, params, dry_run=dry_run)
        self.follow(run_id, channel)
        return ""

    # ---- progress ----
    def follow(self, run_id: str, channel: str) -> None:
        """Keep one message in ``channel`` up to date with the run's progress (posted on first change)."""
        if not channel:
            return
        with self._lock:
            for rid in [r for r, t in self.followers.items() if not t.is_alive()]:
                del self.followers[rid]
            current = self.followers.get(run_id)
            if current is not None and current.is_alive():
                return
            t = threading.Thread(target=self._follow, args=(run_id, channel), name=f"slack-{run_id}", daemon=True)
            self.followers[run_id] = t
        t.start()

    def _follow(self, run_id: str, channel: str) -> None:
        rec = self.service.run(run_id)
        ts = rec.get("chat_ts") if rec.get("chat_channel") == channel else None

        def post(view: RunView) -> None:
            nonlocal ts
            payload = {"channel": channel, "text": view.text(), "blocks": view.blocks()}
            try:
                if ts:
                    self.web.call("chat.update", {**payload, "ts": ts})
                else:
                    ts = str(self.web.call("chat.postMessage", payload)["ts"])
                    self.service.store.set_run_fields(run_id, chat_channel=channel, chat_ts=ts)
            except SlackApiError as e:
                log.warning("progress of %s not posted: %s", run_id, e)

        try:
            follow(self.service, run_id, post, self.stop_event)
        except HotswapError as e:
            log.warning("stopped following %s: %s", run_id, e)

    def resume_followers(self) -> None:
        """After a restart: pick up the progress messages of runs still active."""
        for status in ("pending", "running", "waiting"):
            for rec in self.service.runs(limit=1000, status=status):
                if rec.get("chat_channel") and rec.get("status") not in FINISHED_RUN:
                    self.follow(rec["id"], str(rec["chat_channel"]))

    # ---- buttons ----
    def interaction(self, payload: Mapping[str, Any]) -> None:
        if payload.get("type") != "block_actions":
            return
        user = payload.get("user") or {}
        channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get("channel_id", "")
        who = self.identity(str(user.get("id", "")), str(user.get("username") or user.get("name") or ""),
                            str(user.get("team_id") or (payload.get("team") or {}).get("id", "")), str(channel))
        for act in payload.get("actions") or []:
            action_id = act.get("action_id")
            if action_id not in (APPROVE_ACTION, REJECT_ACTION):
                continue
            run_id, _, step = str(act.get("value", "")).partition("|")
            key = f"slack-click:{run_id}:{step}:{user.get('id')}:{act.get('action_ts')}"
            if not once(self.service, key, 86400):
                continue
            self.pool.submit(self._click, who, run_id, step, action_id == APPROVE_ACTION,
                             str(payload.get("response_url") or ""))

    def _click(self, who: Identity, run_id: str, step: str, approved: bool, response_url: str) -> None:
        verb = "approved" if approved else "rejected"
        try:
            first = self.guard(who).approve(run_id, step, approved=approved, comment="via chat button")
            text = f"{step} {verb}" if first else self._already(run_id, step)
        except InvalidTransition as e:
            text = self._already(run_id, step) if self.service.store.decision(run_id, step) else f"⛔ {e}"
        except HotswapError as e:
            text = f"⛔ {e}"
        if response_url:
            self.respond(response_url, {**_ephemeral(text), "replace_original": False})

    def _already(self, run_id: str, step: str) -> str:
        decision = self.service.store.decision(run_id, step) or {}
        verb = "approved" if decision.get("approved") else "rejected"
        return f"{step} was already {verb} by {decision.get('by', 'someone')}; your click changed nothing"


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def _one(args: list[str], usage: str) -> str:
    if len(args) != 1:
        raise HotswapError(f"usage: /hotswap {usage}")
    return args[0]


def _status_text(data: dict[str, Any]) -> str:
    run = data["run"]
    lines = [f"*{run['runbook']}* run `{run['id']}`: *{run['status']}* (by {run.get('launched_by')} via "
             f"{run.get('source')})"]
    if run.get("reason"):
        lines.append(f"reason: {run['reason']}")
    for s in data["steps"][:40]:
        note = s["error"] or s["waiting_reason"]
        lines.append(f"• `{s['id']}` {s['status']}" + (f" — {note[:120]}" if note else ""))
    if len(data["steps"]) > 40:
        lines.append(f"… and {len(data['steps']) - 40} more steps")
    return "\n".join(lines)


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def slack_router(bot: SlackBot) -> APIRouter:
    router = APIRouter(prefix="/slack", include_in_schema=False)

    async def verified(request: Request) -> bytes | JSONResponse:
        body = await request.body()
        try:
            await run_in_threadpool(bot.check, request.headers, body)
        except SlackAuthError as e:
            client = request.client.host if request.client else "?"
            log.warning("refused a Slack request from %s: %s", client, e)
            return JSONResponse({"error": "unauthorized", "message": str(e)}, status_code=401)
        return body

    @router.post("/commands")
    async def commands(request: Request) -> Response:
        body = await verified(request)
        if isinstance(body, Response):
            return body
        return JSONResponse(await run_in_threadpool(bot.command, _form(body)))

    @router.post("/interactive")
    async def interactive(request: Request) -> Response:
        body = await verified(request)
        if isinstance(body, Response):
            return body
        try:
            payload = json.loads(_form(body).get("payload", ""))
        except ValueError:
            return JSONResponse({"error": "validation", "message": "payload is not JSON"}, status_code=400)
        await run_in_threadpool(bot.interaction, payload)
        return Response(status_code=200)

    return router
