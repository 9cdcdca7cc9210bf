"""A running step's lease: renewing it through Redis hiccups, and knowing when it is gone.

Redis may stall (a partition, a fork, SIGSTOP) or refuse writes for a while (``OOM``, ``MISCONF``, loading
after a restart). A step keeps running through that as long as its lease has not lapsed: renewals and
progress saves are retried. Once the lease may have lapsed, another worker may take the step over, so this
execution must stop acting at once (self-fencing): that includes a renewal that succeeded but came back after
the lease it set had already run out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import (
    BusyLoadingError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import LeaseLost

TRANSIENT_REPLIES = ("OOM", "MISCONF", "LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN")
"""Error replies after which the same write can succeed a moment later."""
_TRANSIENT_REPLY = re.compile(r"(?:^|-)(?:" + "|".join(TRANSIENT_REPLIES) + r")\b")
"""The code starts the reply, or follows a '-' inside a script error ('Error running script ...: -OOM ...')."""
_REFUSED_REPLY = re.compile(r"(?:^|-)(?:OOM|MISCONF)\b")
RETRY_MAX_DELAY = 1.0
REFUSED_RETRY_DELAY = 0.05
"""While writes are refused, retry this often: the first write after the refusal ends should be ours."""
REFUSAL_PATIENCE = 300.0
"""How long a step keeps retrying through refused writes beyond its lease before it gives up."""


def transient(error: BaseException) -> bool:
    """Whether retrying the same Redis call soon may succeed (Redis unreachable, slow or refusing writes)."""
    if isinstance(error, RedisConnectionError | RedisTimeoutError | BusyLoadingError | OutOfMemoryError
                  | ReadOnlyError | OSError):
        return True
    return isinstance(error, ResponseError) and bool(_TRANSIENT_REPLY.search(str(error)))


def refused_everywhere(error: BaseException) -> bool:
    """Redis refuses every client's writes (out of memory, or a failed background save): no other worker can
    take a step over meanwhile either, since a takeover is a write."""
    if isinstance(error, OutOfMemoryError):
        return True
    return isinstance(error, ResponseError) and bool(_REFUSED_REPLY.search(str(error)))


def retrying(call: Callable[[], Any], deadline: float, clock: Callable[[], float], what: str) -> Any:
    """``call()``, retried on transient Redis errors until ``deadline`` (by ``clock``, the lease's end);
    LeaseLost after. While Redis refuses everyone's writes the lease cannot be taken over, so the retries go on
    past it (up to REFUSAL_PATIENCE), quickly enough to land before any takeover once writes are back."""
    started, delay = clock(), 0.1
    while True:
        try:
            return call()
        except (RedisError, OSError) as e:
            refused = refused_everywhere(e)
            limit = max(deadline, started + REFUSAL_PATIENCE) if refused else deadline
            if not transient(e) or clock() + delay >= limit:
                raise LeaseLost(f"{what} failed ({type(e).__name__}: {e}) and the lease gives no time for another "
                                "try: another worker takes the step over") from e
            time.sleep(delay)  # backoff between retries of a write Redis could not take
            delay = REFUSED_RETRY_DELAY if refused else min(2 * delay, RETRY_MAX_DELAY)


def renew(renewal: Callable[[float], bool], lease: float, until: float, clock: Callable[[], float],
          what: str) -> float:
    """Renew a lease that runs until ``until`` by calling ``renewal(new_until) -> still ours``; returns the new
    ``until``. Raises LeaseLost when it is not ours any more, could not be renewed in time, or was renewed
    only after it had lapsed."""

    def attempt() -> tuple[float, bool]:
        sent = clock()
        return sent, renewal(sent + lease)

    sent, ours = retrying(attempt, until, clock, f"renewing the lease of {what}")
    sent = float(sent)
    if not ours:
        raise LeaseLost(f"{what} lost its lease; another worker has taken it over")
    if clock() >= sent + lease:
        raise LeaseLost(f"{what}: Redis answered {clock() - sent:.1f}s late, after the lease it renewed had lapsed; "
                        "another worker may have taken the step over")
    return sent + lease
