"""Datacenter actions: tell the technicians which machine to swap, then wait until they say it is done.

Where to reach a datacenter comes from its ``notify:`` block in the inventory:

- ``webhook``: URL that receives a JSON POST (``text`` for chat tools, plus every field separately);
- ``email`` (recipient; the datacenter's ``contact`` when absent) and ``smtp`` (``host:port``,
  default ``localhost:25``): a plain-text mail; email counts as configured when either key is set;
- ``ticket_api``: URL that receives a JSON POST with ``title``, ``description`` and the fields.

Given ``disks`` (the rows of ``ceph.disks_of``), the notice names each disk (OSD, path, slot, serial,
model, type, size) as a text table and as structured ``disks`` in the JSON payloads.
``dc.locate_on`` / ``dc.locate_off`` switch the disks' locate LEDs with the inventory's optional
``locate_on`` / ``locate_off`` commands.
"""

from __future__ import annotations

import shlex
import smtplib
import socket
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, NoReturn

from actions.base import ActionContext, action
from actions.ceph_devices import disk_table, normalize_rows
from actions.chat import safe_url
from engine.errors import ActionError, ConnectionFailed
from inventory.model import placeholders_of, render_command

CHANNELS = ("webhook", "email", "ticket")
SMTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class SwapRequest:
    """What the technicians need to find and replace the machine."""

    host: str
    rack: str
    serial: str
    datacenter: str
    datacenter_title: str
    cluster: str
    reason: str
    run_id: str
    run_url: str
    launched_by: str
    disks: tuple[dict[str, Any], ...] = ()
    disk_notes: tuple[str, ...] = field(default=())

    @property
    def subject(self) -> str:
        return f"[hotswap] replace {self.host} (rack {self.rack}, serial {self.serial})"

    @property
    def text(self) -> str:
        lines = [
            f"Please replace {self.host} in {self.datacenter_title} ({self.datacenter}).",
            "",
            f"Host:       {self.host}",
            f"Rack:       {self.rack}",
            f"Serial:     {self.serial}",
            f"Cluster:    {self.cluster}",
            f"Reason:     {self.reason}",
            f"Run:        {self.run_id}",
        ]
        if self.run_url:
            lines.append(f"Run link:   {self.run_url}")
        if self.launched_by:
            lines.append(f"Requested by: {self.launched_by}")
        if self.disks:
            lines += ["", f"Disks ({len(self.disks)}):", disk_table(self.disks).rstrip("\n")]
        elif self.disk_notes:
            lines += ["", "Disks: unknown (see the notes)"]
        if self.disk_notes:
            lines += ["", "Notes:", *(f"- {n}" for n in self.disk_notes)]
        lines += ["", "The host is drained and may be powered off. Approve the run's wait step when done."]
        return "\n".join(lines) + "\n"

    def fields(self) -> dict[str, Any]:
        data = asdict(self)
        data["disks"] = [dict(d) for d in self.disks]
        data["disk_notes"] = list(self.disk_notes)
        return data


def _disk_input(disks: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and notes from ``disks``: the rows of ``ceph.disks_of``, or its whole result."""
    if disks is None:
        return [], []
    if isinstance(disks, dict):
        notes = disks.get("notes") or []
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ActionError("disks.notes must be a list of strings (the 'notes' of ceph.disks_of)")
        return normalize_rows(disks.get("disks") or [], "disks.disks"), list(notes)
    return normalize_rows(disks), []


def _request(ctx: ActionContext, cluster: str, host: str, reason: str, run_url: str, disks: Any = None) -> SwapRequest:
    rows, notes = _disk_input(disks)
    h = ctx.inventory.host(host)
    if h.cluster and h.cluster != cluster:
        raise ActionError(
            f"host '{host}' belongs to cluster '{h.cluster}', not '{cluster}': check the step's parameters"
        )
    dc_name = h.datacenter or ctx.inventory.cluster(cluster).datacenter
    if not dc_name:
        raise ActionError(f"host '{host}' has no datacenter (on the host or its cluster) in the inventory")
    dc = ctx.inventory.datacenter(dc_name)
    return SwapRequest(
        host=host,
        rack=h.rack or "?",
        serial=h.serial or "?",
        datacenter=dc_name,
        datacenter_title=dc.title or dc_name,
        cluster=cluster,
        reason=reason,
        run_id=ctx.run_id,
        run_url=run_url or str(ctx.run.get("url") or ""),
        launched_by=str(ctx.run.get("launched_by") or ""),
        disks=tuple(rows),
        disk_notes=tuple(notes),
    )


def _configured(notify: Any) -> list[str]:
    found = []
    if notify.get("webhook"):
        found.append("webhook")
    if notify.get("email") or notify.get("smtp"):
        found.append("email")
    if notify.get("ticket_api"):
        found.append("ticket")
    return found


def _channels(requested: list[str] | None, configured: list[str], dc_name: str) -> list[str]:
    if requested is None:
        if not configured:
            raise ActionError(
                f"datacenter '{dc_name}' has no notify channels (webhook, email, ticket_api) in the inventory"
            )
        return configured
    unknown = [c for c in requested if c not in CHANNELS]
    if unknown:
        raise ActionError(f"dc.notify: unknown channel(s) {', '.join(unknown)}; use {', '.join(CHANNELS)}")
    missing = [c for c in requested if c not in configured]
    if missing:
        raise ActionError(
            f"dc.notify: datacenter '{dc_name}' has no {', '.join(missing)} "
            "configured under notify: in the inventory"
        )
    return list(dict.fromkeys(requested))


@action("dc.notify")
def notify(
    ctx: ActionContext,
    *,
    cluster: str,
    host: str,
    reason: str,
    channels: list[str] | None = None,
    run_url: str = "",
    disks: list[dict[str, Any]] | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tell the datacenter technicians which machine to replace (host, rack, serial, reason, run link).

    ``disks``: the disks to name (the result of ``ceph.disks_of``, or its ``disks`` rows): each with
    OSD, path, slot, serial, model, type and size, "unknown" where nothing knows it.
    ``channels`` picks among webhook, email and ticket (default: every one the datacenter configures).
    Each channel is delivered at most once per step: a retry after a partial failure sends only the
    channels that failed. Every channel is tried even when an earlier one fails.
    """
    req = _request(ctx, cluster, host, reason, run_url, disks)
    dc = ctx.inventory.datacenter(req.datacenter)
    wanted = _channels(channels, _configured(dc.notify), req.datacenter)
    delivered: list[str] = list(ctx.memory.get("delivered", []))
    skipped = [c for c in wanted if c in delivered]
    if skipped:
        ctx.log.info(f"already delivered in an earlier attempt: {', '.join(skipped)}")
    sent: list[str] = []
    failures: list[tuple[str, ActionError]] = []
    for channel in wanted:
        if channel in delivered:
            continue
        try:
            SENDERS[channel](ctx, req, dc)
        except ActionError as exc:
            ctx.log.error(f"dc.notify {channel} failed: {exc}")
            failures.append((channel, exc))
            continue
        sent.append(channel)
        if not ctx.dry_run:
            delivered.append(channel)
            ctx.memory["delivered"] = delivered
    if failures:
        _raise(failures, delivered)
    result = {
        "datacenter": req.datacenter,
        "sent": sent,
        "skipped": skipped,
        "delivered": delivered,
        "ticket": ctx.memory.get("ticket"),
    }
    if disks is not None:
        result["disks"] = len(req.disks)
    return result


def _raise(failures: list[tuple[str, ActionError]], delivered: list[str]) -> NoReturn:
    detail = "; ".join(f"{channel}: {exc}" for channel, exc in failures)
    done = f" (delivered: {', '.join(delivered)}; a retry resends only the failed ones)" if delivered else ""
    message = f"dc.notify failed for {detail}{done}"
    if all(isinstance(exc, ConnectionFailed) for _, exc in failures):
        raise ConnectionFailed(message)
    raise ActionError(message)


def _send_webhook(ctx: ActionContext, req: SwapRequest, dc: Any) -> None:
    url = dc.notify["webhook"]
    ctx.http.request("POST", url, json={"text": f"{req.subject}\n{req.text}", **req.fields()})
    if not ctx.dry_run:
        ctx.log.info(f"posted swap request for {req.host} to {safe_url(url)}")


def _send_ticket(ctx: ActionContext, req: SwapRequest, dc: Any) -> None:
    url = dc.notify["ticket_api"]
    body = {"title": req.subject.removeprefix("[hotswap] "), "description": req.text, **req.fields()}
    result = ctx.http.request("POST", url, json=body)
    if ctx.dry_run:
        return
    ref = _ticket_ref(result)
    ctx.memory["ticket"] = ref
    ctx.log.info(f"opened ticket {ref or '(no id returned)'} for {req.host}")


def _ticket_ref(result: Any) -> str | None:
    if not result.body:
        return None
    try:
        data = result.json()
    except (ActionError, ValueError):
        return None
    if isinstance(data, dict):
        for key in ("id", "key", "number", "ticket"):
            if data.get(key) is not None:
                return str(data[key])
    return None


def _smtp_address(value: str | None) -> tuple[str, int]:
    if not value:
        return "localhost", 25
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 25
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ActionError(f"notify.smtp '{value}' is not host:port") from None


def _send_email(ctx: ActionContext, req: SwapRequest, dc: Any) -> None:
    recipient = dc.notify.get("email") or dc.contact
    if not recipient:
        raise ActionError(f"datacenter '{req.datacenter}' has no notify.email nor contact: nobody to mail")
    server, port = _smtp_address(dc.notify.get("smtp"))
    if ctx.dry_run:
        ctx.would("send email", to=recipient, smtp=f"{server}:{port}", subject=req.subject)
        return
    msg = EmailMessage()
    msg["Subject"] = req.subject
    msg["From"] = f"hotswap@{socket.gethostname()}"
    msg["To"] = recipient
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(idstring=f"hotswap-{req.run_id}")
    msg.set_content(req.text)
    try:
        with smtplib.SMTP(server, port, timeout=SMTP_TIMEOUT) as smtp:
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        reply = f"{exc.smtp_code} {exc.smtp_error!r}"
        raise ActionError(f"SMTP {server}:{port} refused the mail to {recipient}: {reply}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise ActionError(f"SMTP {server}:{port} refused recipient {recipient}: {exc.recipients}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise ConnectionFailed(f"could not deliver mail through SMTP {server}:{port}: {exc}") from None
    ctx.log.info(f"mailed swap request for {req.host} to {recipient}")


SENDERS = {"webhook": _send_webhook, "email": _send_email, "ticket": _send_ticket}


@action("dc.wait_for_swap", polling=True)
def wait_for_swap(ctx: ActionContext, *, cluster: str, host: str, message: str = "") -> dict[str, Any]:
    """Wait until someone confirms the hardware was swapped (``hotswap approve RUN STEP``).

    An approval gate: give the step an ``approval:`` block naming who may confirm (the datacenter
    technicians, the SRE on duty) and optionally a timeout. The decision is the step's result.
    """
    text = message or _default_message(ctx, cluster, host)
    decision = ctx.approvals.decision() if ctx.approvals else None
    if ctx.dry_run:
        ctx.would("wait for swap confirmation", host=host, message=text)
        return {"approved": True, "by": "dry-run"}
    if decision is None:
        ctx.not_yet(3600, f"waiting for swap confirmation: {text}")
    return dict(decision)


def _default_message(ctx: ActionContext, cluster: str, host: str) -> str:
    h = ctx.inventory.host(host) if ctx.inventory is not None else None
    where = f" (rack {h.rack or '?'}, serial {h.serial or '?'})" if h else ""
    return f"replace {host}{where} of cluster {cluster}, then approve this step"


LOCATE_TIMEOUT = 60.0


@dataclass(frozen=True)
class _LedCommand:
    argv: tuple[str, ...]
    disks: tuple[str, ...]

    @property
    def line(self) -> str:
        return shlex.join(self.argv)


def _locate_rows(ctx: ActionContext, host: str, disks: Any) -> list[dict[str, Any]]:
    if disks is not None:
        return _disk_input(disks)[0]
    h = ctx.inventory.host(host)
    return [{"osd": None, "host": host, "path": d.path, "by_path": None, "slot": d.slot, "serial": d.serial,
             "model": d.model} for d in h.disks]


def _led_commands(template: tuple[str, ...], name: str, host: str, rows: list[dict[str, Any]],
                  log: Any) -> list[_LedCommand]:
    """One command per disk; disks whose commands are identical (a chassis LED) share one."""
    needed = placeholders_of(template)
    if not rows and set(needed) <= {"host"}:
        return [_LedCommand(tuple(render_command(f"host '{host}'", name, template, {"host": host})), ("chassis",))]
    commands: dict[tuple[str, ...], list[str]] = {}
    problems: list[str] = []
    for row in rows:
        if row.get("host") not in (None, host):
            problems.append(f"disk {row.get('path')} is on host {row['host']}, not {host}")
            continue
        device = row.get("by_path") or row.get("path")
        label = str(row.get("path") or (f"osd.{row['osd']}" if row.get("osd") is not None else "?"))
        values = {"device": device, "host": host, "slot": row.get("slot"), "serial": row.get("serial"),
                  "id": row.get("osd")}
        missing = [p for p in needed if values.get(p) is None]
        if missing and "device" in missing and not row.get("path"):
            log.warning(f"{label}: its disk is unknown (no path): its LED cannot be switched")
            continue
        if missing:
            keys = ", ".join(f"{{{m}}}" for m in missing)
            problems.append(f"{label} has no value for {keys} (add it to the host's devices entry in the inventory)")
            continue
        argv = tuple(render_command(f"host '{host}'", name, template,
                                    {k: str(v) for k, v in values.items() if v is not None}))
        commands.setdefault(argv, []).append(label)
    if problems:
        raise ActionError(f"{name} on {host}: " + "; ".join(problems))
    return [_LedCommand(argv, tuple(labels)) for argv, labels in commands.items()]


def _locate(ctx: ActionContext, cluster: str, host: str, disks: Any, state: str, timeout: float) -> dict[str, Any]:
    name = f"locate_{state}"
    h = ctx.inventory.host(host)
    if h.cluster and h.cluster != cluster:
        raise ActionError(f"host '{host}' belongs to cluster '{h.cluster}', not '{cluster}': check the step's parameters")
    template = ctx.inventory.host_command(host, name)
    if template is None:
        ctx.log.info(f"no {name} command configured for host {host} or cluster {cluster} "
                     f"(commands.{name} in the inventory): locate LEDs left as they are")
        return {"configured": False, "state": state, "ran": [], "skipped": [], "disks": []}
    if ctx.ssh is None:
        raise ActionError("no SSH toolkit: configure an inventory (HOTSWAP_INVENTORY) for the workers")
    rows = _locate_rows(ctx, host, disks)
    commands = _led_commands(template, name, host, rows, ctx.log)
    if not commands:
        ctx.log.warning(f"{name}: no disk of {host} with a known path: nothing to switch")
    done: list[str] = list(ctx.memory.get(name, []))
    ran: list[str] = []
    skipped = [c.line for c in commands if c.line in done]
    if skipped:
        ctx.log.info(f"already switched {state} in an earlier attempt: {', '.join(skipped)}")
    failures: list[tuple[str, ActionError]] = []
    for command in commands:
        if command.line in done:
            continue
        try:
            ctx.ssh.run(host, list(command.argv), timeout=timeout)
        except ActionError as exc:
            ctx.log.error(f"{name} failed for {', '.join(command.disks)}: {exc}")
            failures.append((', '.join(command.disks), exc))
            continue
        ran.append(command.line)
        if not ctx.dry_run:
            done.append(command.line)
            ctx.memory[name] = done
            ctx.save()
    if failures:
        detail = "; ".join(f"{disk}: {exc}" for disk, exc in failures)
        message = f"{name} failed on {host} for {detail} (a retry runs only the failed ones)"
        if all(isinstance(exc, ConnectionFailed) for _, exc in failures):
            raise ConnectionFailed(message)
        raise ActionError(message)
    labels = [label for c in commands for label in c.disks]
    if ran and not ctx.dry_run:
        ctx.log.info(f"locate LED {state} for {', '.join(labels)} on {host}")
    return {"configured": True, "state": state, "ran": ran, "skipped": skipped, "disks": labels}


@action("dc.locate_on")
def locate_on(ctx: ActionContext, *, cluster: str, host: str, disks: list[dict[str, Any]] | dict[str, Any] | None = None,
              timeout: float = LOCATE_TIMEOUT) -> dict[str, Any]:
    """Switch on the locate LED of each disk with the inventory's ``locate_on`` command (over SSH).

    ``disks``: the result of ``ceph.disks_of`` or its rows (default: the host's inventory ``devices``);
    the command runs on ``host``.

    ``{device}`` is the disk's stable /dev/disk/by-path link when Ceph reports one (the new disk gets the
    same one), else its path. Disks whose commands are identical (a chassis LED) run it once. No
    configured command: a no-op that says so. Each command runs at most once per step (retries skip it).
    """
    return _locate(ctx, cluster, host, disks, "on", timeout)


@action("dc.locate_off")
def locate_off(ctx: ActionContext, *, cluster: str, host: str, disks: list[dict[str, Any]] | dict[str, Any] | None = None,
               timeout: float = LOCATE_TIMEOUT) -> dict[str, Any]:
    """Switch the locate LEDs off again with the inventory's ``locate_off`` command (over SSH).

    Give it the same ``disks`` as ``dc.locate_on``.

    For after the swap and for ``cleanup:``. Every disk is tried even when one fails; no configured
    command is a no-op that says so.
    """
    return _locate(ctx, cluster, host, disks, "off", timeout)
