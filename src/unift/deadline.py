"""Time limits that nest: `with time_limit(seconds) as mine:` raises `Deadline` in the main thread
when the time is up (SIGALRM through `signal.setitimer`; a no-op in other threads).

Limits nest correctly: a user reward function limited to 30 s per batch may call the math task,
which limits each math-verify check to a few seconds. The timer is always armed for the earliest
active deadline; when it fires, the outermost expired limit is raised, so an inner handler never
swallows an outer deadline (`except Deadline as exc: if exc.limit is not mine: raise`). After a
deadline the alarm repeats every 50 ms, in case library code catches the first one. A
BaseException, so a library's `except Exception` cannot swallow it. A SIGALRM handler and timer
the caller had armed before are restored afterwards, minus the time spent.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REPEAT_S = 0.05


class Limit:
    def __init__(self, at: float):
        self.at = at  # time.monotonic() deadline


class Deadline(BaseException):
    """The time of `limit` is up."""

    def __init__(self, limit: Limit):
        super().__init__("time limit reached")
        self.limit = limit


_active: list[Limit] = []  # outermost first
_previous: dict[str, Any] = {}  # the handler and timer a caller had armed before the first limit


def _on_alarm(signum: int, frame: Any) -> None:
    now = time.monotonic()
    for limit in _active:  # the outermost expired limit wins
        if limit.at <= now:
            raise Deadline(limit)
    _arm()  # early (timer granularity): wait for the earliest deadline again


def _arm() -> None:
    delay = max(min(limit.at for limit in _active) - time.monotonic(), 1e-3)
    signal.setitimer(signal.ITIMER_REAL, delay, REPEAT_S)


@contextmanager
def time_limit(seconds: float) -> Iterator[Limit | None]:
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield None
        return
    limit = Limit(time.monotonic() + seconds)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    if not _active:
        _previous.update(handler=signal.signal(signal.SIGALRM, _on_alarm),
                         timer=signal.getitimer(signal.ITIMER_REAL), since=time.monotonic())
    _active.append(limit)
    _arm()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    try:
        yield limit
    finally:
        # no alarm while the stack changes; one that is pending arrives after, for the limits left
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        _active.remove(limit)
        if _active:
            _arm()
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _previous["handler"])
            _clear_pending()
            delay, interval = _previous["timer"]
            if delay > 0:  # a timer the caller had armed goes on, minus the time spent
                signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - _previous["since"]), 1e-3),
                                 interval)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


def _clear_pending() -> None:
    """Drop an alarm that fired while blocked after the last limit ended (it belongs to no limit)."""
    if signal.SIGALRM in signal.sigpending():
        signal.sigwait({signal.SIGALRM})
