"""Waiting in the tests: on the condition itself, under a deadline, never a fixed sleep standing in for it.

A sleep that guesses how long something takes is slow on a fast machine and flaky on a busy one
(these run on 2 shared cores). So a test that waits for something outside its own code (a file the
trainer writes, a process that exits, a widget the app renders) checks that very thing, and the
deadline only turns a hung test into a failure that says what it last saw. The deadlines are
generous for that reason: they never decide how long a passing test takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from textual.pilot import Pilot

Seen = TypeVar("Seen")

WAIT_S = 60.0  # a bound on a hung test, not a wait: a passing test returns as soon as its condition holds
POLL_S = 0.05  # how often a condition no event announces is looked at again: a bound on the latency only


def poll_until(
    condition: Callable[[], Seen],
    failure: str | Callable[[], str],
    timeout: float = WAIT_S,
    every: float = POLL_S,
) -> Seen:
    """Until `condition()` is truthy; return what it returned. For what nothing in the test can
    await (a file, a process, another thread's state); past `timeout`, fail with `failure` (a
    callable is asked then, to describe the state at that moment) and the condition's last value."""
    deadline = time.monotonic() + timeout
    while not (seen := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(_failed(failure, timeout, seen))
        time.sleep(every)
    return seen


async def pilot_until(
    pilot: Pilot,
    condition: Callable[[], Seen],
    failure: str | Callable[[], str] | None = None,
    timeout: float = WAIT_S,
) -> Seen:
    """`poll_until` for a Textual app under a pilot: between checks the app processes its pending
    messages (`pilot.pause()` without a delay returns once the process is idle, at most a second),
    so the condition is looked at again as soon as the app could have changed it. Without a
    `failure`, the message names where the condition was written."""
    deadline = time.monotonic() + timeout
    while not (seen := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(_failed(failure or _where(condition), timeout, seen))
        await pilot.pause()
    return seen


def _where(condition: Callable[[], object]) -> str:
    code = getattr(condition, "__code__", None)
    return f"the condition at {code.co_filename}:{code.co_firstlineno} never held" if code else f"{condition!r} never held"


def _failed(failure: str | Callable[[], str], timeout: float, seen: object) -> str:
    described = failure() if callable(failure) else failure
    return f"{described} (waited {timeout:g} s; last saw {seen!r})"
