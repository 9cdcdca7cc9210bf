"""Redis connections: the URLs hotswap accepts, the clients made from them (for the store, the Celery broker
and the result backend), and waiting for replicas after the transitions a failover must not lose.

One URL names the Redis of a deployment:

- ``redis://[[user]:password@]host[:port][/db]`` — one server (redis-py's syntax and query options);
  ``rediss://`` the same over TLS; ``redis+socket:///path/redis.sock`` a unix socket (the embedded default).
- ``sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]`` — the
  current master of ``service`` as Redis Sentinel reports it. Each ``host:port`` is a sentinel (port
  26379 unless given; ``[v6addr]:port`` for IPv6); user and password authenticate to the Redis servers
  (master and replicas), ``sentinel_username``/``sentinel_password`` to the sentinels themselves, when
  they have ``requirepass``. Every client (store, broker, results) follows a failover on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from engine.errors import ConfigError, HotswapError

log = logging.getLogger("hotswap.redis")

SENTINEL_PORT = 26379
HEALTH_CHECK_SECONDS = 30
SENTINEL_SOCKET_TIMEOUT = 2.0
"""How long a sentinel may take to answer before the next one is asked."""
MASTER_SOCKET_TIMEOUT = 5.0
"""A master that stops answering (frozen, partitioned) is given up on after this, so a client reconnects to
the one Sentinel promotes. Longer than any blocking read hotswap makes (1 s) and than REPLICA_TIMEOUT_MAX."""
FAILOVER_RETRIES = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=25)
"""A command that meets a dead master is retried for about 20 s (asking Sentinel for the master before each
try), long enough for a failover with a short ``down-after-milliseconds``; after that, it fails like any
Redis outage and the engine's own recovery (leases, redelivery timers) takes over."""
REPLICA_TIMEOUT = 1.0
"""Default seconds a transition waits for ``min_replicas`` replicas to confirm it."""
REPLICA_TIMEOUT_MAX = MASTER_SOCKET_TIMEOUT / 2
BROKER_HEALTH_CHECK_SECONDS = 2
"""kombu drops a BRPOP connection whose reply is overdue by more than its 1 s BRPOP timeout plus this, so a
worker consuming from a frozen or partitioned master moves to the new one in about 5 s (51 s by default)."""
PUBLISH_RETRY_POLICY = {"max_retries": 40, "interval_start": 0, "interval_step": 0.25, "interval_max": 1.0}
"""Celery publish retries over a Sentinel broker: about 35 s, through a failover."""


class NotReplicated(HotswapError):
    """A transition was written but not confirmed: fewer replicas than ``min_replicas`` had it in time, or
    Sentinel no longer names the server it was written to. It stands there; the caller must not act on it."""


@dataclass(frozen=True)
class Replication:
    """How many replicas must confirm a transition that a failover must not lose, and how long to wait."""

    min_replicas: int = 0
    timeout: float = REPLICA_TIMEOUT

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ConfigError(f"min_replicas must be 0 or more, not {self.min_replicas}")
        if not 0 < self.timeout <= REPLICA_TIMEOUT_MAX:
            raise ConfigError(f"replica_timeout must be more than 0 and at most {REPLICA_TIMEOUT_MAX:g} seconds, "
                              f"not {self.timeout:g}")


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def sentinel_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_SOCKET_TIMEOUT,
                                  "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT}
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


class FollowingConnection(SentinelManagedConnection):
    """A connection to the master that asks Sentinel where the master is on every connect, retries included.
    redis-py 8.1 reconnects a broken connection to the address it had (redis/redis-py#3874): after a
    timeout on a frozen master, a client would keep reconnecting to it and never reach the new one."""

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class HotswapRedis(redis.Redis):
    """A redis-py client that knows how many replicas hotswap's critical transitions wait for."""

    replication: Replication = Replication()


SENTINEL_SYNTAX = "sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]"


def is_sentinel(url: str) -> bool:
    return url.startswith("sentinel://")


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse a ``sentinel://`` URL (see the module docstring); ConfigError says what is wrong."""
    if not is_sentinel(url):
        raise ConfigError(f"not a sentinel URL: expected {SENTINEL_SYNTAX}")
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, sep, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) if sep else None
    sentinels = tuple(_host_port(h, url) for h in hostlist.split(","))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ConfigError(f"bad Redis URL {_redact(url)}: give the Sentinel service name, and optionally a "
                          f"database number, after the sentinels: {SENTINEL_SYNTAX}")
    service = unquote(path[0])
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ConfigError(f"bad Redis URL {_redact(url)}: the database must be a number, not {path[1]!r}")
        db = int(path[1])
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"sentinel_username", "sentinel_password"}
    if unknown:
        raise ConfigError(f"bad Redis URL {_redact(url)}: unknown option(s) {', '.join(sorted(unknown))}; "
                          "a sentinel URL takes sentinel_username and sentinel_password")
    return SentinelTarget(sentinels, service, db, username, password,
                          query.get("sentinel_username") or None, query.get("sentinel_password") or None)


def _host_port(text: str, url: str) -> tuple[str, int]:
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise ConfigError(f"bad Redis URL {_redact(url)}: {text!r} is not host[:port]; expected {SENTINEL_SYNTAX}")
    return host, int(port) if port else SENTINEL_PORT


def _redact(url: str) -> str:
    _, sep, tail = url.rpartition("@")
    if not sep:
        return url.split("?")[0]
    return url.split("//", 1)[0] + "//***@" + tail.split("?")[0]


def connect(url: str, replication: Replication | None = None) -> HotswapRedis:
    """A client for any URL hotswap accepts. Raises ConfigError for a malformed one."""
    if is_sentinel(url):
        target = parse_sentinel_url(url)
        sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs(),  # type: ignore[no-untyped-call]
                            socket_timeout=MASTER_SOCKET_TIMEOUT, socket_connect_timeout=SENTINEL_SOCKET_TIMEOUT)
        client = cast(HotswapRedis, sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service, redis_class=HotswapRedis, connection_class=FollowingConnection, db=target.db,
            username=target.username, password=target.password, health_check_interval=HEALTH_CHECK_SECONDS,
            retry=FAILOVER_RETRIES))
    else:
        if url.startswith("redis+socket://"):
            url = "unix://" + url[len("redis+socket://"):]
        try:
            client = cast(HotswapRedis, HotswapRedis.from_url(url, health_check_interval=HEALTH_CHECK_SECONDS))
        except ValueError as e:
            raise ConfigError(f"bad Redis URL: {e}") from None
    if replication is not None:
        client.replication = replication
    return client


@dataclass(frozen=True)
class CeleryUrls:
    """What Celery needs for one hotswap Redis URL: broker and backend URLs and their transport options."""

    broker: str
    backend: str
    broker_options: dict[str, Any]
    backend_options: dict[str, Any]
    publish_retry_policy: dict[str, Any] | None = None


def celery_urls(url: str) -> CeleryUrls:
    """kombu and Celery spell Sentinel as ``sentinel://[auth@]host:port/db;sentinel://...`` plus a
    ``master_name`` transport option; any other URL is passed through as it is."""
    if not is_sentinel(url):
        return CeleryUrls(url, url, {}, {})
    target = parse_sentinel_url(url)
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    elif target.username:
        auth = f"{quote(target.username, safe='')}@"
    each = ";".join(f"sentinel://{auth}{_netloc(host, port)}/{target.db}" for host, port in target.sentinels)
    options = {"master_name": target.service, "sentinel_kwargs": target.sentinel_kwargs()}
    broker_options = {**options, "socket_timeout": MASTER_SOCKET_TIMEOUT,
                      "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT,
                      "health_check_interval": BROKER_HEALTH_CHECK_SECONDS}
    return CeleryUrls(each, each, broker_options, options, PUBLISH_RETRY_POLICY)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_replicated(client: redis.Redis, probe_key: str, what: str, *, strict: bool = True) -> bool:
    """Make sure a transition just written will survive a failover, as far as the configuration asks.

    With ``min_replicas``, wait until that many replicas have every write acknowledged so far, ``what``
    included. ``WAIT`` only covers the writes of the connection it is sent on, and a pooled client may send
    it on another one; so a write to ``probe_key`` goes first on the same connection: a replica that has it
    has everything the master acknowledged before it. Through Sentinel, also ask the sentinels whether the
    server written to is still the master: after a failover the old master accepts writes until Sentinel
    demotes it (seconds later), and everything it took meanwhile is discarded; asking also moves the
    client's connections to the new master.

    True when confirmed (or nothing is asked); otherwise NotReplicated when ``strict``, else a warning and
    False. The transition stands on the server either way.
    """
    policy = client.replication if isinstance(client, HotswapRedis) else Replication()
    pool: Any = client.connection_pool
    sentinel = isinstance(pool, SentinelConnectionPool)
    if policy.min_replicas == 0 and not sentinel:
        return True
    written_to = pool.master_address if sentinel else None
    acked = 0
    if policy.min_replicas:
        pipe = client.pipeline(transaction=False)
        pipe.incr(probe_key)
        pipe.wait(policy.min_replicas, int(policy.timeout * 1000))
        acked = int(pipe.execute()[1])
    moved = sentinel and pool.get_master_address() != written_to
    if acked >= policy.min_replicas and not moved:
        return True
    why = (f"Sentinel names another master than {written_to[0]}:{written_to[1]} now" if moved and written_to else
           f"{acked} of the {policy.min_replicas} replicas asked for (min_replicas) confirmed it within "
           f"{policy.timeout:g}s")
    message = (f"{what} is on the Redis master but not confirmed ({why}), so a failover could lose it; if this "
               "repeats, check the replicas (INFO replication on the master) and Sentinel, or lower min_replicas")
    if strict:
        raise NotReplicated(message)
    log.warning("%s", message)
    return False
