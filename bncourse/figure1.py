"""Figure 1 of Ioffe & Szegedy (2015), reproduced: the paper's sigmoid MLP with and without BN.

The paper trains a 784-100-100-100-10 network of sigmoid units on MNIST (small Gaussian initial
weights, mini-batches of 60, 50,000 steps, cross-entropy) and shows (a) test accuracy over training
and (b, c) the 15th, 50th and 85th percentiles of the input of a typical sigmoid of the last hidden
layer, without and with BN.

What the paper leaves open is a field of :class:`Setting` (learning rate, initial weight scale,
binary or standardized pixels, the learning rate of BN's γ and β); the notebook settles them by a
small search on a validation split held out from the training images. The percentiles are taken,
every ``probe_every`` steps from step 0, over a fixed probe of test images, for *every* unit of the
last hidden layer, on γ·x̂ + β (what the sigmoid receives), normalized with the probe's own
statistics as in training.

:func:`bncourse.diagnostics.unit_drift` turns those percentile tracks into one number per unit; :func:`run_many` runs
settings in parallel worker processes (each on one thread), so seeds are cheap.

Example:
    >>> result = run(Setting(batch_norm=True, steps=200, probe_every=100, eval_every=100))  # doctest: +SKIP
    >>> diagnostics.unit_drift(result.percentiles, start=1).shape  # doctest: +SKIP
    (100,)
"""

from __future__ import annotations

import copy
import functools
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from numbers import Real
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import data, models
from .checks import flag, positive_int
from .evaluate import evaluate
from .train import train_steps

__all__ = [
    "SIZES",
    "PERCENTILES",
    "VALIDATION_SIZE",
    "PROBE_SIZE",
    "Setting",
    "Run",
    "Splits",
    "load_splits",
    "network",
    "last_sigmoid_input",
    "unit_percentiles",
    "run",
    "run_many",
]

#: The paper's network: 784 inputs, three hidden layers of 100 sigmoid units, 10 outputs.
SIZES: tuple[int, ...] = (784, 100, 100, 100, 10)
#: The percentiles Figure 1 (b, c) draws.
PERCENTILES: tuple[float, ...] = (15.0, 50.0, 85.0)
#: Training images held out as the validation split that the setting search selects on.
VALIDATION_SIZE: int = 5000
#: Test images in the fixed probe set on which the percentiles are measured.
PROBE_SIZE: int = 1000


@dataclass(frozen=True)
class Setting:
    """One training run of the Figure 1 network.

    Args:
        batch_norm: BN before every hidden sigmoid (the paper's panel c) or none (panel b).
        lr: SGD learning rate of the weights (no momentum, as in the paper's baseline comparison).
        init_std: standard deviation of the Gaussian initial weights (biases start at zero).
        binary: pixels thresholded at 0.5 to {0, 1}; ``False``: standardized grey levels.
        affine_lr: learning rate of BN's γ and β; ``None``: the same as ``lr``.
        seed: seeds the initial weights and the order of the mini-batches.
        steps: SGD steps of ``batch_size`` training images.
        batch_size: images per step (60 in the paper).
        probe_every: steps between two percentile probes (the first is at step 0).
        eval_every: steps between two accuracy evaluations (validation and test).
    """

    batch_norm: bool = False
    lr: float = 1.0
    init_std: float = 0.01
    binary: bool = True
    affine_lr: float | None = None
    seed: int = 0
    steps: int = 50_000
    batch_size: int = 60
    probe_every: int = 250
    eval_every: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.batch_norm, bool) or not isinstance(self.binary, bool):
            raise TypeError(f"batch_norm and binary must be bools, got {self.batch_norm!r} and {self.binary!r}")
        for name in ("lr", "init_std") + (("affine_lr",) if self.affine_lr is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        for name in ("steps", "batch_size", "probe_every", "eval_every"):
            positive_int(name, getattr(self, name))

    def label(self) -> str:
        """A short description, e.g. ``"BN, lr 1, init 0.01, binary"``."""
        parts = ["BN" if self.batch_norm else "plain", f"lr {self.lr:g}", f"init {self.init_std:g}",
                 "binary" if self.binary else "standardized"]
        if self.affine_lr is not None:
            parts.append(f"γ/β lr {self.affine_lr:g}")
        return ", ".join(parts)


@dataclass
class Run:
    """What one :class:`Setting` produced.

    Attributes:
        setting: the setting that was run.
        probe_steps: (T,) the steps at which the percentiles were probed, from 0 to ``steps``.
        percentiles: (T, 3, 100) the 15th, 50th and 85th percentile of each last-hidden-layer unit's
            sigmoid input over the probe images, at each probe step.
        eval_steps: (E,) the steps at which accuracy was evaluated.
        val_accuracy: (E,) accuracy on the validation split (held out from the training images).
        test_accuracy: (E,) accuracy on the test set (panel a of the paper's figure).
        seconds: wall-clock time of the run.
        model: the trained network.
    """

    setting: Setting
    probe_steps: np.ndarray
    percentiles: np.ndarray
    eval_steps: np.ndarray
    val_accuracy: np.ndarray
    test_accuracy: np.ndarray
    seconds: float
    model: nn.Sequential


@dataclass(frozen=True)
class Splits:
    """MNIST as the runs use it: training images minus the validation split, validation, probe, test."""

    train: data.TensorData
    val: data.TensorData
    probe: torch.Tensor
    test: data.TensorData


def _binarize(d: data.TensorData) -> data.TensorData:
    pixels = d.x * d.std + d.mean  # back to [0, 1] grey levels
    return replace(d, x=(pixels > 0.5).float())


@functools.lru_cache(maxsize=2)
def load_splits(binary: bool) -> Splits:
    """MNIST split for the Figure 1 runs.

    The last :data:`VALIDATION_SIZE` training images form the validation split; the probe is the
    first :data:`PROBE_SIZE` test images. With ``binary`` the pixels are thresholded at 0.5.
    """
    flag("binary", binary)
    train, test = data.load_tensors("MNIST", "train"), data.load_tensors("MNIST", "test")
    if binary:
        train, test = _binarize(train), _binarize(test)
    n = len(train) - VALIDATION_SIZE
    fit_part = replace(train, split="train (fit)", x=train.x[:n], y=train.y[:n])
    val = replace(train, split="validation", x=train.x[n:], y=train.y[n:])
    return Splits(fit_part, val, test.x[:PROBE_SIZE], test)


def network(setting: Setting) -> nn.Sequential:
    """The paper's network for ``setting``: Gaussian weights of std ``init_std``, zero biases."""
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be a figure1.Setting, got {type(setting).__name__}")
    torch.manual_seed(setting.seed)
    model = models.MLP(SIZES, batch_norm=setting.batch_norm, activation="sigmoid")
    return models.init_normal_(model, std=setting.init_std)


def last_sigmoid_input(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The input of the last sigmoid (γ·x̂ + β with BN) for the examples ``x``: shape (N, 100).

    Computed as during training -- BN normalizes with the statistics of ``x`` itself -- but on a
    copy of the model, so that probing leaves the running statistics untouched.
    """
    sigmoids = [i for i, m in enumerate(model) if isinstance(m, nn.Sigmoid)]
    if not sigmoids:
        raise ValueError("model has no nn.Sigmoid layer")
    probe_model = copy.deepcopy(model[: sigmoids[-1]]).train()
    with torch.no_grad():
        return probe_model(x)


def unit_percentiles(values: torch.Tensor, percentiles: Sequence[float] = PERCENTILES) -> torch.Tensor:
    """Per unit (column) of ``values`` (N, U), the given percentiles over the N rows: shape (P, U)."""
    if not isinstance(values, torch.Tensor) or values.dim() != 2:
        raise ValueError(f"values must be a 2-D tensor (examples, units), got {getattr(values, 'shape', type(values))}")
    q = torch.tensor([p / 100 for p in percentiles], dtype=values.dtype)
    return torch.quantile(values, q, dim=0)


def _optimizer(model: nn.Module, setting: Setting) -> torch.optim.SGD:
    affine = [p for m in model.modules() if isinstance(m, nn.BatchNorm1d) for p in m.parameters()]
    ids = {id(p) for p in affine}
    weights = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": weights}]
    if affine:
        groups.append({"params": affine, "lr": setting.affine_lr if setting.affine_lr is not None else setting.lr})
    return torch.optim.SGD(groups, lr=setting.lr)


def run(setting: Setting, splits: Splits | None = None) -> Run:
    """Train the Figure 1 network for ``setting`` and probe it.

    Args:
        setting: what to run.
        splits: the data (default :func:`load_splits` for ``setting.binary``).
    """
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be a figure1.Setting, got {type(setting).__name__}")
    splits = load_splits(setting.binary) if splits is None else splits
    start = time.perf_counter()
    model = network(setting)
    optimizer = _optimizer(model, setting)
    probe_steps, tracks, eval_steps, val_acc, test_acc = [0], [unit_percentiles(last_sigmoid_input(model, splits.probe))], [], [], []

    def after_step(step: int) -> None:
        if step % setting.probe_every == 0:
            probe_steps.append(step)
            tracks.append(unit_percentiles(last_sigmoid_input(model, splits.probe)))
        if step % setting.eval_every == 0:
            eval_steps.append(step)
            val_acc.append(evaluate(model, splits.val).accuracy)
            test_acc.append(evaluate(model, splits.test).accuracy)

    batches = splits.train.batches(setting.batch_size, seed=setting.seed)
    train_steps(model, batches, optimizer, setting.steps, F.cross_entropy, after_step=after_step)
    return Run(setting, np.array(probe_steps), torch.stack(tracks).numpy(), np.array(eval_steps),
               np.array(val_acc), np.array(test_acc), time.perf_counter() - start, model)


def _run_in_worker(setting: Setting) -> Run:
    torch.set_num_threads(1)  # each worker one core: tiny matrices gain nothing from threads
    return run(setting)


def run_many(settings: Sequence[Setting], processes: int = 2, progress: bool = True) -> list[Run]:
    """Run several settings, ``processes`` at a time in worker processes; results in input order.

    Each worker uses one thread, so ``processes`` should not exceed the number of cores. With
    ``processes=1`` everything runs in this process (on one thread, restored afterwards).
    """
    settings = list(settings)
    if not settings or not all(isinstance(s, Setting) for s in settings):
        raise TypeError("settings must be a non-empty sequence of figure1.Setting")
    positive_int("processes", processes)
    bar = tqdm(total=len(settings), desc="Figure 1 runs", unit="run", disable=not progress)
    try:
        if processes == 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                results = []
                for s in settings:
                    results.append(run(s))
                    bar.update()
                return results
            finally:
                torch.set_num_threads(threads)
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_in_worker, s) for s in settings]
            for f in futures:
                f.add_done_callback(lambda _: bar.update())
            return [f.result() for f in futures]
    finally:
        bar.close()
