"""Evaluation: loss, accuracy and per-class accuracy, with population or batch statistics."""

from __future__ import annotations

__all__ = [
    "MODES", "Evaluation", "batch_statistics", "evaluate",
]

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from .checks import available_device, callable_, device_of, examples, labels, positive_int
from .data import TensorData

#: Evaluation modes: ``"eval"`` normalizes with the running (population) statistics, as at
#: inference; ``"batch"`` normalizes each test batch with its own statistics, without changing
#: the running statistics (see :func:`batch_statistics`).
MODES = ("eval", "batch")


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate` (and of ``bncourse.gluon.evaluate``).

    The rule for non-finite logits: an example whose logits are not all finite (NaN or ±inf: a diverged
    model) has no prediction, so when any example has them the accuracy and every per-class accuracy are
    NaN -- never the accuracy of ``argmax`` over NaN -- and ``nonfinite`` counts those examples
    (``finite`` is False). Whoever aggregates, plots or selects on accuracies in bncourse treats NaN as
    "diverged": :meth:`bncourse.train.History.best_epoch` never selects such an epoch,
    :func:`bncourse.selection.seed_range` returns ``(nan, nan)``, a sweep marks the point diverged.
    """

    loss: float
    accuracy: float
    per_class_accuracy: tuple[float, ...]
    num_examples: int
    nonfinite: int = 0

    @property
    def finite(self) -> bool:
        """Whether every example's logits were finite (so that ``accuracy`` is a number)."""
        return self.nonfinite == 0

    def __str__(self) -> str:
        text = f"loss {self.loss:.4f}, accuracy {self.accuracy:.4f} on {self.num_examples} examples"
        if self.nonfinite:
            text += f" ({self.nonfinite} with non-finite logits: the model diverged)"
        return text


def _restore_modes(model: nn.Module) -> Callable[[], None]:
    modes = [(m, m.training) for m in model.modules()]

    def restore() -> None:
        for m, training in modes:
            m.training = training

    return restore


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in training mode (BN uses batch statistics) without leaving a trace.

    Putting a BN model in ``train()`` mode and feeding it test data *updates its running
    statistics with the test set* -- a leak that silently changes the model. Inside this context
    every buffer (``running_mean``, ``running_var``, ``num_batches_tracked``) is saved on entry and
    restored on exit, as are the train/eval modes of all submodules.

    Example:
        >>> with batch_statistics(model):  # doctest: +SKIP
        ...     logits = model(x_test)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    restore_modes = _restore_modes(model)
    model.train()
    for m in model.modules():           # a layer whose own train() keeps it in eval mode (bnstate.freeze_bn)
        m.training = True               # uses batch statistics too: that is what was asked for
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in saved:
                    buf.copy_(saved[name])
        restore_modes()


def evaluate(
    model: nn.Module,
    data: TensorData | tuple[torch.Tensor, torch.Tensor],
    batch_size: int = 1000,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    device: torch.device | str | None = None,
    mode: str = "eval",
) -> Evaluation:
    """Evaluate ``model`` on ``data`` without changing it.

    Args:
        model: a classifier returning logits.
        data: a :class:`~bncourse.data.TensorData` or an ``(x, y)`` pair of tensors.
        batch_size: examples per forward pass (with ``mode="batch"`` also the size of the batches
            whose statistics BN uses).
        loss_fn: mean loss over a batch, ``loss_fn(logits, targets)``.
        device: default: where the model's parameters are.
        mode: ``"eval"`` (population statistics, the correct way at test time) or ``"batch"``
            (batch statistics, buffers left untouched; also for layers frozen by
            :func:`bncourse.bnstate.freeze_bn`).

    Returns:
        An :class:`Evaluation`; the model's modes and buffers are as before the call. If any example's
        logits are not finite, its ``accuracy`` and ``per_class_accuracy`` are NaN and ``nonfinite`` counts
        those examples (see :class:`Evaluation`).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``data`` is not a ``TensorData`` or an ``(x, y)`` pair,
            the labels are not integers, or ``loss_fn`` is not callable.
        ValueError: a bad ``batch_size``, ``mode`` or ``device``, or (``mode="batch"``) a batch of one example.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x, y = examples(data, TensorData, torch.Tensor, "a bncourse.data.TensorData or an (x, y) pair of tensors")
    labels(y)
    positive_int("batch_size", batch_size)
    callable_("loss_fn", loss_fn)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = available_device("device", device) if device is not None else device_of(model)

    num_classes = None
    loss_sum = 0.0
    nonfinite = 0
    correct_per_class = counts = None
    restore_modes = _restore_modes(model)
    context = batch_statistics(model) if mode == "batch" else contextlib.nullcontext()
    if mode == "eval":
        model.eval()
    try:
        with context, torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start : start + batch_size].to(device)
                yb = y[start : start + batch_size].to(device)
                try:
                    logits = model(xb)
                except ValueError as err:
                    if mode == "batch" and yb.shape[0] == 1 and "more than 1 value per channel" in str(err):
                        raise ValueError(
                            f"mode='batch' normalizes each batch of evaluate() with its own statistics, but "
                            f"{x.shape[0]} examples in batches of {batch_size} leave a batch of one example, whose "
                            "statistics are its own values (BN cannot normalize one value per channel): choose a "
                            "batch_size that leaves no single example over, or use mode='eval'") from err
                    raise
                if num_classes is None:
                    num_classes = logits.shape[1]
                    correct_per_class = torch.zeros(num_classes, dtype=torch.long, device=device)
                    counts = torch.zeros(num_classes, dtype=torch.long, device=device)
                loss_sum += loss_fn(logits, yb).item() * yb.shape[0]
                nonfinite += int((~torch.isfinite(logits).flatten(1).all(1)).sum())
                hit = logits.argmax(1) == yb
                correct_per_class += torch.bincount(yb[hit], minlength=num_classes)
                counts += torch.bincount(yb, minlength=num_classes)
    finally:
        restore_modes()
    n = int(counts.sum())
    if nonfinite:                                          # no prediction for a diverged model (see Evaluation)
        return Evaluation(loss=loss_sum / n, accuracy=float("nan"), per_class_accuracy=(float("nan"),) * num_classes,
                          num_examples=n, nonfinite=nonfinite)
    per_class = tuple(float(c) / float(t) if t else float("nan") for c, t in zip(correct_per_class.tolist(), counts.tolist()))
    return Evaluation(loss=loss_sum / n, accuracy=float(correct_per_class.sum()) / n, per_class_accuracy=per_class, num_examples=n)
