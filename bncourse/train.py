"""The training loop: one step, one epoch, and :func:`fit` with a per-epoch :class:`History`."""

from __future__ import annotations

__all__ = [
    "LossFn", "History", "train_step", "train_steps", "train_epoch", "fit",
]

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checks import device_of, positive_int
from .config import get_device
from .data import TensorData
from .evaluate import evaluate

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class History:
    """Per-epoch record of a training run (one list entry per epoch)."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    examples_per_second: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.train_loss)

    def metric(self, name: str) -> list[float]:
        """The list of values of metric ``name`` (e.g. ``"train_loss"``)."""
        if name not in self.__dataclass_fields__:
            raise ValueError(f"unknown metric {name!r}; expected one of {list(self.__dataclass_fields__)}")
        return getattr(self, name)

    def as_dict(self) -> dict[str, list[float]]:
        """All metrics as a dict of lists."""
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}

    def best_epoch(self) -> int:
        """The epoch (counted from 1) with the highest validation accuracy; the first one on a tie.

        This is the model selection of :func:`fit` with ``restore_best=True``: it looks at the
        validation split only, so the test set can be evaluated once, on the selected model.
        """
        if not self.val_accuracy:
            raise ValueError("best_epoch needs validation accuracies: train with val=<a held-out split>")
        return max(range(len(self.val_accuracy)), key=lambda e: (self.val_accuracy[e], -e)) + 1


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer, loss_fn: LossFn):
    """One optimization step on one mini-batch; returns the (detached) loss and logits."""
    logits = model(x)                      # forward: BN layers use this batch's statistics
    loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)  # forget the previous step's gradients
    loss.backward()                        # backward: gradients flow through the batch statistics too
    optimizer.step()                       # update the weights (and BN's gamma and beta)
    return loss.detach(), logits.detach()


def train_steps(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    steps: int,
    loss_fn: LossFn = F.cross_entropy,
    after_step: Callable[[int], None] | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> float:
    """Train ``model`` for a budget of ``steps`` optimizer steps, passing over ``batches`` as often as needed.

    Args:
        batches: re-iterable mini-batches (each pass may reshuffle, as :class:`bncourse.data.Batches` does).
        steps: the step budget, >= 1.
        after_step: called as ``after_step(step)`` after every step (``step`` counts from 1), e.g. to
            probe the model; it may switch the model to eval mode, training mode is set again before
            the next step.
        progress: show a tqdm progress bar over the steps.

    Returns:
        The mean training loss over all steps (one host synchronization, at the end).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    positive_int("steps", steps)
    if after_step is not None and not callable(after_step):
        raise TypeError(f"after_step must be callable or None, got {type(after_step).__name__}")
    loss_sum = torch.zeros(())
    step = 0
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress, mininterval=2) as bar:
        while step < steps:
            seen = step
            for x, y in batches:
                model.train()
                loss, _ = train_step(model, x, y, optimizer, loss_fn)
                loss_sum += loss.to(loss_sum.device)
                step += 1
                bar.update()
                if after_step is not None:
                    after_step(step)
                if step == steps:
                    break
            if step == seen:
                raise ValueError("batches yielded no mini-batch")
    return loss_sum.item() / steps


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn = F.cross_entropy,
    device: torch.device | str | None = None,
) -> tuple[float, float, int]:
    """Train ``model`` for one pass over ``batches`` in training mode.

    Args:
        batches: an iterable of ``(x, y)`` mini-batches, e.g. :class:`bncourse.data.Batches` or a
            ``DataLoader``.
        device: where to compute; default: where the model's parameters are.

    Returns:
        ``(mean loss, accuracy, number of examples)`` over the epoch; the loss and accuracy are
        those of each batch at the moment it was trained on.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    device = torch.device(device) if device is not None else device_of(model)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in batches:
        if x.device != device:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        try:
            loss, logits = train_step(model, x, y, optimizer, loss_fn)
        except ValueError as err:
            if "more than 1 value per channel" in str(err) and y.shape[0] == 1:
                raise ValueError(f"a training batch holds a single example (after {seen} examples): batch norm cannot "
                                 "normalize one value per channel. Drop the incomplete last batch "
                                 "(batches(..., drop_last=True)) or choose a batch size that does not leave one "
                                 "example over") from err
            raise
        loss_sum += loss * y.shape[0]
        correct += (logits.argmax(1) == y).sum()
        seen += y.shape[0]
    if seen == 0:
        raise ValueError(f"batches yielded no examples: {type(batches).__name__} is empty, or it is a one-shot "
                         "iterator (a generator) used up by an earlier epoch -- pass something that can be iterated "
                         "again, such as TensorData.batches(...) or a DataLoader")
    return loss_sum.item() / seen, correct.item() / seen, seen


def fit(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    loss_fn: LossFn = F.cross_entropy,
    val: TensorData | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str | None = None,
    restore_best: bool = False,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``batches`` and record a :class:`History`.

    After each epoch the model is evaluated on ``val`` (in eval mode, population statistics) when
    given. A tqdm progress bar shows the epochs with the latest losses.

    Args:
        model: the network; moved to ``device``.
        batches: re-iterable mini-batches, e.g. ``train.batches(64, seed=0)``.
        optimizer: built on ``model.parameters()``.
        epochs: number of passes, >= 1.
        loss_fn: ``loss_fn(logits, targets)``; default cross-entropy.
        val: held-out data evaluated after every epoch.
        device: default :func:`bncourse.config.get_device` (a GPU when present).
        progress: show the progress bar.
        desc: label of the progress bar.
        restore_best: model selection on ``val``: at the end, load the weights and BN statistics
            of the epoch with the highest validation accuracy (:meth:`History.best_epoch`). ``val``
            must then be a split held out from the training data, never the test set.
    """
    positive_int("epochs", epochs)
    if val is not None and not isinstance(val, TensorData):
        raise TypeError(f"val must be a bncourse.data.TensorData or None, got {type(val).__name__}")
    if not isinstance(restore_best, bool):
        raise TypeError(f"restore_best must be a bool, got {type(restore_best).__name__} {restore_best!r}")
    if restore_best and val is None:
        raise ValueError("restore_best=True selects the epoch on the validation split: pass val=<a held-out split>")
    device = get_device(device)
    model.to(device)
    history = History()
    bar = tqdm(range(epochs), desc=desc or type(model).__name__, unit="epoch", disable=not progress)
    for _ in bar:
        start = time.perf_counter()
        loss, acc, seen = train_epoch(model, batches, optimizer, loss_fn, device)
        seconds = time.perf_counter() - start
        history.train_loss.append(loss)
        history.train_accuracy.append(acc)
        history.epoch_seconds.append(seconds)
        history.examples_per_second.append(seen / seconds)
        postfix = {"train_loss": f"{loss:.4f}"}
        if val is not None:
            result = evaluate(model, val, loss_fn=loss_fn, device=device)
            history.val_loss.append(result.loss)
            history.val_accuracy.append(result.accuracy)
            postfix["val_acc"] = f"{result.accuracy:.4f}"
            if restore_best and history.best_epoch() == history.epochs:   # a new best: keep its state
                best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(postfix)
    if restore_best:
        model.load_state_dict(best_state)
    return history
