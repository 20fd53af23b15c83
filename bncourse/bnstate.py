"""The state of batch normalization in practice: freezing it, re-estimating its statistics, shifting the domain.

A BN layer carries two kinds of state besides its weights: its *mode* (``training`` decides whether it
normalizes with the batch's statistics and updates its running ones) and its *running statistics*
(buffers, not parameters: no optimizer and no ``requires_grad`` ever touches them). This module holds
the tools notebook 07 measures that state with:

* :func:`freeze_bn` -- every BN layer in eval mode *for good* (a later ``model.train()`` leaves it in
  eval mode) with γ and β frozen; :func:`unfreeze_bn` undoes it, :func:`is_frozen` tells.
* :func:`to_frozen_batchnorm` -- a copy of a network whose BN layers are replaced by
  ``torchvision.ops.FrozenBatchNorm2d`` (and :class:`FrozenBatchNorm1d`, its equivalent for dense
  layers): fixed affine maps with no mode at all.
* :func:`reestimate_bn` -- recompute the running statistics from data as a cumulative average, no
  gradient step (AdaBN, Li et al. 2016; like ``torch.optim.swa_utils.update_bn``, but with every other
  module, dropout included, kept in eval mode).
* :func:`running_statistics` / :func:`statistics_shift` -- snapshot the buffers and measure how far
  they moved.
* :func:`shift_domain`, :func:`class_sorted_batches`, :func:`dropout_mlp` -- the shifted domain,
  non-i.i.d. batches and the dropout-and-BN networks of the experiments.
"""

from __future__ import annotations

__all__ = [
    "FrozenBatchNorm1d",
    "freeze_bn",
    "unfreeze_bn",
    "is_frozen",
    "to_frozen_batchnorm",
    "running_statistics",
    "statistics_shift",
    "reestimate_bn",
    "shift_domain",
    "class_sorted_batches",
    "dropout_mlp",
    "DROPOUT_POSITIONS",
]

import copy
import math
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .checks import positive_int
from .checks import seed as seed_check
from .data import TensorData
from .layers import BatchNorm
from .models import batchnorm_layers

#: Marks a BN layer frozen by :func:`freeze_bn` (its ``train`` is overridden on the instance).
_FROZEN = "_bncourse_frozen"


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return model


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    """The BN layers that keep running statistics (torch's and the course's own), nested ones included."""
    return [m for m in batchnorm_layers(model) if isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNorm))]


class FrozenBatchNorm1d(FrozenBatchNorm2d):
    """``torchvision.ops.FrozenBatchNorm2d`` for (N, C) and (N, C, L) input: BN as a fixed affine map.

    The same buffers (``weight``, ``bias``, ``running_mean``, ``running_var``) and the same formula,
    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``; only the broadcasting differs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3):
            raise ValueError(f"FrozenBatchNorm1d expects (N, C) or (N, C, L) input, got shape {tuple(x.shape)}")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight.reshape(shape) * (self.running_var.reshape(shape) + self.eps).rsqrt()
        shift = self.bias.reshape(shape) - self.running_mean.reshape(shape) * scale
        return x * scale + shift


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """``train`` of a frozen BN layer: whatever the mode asked for, the layer stays in eval mode."""
    return nn.Module.train(self, False)


class _StayInEval:
    """The ``train`` that :func:`freeze_bn` puts on a frozen layer: :func:`_stay_in_eval` bound to it.

    A class at module level rather than a bound method, so that a frozen model survives ``torch.save(model)``
    / ``torch.load`` and ``pickle`` whole (a bound method of a plain function pickles as a lookup of the
    function's name on the layer, which fails when the layer is loaded) and ``copy.deepcopy``.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self, mode: bool = True) -> nn.Module:
        return _stay_in_eval(self.layer, mode)


def freeze_bn(model: nn.Module) -> nn.Module:
    """Freeze every BN layer of ``model`` in place: eval mode that survives ``model.train()``, γ and β fixed.

    Each BN layer (``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm`` and the course's
    :class:`~bncourse.layers.BatchNorm`, however deeply nested) then normalizes with its running
    statistics, never updates them, and gets no gradient for γ and β. ``model.train()`` still switches
    every other module (dropout, ...) to training mode: the layer's own ``train`` is overridden, so the
    mode cannot leak in from a parent.

    Returns:
        ``model``, for chaining.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` has no BN layer with running statistics (nothing to freeze).
    """
    _check_model(model)
    layers = _bn_layers(model)
    if not layers:
        raise ValueError(f"model ({type(model).__name__}) has no batch-norm layer to freeze")
    untracked = [bn for bn in layers if bn.running_mean is None]   # checked first: a refusal freezes nothing
    if untracked:
        raise ValueError(f"{untracked[0]} keeps no running statistics (track_running_stats=False): it cannot be frozen")
    for bn in layers:
        for p in bn.parameters(recurse=False):
            p.requires_grad_(False)
        bn.train = _StayInEval(bn)  # instance attribute: wins over nn.Module.train; picklable
        setattr(bn, _FROZEN, True)
        bn.train()
    return model


def unfreeze_bn(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze_bn`: the BN layers follow the model's mode again and γ, β are trainable.

    Each layer takes the mode of ``model`` (``model.training``). Returns ``model``.
    """
    _check_model(model)
    for bn in _bn_layers(model):
        if getattr(bn, _FROZEN, False):
            del bn.train
            delattr(bn, _FROZEN)
            for p in bn.parameters(recurse=False):
                p.requires_grad_(True)
            bn.train(model.training)
    return model


def is_frozen(bn: nn.Module) -> bool:
    """Whether ``bn`` was frozen by :func:`freeze_bn`."""
    if not isinstance(bn, nn.Module):
        raise TypeError(f"bn must be an nn.Module, got {type(bn).__name__}")
    return bool(getattr(bn, _FROZEN, False))


def _frozen_copy(bn: nn.Module) -> FrozenBatchNorm2d:
    if isinstance(bn, BatchNorm):
        raise TypeError("to_frozen_batchnorm converts torch's BatchNorm1d/2d; the course's BatchNorm accepts any rank, "
                        "so there is no one frozen layer for it: use freeze_bn(model) instead")
    if isinstance(bn, nn.BatchNorm2d):
        frozen: FrozenBatchNorm2d = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    elif isinstance(bn, nn.BatchNorm1d):
        frozen = FrozenBatchNorm1d(bn.num_features, eps=bn.eps)
    else:
        raise TypeError(f"to_frozen_batchnorm converts BatchNorm1d and BatchNorm2d, got {type(bn).__name__}")
    if bn.running_mean is None:
        raise ValueError(f"{bn} keeps no running statistics (track_running_stats=False): nothing to freeze")
    with torch.no_grad():
        frozen.running_mean.copy_(bn.running_mean)
        frozen.running_var.copy_(bn.running_var)
        if bn.weight is not None:
            frozen.weight.copy_(bn.weight)
        if bn.bias is not None:
            frozen.bias.copy_(bn.bias)
    return frozen.to(bn.running_mean.device)


def to_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``BatchNorm2d`` replaced by ``torchvision.ops.FrozenBatchNorm2d`` and every
    ``BatchNorm1d`` by :class:`FrozenBatchNorm1d`, carrying over γ, β and the running statistics.

    A frozen layer has buffers only: no mode, no parameters, so neither ``model.train()`` nor an
    optimizer can change it. ``model`` itself is left unchanged.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or holds a BN layer that cannot be converted
            (the course's rank-agnostic ``BatchNorm``, ``BatchNorm3d``).
        ValueError: ``model`` has no BN layer, or one without running statistics.
    """
    _check_model(model)
    if not _bn_layers(model):
        raise ValueError(f"model ({type(model).__name__}) has no batch-norm layer to convert")
    new = copy.deepcopy(model)

    def convert(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, (nn.modules.batchnorm._BatchNorm, BatchNorm)):
                setattr(parent, name, _frozen_copy(child))
            else:
                convert(child)

    if isinstance(new, (nn.modules.batchnorm._BatchNorm, BatchNorm)):   # the model is itself one BN layer
        return _frozen_copy(new)
    convert(new)
    return new


def running_statistics(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A copy of ``(running_mean, running_var)`` of every BN layer of ``model``, in module order."""
    _check_model(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNorm, FrozenBatchNorm2d))]
    out = []
    for bn in layers:
        if bn.running_mean is None:
            raise ValueError(f"{bn} keeps no running statistics (track_running_stats=False)")
        out.append((bn.running_mean.detach().clone(), bn.running_var.detach().clone()))
    if not out:
        raise ValueError(f"model ({type(model).__name__}) has no batch-norm layer with running statistics")
    return out


def statistics_shift(before: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     after: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, float]]:
    """How far the running statistics moved, per BN layer, in units of the old standard deviation.

    For each layer: ``mean_shift`` is the mean over channels of ``|μ_after - μ_before| / σ_before`` and
    ``var_ratio`` the mean over channels of ``|log(σ²_after / σ²_before)|`` turned back into a factor
    (``exp`` of it: 1 means unchanged, 2 means off by a factor of two either way).
    """
    for name, value in (("before", before), ("after", after)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(
                isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)
                for pair in value):
            raise TypeError(f"{name} must be a list of (running_mean, running_var) tensor pairs, as running_statistics("
                            f"model) returns, got {type(value).__name__} {value!r:.80}")
    if len(before) != len(after) or not before:
        raise ValueError(f"before and after must list the same, non-zero number of layers, got {len(before)} and {len(after)}")
    rows = []
    for (m0, v0), (m1, v1) in zip(before, after):
        if m0.shape != m1.shape:
            raise ValueError(f"layer shapes differ: {tuple(m0.shape)} and {tuple(m1.shape)}")
        if not (bool((v0 > 0).all()) and bool((v1 > 0).all())):
            raise ValueError("running variances must be > 0 (a variance cannot be negative or zero), got a layer with "
                             f"minimum {min(v0.min().item(), v1.min().item())!r}")
        rows.append({
            "mean_shift": ((m1 - m0).abs() / v0.sqrt()).mean().item(),
            "var_ratio": math.exp((v1 / v0).log().abs().mean().item()),
        })
    return rows


def reestimate_bn(model: nn.Module, batches: Iterable, max_batches: int | None = None) -> nn.Module:
    """Recompute every BN layer's running statistics from ``batches``; no parameter changes (AdaBN).

    The running statistics are reset and then accumulated with ``momentum=None``, PyTorch's cumulative
    average: the mean over batches of each batch's mean and unbiased variance. Only the BN layers are in
    training mode while this runs (dropout and every other module stay in eval mode, unlike
    ``torch.optim.swa_utils.update_bn``); the forward passes run without gradient. Afterwards every
    layer's ``momentum`` and every module's mode are what they were. Layers frozen with
    :func:`freeze_bn` are re-estimated too (and stay frozen).

    Args:
        model: the network, changed in place (its buffers only).
        batches: an iterable of input tensors or of ``(x, y)`` pairs (e.g. ``data.batches(256)``).
        max_batches: use at most this many batches (default: all).

    Returns:
        ``model``, for chaining.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or a batch is not a tensor or an ``(x, ...)`` pair.
        ValueError: no BN layer with running statistics, ``max_batches`` < 1, or no batch at all.

    On any failure (these errors, or one raised by the model's forward pass) every layer's running
    statistics, momentum and mode are put back as they were. The course's own BN variants
    (``distributed.GhostBatchNorm`` and ``distributed.SyncBatchNorm``, from the converters) accept the
    cumulative average too.
    """
    _check_model(model)
    if max_batches is not None:
        positive_int("max_batches", max_batches)
    layers = _bn_layers(model)
    if not layers:
        raise ValueError(f"model ({type(model).__name__}) has no batch-norm layer whose statistics could be re-estimated")
    if any(bn.running_mean is None for bn in layers):
        raise ValueError("a batch-norm layer keeps no running statistics (track_running_stats=False)")
    if isinstance(batches, (str, bytes, torch.Tensor)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be an iterable of input tensors or of (x, y) pairs (e.g. data.batches(256)), "
                        f"got {type(batches).__name__}")
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in layers}
    saved = [{name: buf.detach().clone() for name, buf in bn.named_buffers(recurse=False) if buf is not None}
             for bn in layers]
    device = layers[0].running_mean.device
    seen = 0
    done = False
    try:
        for m in model.modules():
            m.training = False
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None          # cumulative average: the n-th batch gets weight 1/n
            bn.training = True          # set directly, so that layers frozen by freeze_bn take part
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if not isinstance(x, torch.Tensor):
                    raise TypeError(f"batches must yield tensors or (x, y) pairs, got {type(x).__name__}")
                model(x.to(device))
                seen += 1
                if max_batches is not None and seen == max_batches:
                    break
        if seen == 0:
            raise ValueError("batches yielded no batch: nothing to re-estimate the running statistics from "
                             "(they are left as they were)")
        done = True
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training
        if not done:                    # a failure leaves the model as it was: the old statistics back
            with torch.no_grad():
                for bn, buffers in zip(layers, saved):
                    for name, value in buffers.items():
                        getattr(bn, name).copy_(value)
    return model


def shift_domain(data: TensorData, contrast: float = 1.0, brightness: float = 0.0, noise: float = 0.0,
                 seed: int = 0) -> TensorData:
    """``data`` seen through another camera: ``p' = clip(contrast · p + brightness + noise · ε, 0, 1)`` on the
    pixels ``p`` in [0, 1], ``ε ~ N(0, 1)`` drawn with ``seed``; then normalized with ``data``'s own constants
    (as a deployed model would, knowing nothing of the shift). The labels are kept.
    """
    if not isinstance(data, TensorData):
        raise TypeError(f"data must be a bncourse.data.TensorData, got {type(data).__name__}")
    for name, value in (("contrast", contrast), ("brightness", brightness), ("noise", noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if contrast <= 0 or noise < 0:
        raise ValueError(f"contrast must be > 0 and noise >= 0, got contrast={contrast!r}, noise={noise!r}")
    pixels = data.x * data.std + data.mean
    shifted = contrast * pixels + brightness
    if noise:
        g = torch.Generator().manual_seed(int(seed))
        shifted = shifted + noise * torch.randn(pixels.shape, generator=g).to(pixels.device)
    x = (shifted.clamp(0.0, 1.0) - data.mean) / data.std
    return TensorData(data.name, f"{data.split} (shifted)", x, data.y, data.classes, data.mean, data.std)


def class_sorted_batches(data: TensorData, batch_size: int, classes_per_batch: int = 1, seed: int = 0) -> Iterable:
    """Non-i.i.d. mini-batches: every batch is made of ``classes_per_batch`` runs of one class each.

    Each pass shuffles every class, cuts it into runs of ``batch_size // classes_per_batch`` examples
    (an incomplete run at the end of a class is dropped), shuffles the runs and joins
    ``classes_per_batch`` consecutive ones into a batch -- so a batch holds at most that many classes.
    Returns a re-iterable object (one generator seeded with ``seed``) yielding ``(x, y)`` pairs.
    """
    if not isinstance(data, TensorData):
        raise TypeError(f"data must be a bncourse.data.TensorData, got {type(data).__name__}")
    positive_int("batch_size", batch_size)
    positive_int("classes_per_batch", classes_per_batch)
    if batch_size % classes_per_batch:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of classes_per_batch ({classes_per_batch})")
    return _ClassSortedBatches(data, batch_size // classes_per_batch, classes_per_batch, seed_check("seed", seed))


class _ClassSortedBatches:
    def __init__(self, data: TensorData, run: int, runs_per_batch: int, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.groups = [torch.nonzero(data.y == c).flatten() for c in torch.unique(data.y)]
        self.x, self.y, self.run, self.runs_per_batch = data.x, data.y, run, runs_per_batch
        if len(self) == 0:
            raise ValueError(f"too few examples per class for batches of {run * runs_per_batch}: use a smaller batch_size")

    def __len__(self) -> int:
        return sum(len(g) // self.run for g in self.groups) // self.runs_per_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        runs = []
        for g in self.groups:
            g = g[torch.randperm(len(g), generator=self.generator)]
            runs += [g[i:i + self.run] for i in range(0, len(g) - self.run + 1, self.run)]
        runs = [runs[k] for k in torch.randperm(len(runs), generator=self.generator).tolist()]
        for b in range(len(self)):
            index = torch.cat(runs[b * self.runs_per_batch:(b + 1) * self.runs_per_batch])
            yield self.x[index], self.y[index]


#: Where :func:`dropout_mlp` puts its dropout: before each BN (in every hidden layer) or only after the last BN.
DROPOUT_POSITIONS = ("before_bn", "after_bn")


def dropout_mlp(sizes: Sequence[int] = (784, 256, 256, 10), p: float = 0.5, position: str = "before_bn") -> nn.Sequential:
    """An MLP with BN and dropout, to measure the variance shift of Li et al. (2019).

    ``"before_bn"``: every hidden layer is ``Dropout → Linear → BN → ReLU`` (the first dropout acts on
    the input), so each BN sees dropped-out inputs in training and full ones at test time.
    ``"after_bn"``: ``Linear → BN → ReLU`` in every hidden layer and one dropout after the last one,
    before the output layer: no BN follows a dropout.
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a list or tuple of at least three positive ints (input, hidden..., output), "
                        f"got {type(sizes).__name__} {sizes!r}")
    sizes = tuple(sizes)
    if len(sizes) < 3 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ValueError(f"sizes must be at least three positive ints (input, hidden..., output), got {sizes!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"p must be a number in [0, 1), got {p!r}")
    if position not in DROPOUT_POSITIONS:
        raise ValueError(f"position must be one of {DROPOUT_POSITIONS}, got {position!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in zip(sizes[:-2], sizes[1:-1]):
        if position == "before_bn":
            layers.append(nn.Dropout(p))
        layers += [nn.Linear(width_in, width_out, bias=False), nn.BatchNorm1d(width_out), nn.ReLU()]
    if position == "after_bn":
        layers.append(nn.Dropout(p))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)
