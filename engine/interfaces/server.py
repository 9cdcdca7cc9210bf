"""``hotswap server``: the HTTP API, the chat endpoints and the progress notifiers in one process."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from engine.config import Config
from engine.interfaces.api import ServerContext, create_app
from engine.interfaces.facade import RunbookCatalog
from engine.interfaces.settings import ServerSettings
from engine.service import Service


@dataclass
class Server:
    """A running uvicorn server (in a thread) and the background parts hanging off it."""

    app: FastAPI
    ctx: ServerContext
    uv: uvicorn.Server
    thread: threading.Thread | None = None
    closers: tuple[Any, ...] = ()

    @property
    def url(self) -> str:
        sock = self.uv.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 20) -> Server:
        self.thread = threading.Thread(target=self.uv.run, name="hotswap-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.uv.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        for closer in self.closers:
            closer.close()
        self.uv.should_exit = True
        if self.thread is not None:
            self.thread.join(20)


def build(service: Service, settings: ServerSettings, config: Config, *, inventory: Any = None,
          host: str | None = None, port: int | None = None) -> Server:
    """Wire the API, chatops (when Slack is configured), notifications and schedules (when configured)."""
    from engine.interfaces.chatops import SlackBot, slack_router
    from engine.interfaces.progress import Notifier
    from engine.interfaces.schedules import ScheduleBook, load_schedules

    policy = settings.require_policy()
    catalog = RunbookCatalog(config.runbooks_dir, service)
    inv = inventory or service.inventory_loader
    ctx = ServerContext(service, settings, catalog, inv)
    closers: list[Any] = []
    bot = None
    if settings.slack is not None:
        bot = SlackBot(service, policy, catalog, settings.slack, inv)
        ctx.extra_routers.append(slack_router(bot))
        closers.append(bot)
    if settings.notifications:
        notifier = Notifier(service, settings.notifications, bot)
        notifier.start()
        closers.append(notifier)
    if settings.schedules is not None:
        ctx.schedules = ScheduleBook(load_schedules(settings.schedules), service, policy, catalog, inv)
    if bot is not None:
        bot.resume_followers()
    app = create_app(ctx)
    uv_config = uvicorn.Config(app, host=host or settings.host, port=settings.port if port is None else port,
                               log_level="warning", access_log=False, lifespan="off")
    return Server(app, ctx, uvicorn.Server(uv_config), closers=tuple(closers))
