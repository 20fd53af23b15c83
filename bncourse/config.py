"""Reproducibility and device selection: one call fixes everything a run depends on."""

from __future__ import annotations

__all__ = [
    "DEFAULT_THREADS", "RunConfig", "cpu_kernels", "versions", "get_device", "set_threads", "seed_everything", "configure",
]

import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from . import checks

#: Threads used by torch on the CPU unless told otherwise: every core the process may use.
DEFAULT_THREADS: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class RunConfig:
    """What :func:`configure` fixed: print it at the top of a notebook (with the package versions)."""

    seed: int
    threads: int
    device: torch.device

    def __str__(self) -> str:
        return (f"seed={self.seed}, threads={self.threads}, device={self.device.type}, "
                f"CPU kernels {cpu_kernels()}\n{versions()}")


def cpu_kernels() -> str:
    """The CPU kernel family torch runs (``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``, ...).

    A seeded run repeats exactly only on the same family: each rounds floats in its own way, and
    training amplifies the difference. ``ATEN_CPU_CAPABILITY=default`` (set before torch is imported)
    reruns a notebook with another family's rounding. Compare this line before comparing numbers.
    """
    return torch.backends.cpu.get_cpu_capability()


def versions() -> str:
    """The versions the results depend on: Python, torch, torchvision, NumPy, and mxnet once it is imported.

    Example: ``"Python 3.12.1 · torch 2.5.1 · torchvision 0.20.1 · numpy 1.23.5 · mxnet 1.9.1"``.
    """
    import platform
    from importlib import metadata

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for dist in ("torchvision", "numpy"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - torch needs numpy; torchvision is pinned
            parts.append(f"{dist} not installed")
    if "mxnet" in sys.modules:               # notebook 05 and the Gluon exercises only
        parts.append(f"mxnet {getattr(sys.modules['mxnet'], '__version__', 'unknown')}")
    return " · ".join(parts)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to train on.

    Args:
        device: ``None`` picks a CUDA GPU when one is present and the CPU otherwise;
            ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a :class:`torch.device` override that choice.

    Raises:
        TypeError: if ``device`` is neither ``None``, a string nor a ``torch.device``.
        ValueError: if a device is asked for that this machine does not have (CUDA, MPS) or that torch does not know.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return checks.available_device("device", device)


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count (``None``: :data:`DEFAULT_THREADS`) and return it.

    Importing mxnet lowers OpenMP's thread count for torch too; calling this restores it.
    """
    if threads is None:
        threads = DEFAULT_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be a positive int or None, got {type(threads).__name__}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy, torch (CPU and every GPU) and, once it is imported, MXNet with ``seed``.

    MXNet is seeded only if it has been imported already (``bncourse.gluon`` imports it): seeding never
    imports it, because importing MXNet changes the OpenMP thread count.
    """
    seed = checks.seed("seed", seed, upper=checks.TORCH_SEEDS[1])   # checked before any generator is seeded
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    mxnet = sys.modules.get("mxnet")
    if mxnet is not None and hasattr(mxnet, "random"):
        mxnet.random.seed(seed % 2**31)


def configure(seed: int = 0, threads: int | None = None, device: str | torch.device | None = None) -> RunConfig:
    """Fix seeds and thread count and choose the device, so that a rerun gives the same numbers.

    What it sets: the seeds of Python's ``random``, NumPy, torch and (if imported) MXNet
    (:func:`seed_everything`); torch's CPU thread count (:func:`set_threads`), which takes precedence
    over an ``OMP_NUM_THREADS`` set in the environment; and the device the course trains on.

    Args:
        seed: seeds Python, NumPy, torch and MXNet.
        threads: torch CPU threads; ``None`` uses every available core (whatever ``OMP_NUM_THREADS`` says).
        device: see :func:`get_device`.

    Returns:
        The :class:`RunConfig` that was applied.
    """
    seed_everything(seed)
    n = set_threads(threads)
    return RunConfig(seed=seed, threads=n, device=get_device(device))
