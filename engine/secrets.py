"""Secret parameters are references, resolved only where a step runs.

A ``secret`` parameter's value is ``env:NAME`` (an environment variable of the worker) or
``file:/path`` (a file readable by the worker). The reference is what Redis, events, logs and the
plan hold; the secret itself exists only in the worker process while a step renders and runs, and
every log line, error and result is scrubbed of it before it is stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

_REFERENCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:/\S+)$")
MASK = "***"


def check_reference(value: str) -> str | None:
    """Why ``value`` is not a secret reference, or None when it is one."""
    if _REFERENCE.match(value):
        return None
    return ("takes a reference, env:NAME or file:/path, not the secret itself, so the secret never "
            "lands in Redis, logs or the audit trail")


def resolve(reference: str) -> str:
    kind, _, target = reference.partition(":")
    if kind == "env":
        value = os.environ.get(target)
        if value is None:
            raise ConfigError(f"secret {reference}: the worker has no environment variable {target}")
        return value
    try:
        return Path(target).read_text().strip()
    except OSError as e:
        raise ConfigError(f"secret {reference}: cannot read {target} on this worker: {e.strerror}") from None


def resolve_params(params: Mapping[str, Any], secret_names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The parameters with secret references replaced by their values, and the values (for scrubbing)."""
    resolved = dict(params)
    values: list[str] = []
    for name in secret_names:
        ref = params.get(name)
        if isinstance(ref, str) and ref:
            resolved[name] = resolve(ref)
            values.append(resolved[name])
    return resolved, values


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret replaced by *** (strings inside dicts and lists too)."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            if secret:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value
