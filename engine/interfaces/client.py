"""The composition root of the interfaces: a service wired to the configured (or embedded) Redis, its
Celery publisher, the action registry and the inventory, plus who is calling and what they may do."""

from __future__ import annotations

import getpass
import os
from typing import Any

from engine import embedded
from engine.canvas import compile_canvas
from engine.celery_app import make_app, runtime
from engine.config import load_config
from engine.context import load_inventory
from engine.interfaces.facade import RunbookCatalog
from engine.interfaces.guard import GuardedService, OpenService
from engine.interfaces.policy import load_policy
from engine.service import Identity, Service


class Client:
    """What a CLI invocation talks to: the service over the configured (or embedded) Redis."""

    def __init__(self, need_worker: bool = False) -> None:
        self.config = load_config()
        url = self.config.redis_url or embedded.ensure_redis(self.config.state_dir)
        self.app = make_app(url, self.config.replication)
        self.rt = runtime(self.app)
        if need_worker and self.config.embedded:
            embedded.ensure_worker(self.config.state_dir, url)
        self.service = Service(self.rt.store, self.rt.executor.registry, self.rt.publish, load_inventory,
                               launch_canvas=self._launch_canvas)
        self.ops = operations(self.service, self.config)

    def _launch_canvas(self, run_id: str, plan: Any) -> None:
        compile_canvas(self.app, run_id, plan).apply_async()


def operations(service: Service, config: Any) -> OpenService | GuardedService:
    """What this CLI user may do: everything when no policy file is configured (a single-operator
    setup), otherwise exactly what the policy (``$HOTSWAP_POLICY``) grants ``cli:<login>``."""
    policy_file = os.environ.get("HOTSWAP_POLICY")
    if not policy_file:
        return OpenService(service, identity())
    return GuardedService(service, load_policy(policy_file), identity(), RunbookCatalog(config.runbooks_dir, service))


def identity() -> Identity:
    user = os.environ.get("HOTSWAP_USER") or getpass.getuser()
    return Identity(user, "cli", {"host": os.uname().nodename, "pid": os.getpid()})
