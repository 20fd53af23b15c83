"""The course's networks, each built with or without batch normalization from one flag."""

from __future__ import annotations

__all__ = [
    "ACTIVATIONS", "BN_POSITIONS", "NORMALIZATIONS", "MLP", "init_normal_", "count_parameters", "batchnorm_layers",
    "LeNet", "norm_layers", "lenet_with_normalization",
]

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from .checks import flag, positive_int

#: Activations by name, for the ``activation`` argument.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}

#: Where the normalization sits relative to the activation.
BN_POSITIONS = ("before", "after")


def _activation(activation: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} or an nn.Module class")
        return ACTIVATIONS[activation]
    if isinstance(activation, nn.Module):
        raise TypeError(f"activation must be a name or a class such as nn.ReLU (called once per layer), got the module "
                        f"instance {activation!r}: pass {type(activation).__name__} without parentheses")
    if callable(activation):
        return activation
    raise TypeError(f"activation must be a name or a callable returning an nn.Module, got {type(activation).__name__}")


class _Network(nn.Sequential):
    """A named Sequential whose slices are plain ``nn.Sequential`` (a slice need not be a whole network)."""

    def __getitem__(self, idx: int | slice) -> nn.Module:
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)


class MLP(_Network):
    """A fully connected network: ``Flatten`` then Linear layers of ``sizes``.

    With ``batch_norm=True`` every hidden Linear layer is followed by ``norm_layer(width)``, placed
    before the activation (``bn_position="before"``, as in Ioffe & Szegedy) or after it; the hidden
    Linear layers then have no bias when BN follows them directly, because BN's mean subtraction
    would cancel it (β takes its role). The output layer is never normalized.

    Args:
        sizes: layer widths, input first, e.g. ``(784, 512, 256, 10)``.
        batch_norm: insert normalization layers.
        activation: ``"relu"``, ``"sigmoid"``, ``"tanh"`` or a callable returning an ``nn.Module``.
        bn_position: ``"before"`` or ``"after"`` the activation.
        norm_layer: the normalization to insert, called with the width (default ``nn.BatchNorm1d``;
            pass the course's scratch layer to swap it in).
        dropout: the probability of an ``nn.Dropout`` placed at the end of every hidden layer (after the
            activation, and after BN when BN comes after it); ``0`` (the default) adds none.

    Example:
        >>> MLP((784, 512, 256, 10), batch_norm=True)  # doctest: +ELLIPSIS
        MLP(...)
    """

    def __init__(
        self,
        sizes: Sequence[int] = (784, 512, 256, 10),
        batch_norm: bool = False,
        activation: str | Callable[[], nn.Module] = "relu",
        bn_position: str = "before",
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm1d,
        dropout: float = 0.0,
    ) -> None:
        if isinstance(sizes, (int, str)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"sizes must be a sequence of layer widths such as (784, 512, 10), got {type(sizes).__name__} {sizes!r}")
        sizes = tuple(sizes)
        if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"sizes must be at least two positive ints (input, ..., output), got {sizes!r}")
        flag("batch_norm", batch_norm)
        if bn_position not in BN_POSITIONS:
            raise ValueError(f"bn_position must be one of {BN_POSITIONS}, got {bn_position!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        act = _activation(activation)
        layers: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in zip(sizes[:-2], sizes[1:-1]):
            bias_cancelled = batch_norm and bn_position == "before"
            layers.append(nn.Linear(width_in, width_out, bias=not bias_cancelled))
            if batch_norm and bn_position == "before":
                layers += [norm_layer(width_out), act()]
            elif batch_norm:
                layers += [act(), norm_layer(width_out)]
            else:
                layers.append(act())
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        super().__init__(*layers)
        self.sizes = sizes
        self.batch_norm = batch_norm
        self.bn_position = bn_position


def init_normal_(model: nn.Module, std: float | None = None, gain: float | None = None) -> nn.Module:
    """Re-initialize every ``nn.Linear`` of ``model`` in place: Gaussian weights, zero biases.

    Give exactly one of ``std`` (the same standard deviation for every layer, e.g. the "small
    Gaussian" of the BN paper's Figure 1) or ``gain`` (standard deviation ``gain / sqrt(fan_in)``
    per layer: ``gain = sqrt(2)`` is Kaiming's initialization for ReLU networks, a larger gain makes
    the activations grow from layer to layer).

    Returns:
        ``model``, for chaining.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: not exactly one of ``std`` and ``gain`` is given, or it is not a positive finite number.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if (std is None) == (gain is None):
        raise ValueError(f"give exactly one of std and gain, got std={std!r}, gain={gain!r}")
    value = std if std is not None else gain
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{'std' if std is not None else 'gain'} must be a positive finite number, got {value!r}")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std if std is not None else gain / module.in_features ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as running statistics are not counted)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every batch-norm layer in ``model`` (torch's ``_BatchNorm`` subclasses and any module that
    keeps ``running_mean`` / ``running_var`` buffers, such as the course's scratch layer)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    found = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) or (
            hasattr(module, "running_mean") and hasattr(module, "running_var")
        ):
            found.append(module)
    return found


class LeNet(_Network):
    """LeNet-5 for 28×28 single-channel images, optionally with batch normalization.

    Conv(6, 5×5, padding 2) → [BN] → act → AvgPool(2) → Conv(16, 5×5) → [BN] → act → AvgPool(2) →
    Flatten → Linear(400, 120) → [BN] → act → Linear(120, 84) → [BN] → act → Linear(84, 10).

    With ``batch_norm=True`` the convolutional stages use ``norm2d`` (per-channel statistics over
    N·H·W values) and the dense stages ``norm1d``; the layers feeding a BN have no bias.

    Args:
        batch_norm: insert normalization layers.
        activation: ``"sigmoid"`` (the classic choice), ``"relu"``, ``"tanh"`` or a callable.
        bn_position: ``"before"`` or ``"after"`` the activation.
        norm2d: called with the channel count (default ``nn.BatchNorm2d``).
        norm1d: called with the width (default ``nn.BatchNorm1d``).
        num_classes: outputs.
    """

    def __init__(
        self,
        batch_norm: bool = False,
        activation: str | Callable[[], nn.Module] = "sigmoid",
        bn_position: str = "before",
        norm2d: Callable[[int], nn.Module] = nn.BatchNorm2d,
        norm1d: Callable[[int], nn.Module] = nn.BatchNorm1d,
        num_classes: int = 10,
    ) -> None:
        flag("batch_norm", batch_norm)
        if bn_position not in BN_POSITIONS:
            raise ValueError(f"bn_position must be one of {BN_POSITIONS}, got {bn_position!r}")
        positive_int("num_classes", num_classes)
        act = _activation(activation)
        no_bias = batch_norm and bn_position == "before"

        def stage(layer: nn.Module, norm: Callable[[int], nn.Module], width: int) -> list[nn.Module]:
            if not batch_norm:
                return [layer, act()]
            return [layer, norm(width), act()] if bn_position == "before" else [layer, act(), norm(width)]

        super().__init__(
            *stage(nn.Conv2d(1, 6, kernel_size=5, padding=2, bias=not no_bias), norm2d, 6),
            nn.AvgPool2d(2),
            *stage(nn.Conv2d(6, 16, kernel_size=5, bias=not no_bias), norm2d, 16),
            nn.AvgPool2d(2),
            nn.Flatten(),
            *stage(nn.Linear(16 * 5 * 5, 120, bias=not no_bias), norm1d, 120),
            *stage(nn.Linear(120, 84, bias=not no_bias), norm1d, 84),
            nn.Linear(84, num_classes),
        )
        self.batch_norm = batch_norm
        self.bn_position = bn_position

    #: The input LeNet's layer sizes are built for: one channel of 28×28 pixels.
    INPUT_SHAPE = (1, 28, 28)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """The layers in order, on a batch of shape (N, 1, 28, 28); a ``ValueError`` naming the shape otherwise
        (instead of "mat1 and mat2 shapes cannot be multiplied" from the first dense layer)."""
        if not isinstance(input, torch.Tensor) or input.dim() != 4 or tuple(input.shape[1:]) != self.INPUT_SHAPE:
            raise ValueError(f"LeNet expects a batch of shape (N, 1, 28, 28) (28×28 single-channel images such as "
                             f"MNIST's), got {tuple(getattr(input, 'shape', ())) or type(input).__name__}: resize or "
                             "crop other images (e.g. 32×32) to 28×28, and convert colour images to one channel")
        return super().forward(input)


#: Normalization names understood by :func:`norm_layers` and :func:`lenet_with_normalization` (and, for
#: ``"batch"`` and ``"scratch"``, by ``bncourse.gluon.LeNet``) and what they mean.
NORMALIZATIONS: dict[str, str] = {
    "none": "no normalization",
    "batch": "torch's nn.BatchNorm2d / nn.BatchNorm1d",
    "scratch": "the course's bncourse.layers.BatchNorm",
    "group": "nn.GroupNorm with `groups` channel groups (conv and dense layers)",
    "layer": "layer norm as nn.GroupNorm(1, C): all channels (and pixels) of one example",
    "instance": "nn.InstanceNorm2d(affine=True) on conv layers, layer norm on dense layers",
}


def norm_layers(kind: str, groups: int = 2) -> tuple[Callable[[int], nn.Module], Callable[[int], nn.Module]]:
    """The one way to choose a normalization layer: ``(norm2d, norm1d)`` factories for ``kind``, a name of
    :data:`NORMALIZATIONS` (but ``"none"``), each called with the channel count or width."""
    if not isinstance(kind, str) or kind not in NORMALIZATIONS or kind == "none":
        raise ValueError(f"kind must be one of {[k for k in NORMALIZATIONS if k != 'none']}, got {kind!r}")
    positive_int("groups", groups)
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
    raise AssertionError(kind)  # unreachable: checked above


def lenet_with_normalization(
    kind: str,
    bn_position: str = "before",
    activation: str | Callable[[], nn.Module] = "sigmoid",
    groups: int = 2,
) -> LeNet:
    """A :class:`LeNet` whose normalization layers are chosen by name.

    Args:
        kind: one of :data:`NORMALIZATIONS`: ``"none"``, ``"batch"``, ``"scratch"``, ``"group"``,
            ``"layer"`` or ``"instance"``. Instance norm has no meaning for a dense layer (one value per
            feature and example), so the dense layers of ``"instance"`` use layer norm.
        bn_position: ``"before"`` or ``"after"`` the activation.
        activation: as for :class:`LeNet`.
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
    norm2d, norm1d = norm_layers(kind, groups)
    return LeNet(batch_norm=True, activation=activation, bn_position=bn_position, norm2d=norm2d, norm1d=norm1d)
