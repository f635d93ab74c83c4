"""One SIGALRM deadline, the only one in rlvr: math-verify and the user's reward functions both run under it.

Signals reach only a process's main thread, so this works in the verifier's worker processes (and the main
process's main thread), never in a thread: there it fails, and a known bug elsewhere made every reward 0 in silence.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class DeadlineExceeded(BaseException):
    """The time is up: a BaseException, so no `except Exception` in math-verify, sympy or a user's function eats it."""


def _on_alarm(signum, frame):
    raise DeadlineExceeded


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlineExceeded in the body once `seconds` have passed. The timer is disarmed and the previous
    handler restored on the way out, even when the alarm fires just as the body ends (the exception then leaves
    this block: catch it around the `with`, not inside)."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
