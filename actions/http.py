"""HTTP calls from actions (``ctx.http``): timeouts, clear errors, secrets kept out of logs.

Dry-run: GET, HEAD and OPTIONS are read-only by default and run for real (so a dry-run sees real state);
every other method is mutating by default and is only recorded with ``would("http", ...)``. Pass
``mutating=`` to override (e.g. a POST that only queries).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

from actions.base import StepLogger
from actions.redact import redact
from engine.errors import ActionError, ConnectionFailed

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EXCERPT = 300


@dataclass(frozen=True)
class HttpResult:
    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: str
    dry_run: bool = False
    redact_with: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed as JSON (None for a dry-run result, which has no body)."""
        if self.dry_run:
            return None
        try:
            return jsonlib.loads(self.body)
        except ValueError as e:
            excerpt = redact(self.body.strip()[:EXCERPT], self.redact_with)
            url = redact(self.url, self.redact_with)
            raise ActionError(
                f"{self.method} {url}: the response is not valid JSON ({e}): {excerpt!r}"
            ) from None


class HttpToolkit:
    """``ctx.http``: one method, :meth:`request`."""

    def __init__(
        self,
        *,
        log: StepLogger,
        dry_run: bool,
        would: Callable[..., None],
        secrets: Iterable[str] = (),
        session: requests.Session | None = None,
        timeout: float = 10,
    ) -> None:
        self.log = log
        self.dry_run = dry_run
        self.would = would
        self.secrets = tuple(s for s in secrets if s)
        self.session = session if session is not None else requests.Session()
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        mutating: bool | None = None,
        ok: tuple[int, ...] = (),
    ) -> HttpResult:
        """Send a request; a status outside 2xx and ``ok`` raises ActionError, an unreachable server
        ConnectionFailed."""
        method = method.upper()
        if mutating is None:
            mutating = method not in READ_ONLY_METHODS
        shown_url = self._redact(_full_url(method, url, params))
        if self.dry_run and mutating:
            body = None if json is None else self._redact(jsonlib.dumps(json, sort_keys=True, default=str))
            self.would("http", method=method, url=shown_url, body=body)
            return HttpResult(method, url, 0, {}, "", dry_run=True, redact_with=self.secrets)
        try:
            response = self.session.request(
                method,
                url,
                json=json,
                headers=headers,
                params=params,
                timeout=self.timeout if timeout is None else timeout,
            )
        except requests.Timeout as e:
            raise ConnectionFailed(self._redact(f"{method} {shown_url}: no answer in time ({e})")) from None
        except requests.RequestException as e:
            raise ConnectionFailed(self._redact(f"{method} {shown_url}: cannot connect ({e})")) from None
        result = HttpResult(
            method,
            response.url,
            response.status_code,
            dict(response.headers),
            response.text,
            redact_with=self.secrets,
        )
        self.log.info(f"{method} {shown_url} -> {result.status}")
        if not result.ok and result.status not in ok:
            excerpt = self._redact(result.body.strip()[:EXCERPT])
            raise ActionError(f"{method} {shown_url} returned HTTP {result.status}: {excerpt!r}")
        return result

    def _redact(self, text: str) -> str:
        return redact(text, self.secrets)


def _full_url(method: str, url: str, params: dict[str, str] | None) -> str:
    try:
        return requests.Request(method, url, params=params).prepare().url or url
    except requests.RequestException as e:
        raise ActionError(f"invalid URL {url!r}: {e}") from None


__all__ = ["HttpResult", "HttpToolkit"]
