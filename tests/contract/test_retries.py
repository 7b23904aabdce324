"""retried: one bounded retry loop for every capability that calls a flaky service."""

from __future__ import annotations

import pytest
from opsagent import doubling, retried


class Busy(Exception):
    pass


class Refused(Exception):
    pass


def flaky(*answers: object):  # type: ignore[no-untyped-def]
    calls = iter(answers)

    def call() -> object:
        answer = next(calls)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return call


def test_a_transient_failure_is_tried_again_after_the_waits() -> None:
    slept: list[float] = []
    told: list[int] = []
    got = retried(
        flaky(Busy(), Busy(), "ok"),
        doubling(1.0, 3),
        transient=lambda exc: isinstance(exc, Busy),
        on_failure=lambda n, _exc: told.append(n),
        sleep=slept.append,
    )
    assert (got, slept, told) == ("ok", [1.0, 2.0], [1, 2])


def test_the_last_failure_is_raised_once_the_tries_are_used_up() -> None:
    slept: list[float] = []
    last = Busy("third")
    with pytest.raises(Busy) as info:
        retried(
            flaky(Busy(), Busy(), last), [1.0, 2.0], transient=lambda _e: True, sleep=slept.append
        )
    assert info.value is last and slept == [1.0, 2.0]


def test_a_failure_retrying_cannot_fix_ends_the_tries_at_once() -> None:
    slept: list[float] = []
    with pytest.raises(Refused):
        retried(
            flaky(Refused(), "never"),
            [1.0, 2.0],
            transient=lambda exc: isinstance(exc, Busy),
            sleep=slept.append,
        )
    assert slept == []


def test_the_server_may_say_how_long_to_wait() -> None:
    slept: list[float] = []
    retried(
        flaky(Busy(), "ok"),
        [1.0],
        transient=lambda _e: True,
        wait_of=lambda _e: 7.5,
        sleep=slept.append,
    )
    assert slept == [7.5]


def test_doubling_waits() -> None:
    assert doubling(2.0, 4) == [2.0, 4.0, 8.0]
    assert doubling(1.0, 1) == []
