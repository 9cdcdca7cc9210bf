"""Keeping a lease through Redis hiccups, and stopping as soon as it may have lapsed (engine/lease.py)."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError

from engine.errors import LeaseLost
from engine.lease import renew, retrying, transient

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("error", "expected"), [
    (RedisConnectionError("Connection refused"), True),
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
    (ResponseError("Error running script (call to f_1): @user_script:5: -OOM command not allowed"), True),
    (ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"), True),
    (ResponseError("LOADING Redis is loading the dataset in memory"), True),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    (ResponseError("NOSCRIPT No matching script"), False),
])
def test_only_errors_that_can_clear_by_themselves_are_retried(error: Exception, expected: bool) -> None:
    assert transient(error) is expected


def test_a_refused_write_is_retried_until_it_goes_through() -> None:
    clock, calls = Clock(), []

    def save() -> str:
        calls.append(clock.now)
        if len(calls) < 3:
            raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
        return "saved"

    assert retrying(save, deadline=clock.now + 30, clock=clock, what="saving") == "saved"
    assert len(calls) == 3


def test_retrying_gives_up_with_lease_lost_when_the_lease_has_no_time_left() -> None:
    clock = Clock()

    def refused() -> None:
        clock.now += 1
        raise RedisConnectionError("Connection refused")

    with pytest.raises(LeaseLost, match="Connection refused"):
        retrying(refused, deadline=clock.now + 3, clock=clock, what="saving")
    assert clock.now <= 1000 + 3 + 1


def test_a_non_transient_error_is_not_retried() -> None:
    clock = Clock()
    with pytest.raises(LeaseLost, match="WRONGTYPE"):
        retrying(lambda: (_ for _ in ()).throw(ResponseError("WRONGTYPE bad")), clock.now + 30, clock, "saving")


def test_a_renewal_that_comes_back_after_its_lease_lapsed_fences_the_execution_off() -> None:
    clock = Clock()

    def stalled(until: float) -> bool:
        clock.now += 45  # Redis was frozen: the renewal succeeded, but only after its 30 s lease had lapsed
        return True

    with pytest.raises(LeaseLost, match=r"answered 45\.0s late"):
        renew(stalled, lease=30, until=clock.now + 30, clock=clock, what="step s")


def test_a_renewal_in_time_extends_the_lease_and_one_taken_over_is_lost() -> None:
    clock = Clock()
    assert renew(lambda until: True, lease=30, until=clock.now + 10, clock=clock, what="step s") == clock.now + 30
    with pytest.raises(LeaseLost, match="lost its lease"):
        renew(lambda until: False, lease=30, until=clock.now + 10, clock=clock, what="step s")


def test_refused_writes_are_retried_past_the_lease_since_nobody_can_take_over_meanwhile() -> None:
    clock, calls = Clock(), []

    def save() -> str:
        calls.append(clock.now)
        clock.now += 1
        if len(calls) < 10:  # ten seconds of OOM, with a 3 s lease
            raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
        return "saved"

    assert retrying(save, deadline=clock.now + 3, clock=clock, what="saving") == "saved"


def test_a_lost_connection_is_not_retried_past_the_lease_since_others_may_reach_redis() -> None:
    clock = Clock()

    def unreachable() -> None:
        clock.now += 1
        raise RedisConnectionError("Connection reset by peer")

    with pytest.raises(LeaseLost):
        retrying(unreachable, deadline=clock.now + 3, clock=clock, what="saving")
    assert clock.now <= 1000 + 4
