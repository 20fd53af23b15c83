"""Controlled experiments: change one thing -- the normalization, the learning rate, the batch size -- and
measure what it does.

- :func:`standardize_over_axes` -- the reference definition of which values each normalization
  standardizes together in an ``(N, C, H, W)`` tensor.
- :func:`train_for_examples` -- train for a fixed number of *examples* (not epochs), so that runs with
  different batch sizes cost and see the same amount of data.
- :func:`sweep_learning_rates` and :func:`sweep_batch_sizes` -- one short run per setting, each from the
  same seed and on the same data order, summarized as :class:`SweepPoint` records.

The models come from :func:`bncourse.models.lenet_with_normalization`, the data from :mod:`bncourse.data`.
"""

from __future__ import annotations

__all__ = [
    "AXIS_KINDS", "standardize_over_axes", "SweepPoint",
    "sweep_learning_rates", "train_for_examples", "linear_scaling", "sweep_batch_sizes",
]

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checks import positive_int
from .config import get_device, seed_everything
from .data import TensorData
from .evaluate import evaluate
from .train import train_epoch, train_loop

#: Kinds :func:`standardize_over_axes` knows.
AXIS_KINDS = ("batch", "layer", "instance", "group")


def standardize_over_axes(x: torch.Tensor, kind: str, groups: int = 2, eps: float = 1e-5) -> torch.Tensor:
    """Standardize an ``(N, C, H, W)`` tensor the way normalization ``kind`` does (without γ and β).

    Each normalization subtracts a mean and divides by a standard deviation (biased variance plus
    ``eps``), computed over a different set of values:

    - ``"batch"``: one set per channel -- all N·H·W values of that channel in the batch;
    - ``"layer"``: one set per example -- all C·H·W values of that example;
    - ``"instance"``: one set per example and channel -- the H·W values of one feature map;
    - ``"group"``: one set per example and group of C/groups consecutive channels.

    Only ``"batch"`` mixes different examples, which is why it alone depends on the batch size.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise TypeError(f"x must be a 4-d (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if kind not in AXIS_KINDS:
        raise ValueError(f"kind must be one of {AXIS_KINDS}, got {kind!r}")
    positive_int("groups", groups)
    n, c, h, w = x.shape
    if kind == "group" and c % groups:
        raise ValueError(f"groups ({groups}) must divide the number of channels ({c})")
    if kind == "batch":
        view, dims = x, (0, 2, 3)
    elif kind == "layer":
        view, dims = x, (1, 2, 3)
    elif kind == "instance":
        view, dims = x, (2, 3)
    else:
        view, dims = x.reshape(n, groups, c // groups, h, w), (2, 3, 4)
    mean = view.mean(dim=dims, keepdim=True)
    var = view.var(dim=dims, unbiased=False, keepdim=True)
    return ((view - mean) / torch.sqrt(var + eps)).reshape(n, c, h, w)


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep.

    Attributes:
        value: the swept setting (a learning rate, a batch size).
        train_loss: mean training loss at the end of the run (``inf`` when training diverged).
        val_accuracy: accuracy on the validation data in eval mode (population statistics); NaN when the
            model's validation logits were not finite (see :class:`bncourse.evaluate.Evaluation`).
        diverged: the loss became NaN or infinite, or the validation accuracy is NaN (a point made with a NaN
            accuracy is marked diverged whatever ``diverged`` was given, so that plots and selections skip it).
        seconds: wall-clock time of the run.
        steps: optimizer steps taken.
    """

    value: float
    train_loss: float
    val_accuracy: float
    diverged: bool
    seconds: float
    steps: int

    def __post_init__(self) -> None:
        if isinstance(self.val_accuracy, float) and math.isnan(self.val_accuracy) and not self.diverged:
            object.__setattr__(self, "diverged", True)      # non-finite logits: the model diverged


def _check_common(make_model: object, train: object, val: object) -> None:
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable returning a fresh nn.Module, got {type(make_model).__name__}")
    for name, value in (("train", train), ("val", val)):
        if not isinstance(value, TensorData):
            raise TypeError(f"{name} must be a bncourse.data.TensorData, got {type(value).__name__}")

def _positive_values(name: str, values: object, integers: bool = False) -> list:
    """``values`` as a non-empty list of finite numbers > 0 (ints >= 1 when ``integers``), else a clear error."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of numbers, e.g. [{values!r}], got {type(values).__name__} {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value, got an empty list")
    for v in values:
        if integers:
            positive_int(f"every value of {name}", v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"every value of {name} must be a finite number > 0, got {type(v).__name__} {v!r}")
    return values


def _fraction(name: str, value: object) -> float:
    """``value`` as a float in (0, 1], else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1], got {type(value).__name__} {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)



def _diverged_point(value: float, val: TensorData, seconds: float, steps: int) -> SweepPoint:
    return SweepPoint(value=value, train_loss=math.inf, val_accuracy=1.0 / len(val.classes), diverged=True, seconds=seconds, steps=steps)


def sweep_learning_rates(
    make_model: Callable[[], nn.Module],
    train: TensorData,
    val: TensorData,
    rates: Sequence[float],
    epochs: int,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> list[SweepPoint]:
    """Train a fresh model with plain SGD at each learning rate and record where it ends up.

    Every run starts from the same initial weights (``seed_everything(seed)`` before ``make_model()``)
    and sees the same sequence of batches, so the learning rate is the only difference. A run that
    produces a non-finite loss stops early and is reported as diverged (loss ``inf``, chance accuracy).

    Args:
        make_model: returns a fresh model, e.g. ``lambda: models.lenet_with_normalization("batch")``.
        train, val: training data and a split held out from it, on which the final accuracy is measured.
        rates: the learning rates, each > 0.
        epochs: passes over ``train`` per run.
        batch_size: examples per step.
        seed: seeds the weights and the data order.
        device: default :func:`bncourse.config.get_device`.
        progress: show a progress bar over the rates.
        desc: label of the progress bar.

    Returns:
        One :class:`SweepPoint` per rate, in the order given; ``train_loss`` is the mean over the last epoch.
    """
    _check_common(make_model, train, val)
    rates = _positive_values("rates", rates)
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    device = get_device(device)
    points = []
    for lr in tqdm(rates, desc=desc or "learning rates", disable=not progress):
        seed_everything(seed)
        model = make_model().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(lr))
        batches = train.batches(batch_size, seed=seed)
        start, loss, steps = time.perf_counter(), math.inf, 0
        for _ in range(epochs):
            loss = train_epoch(model, batches, optimizer, device=device).loss
            steps += len(batches)
            if not math.isfinite(loss):
                break
        seconds = time.perf_counter() - start
        if not math.isfinite(loss):
            points.append(_diverged_point(float(lr), val, seconds, steps))
            continue
        accuracy = evaluate(model, val, device=device).accuracy
        points.append(SweepPoint(float(lr), loss, accuracy, False, seconds, steps))
    return points


def train_for_examples(
    model: nn.Module,
    train: TensorData,
    batch_size: int,
    num_examples: int,
    optimizer: torch.optim.Optimizer,
    seed: int = 0,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    device: torch.device | str | None = None,
) -> list[float]:
    """Train ``model`` on ``num_examples // batch_size`` full mini-batches, however many epochs that is.

    Budgeting by examples rather than epochs makes runs with batch size 2 and 256 see the same data
    (in the same shuffled order, from ``seed``), at the price of 128 times more steps for the former.

    Returns:
        The training loss of every step, in order (stops early at the first non-finite loss).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(train, TensorData):
        raise TypeError(f"train must be a bncourse.data.TensorData, got {type(train).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    positive_int("batch_size", batch_size)
    positive_int("num_examples", num_examples)
    if batch_size > len(train):
        raise ValueError(f"batch_size ({batch_size}) is larger than the training data ({len(train)} examples)")
    if num_examples < batch_size:
        raise ValueError(f"num_examples ({num_examples}) must be at least one batch ({batch_size})")
    batches = train.batches(batch_size, seed=seed, drop_last=True)
    result = train_loop(model, batches, optimizer, steps=num_examples // batch_size, loss_fn=loss_fn, device=device,
                        stop_on_nonfinite=True)
    return result.losses.tolist()


def linear_scaling(base_lr: float, base_batch_size: int = 256) -> Callable[[int], float]:
    """The linear scaling rule: ``lr(b) = base_lr * b / base_batch_size``.

    Keeps the step size per *example* constant, so equal-example runs with different batch sizes
    travel comparably far.
    """
    if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or not math.isfinite(base_lr) or base_lr <= 0:
        raise ValueError(f"base_lr must be a finite positive number, got {base_lr!r}")
    positive_int("base_batch_size", base_batch_size)
    return lambda batch_size: float(base_lr) * batch_size / base_batch_size


def sweep_batch_sizes(
    make_model: Callable[[], nn.Module],
    train: TensorData,
    val: TensorData,
    batch_sizes: Sequence[int],
    num_examples: int,
    lr: Callable[[int], float],
    seed: int = 0,
    tail: float = 0.2,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> list[SweepPoint]:
    """Train a fresh model per batch size on the same number of examples and measure it on the validation split.

    Args:
        make_model: returns a fresh model.
        train, val: training data and a split held out from it, on which the accuracy is measured (eval mode: a batch-norm
            model uses its running statistics, as it would in deployment).
        batch_sizes: the batch sizes, each at most ``len(train)``.
        num_examples: training examples per run (``num_examples // b`` steps at batch size ``b``).
        lr: learning rate as a function of the batch size, e.g. :func:`linear_scaling`.
        seed: seeds the weights and the data order.
        tail: ``train_loss`` is the mean loss over this last fraction of the steps.
        device: default :func:`bncourse.config.get_device`.
        progress: show a progress bar over the batch sizes.
        desc: label of the progress bar.

    Returns:
        One :class:`SweepPoint` per batch size, in the order given.
    """
    _check_common(make_model, train, val)
    batch_sizes = _positive_values("batch_sizes", batch_sizes, integers=True)
    positive_int("num_examples", num_examples)
    if not callable(lr):
        raise TypeError(f"lr must be a callable batch_size -> learning rate, got {type(lr).__name__}")
    _fraction("tail", tail)
    device = get_device(device)
    points = []
    for b in tqdm(batch_sizes, desc=desc or "batch sizes", disable=not progress):
        seed_everything(seed)
        model = make_model().to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr(b))
        start = time.perf_counter()
        losses = train_for_examples(model, train, b, num_examples, optimizer, seed=seed, device=device)
        seconds = time.perf_counter() - start
        if not math.isfinite(losses[-1]):
            points.append(_diverged_point(float(b), val, seconds, len(losses)))
            continue
        last = losses[-max(1, int(len(losses) * tail)):]
        accuracy = evaluate(model, val, device=device).accuracy
        points.append(SweepPoint(float(b), sum(last) / len(last), accuracy, False, seconds, len(losses)))
    return points
