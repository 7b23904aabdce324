"""Calling a flaky service again: one loop for every capability that needs it.

A call that fails in a way another try may fix (a timeout, a refused connection, an
answer like 503) is made again after a wait, at most ``len(waits) + 1`` times in all,
so the longest it can take is known in advance: ``tries * timeout + sum(waits)``.  A
failure that retrying cannot fix ends the tries at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["doubling", "retried"]

T = TypeVar("T")


def doubling(first: float, tries: int) -> list[float]:
    """The waits between ``tries`` tries: ``first``, then doubled before each later one."""
    return [first * 2**k for k in range(max(tries, 1) - 1)]


def retried(
    call: Callable[[], T],
    waits: Sequence[float],
    *,
    transient: Callable[[Exception], bool],
    wait_of: Callable[[Exception], float | None] = lambda _exc: None,
    on_failure: Callable[[int, Exception], None] = lambda _try, _exc: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``'s value, trying again after each of ``waits`` while it fails transiently.

    ``transient(exc)`` says whether another try may help; ``wait_of(exc)`` may replace
    the next wait (a server's ``Retry-After``); ``on_failure(n, exc)`` is told of each
    failed try (numbered from 1).  The last failure, or the first that is not
    transient, is raised as it is.
    """
    for attempt in range(len(waits) + 1):
        try:
            return call()
        except Exception as exc:
            on_failure(attempt + 1, exc)
            if attempt == len(waits) or not transient(exc):
                raise
            wait = wait_of(exc)
            sleep(waits[attempt] if wait is None else wait)
    raise AssertionError("unreachable")  # pragma: no cover
