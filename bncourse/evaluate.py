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

from .checks import device_of, examples, positive_int
from .data import TensorData

#: Evaluation modes: ``"eval"`` normalizes with the running (population) statistics, as at
#: inference; ``"batch"`` normalizes each test batch with its own statistics, without changing
#: the running statistics (see :func:`batch_statistics`).
MODES = ("eval", "batch")


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate`."""

    loss: float
    accuracy: float
    per_class_accuracy: tuple[float, ...]
    num_examples: int

    def __str__(self) -> str:
        return f"loss {self.loss:.4f}, accuracy {self.accuracy:.4f} on {self.num_examples} examples"


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
            (batch statistics, buffers left untouched).

    Returns:
        An :class:`Evaluation`; the model's modes and buffers are as before the call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    x, y = examples(data, TensorData, torch.Tensor, "a bncourse.data.TensorData or an (x, y) pair of tensors")
    positive_int("batch_size", batch_size)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device) if device is not None else device_of(model)

    num_classes = None
    loss_sum = 0.0
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
                logits = model(xb)
                if num_classes is None:
                    num_classes = logits.shape[1]
                    correct_per_class = torch.zeros(num_classes, dtype=torch.long, device=device)
                    counts = torch.zeros(num_classes, dtype=torch.long, device=device)
                loss_sum += loss_fn(logits, yb).item() * yb.shape[0]
                hit = logits.argmax(1) == yb
                correct_per_class += torch.bincount(yb[hit], minlength=num_classes)
                counts += torch.bincount(yb, minlength=num_classes)
    finally:
        restore_modes()
    n = int(counts.sum())
    per_class = tuple(float(c) / float(t) if t else float("nan") for c, t in zip(correct_per_class.tolist(), counts.tolist()))
    return Evaluation(loss=loss_sum / n, accuracy=float(correct_per_class.sum()) / n, per_class_accuracy=per_class, num_examples=n)
