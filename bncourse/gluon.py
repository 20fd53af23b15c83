"""Batch normalization in MXNet Gluon (mxnet 1.9.1, ``mxnet.np`` / ``npx`` interface).

The Gluon side of the course, shaped like the PyTorch side so that everything carries across:

* :func:`batch_norm` and :class:`BatchNorm` -- batch normalization from scratch, with Gluon's own
  conventions (momentum is the weight of the *old* moving value; the moving variance is fed the
  biased batch variance), so the block can be checked against ``gluon.nn.BatchNorm``.
* :class:`LeNet` -- the course's BN-LeNet, built with the scratch block or ``gluon.nn.BatchNorm``.
* :func:`load_arrays` / :class:`ArrayData` / :class:`ArrayBatches` -- MNIST and Fashion-MNIST as
  ``mxnet.np`` arrays from the committed files, through :mod:`bncourse.data` (no network: Gluon's own
  ``vision`` dataset classes check re-hosted copies and try to download).
* :func:`train_step`, :func:`train_loop`, :func:`train_epoch`, :func:`fit`, :func:`evaluate`, :func:`batch_statistics` --
  the training loop with a ``gluon.Trainer`` and the evaluation, returning the same
  :class:`~bncourse.train.History` and :class:`~bncourse.evaluate.Evaluation` as the PyTorch side.
* :func:`copy_torch_parameters` -- start a Gluon network from the very weights of a PyTorch one.

The course's Gluon code is written for MXNet's NumPy interface (``mxnet.np`` arrays, NumPy semantics),
which is a process-wide switch: call :func:`use_np` once before using this module (notebook 05's setup
cell does). Importing the module does not flip it, so a learner's own legacy ``mx.nd`` code is left alone
until that explicit call.

Importing mxnet lowers OpenMP's thread count for torch as well (they share the runtime). Importing
this module puts torch back at the thread count it had before.
"""

from __future__ import annotations

__all__ = [
    "ACTIVATIONS", "NORM_LAYERS", "ArrayBatches", "ArrayData", "BatchNorm", "BatchNormFunction", "LeNet",
    "PlainBatchNormFunction", "batch_norm",
    "batch_statistics", "batchnorm_layers", "copy_torch_parameters", "evaluate", "fit", "from_tensors",
    "load_arrays", "mx", "to_numpy", "train_epoch", "train_loop", "train_step", "use_np", "plain_import_error",
]

import contextlib
import functools
import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as onp
import torch

from . import _mxnet, config

_TORCH_THREADS_BEFORE = torch.get_num_threads()
_MXNET_ALREADY_IMPORTED = "mxnet" in sys.modules

# Through bncourse._mxnet, which makes mxnet importable under NumPy 1.26 and, where mxnet does not
# exist (macOS, Windows), raises an ImportError saying so and where to run the Gluon part instead.
mx = _mxnet.import_mxnet()  # (imported after recording torch's thread count)
from mxnet import autograd, gluon, init, np, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402

# mxnet's import set OpenMP to one thread for the whole process: give torch its threads back (the
# count it had, or the default when mxnet had already been imported by someone else and lowered it).
config.set_threads(None if _MXNET_ALREADY_IMPORTED else _TORCH_THREADS_BEFORE)

from .checks import examples, flag, positive_finite, positive_int, probability  # noqa: E402
from .data import TensorData, holdout_rows, load_tensors, subset_size  # noqa: E402
from .evaluate import Evaluation  # noqa: E402
from .train import EpochResult, History, LoopResult, StepOutput, loop_budget, run_epochs  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

#: The normalization layers :class:`LeNet` can be built with, by the names of
#: :data:`bncourse.models.NORMALIZATIONS`: the framework's own layer and the course's scratch one.
NORM_LAYERS = ("batch", "scratch")
#: Activations by name, as in :mod:`bncourse.models`.
ACTIVATIONS = ("sigmoid", "relu", "tanh")

LossFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def use_np() -> None:
    """Switch MXNet to its NumPy interface for the whole process (``mxnet.npx.set_np()``).

    The course's Gluon code needs it: its blocks and data are ``mxnet.np`` arrays with NumPy semantics.
    It is MXNet-wide, not limited to this module: afterwards Gluon blocks expect ``mxnet.np`` arrays,
    so a block fed legacy ``mx.nd`` arrays fails. ``mxnet.npx.reset_np()`` switches back.
    """
    npx.set_np()


def plain_import_error() -> str | None:
    """What ``import mxnet`` says in a fresh Python process without the course's ``numpy.bool`` fix.

    Returns the last line of the error (``None`` if the plain import works): the measured reason why
    ``bncourse._mxnet`` restores NumPy's removed alias before importing mxnet.
    """
    import subprocess

    done = subprocess.run([sys.executable, "-c", "import mxnet"], capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return (errors or lines or ["(no message)"])[-1].strip()


def _require_np(what: str) -> None:
    if not npx.is_np_array():
        raise RuntimeError(f"{what} needs MXNet's NumPy interface, which is off: call bncourse.gluon.use_np() "
                           "first (notebook 05's setup cell does; it runs mxnet.npx.set_np() for the whole process)")


# --------------------------------------------------------------------------------------------
# Batch normalization from scratch
# --------------------------------------------------------------------------------------------
def _check_array(x: object, name: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be an mxnet.np.ndarray, got {type(x).__name__}")


@functools.lru_cache(maxsize=64)
def _filled(shape: tuple[int, ...], value: float, dtype: str, ctx: mx.Context) -> np.ndarray:
    """A cached constant array (never written to): saves an allocation per use."""
    return np.full(shape, value, dtype=dtype, ctx=ctx)


def _view(v, shape: tuple[int, ...]) -> np.ndarray:
    """``v`` reshaped without copying (``mxnet.np``'s ``reshape`` copies; the legacy NDArray's is a view)."""
    return (v if isinstance(v, mx.nd.NDArray) and not isinstance(v, np.ndarray) else v.as_nd_ndarray()).reshape(shape).as_np_ndarray()


class _ChannelRows:
    """The matrix layout :class:`BatchNormFunction` works in, for input of a given shape.

    (N, C, H, W) input is viewed as (N·C, H·W), one row per (example, channel) pair, and a
    per-channel value is broadcast as the (N·C, 1) column that lines up with those rows; (N, C)
    input stays as it is, and a per-channel value is broadcast as a (1, C) row. Per-channel means
    are matrix products with constant vectors: a dense layer whose weights are all 1/(H·W) averages
    each row, and ``(1/N, ..., 1/N) @ (N, C)`` averages over the examples.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.shape, self.n, self.c = x.shape, x.shape[0], x.shape[1]
        self.k = x.size // (self.n * self.c)  # values per (example, channel): H·W, or 1
        self.m = self.n * self.k              # values per channel
        self.dtype, self.ctx = onp.dtype(x.dtype).name, x.ctx

    def rows(self, v) -> np.ndarray:
        """The (N·C, H·W) view of a 4-D array (of this shape); a 2-D one as it is."""
        return _view(v, (self.n * self.c, self.k)) if len(self.shape) == 4 else _view(v, self.shape)

    def restore(self, rows: np.ndarray) -> np.ndarray:
        """Back from :meth:`rows` to the input's shape."""
        return _view(rows, self.shape)

    def mean(self, rows: np.ndarray) -> np.ndarray:
        """Per-channel means of ``rows``: a (C,) vector."""
        if len(self.shape) == 4:  # mean of each row, then over the N rows of each channel
            weights = _filled((1, self.k), 1.0 / self.k, self.dtype, self.ctx)
            rows = _view(npx.fully_connected(rows, weights, num_hidden=1, no_bias=True), (self.n, self.c))
        return np.dot(_filled((self.n,), 1.0 / self.n, self.dtype, self.ctx), rows)

    def broadcast(self, v: np.ndarray) -> np.ndarray:
        """A (C,) per-channel vector shaped to meet :meth:`rows` element by element."""
        if len(self.shape) == 4:
            return _view(np.tile(v, self.n), (-1, 1))
        return _view(v, (1, -1))


class BatchNormFunction(autograd.Function):
    """Training-mode batch normalization with a hand-derived backward pass, as an ``autograd.Function``.

    The Gluon twin of :class:`bncourse.layers.BatchNormFunction`. Forward, per channel over the
    ``m`` values of the batch (``m = N`` or ``N·H·W``)::

        mu = mean(x)    var = mean((x - mu)^2)    y = gamma * (x - mu) / sqrt(var + eps) + beta

    Backward (``dy`` the incoming gradient, sums and means over the same ``m`` values, ``x_hat``
    the normalized input)::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dx     = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat))

    Letting MXNet's autograd differentiate the forward pass gives the same numbers, but on a CPU it
    is slow: every per-channel value broadcast in the forward pass becomes a multi-axis reduction
    in the backward pass, and MXNet 1.9's reduction kernel is an order of magnitude slower than a
    matrix product. So the work is done in a matrix layout (:class:`_ChannelRows`) where means are
    matrix products and broadcasts run along rows. After a call, ``mean`` and ``var`` hold the
    batch's statistics (biased variance) for the moving averages.

    Args:
        eps: added to the variance before the square root.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)
        self.mean: np.ndarray | None = None
        self.var: np.ndarray | None = None
        self.layout: _ChannelRows | None = None

    def forward(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:  # noqa: D102
        layout = self.layout = _ChannelRows(x)
        rows = layout.rows(x)
        mean = layout.mean(rows)
        centered = rows - layout.broadcast(mean)
        var = layout.mean(centered * centered)  # biased: divides by m
        inv_std = (var + self.eps) ** -0.5
        scale = gamma * inv_std  # gamma / sqrt(var + eps), formed on the C values
        self.mean, self.var = mean, var
        # Save arrays made here, never gamma itself: the trainer may already have queued its update
        # of gamma, which waits for this backward pass -- reading gamma in it would wait for the update.
        self.save_for_backward(centered, inv_std, scale)
        return layout.restore(centered * layout.broadcast(scale) + layout.broadcast(beta))

    def backward(self, dy):  # noqa: D102 (mxnet passes and expects legacy NDArrays here)
        centered, inv_std, scale = self.saved_tensors
        layout = self.layout
        dy = layout.rows(dy)
        mean_dy = layout.mean(dy)
        mean_dy_xhat = layout.mean(dy * centered) * inv_std  # x_hat = centered * inv_std
        # x_hat * mean(dy * x_hat)  =  centered * (inv_std * mean_dy_xhat): per-channel factors meet first
        dx = layout.broadcast(scale) * (dy - layout.broadcast(mean_dy) - centered * layout.broadcast(inv_std * mean_dy_xhat))
        dgamma, dbeta = mean_dy_xhat * layout.m, mean_dy * layout.m
        return layout.restore(dx).as_nd_ndarray(), dgamma.as_nd_ndarray(), dbeta.as_nd_ndarray()


class PlainBatchNormFunction(autograd.Function):
    """:class:`BatchNormFunction` in its textbook form: the same math, line by line, for reading.

    The course's block runs :class:`BatchNormFunction`, which computes exactly this in a matrix layout
    that is fast on a CPU; a unit test proves the two equal, outputs and gradients.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, x, gamma, beta):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)                  # every axis but the channels (axis 1)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)          # a per-channel vector, broadcast over x
        mean = x.mean(axis=axes, keepdims=True)                    # mu
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)     # sigma^2, biased: divided by m
        x_hat = (x - mean) / np.sqrt(var + self.eps)
        scale = gamma.reshape(shape) / np.sqrt(var + self.eps)     # gamma / sqrt(var + eps)
        self.save_for_backward(x_hat, scale)
        self.axes, self.m = axes, x.size // x.shape[1]
        return gamma.reshape(shape) * x_hat + beta.reshape(shape)

    def backward(self, dy):
        x_hat, scale = self.saved_tensors
        dy, m = dy.as_np_ndarray(), self.m                         # MXNet hands in a legacy NDArray
        dbeta = dy.sum(axis=self.axes)                             # dL/dbeta  = sum(dy)
        dgamma = (dy * x_hat).sum(axis=self.axes)                  # dL/dgamma = sum(dy * x_hat)
        shape = scale.shape
        dx = scale * (dy - dbeta.reshape(shape) / m - x_hat * dgamma.reshape(shape) / m)
        return dx.as_nd_ndarray(), dgamma.as_nd_ndarray(), dbeta.as_nd_ndarray()


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """View a (C,) vector so that it broadcasts against an input of ``ndim`` dimensions."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _check_batch_norm_args(x: object, gamma: object, beta: object, running_mean: object, running_var: object,
                           eps: object, momentum: object) -> float:
    """The argument checks of :func:`batch_norm`; returns ``eps`` as a float."""
    for value, name in ((x, "x"), (gamma, "gamma"), (beta, "beta"), (running_mean, "running_mean"), (running_var, "running_var")):
        _check_array(value, name)
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be (N, C) or (N, C, H, W), got shape {x.shape}")
    for value, name in ((x, "x"), (gamma, "gamma"), (beta, "beta"), (running_mean, "running_mean"), (running_var, "running_var")):
        if onp.dtype(value.dtype) == onp.float16 and value.ctx.device_type == "cpu":
            raise TypeError(f"{name} is float16 on the CPU, where MXNet's matrix products (which the scratch BN uses) "
                            "support float32 and float64 only: use x.astype('float32') and net.cast('float32') "
                            f"(or a GPU), got {name} of dtype float16 on {value.ctx}")
    channels = x.shape[1]
    for value, name in ((gamma, "gamma"), (beta, "beta"), (running_mean, "running_mean"), (running_var, "running_var")):
        if value.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},) for input of shape {x.shape}, got {value.shape}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] (Gluon's convention: weight of the old value), got {momentum!r}")
    if autograd.is_training() and x.size // channels < 2:   # as PyTorch: one value per channel normalizes to β
        raise ValueError(f"Expected more than 1 value per channel when training, got input shape {x.shape}")
    return positive_finite("eps", eps)


def batch_norm(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
    momentum: float = 0.9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization of ``x`` over its channel axis 1, from scratch.

    The mode comes from :func:`mxnet.autograd.is_training` -- true inside ``autograd.record()`` (and
    ``autograd.train_mode()``), false otherwise -- exactly as for ``gluon.nn.BatchNorm``:

    * training: normalize with this batch's mean and *biased* variance (over N for (N, C) input,
      over N·H·W for (N, C, H, W)), through :class:`BatchNormFunction`, and blend them into the
      moving statistics;
    * prediction: normalize with the moving statistics, which are returned unchanged.

    Args:
        x: (N, C) or (N, C, H, W) input.
        gamma, beta: (C,) scale and shift.
        running_mean, running_var: (C,) moving statistics.
        eps: added to the variance before the square root.
        momentum: Gluon's convention -- the weight of the *old* moving value:
            ``new = momentum * old + (1 - momentum) * batch`` (0.9 here is PyTorch's 0.1).

    Returns:
        ``(y, new_running_mean, new_running_var)``; the new statistics carry no gradient.
    """
    eps = _check_batch_norm_args(x, gamma, beta, running_mean, running_var, eps, momentum)
    if autograd.is_training():
        normalize = BatchNormFunction(eps)
        y = normalize(x, gamma, beta)
        with autograd.pause():  # bookkeeping, not part of the function being differentiated
            new_mean = momentum * running_mean + (1.0 - momentum) * normalize.mean
            new_var = momentum * running_var + (1.0 - momentum) * normalize.var
        return y, new_mean, new_var
    # prediction: the moving statistics stand in for the batch's -- a fixed affine map per channel
    scale = gamma / np.sqrt(running_var + eps)
    shift = beta - running_mean * scale
    return x * _per_channel(scale, x.ndim) + _per_channel(shift, x.ndim), running_mean, running_var


class BatchNorm(nn.Block):
    """Batch normalization layer from scratch, interchangeable with ``gluon.nn.BatchNorm(in_channels=...)``.

    Holds γ (``gamma``, ones) and β (``beta``, zeros) as trainable Parameters and the moving
    statistics ``running_mean`` (zeros) and ``running_var`` (ones) as Parameters without gradient
    -- the same four names, shapes and initial values as Gluon's layer. Works on (N, C) and
    (N, C, H, W) input. Unlike ``gluon.nn.BatchNorm``, whose operator updates the moving
    statistics during the *backward* pass, this block updates them in its forward pass (in training
    mode); after every complete training step the two agree.

    Args:
        num_features: C, the size of axis 1.
        eps: added to the variance.
        momentum: weight of the old moving value (Gluon's convention, default 0.9).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, **kwargs) -> None:
        _require_np("the scratch BatchNorm block")
        positive_int("num_features", num_features)
        momentum = probability("momentum (Gluon's convention: the weight of the old moving value)", momentum)
        eps = positive_finite("eps", eps)
        super().__init__(**kwargs)
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(num_features,), init=init.One())
            self.beta = self.params.get("beta", shape=(num_features,), init=init.Zero())
            self.running_mean = self.params.get(
                "running_mean", shape=(num_features,), init=init.Zero(), grad_req="null", differentiable=False
            )
            self.running_var = self.params.get(
                "running_var", shape=(num_features,), init=init.One(), grad_req="null", differentiable=False
            )

    def forward(self, x: np.ndarray) -> np.ndarray:  # noqa: D102 (documented on the class)
        _check_array(x, "x")
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"expected (N, {self.num_features}) or (N, {self.num_features}, H, W) input, got {x.shape}")
        y, mean, var = batch_norm(
            x, self.gamma.data(), self.beta.data(), self.running_mean.data(), self.running_var.data(),
            eps=self.eps, momentum=self.momentum,
        )
        if autograd.is_training():
            self.running_mean.set_data(mean)
            self.running_var.set_data(var)
        return y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_features}, eps={self.eps:g}, momentum={self.momentum:g})"


# --------------------------------------------------------------------------------------------
# BN-LeNet
# --------------------------------------------------------------------------------------------
def _norm_factory(norm_layer: str | Callable[[int], nn.Block]) -> Callable[[int], nn.Block]:
    if isinstance(norm_layer, str):
        if norm_layer == "scratch":
            return BatchNorm
        if norm_layer == "batch":
            return lambda width: nn.BatchNorm(in_channels=width)
        raise ValueError(f"unknown norm_layer {norm_layer!r}; expected one of {NORM_LAYERS} or a callable")
    if callable(norm_layer):
        return norm_layer
    raise TypeError(f"norm_layer must be one of {NORM_LAYERS} or a callable taking the width, got {type(norm_layer).__name__}")


class LeNet(nn.Sequential):
    """LeNet-5 for 28×28 single-channel images in Gluon, the twin of :class:`bncourse.models.LeNet`.

    Conv(6, 5×5, padding 2) → [BN] → act → AvgPool(2) → Conv(16, 5×5) → [BN] → act → AvgPool(2) →
    Dense(120) → [BN] → act → Dense(84) → [BN] → act → Dense(10); the layers feeding a BN have no
    bias. Shapes are given explicitly, so ``initialize()`` creates every parameter at once.

    Args:
        batch_norm: insert normalization layers (before the activation).
        activation: ``"sigmoid"`` (the classic choice), ``"relu"`` or ``"tanh"``.
        norm_layer: ``"batch"`` (``gluon.nn.BatchNorm``), ``"scratch"`` (:class:`BatchNorm`) -- the
            names :func:`bncourse.models.norm_layers` gives torch's and the course's layers -- or a
            callable taking the width and returning a Block.
        num_classes: outputs.
    """

    def __init__(
        self,
        batch_norm: bool = False,
        activation: str = "sigmoid",
        norm_layer: str | Callable[[int], nn.Block] = "scratch",
        num_classes: int = 10,
        **kwargs,
    ) -> None:
        _require_np("bncourse.gluon.LeNet")
        flag("batch_norm", batch_norm)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        positive_int("num_classes", num_classes)
        norm = _norm_factory(norm_layer)
        super().__init__(**kwargs)
        bias = not batch_norm

        def stage(layer: nn.Block, width: int) -> list[nn.Block]:
            return [layer, norm(width), nn.Activation(activation)] if batch_norm else [layer, nn.Activation(activation)]

        with self.name_scope():
            self.add(
                *stage(nn.Conv2D(6, kernel_size=5, padding=2, in_channels=1, use_bias=bias), 6),
                nn.AvgPool2D(pool_size=2),
                *stage(nn.Conv2D(16, kernel_size=5, in_channels=6, use_bias=bias), 16),
                nn.AvgPool2D(pool_size=2),
                *stage(nn.Dense(120, in_units=16 * 5 * 5, use_bias=bias), 120),
                *stage(nn.Dense(84, in_units=120, use_bias=bias), 84),
                nn.Dense(num_classes, in_units=84),
            )
        self.batch_norm = batch_norm


def batchnorm_layers(net: nn.Block) -> list[nn.Block]:
    """Every batch-norm layer of ``net`` (``gluon.nn.BatchNorm`` and the scratch :class:`BatchNorm`), in order."""
    if not isinstance(net, nn.Block):
        raise TypeError(f"net must be a gluon Block, got {type(net).__name__}")
    found: list[nn.Block] = []

    def visit(block: nn.Block) -> None:
        if isinstance(block, (nn.BatchNorm, BatchNorm)):
            found.append(block)
        for child in block._children.values():
            visit(child)

    visit(net)
    return found


def to_numpy(value: torch.Tensor) -> "np.ndarray":
    """A torch tensor as an ``mxnet.np`` array (a copy, on the CPU)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(value).__name__}")
    return np.array(value.detach().cpu().numpy())


def _initialized(param: gluon.Parameter) -> bool:
    try:
        param.data()
    except RuntimeError:
        return False
    return True


def copy_torch_parameters(net: nn.Block, model: torch.nn.Module) -> nn.Block:
    """Initialize ``net`` (if needed) and give it the parameters and BN statistics of ``model``.

    Pairs Gluon's parameters with the floating-point entries of ``model.state_dict()`` in order
    (integer counters such as ``num_batches_tracked`` are skipped): both LeNets register weights,
    γ, β, running mean and running variance in the same order with the same shapes (Gluon's Conv2D
    and Dense store their weights in PyTorch's layout).

    Returns:
        ``net``, now starting from exactly the weights of ``model``.

    Raises:
        ValueError: if the parameter counts or any pair of shapes differ.
    """
    _require_np("copy_torch_parameters")
    if not isinstance(net, nn.Block):
        raise TypeError(f"net must be a gluon Block, got {type(net).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(net.collect_params().values())
    if not all(_initialized(p) for p in params):
        net.initialize()
    tensors = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    if len(tensors) != len(params):
        raise ValueError(f"the Gluon network has {len(params)} parameters, the torch model {len(tensors)} floating-point entries")
    for p, (key, tensor) in zip(params, tensors):
        if p.shape != tuple(tensor.shape):
            raise ValueError(f"shape mismatch: Gluon {p.name} {p.shape} vs torch {key} {tuple(tensor.shape)}")
        p.set_data(to_numpy(tensor))
    return net


# --------------------------------------------------------------------------------------------
# Data: the committed files, as mxnet.np arrays
# --------------------------------------------------------------------------------------------
def _check_labels(y: np.ndarray, num_classes: int | None) -> onp.ndarray:
    """``y`` as int64 NumPy labels if they are 1-D integers in [0, ``num_classes``), else a clear error (MXNet's
    own loss would silently clip a label out of range, and cast a float one)."""
    labels = y.asnumpy()
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {tuple(labels.shape)}")
    if not onp.issubdtype(labels.dtype, onp.integer):
        raise TypeError(f"labels must be integer class indices (e.g. int32), got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        raise ValueError(f"labels must be class indices in [0, {num_classes if num_classes is not None else 'classes'}), "
                         f"got values from {labels.min()} to {labels.max()}")
    return labels.astype("int64")


@dataclass(frozen=True)
class ArrayData:
    """A whole split as ``mxnet.np`` arrays: ``x`` (N, 1, 28, 28) float32, normalized; ``y`` int32 labels.

    The twin of :class:`bncourse.data.TensorData`, made from it by :func:`load_arrays`.
    """

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    mean: float
    std: float

    def __post_init__(self) -> None:
        if not isinstance(self.y, np.ndarray):
            raise TypeError(f"y must be an mxnet.np array of labels, got {type(self.y).__name__}")
        _check_labels(self.y, len(self.classes))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int) -> "ArrayData":
        """The first ``n`` examples."""
        n = subset_size(n, len(self))
        return ArrayData(self.name, self.split, self.x[:n], self.y[:n], self.classes, self.mean, self.std)

    def holdout(self, validation: int, seed: int = 0) -> tuple["ArrayData", "ArrayData"]:
        """Hold out ``validation`` examples, drawn with ``seed``: ``(rest, held_out)``; the twin of
        :meth:`bncourse.data.TensorData.holdout`, which splits the same examples for the same seed."""
        parts = []
        for rows, part in zip(holdout_rows(len(self), validation, seed), ("fit", "validation")):
            index = np.array(rows.numpy(), dtype="int64")
            parts.append(ArrayData(self.name, f"{self.split} ({part})", np.take(self.x, index, axis=0),
                                   np.take(self.y, index, axis=0), self.classes, self.mean, self.std))
        return parts[0], parts[1]

    def batches(self, batch_size: int, shuffle: bool = True, seed: int | None = 0, drop_last: bool = False) -> "ArrayBatches":
        """Mini-batches over this split; see :class:`ArrayBatches`."""
        return ArrayBatches(self.x, self.y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


def from_tensors(data: TensorData) -> ArrayData:
    """Convert a :class:`bncourse.data.TensorData` split into an :class:`ArrayData` (same values)."""
    _require_np("from_tensors")
    if not isinstance(data, TensorData):
        raise TypeError(f"data must be a bncourse.data.TensorData, got {type(data).__name__}")
    x = np.array(data.x.numpy(), dtype="float32")
    y = np.array(data.y.numpy(), dtype="int32")
    return ArrayData(data.name, data.split, x, y, data.classes, data.mean, data.std)


def load_arrays(name: str, split: str = "train", root=None) -> ArrayData:
    """MNIST or Fashion-MNIST for Gluon, from the committed files, without any network access.

    The archives are md5-verified and read by :func:`bncourse.data.load_tensors`, so Gluon sees the
    very values the PyTorch side trains on (standardized with the training split's mean and std).

    Args:
        name: ``"MNIST"`` or ``"FashionMNIST"``.
        split: ``"train"`` or ``"test"``.
        root: data folder; default :func:`bncourse.data.data_dir`.
    """
    return from_tensors(load_tensors(name, split, root=root))


class ArrayBatches:
    """Seeded, shuffled mini-batches of ``mxnet.np`` arrays.

    The order is drawn exactly as :class:`bncourse.data.Batches` draws it (a torch generator seeded
    once, a new permutation every epoch), so a Gluon and a PyTorch run given the same seed see the
    same examples in the same order.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
                 seed: int | None = 0, drop_last: bool = False) -> None:
        _require_np("ArrayBatches")
        _check_array(x, "x")
        _check_array(y, "y")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
        from .data import Batches  # the shuffling logic lives there once

        index = torch.arange(x.shape[0])
        self._order = Batches(index, index, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self._order)

    @property
    def num_examples(self) -> int:
        """Examples per pass (after ``drop_last``)."""
        return self._order.num_examples

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for idx, _ in self._order:
            rows = np.array(idx.numpy(), dtype="int64")
            yield np.take(self.x, rows, axis=0), np.take(self.y, rows, axis=0)


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------
def _default_loss() -> LossFn:
    return gluon.loss.SoftmaxCrossEntropyLoss()


def train_step(net: nn.Block, x: np.ndarray, y: np.ndarray, trainer: gluon.Trainer,
               loss_fn: LossFn | None = None) -> StepOutput:
    """One optimization step on one mini-batch; returns the batch's mean loss and the logits.

    The twin of :func:`bncourse.train.train_step`. The gradient of the *summed* loss is divided by the
    batch size in ``trainer.step``, so the update equals PyTorch's on the mean loss with the same
    learning rate.
    """
    loss_fn = loss_fn or _default_loss()
    with autograd.record():      # training mode: BN uses this batch's statistics
        logits = net(x)
        loss = loss_fn(logits, y)
    loss.backward()              # gradients; gluon.nn.BatchNorm updates its moving statistics here
    trainer.step(x.shape[0])     # SGD step with the gradient averaged over the batch
    return StepOutput(loss.mean(), logits)


def train_loop(
    net: nn.Block,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    trainer: gluon.Trainer,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    loss_fn: LossFn | None = None,
    before_step: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    after_step: Callable[[int], bool | None] | None = None,
    val: ArrayData | None = None,
    eval_every: int | None = None,
    stop_on_nonfinite: bool = False,
    progress: bool = False,
    desc: str | None = None,
) -> LoopResult:
    """The twin of :func:`bncourse.train.train_loop`: the same arguments (but ``device``: MXNet's arrays
    carry their context), the same :class:`~bncourse.train.LoopResult`; every Gluon trainer goes through it."""
    _require_np("train_loop")
    if not isinstance(net, nn.Block):
        raise TypeError(f"net must be a gluon Block, got {type(net).__name__}")
    if not isinstance(trainer, gluon.Trainer):
        raise TypeError(f"trainer must be a gluon.Trainer, got {type(trainer).__name__}")
    if val is not None and not isinstance(val, ArrayData):
        raise TypeError(f"val must be a bncourse.gluon.ArrayData or None, got {type(val).__name__}")
    total = loop_budget(batches, steps, epochs, before_step, after_step, val is not None, eval_every, stop_on_nonfinite)
    loss_fn = loss_fn or _default_loss()
    losses: list[np.ndarray] = []
    loss_sum = correct = np.zeros(())
    seen, passes, stopped = 0, 0, False
    evaluations: list[tuple[int, Evaluation]] = []
    with tqdm(total=total, desc=desc or type(net).__name__, unit="step", disable=not progress, mininterval=1.0) as bar:
        while not stopped and (len(losses) < steps if steps is not None else passes < epochs):
            before = len(losses)
            for x, y in batches:
                if before_step is not None:
                    before_step(len(losses), x, y)
                loss, logits = train_step(net, x, y, trainer, loss_fn)
                losses.append(loss)
                loss_sum = loss_sum + loss * y.shape[0]          # asynchronous: no wait for the result
                correct = correct + (logits.argmax(axis=1).astype("int64") == y.astype("int64")).sum()
                seen += int(y.shape[0])
                bar.update()
                step = len(losses)
                if val is not None and step % eval_every == 0:
                    evaluations.append((step, evaluate(net, val, loss_fn=loss_fn)))
                if after_step is not None and after_step(step) is True:
                    stopped = True
                if stop_on_nonfinite and not onp.isfinite(float(loss.item())):
                    stopped = True
                if stopped or step == steps:
                    break
            if len(losses) == before:
                raise ValueError("batches yielded no examples: they are empty, or a one-shot iterator used up by an "
                                 "earlier epoch -- pass something that can be iterated again, such as ArrayData.batches(...)")
            passes += 1
    npx.waitall()  # mxnet runs asynchronously: the loop ends when its last update has been applied
    step_losses = torch.tensor(np.stack(losses).asnumpy())
    return LoopResult(step_losses, seen, float(loss_sum.item()) / seen, int(correct.item()), evaluations, stopped)


def train_epoch(
    net: nn.Block,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    trainer: gluon.Trainer,
    loss_fn: LossFn | None = None,
) -> EpochResult:
    """Train ``net`` for one pass over ``batches`` (:func:`train_loop`); an :class:`~bncourse.train.EpochResult`.

    The twin of :func:`bncourse.train.train_epoch`: loss and accuracy are those of each batch at the
    moment it was trained on.
    """
    result = train_loop(net, batches, trainer, epochs=1, loss_fn=loss_fn)
    accuracy = result.correct / result.examples if math.isfinite(result.example_loss) else math.nan   # diverged: NaN
    return EpochResult(loss=result.example_loss, accuracy=accuracy,
                       examples=result.examples, steps=result.steps)


@contextlib.contextmanager
def batch_statistics(net: nn.Block) -> Iterator[nn.Block]:
    """Run ``net``'s forward passes in training mode (batch statistics) without leaving a trace.

    Inside, ``autograd.is_training()`` is true without recording; every parameter without gradient
    (the moving statistics) is saved on entry and restored on exit, so neither the built-in layer
    nor the scratch block (which updates in its forward pass) keeps anything from the data seen.
    """
    if not isinstance(net, nn.Block):
        raise TypeError(f"net must be a gluon Block, got {type(net).__name__}")
    frozen = [p for p in net.collect_params().values() if p.grad_req == "null"]
    saved = [p.data().copy() for p in frozen]
    try:
        with autograd.train_mode():
            yield net
    finally:
        for p, value in zip(frozen, saved):
            p.set_data(value)


def evaluate(
    net: nn.Block,
    data: ArrayData | tuple[np.ndarray, np.ndarray],
    batch_size: int = 1000,
    loss_fn: LossFn | None = None,
    mode: str = "eval",
) -> Evaluation:
    """Evaluate ``net`` on ``data`` without changing it; the twin of :func:`bncourse.evaluate.evaluate`.

    Args:
        data: an :class:`ArrayData` or an ``(x, y)`` pair of ``mxnet.np`` arrays.
        batch_size: examples per forward pass (with ``mode="batch"`` also the batches BN normalizes over).
        loss_fn: per-example loss; default softmax cross-entropy.
        mode: ``"eval"`` (prediction mode: moving statistics) or ``"batch"`` (batch statistics,
            moving statistics left untouched; see :func:`batch_statistics`).

    Returns:
        An :class:`bncourse.evaluate.Evaluation`; if any example's logits are not finite, its accuracy and
        per-class accuracies are NaN and ``nonfinite`` counts those examples (the PyTorch side's rule).
    """
    _require_np("evaluate")
    if not isinstance(net, nn.Block):
        raise TypeError(f"net must be a gluon Block, got {type(net).__name__}")
    x, y = examples(data, ArrayData, np.ndarray, "a bncourse.gluon.ArrayData or an (x, y) pair of mxnet.np arrays")
    positive_int("batch_size", batch_size)
    _check_labels(y, None)
    if mode not in ("eval", "batch"):
        raise ValueError(f"mode must be 'eval' or 'batch', got {mode!r}")
    loss_fn = loss_fn or _default_loss()
    context = batch_statistics(net) if mode == "batch" else contextlib.nullcontext()
    losses, predictions, finite = [], [], []
    with context:
        for start in range(0, x.shape[0], batch_size):
            logits = net(x[start : start + batch_size])  # outside record(): no graph is kept
            losses.append(loss_fn(logits, y[start : start + batch_size]))
            predictions.append(logits.argmax(axis=1))
            finite.append(onp.isfinite(logits.asnumpy()).reshape(logits.shape[0], -1).all(axis=1))
        loss_all = np.concatenate(losses).asnumpy()
        pred = np.concatenate(predictions).asnumpy().astype("int64")
    nonfinite = int((~onp.concatenate(finite)).sum())
    num_classes = int(logits.shape[1])
    labels = _check_labels(y, num_classes)
    hit = pred == labels
    per_class = []
    for c in range(num_classes):
        members = labels == c
        count = int(members.sum())
        per_class.append(float(hit[members].sum()) / count if count else float("nan"))
    n = int(labels.shape[0])
    if nonfinite:                                          # the rule of bncourse.evaluate.Evaluation
        return Evaluation(loss=float(loss_all.mean()), accuracy=float("nan"),
                          per_class_accuracy=(float("nan"),) * num_classes, num_examples=n, nonfinite=nonfinite)
    return Evaluation(loss=float(loss_all.mean()), accuracy=float(hit.sum()) / n, per_class_accuracy=tuple(per_class), num_examples=n)


def fit(
    net: nn.Block,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    trainer: gluon.Trainer,
    epochs: int,
    loss_fn: LossFn | None = None,
    val: ArrayData | None = None,
    progress: bool = True,
    desc: str | None = None,
    restore_best: bool = False,
) -> History:
    """Train ``net`` for ``epochs`` passes and record a :class:`bncourse.train.History`.

    The twin of :func:`bncourse.train.fit`: after each epoch ``net`` is evaluated on ``val`` in
    prediction mode when given; a tqdm bar shows the epochs. ``examples_per_second`` counts the
    training pass only.

    Args:
        net: an initialized Gluon network.
        batches: re-iterable mini-batches, e.g. ``train.batches(256, seed=0)``.
        trainer: a ``gluon.Trainer`` over ``net.collect_params()``.
        epochs: number of passes, >= 1.
        loss_fn: per-example loss; default softmax cross-entropy.
        val: held-out data evaluated after every epoch.
        progress: show the progress bar.
        desc: label of the progress bar.
        restore_best: model selection on ``val``: at the end, set the parameters and BN moving
            statistics of the epoch with the highest validation accuracy
            (:meth:`bncourse.train.History.best_epoch`). ``val`` must be held out from the training data.
    """
    positive_int("epochs", epochs)
    if val is not None and not isinstance(val, ArrayData):
        raise TypeError(f"val must be a bncourse.gluon.ArrayData or None, got {type(val).__name__}")
    flag("restore_best", restore_best)
    if restore_best and val is None:
        raise ValueError("restore_best=True selects the epoch on the validation split: pass val=<a held-out split>")
    loss_fn = loss_fn or _default_loss()
    params = net.collect_params()
    return run_epochs(
        lambda: train_epoch(net, batches, trainer, loss_fn),
        epochs,
        evaluate_val=None if val is None else lambda: evaluate(net, val, loss_fn=loss_fn),
        snapshot=(lambda: {name: p.data().copy() for name, p in params.items()}) if restore_best else None,
        restore=lambda best: [params[name].set_data(value) for name, value in best.items()],
        progress=progress,
        desc=desc or type(net).__name__,
    )

