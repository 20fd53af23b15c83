"""Self-checking exercises: the framework in :mod:`bncourse.exercises.core`, each notebook's exercises in a
module of their own (:mod:`bncourse.exercises.ex01` … :mod:`~bncourse.exercises.ex05` hold notebooks 01–05's
``q1`` … ``q3``, :mod:`bncourse.exercises.ex06` notebook 06's ``q1`` … ``q10``).

A notebook imports the placeholder and the scoreboard from here and its exercises from its module::

    from bncourse.exercises import ____, summary, all_passed
    from bncourse.exercises.ex06 import EXERCISES, q1, q2
"""

from .core import (
    PLACEHOLDER,
    SOLUTIONS_ENV,
    CheckResult,
    Exercise,
    Note,
    Placeholder,
    ____,
    all_passed,
    solutions_enabled,
    summary,
)

__all__ = [
    "SOLUTIONS_ENV", "Placeholder", "____", "PLACEHOLDER", "solutions_enabled", "CheckResult", "Note", "Exercise",
    "summary", "all_passed",
]
