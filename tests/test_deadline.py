"""Nested time limits (unift.deadline): the inner one times out alone, an outer one is never
swallowed by an inner handler, and the timer is gone afterwards."""

import signal
import time

import pytest

from unift.deadline import Deadline, time_limit


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_inner_limit_times_out_alone():
    with time_limit(2.0) as outer:
        with pytest.raises(Deadline) as caught:
            with time_limit(0.05):
                _spin(1.0)
        assert caught.value.limit is not outer
        _spin(0.1)  # the outer limit is still armed and not yet due
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_outer_limit_is_not_swallowed_by_an_inner_handler():
    started = time.monotonic()
    with pytest.raises(Deadline) as caught:
        with time_limit(0.1) as outer:
            mine = None
            try:
                with time_limit(5.0) as mine:  # the math task's pattern
                    _spin(2.0)
            except Deadline as exc:
                if exc.limit is not mine:
                    raise
    assert caught.value.limit is outer and time.monotonic() - started < 1.0
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_limit_outside_the_main_thread_or_at_zero():
    with time_limit(0) as limit:
        assert limit is None
