"""Argument checks shared by bncourse's public functions.

Each check raises an error that names the argument, says what was expected and shows what was
given, and returns the value so that it can be checked and assigned in one line.
"""

from __future__ import annotations


def positive_int(name: str, value: object) -> int:
    """``value`` if it is an int >= 1 (``bool`` does not count), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
