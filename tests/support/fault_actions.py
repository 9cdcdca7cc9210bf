"""Actions used only by fault-injection tests (loaded by workers via $HOTSWAP_ACTION_MODULES)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from actions.base import ActionContext, ActionError, action


@action("test.phases")
def phases(ctx: ActionContext, *, directory: str, count: int = 3, pause: float = 1.0) -> dict[str, Any]:
    """Do ``count`` non-idempotent phases (append a line to a file each), recording progress after each."""
    done: list[int] = list(ctx.memory.get("done", []))
    for i in range(count):
        if i in done:
            ctx.log.info(f"phase {i} already done on an earlier attempt; skipping")
            continue
        if ctx.cancelled():  # cancelled, or this execution lost its lease: no further side effect
            raise ActionError(f"stopped before phase {i}: cancelled or lease lost")
        with open(Path(directory) / f"phase-{i}", "a") as f:
            f.write(f"attempt {ctx.attempt}\n")
        done.append(i)
        ctx.memory["done"] = done
        ctx.save()
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            time.sleep(0.05)
    return {"done": done, "attempt": ctx.attempt}
