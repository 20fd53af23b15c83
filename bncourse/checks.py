"""Argument checks shared by bncourse's public functions.

Each check raises an error that names the argument, says what was expected and shows what was
given, and returns the value so that it can be checked and assigned in one line. NumPy integers
count as ints; ``bool`` never counts as a number.
"""

from __future__ import annotations

__all__ = ["positive_int", "flag", "positive_finite", "probability", "module", "device_of", "examples"]

import math
from numbers import Integral, Real

import torch
from torch import nn


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (NumPy integers too, ``bool`` not), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    return int(value)


def flag(name: str, value: object) -> bool:
    """``value`` if it is a ``bool``, else a ``TypeError`` (so that ``shuffle="no"`` cannot mean yes)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def positive_finite(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a finite number > 0 (the rule for ``eps``), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {type(value).__name__} {value!r}")
    return float(value)


def probability(name: str, value: object) -> float:
    """``value`` as a ``float`` if it is a number in [0, 1], else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {type(value).__name__} {value!r}")
    return float(value)


def module(name: str, value: object) -> nn.Module:
    """``value`` if it is an ``nn.Module``, else a ``TypeError``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be an nn.Module, got {type(value).__name__}")
    return value


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); a ``ValueError`` for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    raise ValueError(f"{type(model).__name__} has no parameters or buffers, so it has no device: pass device= explicitly")


def examples(data: object, holder: type, array: type, expected: str) -> tuple:
    """``(x, y)`` of ``data``: a ``holder`` (``.x``, ``.y``) or an ``(x, y)`` pair of ``array``; a ``TypeError``
    naming ``expected`` otherwise, a ``ValueError`` unless both hold the same, non-zero number of examples."""
    if isinstance(data, holder):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(a, array) for a in data):
        x, y = data
    else:
        raise TypeError(f"data must be {expected}, got {type(data).__name__}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of examples, got {x.shape[0]} and {y.shape[0]}")
    return x, y
