"""check() always answers: a learner's function that never returns is stopped after a time limit, and one
that calls sys.exit() is reported, not allowed to end the kernel; afterwards the time limit is gone."""

import signal
import sys
import time

import pytest

from bncourse.exercises import core
from bncourse.exercises import ex01, ex02, ex03, ex04, ex05, ex06, ex07, ex08
from bncourse.exercises.ex01 import q1

EVERY = [e for module in (ex01, ex02, ex03, ex04, ex05, ex06, ex07, ex08) for e in module.EXERCISES]


def test_a_function_that_never_returns_is_stopped_and_reported(monkeypatch):
    monkeypatch.setattr(core, "CHECK_TIME_LIMIT", 0.5)
    before = signal.getsignal(signal.SIGALRM)

    def forever(*args, **kwargs):
        while True:
            pass

    start = time.perf_counter()
    result = q1.check(forever)
    assert time.perf_counter() - start < 5
    assert not result.passed and result.answered and "did not return within 0.5 s" in result.message
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_function_that_swallows_exceptions_is_still_stopped(monkeypatch):
    monkeypatch.setattr(core, "CHECK_TIME_LIMIT", 0.5)

    def stubborn(*args, **kwargs):
        while True:
            try:
                time.sleep(10)
            except Exception:
                pass

    result = q1.check(stubborn)
    assert not result.passed and "did not return" in result.message


@pytest.mark.parametrize("exit_call", [lambda: sys.exit(3), lambda: sys.exit(), lambda: exit(0)])
def test_a_function_that_exits_is_reported_not_obeyed(exit_call):
    result = q1.check(lambda *args, **kwargs: exit_call())
    assert not result.passed and result.answered and "sys.exit" in result.message


@pytest.mark.parametrize("exercise", EVERY, ids=lambda e: e.name[:14])
def test_every_reference_solution_passes_well_within_the_limit(exercise):
    start = time.perf_counter()
    result = exercise.check(type(exercise).reference)
    assert result.passed or result.skipped
    assert time.perf_counter() - start < core.CHECK_TIME_LIMIT / 4
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
