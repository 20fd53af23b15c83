"""Model selection done right: choose on a validation split held out from the training data, report the
test set once, and repeat over seeds before comparing two settings.

- :func:`train_select_test` -- one run: :func:`bncourse.train.fit` with ``restore_best=True`` on the
  validation split, then a single evaluation of the selected model on the test set.
- :func:`over_seeds` -- the same run for several seeds (weights and batch order both follow the seed).
- :func:`seed_range` -- the ``(min, max)`` of a number over runs, to print "0.87–0.88 over 3 seeds".
- :func:`generalization_gap` -- a fixed training budget, then the accuracy on the training data and on the
  held-out split, both in eval mode: the gap between them is what a regularizer is supposed to shrink.
"""

from __future__ import annotations

__all__ = ["SelectedRun", "train_select_test", "over_seeds", "seed_range", "GapRun", "generalization_gap"]

from dataclasses import dataclass
import math
from numbers import Integral, Real
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .checks import positive_int
from .checks import seed as seed_check
from .config import seed_everything
from .data import TensorData
from .evaluate import Evaluation, evaluate
from .train import History, fit


def _fresh_model(make_model: object, make_optimizer: object, seed: object, batch_size: object, **splits: object) -> nn.Module:
    """Check the arguments of a run, seed with ``seed``, and return ``make_model()``."""
    if not callable(make_model) or not callable(make_optimizer):
        raise TypeError(f"make_model and make_optimizer must be callables, got {type(make_model).__name__} and "
                        f"{type(make_optimizer).__name__}")
    for name, value in splits.items():
        if not isinstance(value, TensorData):
            raise TypeError(f"{name} must be a bncourse.data.TensorData, got {type(value).__name__}")
    seed_check("seed", seed)
    positive_int("batch_size", batch_size)
    seed_everything(int(seed))
    return make_model()


@dataclass(frozen=True)
class SelectedRun:
    """One training run with its model selection.

    Attributes:
        seed: the seed of the weights and of the batch order.
        history: per-epoch training and validation metrics.
        best_epoch: the epoch selected on the validation split (counted from 1).
        val_accuracy: validation accuracy at ``best_epoch``.
        test: the selected model evaluated on the test set -- the only time the test set is read.
        model: the selected model (weights and BN statistics of ``best_epoch``).
    """

    seed: int
    history: History
    best_epoch: int
    val_accuracy: float
    test: Evaluation
    model: nn.Module


def train_select_test(
    make_model: Callable[[], nn.Module],
    make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    train: TensorData,
    val: TensorData,
    test: TensorData,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> SelectedRun:
    """Train a fresh model, select its epoch on ``val``, and evaluate the selected model on ``test`` once.

    Args:
        make_model: returns a fresh model; called after seeding with ``seed``.
        make_optimizer: ``make_optimizer(model.parameters())``, e.g. ``lambda p: torch.optim.SGD(p, lr=0.9)``.
        train: the training data without the validation split (``TensorData.holdout``).
        val: the split held out from the training data; selection looks at it only.
        test: the test set, evaluated once at the end.
        epochs: passes over ``train``.
        batch_size: examples per SGD step.
        seed: seeds the weights and the batch order.
    """
    model = _fresh_model(make_model, make_optimizer, seed, batch_size, train=train, val=val, test=test)
    optimizer = make_optimizer(model.parameters())
    history = fit(model, train.batches(batch_size, seed=int(seed)), optimizer, epochs, val=val, device=device,
                  progress=progress, desc=desc, restore_best=True)
    best = history.best_epoch()
    return SelectedRun(int(seed), history, best, history.val_accuracy[best - 1], evaluate(model, test, device=device), model)


def over_seeds(seeds: Sequence[int], **run: object) -> list[SelectedRun]:
    """:func:`train_select_test` once per seed in ``seeds``, with the other arguments in ``run``.

    ``desc`` (if given) is suffixed with the seed.
    """
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    if "seed" in run:
        raise TypeError("over_seeds takes the seeds as its first argument, not seed=")
    desc = run.pop("desc", None)
    return [train_select_test(seed=s, desc=f"{desc}, seed {s}" if desc else None, **run) for s in seeds]


def seed_range(values: Iterable[float]) -> tuple[float, float]:
    """``(min, max)`` of ``values`` -- the spread over seeds that a claim must hold across.

    The rule for a diverged seed: if any value is NaN (e.g. the accuracy of a model whose logits were not
    finite, see :class:`bncourse.evaluate.Evaluation`), the range is ``(nan, nan)``, wherever the NaN sits, so
    that no claim can hold across it (every comparison with NaN is False). ``±inf`` are ordinary extremes.

    Raises:
        TypeError: ``values`` is not an iterable of numbers (a string, ``None``, a single number).
        ValueError: ``values`` is empty.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"values must be an iterable of numbers (one per seed), got {type(values).__name__} {values!r}")
    items = list(values)
    for v in items:
        if isinstance(v, (bool, str, bytes)) or not (isinstance(v, Real) or (isinstance(v, torch.Tensor) and v.numel() == 1)):
            raise TypeError(f"values must be numbers, got {type(v).__name__} {v!r} in {items!r}")
    numbers = [float(v) for v in items]
    if not numbers:
        raise ValueError("seed_range needs at least one value")
    if any(math.isnan(v) for v in numbers):
        return math.nan, math.nan
    return min(numbers), max(numbers)


@dataclass(frozen=True)
class GapRun:
    """Accuracy on the training data and on a held-out split after a fixed budget (no selection).

    Attributes:
        seed: the seed of the weights and of the batch order.
        train_accuracy: accuracy on the training data, in eval mode (dropout off, BN's running statistics).
        val_accuracy: accuracy on the held-out split, in eval mode.
        gap: ``train_accuracy - val_accuracy``.
        history: per-epoch training metrics.
    """

    seed: int
    train_accuracy: float
    val_accuracy: float
    gap: float
    history: History


def generalization_gap(
    make_model: Callable[[], nn.Module],
    make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
    train: TensorData,
    val: TensorData,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> GapRun:
    """Train a fresh model for ``epochs`` and measure how much better it does on ``train`` than on ``val``.

    Both accuracies are measured the same way -- in eval mode, after training -- so the gap is the
    model's, not an artefact of dropout being on or of BN's batch statistics during training.

    Args:
        make_model: returns a fresh model; called after seeding with ``seed``.
        make_optimizer: ``make_optimizer(model.parameters())``.
        train: the data the model trains on (keep it small to make overfitting visible).
        val: a split held out from the training data.
        epochs: the fixed budget (no epoch is selected).
        batch_size: examples per SGD step.
        seed: seeds the weights and the batch order.
    """
    model = _fresh_model(make_model, make_optimizer, seed, batch_size, train=train, val=val)
    history = fit(model, train.batches(batch_size, seed=int(seed)), make_optimizer(model.parameters()), epochs,
                  device=device, progress=False)
    on_train = evaluate(model, train, device=device).accuracy
    on_val = evaluate(model, val, device=device).accuracy
    return GapRun(int(seed), on_train, on_val, on_train - on_val, history)
