"""The training loop, one for the whole course.

- :func:`train_step` -- one optimization step: the lesson (forward, loss, backward, update).
- :func:`train_loop` -- the loop every trainer in bncourse goes through: a budget of steps or of
  epochs, hooks before and after each step (probes, diagnostics, early stop), evaluation every few steps.
- :func:`train_steps`, :func:`train_epoch` -- the loop for a step budget, for one pass.
- :func:`fit` -- epochs with validation and model selection, recorded in a :class:`History`
  (:func:`run_epochs` is its framework-independent bookkeeping, shared with ``bncourse.gluon.fit``).
"""

from __future__ import annotations

__all__ = [
    "LossFn", "History", "StepOutput", "EpochResult", "LoopResult",
    "train_step", "loop_budget", "train_loop", "train_steps", "train_epoch", "run_epochs", "fit",
]

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .checks import available_device, callable_, device_of, flag, labels, module, positive_int
from .config import get_device
from .data import TensorData
from .evaluate import Evaluation, evaluate

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
        validation split only, so the test set can be evaluated once, on the selected model. An epoch
        whose validation accuracy is NaN (non-finite logits: the model diverged, see
        :class:`bncourse.evaluate.Evaluation`) is never selected.

        Raises:
            ValueError: no validation accuracy was recorded, or every one is NaN.
        """
        if not self.val_accuracy:
            raise ValueError("best_epoch needs validation accuracies: train with val=<a held-out split>")
        candidates = [e for e, a in enumerate(self.val_accuracy) if not math.isnan(a)]
        if not candidates:
            raise ValueError(f"no epoch can be selected: the validation accuracy of every one of the {self.epochs} "
                             "epoch(s) is NaN (the model's logits were not finite: training diverged)")
        return max(candidates, key=lambda e: (self.val_accuracy[e], -e)) + 1


class StepOutput(NamedTuple):
    """What one training step returns, on both sides (:func:`train_step` and ``bncourse.gluon.train_step``).

    ``loss`` is the batch's *mean* loss, ``logits`` the batch's outputs; both detached (framework arrays,
    not Python numbers: reading them is a host synchronization, left to the caller).
    """

    loss: Any
    logits: Any


@dataclass(frozen=True)
class EpochResult:
    """What one pass over the training batches measured (:func:`train_epoch`, ``bncourse.gluon.train_epoch``).

    ``loss`` and ``accuracy`` are averaged over the examples, each batch measured at the moment it was
    trained on (not the model at the end of the epoch).
    """

    loss: float
    accuracy: float
    examples: int
    steps: int


@dataclass
class LoopResult:
    """What :func:`train_loop` measured.

    Attributes:
        losses: the mean loss of every step, in order (a 1-D tensor; one host synchronization made it).
        examples: training examples seen.
        example_loss: the mean loss over those examples (each step's mean loss weighted by its batch size).
        correct: how many of them the model classified correctly at the moment it trained on them.
        evaluations: ``(step, Evaluation)`` on ``val`` every ``eval_every`` steps (empty without ``val``).
        stopped: the loop ended early: a non-finite loss (``stop_on_nonfinite``) or ``after_step`` returned True.
    """

    losses: torch.Tensor
    examples: int
    example_loss: float
    correct: int
    evaluations: list[tuple[int, Evaluation]] = field(default_factory=list)
    stopped: bool = False

    @property
    def steps(self) -> int:
        """Optimizer steps taken."""
        return int(self.losses.numel())


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               loss_fn: LossFn = F.cross_entropy) -> StepOutput:
    """One optimization step on one mini-batch; returns the batch's (detached) mean loss and logits."""
    logits = model(x)                      # forward: BN layers use this batch's statistics
    loss = loss_fn(logits, y)              # the mean loss over the batch
    optimizer.zero_grad(set_to_none=True)  # forget the previous step's gradients
    loss.backward()                        # backward: gradients flow through the batch statistics too
    optimizer.step()                       # update the weights (and BN's gamma and beta)
    return StepOutput(loss.detach(), logits.detach())


def _one_example_batch(err: ValueError, y: torch.Tensor, seen: int) -> ValueError | None:
    if "more than 1 value per channel" in str(err) and y.shape[0] == 1 and seen == 0:
        return ValueError("the first training batch holds a single example: batch norm cannot normalize one value "
                          "per channel, so a batch size of 1 cannot train a network with BatchNorm1d (or with BN "
                          "after a 1x1 feature map). Use a batch size of at least 2")
    if "more than 1 value per channel" in str(err) and y.shape[0] == 1:
        return ValueError(f"a training batch holds a single example (after {seen} examples): batch norm cannot "
                          "normalize one value per channel. Drop the incomplete last batch "
                          "(batches(..., drop_last=True)) or choose a batch size that does not leave one "
                          "example over")
    return None


def _check_batches(batches: object) -> None:
    """A ``TypeError`` unless ``batches`` can be iterated (e.g. ``None`` or a tensor of one batch)."""
    if batches is None or isinstance(batches, (str, bytes, torch.Tensor)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an iterable of (x, y) pairs of tensors, e.g. train.batches(64, seed=0) or "
                        f"a DataLoader, got {type(batches).__name__}")


def _empty_batches(batches: object) -> ValueError:
    return ValueError(f"batches yielded no examples: {type(batches).__name__} is empty, or it is a one-shot "
                      "iterator (a generator) used up by an earlier epoch -- pass something that can be iterated "
                      "again, such as TensorData.batches(...) or a DataLoader")


def loop_budget(batches: object, steps: object, epochs: object, before_step: object, after_step: object,
                evaluates: bool, eval_every: object, stop_on_nonfinite: object) -> int | None:
    """The checks of the loop's arguments that both frameworks share; the number of steps it will take
    (``None`` when ``batches`` has no length and the budget is in epochs)."""
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps and epochs, got steps={steps!r}, epochs={epochs!r}")
    if steps is not None:
        positive_int("steps", steps)
    else:
        positive_int("epochs", epochs)
    for name, hook in (("before_step", before_step), ("after_step", after_step)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable or None, got {type(hook).__name__}")
    if evaluates:
        positive_int("eval_every", eval_every)
    flag("stop_on_nonfinite", stop_on_nonfinite)
    try:
        return steps if steps is not None else epochs * len(batches)  # type: ignore[operator, arg-type]
    except TypeError:
        return None


def train_loop(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    loss_fn: LossFn = F.cross_entropy,
    device: torch.device | str | None = None,
    before_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    after_step: Callable[[int], bool | None] | None = None,
    val: TensorData | None = None,
    eval_every: int | None = None,
    stop_on_nonfinite: bool = False,
    progress: bool = False,
    desc: str | None = None,
) -> LoopResult:
    """The course's training loop: every trainer in bncourse goes through it.

    It runs :func:`train_step` on the mini-batches for a budget of ``steps`` optimizer steps (passing
    over ``batches`` as often as needed) or for ``epochs`` passes; give exactly one of the two.

    Args:
        batches: re-iterable mini-batches, e.g. ``train.batches(64, seed=0)`` or a ``DataLoader``.
        device: where to compute; default: where the model's parameters are (batches are moved there).
        before_step: called as ``before_step(step, x, y)`` before each step with the batch about to be
            trained on (``step`` = steps done so far, from 0), e.g. to probe the model (PyTorch
            Lightning's ``on_train_batch_start``). It must leave the model as it found it.
        after_step: called as ``after_step(step)`` after each step (``step`` counts from 1; Lightning's
            ``on_train_batch_end``); returning ``True`` (exactly) stops the loop. It may switch the model to eval mode:
            training mode is set again before the next step.
        val: held-out data evaluated every ``eval_every`` steps (in eval mode) into ``evaluations``.
        stop_on_nonfinite: stop at the first non-finite loss (one host synchronization per step).
        progress: show a tqdm progress bar over the steps.
    """
    model = module("model", model)
    _check_batches(batches)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    callable_("loss_fn", loss_fn)
    if val is not None and not isinstance(val, TensorData):
        raise TypeError(f"val must be a bncourse.data.TensorData or None, got {type(val).__name__}")
    total = loop_budget(batches, steps, epochs, before_step, after_step, val is not None, eval_every, stop_on_nonfinite)
    device = available_device("device", device) if device is not None else device_of(model)
    losses: list[torch.Tensor] = []
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen, passes, stopped = 0, 0, False
    evaluations: list[tuple[int, Evaluation]] = []
    # At most one refresh per second: a per-step bar would flood a notebook with widget messages.
    with tqdm(total=total, desc=desc or type(model).__name__, unit="step", disable=not progress, mininterval=1.0) as bar:
        while not stopped and (len(losses) < steps if steps is not None else passes < epochs):
            before = len(losses)
            model.train()
            for x, y in batches:
                if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                    raise TypeError(f"batches must yield (x, y) pairs of tensors, got ({type(x).__name__}, "
                                    f"{type(y).__name__})")
                if y.dtype.is_floating_point and y.dim() == 1 and loss_fn is F.cross_entropy:
                    labels(y, "the labels y of a batch")             # class indices, not floats
                if x.device != device:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if before_step is not None:
                    before_step(len(losses), x, y)
                    model.train()                                   # whatever the hook did to the mode
                try:
                    loss, logits = train_step(model, x, y, optimizer, loss_fn)
                except ValueError as err:
                    raise (_one_example_batch(err, y, seen) or err) from err
                losses.append(loss)
                loss_sum.add_(loss, alpha=y.shape[0])               # in place: no host synchronization
                correct.add_((logits.argmax(1) == y).sum())
                seen += y.shape[0]
                bar.update()
                step = len(losses)
                if val is not None and step % eval_every == 0:
                    evaluations.append((step, evaluate(model, val, loss_fn=loss_fn, device=device)))
                    model.train()
                if after_step is not None:
                    stopped = after_step(step) is True
                    model.train()                                   # a probe may have switched to eval mode
                if stop_on_nonfinite and not math.isfinite(loss.item()):
                    stopped = True
                if stopped or step == steps:
                    break
            if len(losses) == before:
                raise _empty_batches(batches)
            passes += 1
    return LoopResult(torch.stack(losses).cpu(), seen, loss_sum.item() / seen, int(correct.item()), evaluations, stopped)


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
    """Train ``model`` for a budget of ``steps`` optimizer steps (:func:`train_loop`); returns the mean step loss.

    ``after_step(step)`` is called after every step (``step`` counts from 1), e.g. to probe the model.
    """
    result = train_loop(model, batches, optimizer, steps=steps, loss_fn=loss_fn, after_step=after_step,
                        progress=progress, desc=desc)
    return result.losses.mean().item()


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn = F.cross_entropy,
    device: torch.device | str | None = None,
) -> EpochResult:
    """Train ``model`` for one pass over ``batches`` (:func:`train_loop`); an :class:`EpochResult`.

    The epoch's loss is the mean over its examples of each batch's loss at the moment it was trained on.
    An epoch whose loss is not finite (the model diverged) has accuracy NaN, never the accuracy of an
    argmax over NaN logits (the rule of :class:`bncourse.evaluate.Evaluation`).
    """
    result = train_loop(model, batches, optimizer, epochs=1, loss_fn=loss_fn, device=device)
    accuracy = result.correct / result.examples if math.isfinite(result.example_loss) else math.nan
    return EpochResult(loss=result.example_loss, accuracy=accuracy,
                       examples=result.examples, steps=result.steps)


def run_epochs(
    train_one_epoch: Callable[[], EpochResult],
    epochs: int,
    evaluate_val: Callable[[], Evaluation] | None = None,
    snapshot: Callable[[], Any] | None = None,
    restore: Callable[[Any], None] | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """The epoch bookkeeping that both frameworks' ``fit`` share: train, time, validate, keep the best.

    Args:
        train_one_epoch: trains one pass and returns its :class:`EpochResult`.
        evaluate_val: evaluates the validation split (None: no validation).
        snapshot, restore: with both given, model selection: the state of the epoch with the highest
            validation accuracy is taken with ``snapshot()`` and put back at the end with ``restore``.
            An epoch whose validation accuracy is NaN (non-finite logits) is never selected; if every
            epoch's is, nothing is restored and :meth:`History.best_epoch` says why.
    """
    positive_int("epochs", epochs)
    history = History()
    best = None
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=not progress)
    for _ in bar:
        start = time.perf_counter()
        result = train_one_epoch()
        seconds = time.perf_counter() - start
        history.train_loss.append(result.loss)
        history.train_accuracy.append(result.accuracy)
        history.epoch_seconds.append(seconds)
        history.examples_per_second.append(result.examples / seconds)
        postfix = {"train_loss": f"{result.loss:.4f}"}
        if evaluate_val is not None:
            measured = evaluate_val()
            history.val_loss.append(measured.loss)
            history.val_accuracy.append(measured.accuracy)
            postfix["val_acc"] = f"{measured.accuracy:.4f}"
            if (snapshot is not None and not math.isnan(measured.accuracy)       # a diverged epoch is never the best
                    and history.best_epoch() == history.epochs):                 # a new best: keep its state
                best = snapshot()
        bar.set_postfix(postfix)
    if snapshot is not None and restore is not None and best is not None:
        restore(best)
    return history


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
            of the epoch with the highest validation accuracy (:meth:`History.best_epoch`; an epoch
            whose accuracy is NaN, i.e. non-finite logits, is never selected). ``val`` must then be a
            split held out from the training data, never the test set.
    """
    module("model", model)
    _check_batches(batches)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    callable_("loss_fn", loss_fn)
    positive_int("epochs", epochs)
    if val is not None and not isinstance(val, TensorData):
        raise TypeError(f"val must be a bncourse.data.TensorData or None, got {type(val).__name__}")
    flag("restore_best", restore_best)
    if restore_best and val is None:
        raise ValueError("restore_best=True selects the epoch on the validation split: pass val=<a held-out split>")
    device = get_device(None if device is None else available_device("device", device))
    model.to(device)
    return run_epochs(
        lambda: train_epoch(model, batches, optimizer, loss_fn, device),
        epochs,
        evaluate_val=None if val is None else lambda: evaluate(model, val, loss_fn=loss_fn, device=device),
        snapshot=(lambda: copy.deepcopy(model.state_dict())) if restore_best else None,
        restore=model.load_state_dict,
        progress=progress,
        desc=desc or type(model).__name__,
    )
