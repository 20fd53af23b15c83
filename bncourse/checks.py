"""Argument checks shared by bncourse's public functions.

Each check raises an error that names the argument, says what was expected and shows what was
given, and returns the value so that it can be checked and assigned in one line. NumPy integers
count as ints; ``bool`` never counts as a number.
"""

from __future__ import annotations

__all__ = ["positive_int", "flag", "positive_finite", "probability", "module", "device_of", "examples",
           "callable_", "seed", "available_device", "labels"]

import math
from numbers import Integral, Real
from typing import Any

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


def callable_(name: str, value: object) -> Any:
    """``value`` if it is callable, else a ``TypeError`` (so that ``loss_fn=None`` fails here, not deep in torch)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")
    return value


#: The largest seed every generator the course seeds accepts (NumPy's legacy seeding takes 32 bits).
MAX_SEED = 2**32 - 1


#: The range of seeds ``torch.Generator.manual_seed`` accepts.
TORCH_SEEDS = (-(2**63), 2**64 - 1)


def seed(name: str, value: object, upper: int = MAX_SEED, lower: int = 0) -> int:
    """``value`` as an ``int`` if it is an integer in [``lower``, ``upper``] (NumPy integers too, ``bool`` not): a
    ``TypeError`` for a non-integer (``"0"``, ``1.0``), a ``ValueError`` for one out of range (``2**70``)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not lower <= value <= upper:
        raise ValueError(f"{name} must be an int in [{lower}, {upper}], got {value!r}")
    return int(value)


def available_device(name: str, value: object) -> torch.device:
    """``value`` as a ``torch.device`` if it names one this machine has: a ``TypeError`` for something that is
    not a device, a ``ValueError`` for a CUDA or MPS device that is not available here."""
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be None, a string such as 'cpu' or a torch.device, got {type(value).__name__} {value!r}")
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda', got {value!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(device)!r} was requested but no CUDA GPU is available; use 'cpu' or None")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name} {str(device)!r} was requested but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{name} {str(device)!r} was requested but Apple's MPS device is not available here "
                         "(and bncourse does not support it); use 'cpu' or None")
    return device


def labels(y: object, name: str = "y") -> torch.Tensor:
    """``y`` if it is a 1-D tensor of integer class labels, else a ``TypeError`` (float labels) or ``ValueError``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of integer class labels, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels (e.g. torch.long), got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one label per example), got shape {tuple(y.shape)}")
    return y

