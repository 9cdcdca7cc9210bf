"""Run a snippet in a child Python whose address space is capped, so a template or document that
tries to eat memory fails there (MemoryError) instead of taking the test machine down."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE_LIMIT = 1536 * 2**20
SAFETY_TIMEOUT = 120.0
"""Not an assertion: only stops a runaway child so the suite reports a failure instead of hanging."""

_PRELUDE = r'''
import json, sys, tracemalloc
from engine import templating
from engine.errors import ValidationError
tracemalloc.start()
def report(outcome, message, **extra):
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"outcome": outcome, "message": message, "peak_mb": peak / 2**20, **extra}))
try:
'''

_EPILOGUE = r'''
except templating.TemplateError as e:
    report("TemplateError", str(e))
except ValidationError as e:
    report("ValidationError", [str(i) for i in e.issues])
except BaseException as e:
    report(type(e).__name__, str(e)[:300])
'''


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def run_isolated(body: str, **args: Any) -> dict[str, Any]:
    """Run ``body`` (indented 4 spaces, may read ``ARGS`` and must call ``report``) in a capped child.

    Returns ``{"outcome", "message", "peak_mb", ...}``: outcome is "ok", "TemplateError",
    "ValidationError" or the name of any other exception the child hit."""
    code = _PRELUDE + f"    ARGS = json.loads({json.dumps(json.dumps(args))})\n" + body + _EPILOGUE
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=_limit, timeout=SAFETY_TIMEOUT, check=False)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return {"outcome": f"child died with exit code {proc.returncode}", "message": proc.stderr[-500:], "peak_mb": 0}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def render_isolated(text: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """``templating.render(text, context)`` in a capped child."""
    return run_isolated(
        "    value = templating.render(ARGS['text'], ARGS['context'])\n"
        "    report('ok', None, type=type(value).__name__, size=len(value) if hasattr(value, '__len__') else None)\n",
        text=text, context=context or {},
    )
