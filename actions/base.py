"""The action interface: a plain function, its typed parameters, and the context it runs in.

An action is ``def name(ctx: ActionContext, *, param: type = default) -> result``, decorated with
:func:`action`. The keyword-only parameters and their annotations are the single source of truth for
runbook validation and for ``hotswap actions``. Actions never see Celery or Redis: everything they
need (inventory, SSH, HTTP, a logger, dry-run, persisted progress) comes through the context.
"""

from __future__ import annotations

import hashlib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.argtypes import check_value, coerce_value, describe_type
from engine.errors import ActionError, UnknownActionError

ACTION_ATTR = "__hotswap_action__"


class NotYet(Exception):
    """Raised by a polling action: "not yet, check again in ``after`` seconds".

    The engine frees the worker slot and re-runs the action later with the same ``ctx.memory``.
    """

    def __init__(self, after: float, reason: str = "") -> None:
        super().__init__(reason or f"check again in {after:g}s")
        self.after = max(0.05, float(after))
        self.reason = reason


class StepLogger(Protocol):
    def info(self, message: str) -> None: ...
    def warning(self, message: str) -> None: ...
    def error(self, message: str) -> None: ...


class Approvals(Protocol):
    """How an approval gate learns its decision. ``decision()`` is None while nobody has decided."""

    def decision(self) -> dict[str, Any] | None: ...


@dataclass
class ActionContext:
    """Everything an action may use. Built by the engine for every attempt of a step."""

    run_id: str
    step_id: str
    attempt: int
    dry_run: bool
    log: StepLogger
    memory: dict[str, Any] = field(default_factory=dict)
    """Persisted between polls and attempts of the same step: record progress here so a re-run resumes."""
    inventory: Any = None
    ssh: Any = None
    http: Any = None
    approvals: Approvals | None = None
    run: Mapping[str, Any] = field(default_factory=dict)
    """Run metadata: id, runbook, launched_by, source, params (secrets redacted)."""
    planned: list[dict[str, Any]] = field(default_factory=list)
    """In dry-run, what would have been done (commands, requests); the engine prints it."""
    cancelled: Callable[[], bool] = field(default=lambda: False)
    save: Callable[[], None] = field(default=lambda: None)
    """Persist ``memory`` now. Call it right after a side effect so a re-run after a crash skips it."""
    notify: Callable[[str], None] = field(default=lambda message: None)
    """Where ``attention`` messages go besides the log (the engine: an event the notifier sends on)."""

    def attention(self, message: str) -> None:
        """Ask for a human without failing (e.g. a drain held by a safety check for long): the message goes to
        the step's log and to the notifications configured for ``attention``. Call it once per situation."""
        self.log.warning(f"needs attention: {message}")
        self.notify(message)

    def not_yet(self, after: float, reason: str = "") -> typing.NoReturn:
        raise NotYet(after, reason)

    def would(self, kind: str, **details: Any) -> None:
        """Record an effect that dry-run mode skipped (the engine shows these to the operator)."""
        entry = {"kind": kind, **details}
        self.planned.append(entry)
        self.log.info(f"[dry-run] would {kind}: " + " ".join(f"{k}={v}" for k, v in details.items()))


@dataclass(frozen=True)
class ParamSpec:
    name: str
    annotation: Any
    required: bool
    default: Any

    @property
    def type_name(self) -> str:
        return describe_type(self.annotation)


@dataclass(frozen=True)
class ActionSpec:
    name: str
    func: Callable[..., Any]
    params: Mapping[str, ParamSpec]
    summary: str
    doc: str
    destructive: bool
    polling: bool
    version: int = 1
    """Raised by the action's author when its meaning changes although its parameters did not."""

    def __call__(self, ctx: ActionContext, **kwargs: Any) -> Any:
        return self.func(ctx, **kwargs)

    @property
    def signature(self) -> str:
        """A short digest of the parameters (names, types, which are required): changes when a deploy
        changes what the action accepts."""
        shape = sorted((p.name, p.type_name, p.required) for p in self.params.values())
        return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        return {"version": self.version, "signature": self.signature}


def action(name: str, *, destructive: bool = False, polling: bool = False,
           version: int = 1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a function as the action ``name``. ``destructive`` actions are listed as such and must
    sit behind their safety checks; ``polling`` actions may raise :class:`NotYet`. Raise ``version`` when
    the action's meaning changes: runs planned against another version wait for a matching worker."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, ACTION_ATTR, {"name": name, "destructive": destructive, "polling": polling,
                                    "version": version})
        return func

    return mark


def spec_of(func: Callable[..., Any]) -> ActionSpec:
    meta = getattr(func, ACTION_ATTR)
    hints = typing.get_type_hints(func)
    sig = inspect.signature(func)
    params: dict[str, ParamSpec] = {}
    positional = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if len(positional) != 1:
        raise TypeError(f"action {meta['name']}: take exactly one positional parameter (ctx)")
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            required = p.default is inspect.Parameter.empty
            params[p.name] = ParamSpec(p.name, hints.get(p.name, Any), required, None if required else p.default)
    doc = inspect.getdoc(func) or ""
    return ActionSpec(
        name=meta["name"],
        func=func,
        params=params,
        summary=doc.splitlines()[0] if doc else "",
        doc=doc,
        destructive=meta["destructive"],
        polling=meta["polling"],
        version=meta.get("version", 1),
    )


class ActionRegistry:
    """Actions by name, built from modules. Instances are independent; there is no global mutable state."""

    def __init__(self, specs: list[ActionSpec] | None = None) -> None:
        self._specs: dict[str, ActionSpec] = {}
        for spec in specs or []:
            self.add(spec)

    @classmethod
    def from_modules(cls, modules: list[types.ModuleType]) -> ActionRegistry:
        registry = cls()
        for module in modules:
            for obj in vars(module).values():
                if callable(obj) and hasattr(obj, ACTION_ATTR) and getattr(obj, "__module__", None) == module.__name__:
                    registry.add(spec_of(obj))
        return registry

    def add(self, spec: ActionSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"action '{spec.name}' is defined twice")
        self._specs[spec.name] = spec

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownActionError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))


__all__ = [
    "ActionContext",
    "ActionError",
    "ActionRegistry",
    "ActionSpec",
    "Approvals",
    "NotYet",
    "ParamSpec",
    "StepLogger",
    "action",
    "check_value",
    "coerce_value",
    "describe_type",
    "spec_of",
]
