"""Controlled experiments: change one thing -- the normalization, the learning rate, the batch size -- and
measure what it does.

- :func:`lenet_with_normalization` -- LeNet with no normalization, batch norm (torch's or the course's
  scratch layer), group, layer or instance norm, all from one name.
- :func:`standardize_over_axes` -- the reference definition of which values each normalization
  standardizes together in an ``(N, C, H, W)`` tensor.
- :func:`train_for_examples` -- train for a fixed number of *examples* (not epochs), so that runs with
  different batch sizes cost and see the same amount of data.
- :func:`sweep_learning_rates` and :func:`sweep_batch_sizes` -- one short run per setting, each from the
  same seed and on the same data order, summarized as :class:`SweepPoint` records.
- :func:`offline_cifar10` -- CIFAR-10 as in-memory tensors *if* it is already on disk (never downloaded).
"""

from __future__ import annotations

__all__ = [
    "NORMALIZATIONS", "AXIS_KINDS", "lenet_with_normalization", "standardize_over_axes", "SweepPoint",
    "sweep_learning_rates", "train_for_examples", "linear_scaling", "sweep_batch_sizes", "offline_cifar10",
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
from .data import TensorData, data_dir
from .evaluate import evaluate
from .models import LeNet
from .train import train_epoch, train_loop

#: Normalization names understood by :func:`lenet_with_normalization` and what they mean.
NORMALIZATIONS: dict[str, str] = {
    "none": "no normalization",
    "batch": "torch's nn.BatchNorm2d / nn.BatchNorm1d",
    "scratch": "the course's bncourse.layers.BatchNorm",
    "group": "nn.GroupNorm with `groups` channel groups (conv and dense layers)",
    "layer": "layer norm as nn.GroupNorm(1, C): all channels (and pixels) of one example",
    "instance": "nn.InstanceNorm2d(affine=True) on conv layers, layer norm on dense layers",
}

#: Kinds :func:`standardize_over_axes` knows.
AXIS_KINDS = ("batch", "layer", "instance", "group")


def _norm_factories(kind: str, groups: int) -> tuple[Callable[[int], nn.Module], Callable[[int], nn.Module]]:
    """(norm2d, norm1d) factories for ``kind``."""
    if kind == "batch":
        return nn.BatchNorm2d, nn.BatchNorm1d
    if kind == "scratch":
        from .layers import BatchNorm  # written as its own lesson; imported only when asked for

        return BatchNorm, BatchNorm
    if kind == "group":
        return (lambda c: nn.GroupNorm(groups, c)), (lambda c: nn.GroupNorm(groups, c))
    if kind == "layer":
        return (lambda c: nn.GroupNorm(1, c)), (lambda c: nn.GroupNorm(1, c))
    if kind == "instance":
        return (lambda c: nn.InstanceNorm2d(c, affine=True)), (lambda c: nn.GroupNorm(1, c))
    raise AssertionError(kind)  # unreachable: checked by the caller


def lenet_with_normalization(
    kind: str,
    bn_position: str = "before",
    activation: str | Callable[[], nn.Module] = "sigmoid",
    groups: int = 2,
) -> LeNet:
    """A :class:`~bncourse.models.LeNet` whose normalization layers are chosen by name.

    Args:
        kind: one of :data:`NORMALIZATIONS`: ``"none"``, ``"batch"``, ``"scratch"``, ``"group"``,
            ``"layer"`` or ``"instance"``. Instance norm has no meaning for a dense layer (one value per
            feature and example), so the dense layers of ``"instance"`` use layer norm.
        bn_position: ``"before"`` or ``"after"`` the activation.
        activation: as for :class:`~bncourse.models.LeNet`.
        groups: channel groups of ``"group"`` (must divide 6, 16, 120 and 84: 1 or 2).

    Raises:
        ValueError: for an unknown ``kind`` or a ``groups`` that does not divide every width.
    """
    if not isinstance(kind, str) or kind not in NORMALIZATIONS:
        raise ValueError(f"kind must be one of {list(NORMALIZATIONS)}, got {kind!r}")
    positive_int("groups", groups)
    if kind == "group" and any(width % groups for width in (6, 16, 120, 84)):
        raise ValueError(f"groups must divide LeNet's widths 6, 16, 120 and 84 (1 or 2), got {groups}")
    if kind == "none":
        return LeNet(batch_norm=False, activation=activation, bn_position=bn_position)
    norm2d, norm1d = _norm_factories(kind, groups)
    return LeNet(batch_norm=True, activation=activation, bn_position=bn_position, norm2d=norm2d, norm1d=norm1d)


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
        val_accuracy: accuracy on the validation data in eval mode (population statistics).
        diverged: the loss became NaN or infinite.
        seconds: wall-clock time of the run.
        steps: optimizer steps taken.
    """

    value: float
    train_loss: float
    val_accuracy: float
    diverged: bool
    seconds: float
    steps: int


def _check_common(make_model: object, train: object, val: object) -> None:
    if not callable(make_model):
        raise TypeError(f"make_model must be a callable returning a fresh nn.Module, got {type(make_model).__name__}")
    for name, value in (("train", train), ("val", val)):
        if not isinstance(value, TensorData):
            raise TypeError(f"{name} must be a bncourse.data.TensorData, got {type(value).__name__}")


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
        make_model: returns a fresh model, e.g. ``lambda: lenet_with_normalization("batch")``.
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
    rates = list(rates)
    if not rates or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 for r in rates):
        raise ValueError(f"rates must be a non-empty sequence of positive numbers, got {rates!r}")
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
    if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or base_lr <= 0:
        raise ValueError(f"base_lr must be a positive number, got {base_lr!r}")
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
    batch_sizes = list(batch_sizes)
    if not batch_sizes:
        raise ValueError("batch_sizes must name at least one batch size")
    for b in batch_sizes:
        positive_int("every batch size", b)
    positive_int("num_examples", num_examples)
    if not callable(lr):
        raise TypeError(f"lr must be a callable batch_size -> learning rate, got {type(lr).__name__}")
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1], got {tail!r}")
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


def offline_cifar10(root: str | os.PathLike[str] | None = None) -> tuple[TensorData, TensorData] | None:
    """CIFAR-10 (train, test) as normalized in-memory tensors, or ``None`` when it is not on disk.

    Looks for torchvision's ``cifar-10-batches-py`` folder under ``root`` (default
    :func:`bncourse.data.data_dir`) and never downloads. Images become ``(N, 3, 32, 32)`` float32,
    standardized with the training split's overall mean and standard deviation.
    """
    from torchvision import datasets

    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    root = Path(root) if root is not None else data_dir()
    try:
        splits = [datasets.CIFAR10(root=str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        return None
    train_x = torch.from_numpy(splits[0].data).float().div_(255)
    mean, std = train_x.mean().item(), train_x.std().item()
    result = []
    for split, ds in zip(("train", "test"), splits):
        x = torch.from_numpy(ds.data).float().div_(255).sub_(mean).div_(std).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor(ds.targets, dtype=torch.long)
        result.append(TensorData("CIFAR10", split, x, y, tuple(ds.classes), mean, std))
    return result[0], result[1]
