"""Chat notifications through an incoming webhook (Slack format: ``{"text": ...}``; Mattermost and
Rocket.Chat accept the same)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from actions.base import ActionContext, action
from engine.errors import ActionError


def safe_url(url: str) -> str:
    """The URL without its path: webhook paths usually embed the token that authorises posting."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


@action("chat.notify")
def notify(
    ctx: ActionContext, *, message: str, webhook: str | None = None, cluster: str | None = None
) -> dict[str, Any]:
    """Post ``message`` to a chat webhook: ``webhook`` if given, else the cluster's ``chat_webhook``."""
    url = webhook or (ctx.inventory.cluster(cluster).chat_webhook if cluster else None)
    if not url:
        where = f"cluster '{cluster}' has no chat_webhook in the inventory" if cluster else "no webhook given"
        raise ActionError(f"chat.notify: {where}: pass webhook: or set the cluster's chat_webhook")
    result = ctx.http.request("POST", url, json={"text": message})
    if not ctx.dry_run:
        ctx.log.info(f"posted to chat webhook {safe_url(url)}")
    return {"posted": not ctx.dry_run, "status": result.status, "webhook": safe_url(url)}
