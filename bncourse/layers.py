"""Batch normalization written out by hand: the math, its backward pass, the layer, and folding.

Three levels, each usable on its own:

* :func:`batch_norm` -- the math of Ioffe & Szegedy (2015) as one pure function. In training it
  normalizes with the statistics of the batch (and, when given running buffers, updates them in
  place); in inference it normalizes with the running (population) statistics.
* :class:`BatchNormFunction` -- the training-mode transform as a ``torch.autograd.Function`` whose
  backward pass is the hand-derived gradient of Algorithm 1, in compact form.
* :class:`BatchNorm` -- the bookkeeping around the function, an ``nn.Module`` with the same contract
  as ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``: it accepts ``(N, C)``, ``(N, C, L)`` and
  ``(N, C, H, W)`` input, keeps ``weight``, ``bias``, ``running_mean``, ``running_var`` and
  ``num_batches_tracked`` under the same names, and can be passed as ``norm_layer=`` /
  ``norm2d=`` / ``norm1d=`` to the networks of :mod:`bncourse.models`.

For inference, :func:`fold_into` merges an eval-mode BN into the Linear or Conv2d layer before it,
and :func:`fold_batchnorm` does so for every such pair of a sequential network.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .checks import flag, positive_finite, positive_int

__all__ = ["batch_norm", "BatchNormFunction", "PlainBatchNormFunction", "BatchNorm", "fold_weights", "fold_into", "fold_batchnorm"]

#: Input ranks the layer accepts, and what their axes mean.
SUPPORTED_SHAPES = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}


def _check_input(x: torch.Tensor, num_features: int | None = None) -> None:
    """Raise the error a learner needs when ``x`` is not something BN can normalize."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in SUPPORTED_SHAPES:
        raise ValueError(
            f"expected 2-D {SUPPORTED_SHAPES[2]}, 3-D {SUPPORTED_SHAPES[3]} or 4-D {SUPPORTED_SHAPES[4]} input, "
            f"got {x.dim()}-D input of shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor (e.g. torch.float32), got dtype {x.dtype}")
    if num_features is not None and x.shape[1] != num_features:
        raise ValueError(
            f"expected {num_features} features/channels in dim 1 of the input, got input of shape "
            f"{tuple(x.shape)} ({x.shape[1]} in dim 1)"
        )


def _check_vector(name: str, t: torch.Tensor | None, channels: int) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), one entry per channel of the input, got {tuple(t.shape)}")


def _reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The axes BN averages over: every axis but the channel axis 1."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a ``(C,)`` vector so that it broadcasts against an input of ``ndim`` dimensions."""
    return t.view((1, -1) + (1,) * (ndim - 2))


#: Input dtypes whose batch statistics are computed in float32 (a sum of 65,536 unit values overflows fp16).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch normalization with a hand-derived backward pass.

    Forward (Algorithm 1 of Ioffe & Szegedy, 2015), per channel over the ``m`` values of the batch
    (``m = N``, ``N·L`` or ``N·H·W``)::

        mu = mean(x)    var = mean((x - mu)^2)    x_hat = (x - mu) / sqrt(var + eps)    y = gamma * x_hat + beta

    Backward, in compact form (sums over the same ``m`` values; ``dy`` is the incoming gradient)::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dx     = gamma / sqrt(var + eps) * (dy - dbeta / m - x_hat * dgamma / m)

    The two subtracted terms are the paths through ``mu`` and through ``var``: shifting every input
    by the same amount moves ``mu`` with it and leaves the output unchanged, and scaling every
    centred input by the same factor moves ``sqrt(var)`` with it and leaves the output unchanged --
    so ``dx`` has the component of ``dy`` along those two directions removed.

    ``apply(x, gamma, beta, eps)`` returns ``(y, mean, var)``; ``mean`` and ``var`` (biased, shape
    ``(C,)``) are not differentiable and serve the running statistics. ``gamma`` and ``beta`` may
    be ``None`` (no scale, no shift). Only first derivatives are implemented.

    Not supported: ``torch.func`` transforms (``grad``, ``vmap``, ...), which need a ``setup_context``
    this Function does not have (torch raises saying so), and ``torch.jit.script`` of the layer; use
    ``nn.BatchNorm1d/2d`` there. ``torch.jit.trace``, ``torch.compile`` and ordinary autograd work.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, eps: float):
        dims = _reduce_dims(x)
        m = x.numel() // x.shape[1]
        out_dtype = x.dtype
        x = x.float() if x.dtype in _LOW_PRECISION else x   # fp16/bf16: statistics in float32 (sums overflow fp16)
        # Two passes (mean, then the mean of squared deviations): accurate even for large offsets,
        # and on the CPU plain sums are much faster than torch.var_mean over the batch axis.
        mean = x.sum(dims, keepdim=True).div_(m)
        x_centered = x - mean
        var = (x_centered * x_centered).sum(dims, keepdim=True).div_(m)
        invstd = torch.rsqrt(var + eps)
        x_hat = x_centered.mul_(invstd)
        g = None if gamma is None else _per_channel(gamma, x.dim()).to(x.dtype)
        b = None if beta is None else _per_channel(beta, x.dim()).to(x.dtype)
        if g is not None and b is not None:
            y = torch.addcmul(b, x_hat, g)
        elif g is not None:
            y = x_hat * g
        elif b is not None:
            y = x_hat + b
        else:
            y = x_hat.clone()  # the output must not be the saved tensor, which may be modified in place
        ctx.save_for_backward(x_hat, invstd, gamma)
        ctx.dims = dims
        ctx.m = m
        ctx.dtypes = (out_dtype, None if gamma is None else gamma.dtype, None if beta is None else beta.dtype)
        mean, var = mean.view(-1).to(out_dtype), var.view(-1).to(out_dtype)
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)
        return y.to(out_dtype), mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor | None, _dmean: None, _dvar: None):
        x_hat, invstd, gamma = ctx.saved_tensors
        if dy is None:
            return None, None, None, None
        dims, m = ctx.dims, ctx.m
        x_dtype, gamma_dtype, beta_dtype = ctx.dtypes
        dy = dy.to(x_hat.dtype)                      # fp16/bf16 inputs: the sums in float32, as in forward
        need_x, need_gamma, need_beta = ctx.needs_input_grad[:3]
        dbeta = dy.sum(dims, keepdim=True) if (need_x or need_beta) else None
        dgamma = (dy * x_hat).sum(dims, keepdim=True) if (need_x or need_gamma) else None
        dx = None
        if need_x:
            scale = invstd if gamma is None else _per_channel(gamma, dy.dim()).to(x_hat.dtype) * invstd
            # dx = scale*dy - scale*dbeta/m - x_hat*scale*dgamma/m, as two fused multiply-adds
            dx = torch.addcmul(scale * dbeta * (-1.0 / m), x_hat, scale * dgamma * (-1.0 / m))
            dx.addcmul_(dy, scale)
            dx = dx.to(x_dtype)
        grad_gamma = dgamma.view(-1).to(gamma_dtype) if need_gamma else None
        grad_beta = dbeta.view(-1).to(beta_dtype) if need_beta else None
        return dx, grad_gamma, grad_beta, None


def _check_batch_norm_args(x: object, gamma: object, beta: object, running_mean: object, running_var: object,
                           training: object, momentum: object, eps: object) -> float:
    """The argument checks of :func:`batch_norm`; returns ``eps`` as a float."""
    _check_input(x)
    channels = x.shape[1]
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        _check_vector(name, t, channels)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be tensors or both be None")
    flag("training", training)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    return positive_finite("eps", eps)


class PlainBatchNormFunction(torch.autograd.Function):
    """:class:`BatchNormFunction` in its textbook form: the same math, line by line, for reading.

    The course's layer runs :class:`BatchNormFunction`, which computes exactly this with fewer
    temporaries (in-place updates, fused multiply-adds); a unit test proves the two equal, outputs and
    gradients. Here ``gamma`` and ``beta`` are required.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        dims = [0] + list(range(2, x.dim()))               # every axis but the channels (axis 1)
        shape = [1, -1] + [1] * (x.dim() - 2)              # a per-channel vector, broadcast over x
        m = x.numel() // x.shape[1]                        # values per channel
        mean = x.mean(dims, keepdim=True)                  # mu
        var = ((x - mean) ** 2).mean(dims, keepdim=True)   # sigma^2, biased: divided by m
        x_hat = (x - mean) / torch.sqrt(var + eps)
        y = gamma.view(shape) * x_hat + beta.view(shape)
        ctx.save_for_backward(x_hat, var, gamma)
        ctx.dims, ctx.shape, ctx.m, ctx.eps = dims, shape, m, eps
        mean, var = mean.view(-1), var.view(-1)
        ctx.mark_non_differentiable(mean, var)             # they feed the running statistics only
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x_hat, var, gamma = ctx.saved_tensors
        dims, m = ctx.dims, ctx.m
        dbeta = dy.sum(dims, keepdim=True)                 # dL/dbeta  = sum(dy)
        dgamma = (dy * x_hat).sum(dims, keepdim=True)      # dL/dgamma = sum(dy * x_hat)
        scale = gamma.view(ctx.shape) / torch.sqrt(var + ctx.eps)
        dx = scale * (dy - dbeta / m - x_hat * dgamma / m)  # the paths through mu and sigma^2 removed
        return dx, dgamma.view(-1), dbeta.view(-1), None


def batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Batch-normalize ``x`` per channel (axis 1), as ``torch.nn.functional.batch_norm`` does.

    Training (``training=True``): normalize with the mean and the *biased* variance of this batch,
    computed per channel over every axis but 1; if running buffers are given, update them in place
    with PyTorch's convention ``running = (1 - momentum) * running + momentum * batch``, using the
    *unbiased* batch variance (``m / (m - 1)`` times the biased one) for ``running_var``.

    Inference (``training=False``): normalize with ``running_mean`` and ``running_var``; if they are
    ``None`` (a layer that keeps no running statistics), the batch statistics are used instead.

    Args:
        x: input of shape (N, C), (N, C, L) or (N, C, H, W), floating point.
        gamma: scale, shape (C,), or ``None`` for no scaling.
        beta: shift, shape (C,), or ``None`` for no shift.
        running_mean: buffer of shape (C,) or ``None``.
        running_var: buffer of shape (C,) or ``None`` (given together with ``running_mean``).
        training: use (and record) batch statistics, or use the running ones.
        momentum: weight of the new batch in the running average, in [0, 1].
        eps: added to the variance before the square root, a finite number > 0.

    Returns:
        The normalized tensor, same shape and dtype as ``x``.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, or an argument has the wrong type.
        ValueError: wrong rank, a vector whose length is not C, only one value per channel in
            training, or ``momentum`` / ``eps`` out of range.
    """
    eps = _check_batch_norm_args(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    if not training and running_mean is not None:
        # Inference: a fixed affine map per channel, y = x * scale + shift.
        scale = torch.rsqrt(running_var + eps)
        if gamma is not None:
            scale = gamma * scale
        shift = -running_mean * scale
        if beta is not None:
            shift = shift + beta
        return torch.addcmul(_per_channel(shift, x.dim()), x, _per_channel(scale, x.dim())).to(x.dtype)

    m = x.numel() // x.shape[1]                         # values per channel
    if m < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
    y, mean, var = BatchNormFunction.apply(x, gamma, beta, float(eps))
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            running_var.lerp_((var * (m / (m - 1))).to(running_var.dtype), momentum)
    return y.to(x.dtype)


class BatchNorm(nn.Module):
    """Batch normalization as a layer: a drop-in for ``nn.BatchNorm1d`` and ``nn.BatchNorm2d``.

    Normalizes each channel (axis 1) of (N, C), (N, C, L) or (N, C, H, W) input with
    :func:`batch_norm`. The mode comes from ``self.training`` (``model.train()`` / ``model.eval()``),
    never from whether gradients are being recorded.

    Args:
        num_features: C, the number of features / channels.
        eps: added to the variance for numerical stability.
        momentum: weight of each new batch in the running statistics (PyTorch convention);
            ``None`` gives the cumulative average over all batches seen so far.
        affine: learn a per-channel scale ``weight`` (gamma, starts at 1) and shift ``bias``
            (beta, starts at 0).
        track_running_stats: keep ``running_mean``, ``running_var`` and ``num_batches_tracked``
            buffers and use them in eval mode; without them eval mode uses batch statistics.
        device, dtype: where and in which precision to create parameters and buffers.
        bias: with ``affine``, also learn the shift beta (torch's keyword of the same name).

    Example:
        >>> from bncourse.models import MLP
        >>> model = MLP((784, 32, 10), batch_norm=True, norm_layer=BatchNorm)
        >>> model[2]
        BatchNorm(32, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        positive_int("num_features", num_features)
        positive_finite("eps", eps)
        if momentum is not None and (
            isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"momentum must be a number in [0, 1] or None (cumulative average), got {momentum!r}")
        for name, value in (("affine", affine), ("track_running_stats", track_running_stats), ("bias", bias)):
            flag(name, value)
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.zeros(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Forget the running statistics: mean 0, variance 1, no batch tracked."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and set gamma to 1 and beta to 0."""
        self.reset_running_stats()
        with torch.no_grad():
            if self.weight is not None:
                self.weight.fill_(1.0)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape (N, C), (N, C, L) or (N, C, H, W)."""
        _check_input(x, self.num_features)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average: the n-th batch gets weight 1/n
                momentum = 1.0 / float(self.num_batches_tracked)
        # Batch statistics in training, and in eval when there are no running statistics to use.
        use_batch_stats = self.training or self.running_mean is None
        # Running statistics are read in eval mode and updated in training only if they are tracked.
        track = not self.training or self.track_running_stats
        return batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean if track else None,
            self.running_var if track else None,
            use_batch_stats,
            momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, (BatchNorm, nn.modules.batchnorm._BatchNorm))


def fold_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    gamma: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of a Linear / Conv2d with an eval-mode BN after it, folded into one layer.

    Pure math on tensors (the twin of ``torch.nn.utils.fusion.fuse_linear_bn_weights``);
    :func:`fold_into` is the module wrapper that checks its arguments and builds the new layer.
    ``weight`` has the output channels first; ``bias``, ``gamma`` and ``beta`` may be ``None``.
    """
    s = torch.rsqrt(running_var + eps)                    # 1 / sqrt(running_var + eps), per channel
    if gamma is not None:
        s = gamma * s                                     # s = gamma / sqrt(running_var + eps)
    b = bias if bias is not None else torch.zeros_like(running_mean)
    new_bias = s * (b - running_mean)                     # b' = s * (b - running_mean) + beta
    if beta is not None:
        new_bias = new_bias + beta
    new_weight = weight * s.view(-1, *([1] * (weight.dim() - 1)))   # W' = diag(s) W, per output channel
    return new_weight, new_bias


def fold_into(layer: nn.Linear | nn.Conv2d, bn: nn.Module) -> nn.Linear | nn.Conv2d:
    """A new Linear / Conv2d computing ``bn(layer(x))`` for an eval-mode BN, in one layer.

    In inference BN is the fixed per-channel affine map ``y = s * z + (beta - s * running_mean)``
    with ``s = gamma / sqrt(running_var + eps)``. Applied to ``z = W x + b``, it gives
    ``(s * W) x + s * (b - running_mean) + beta``: the same kind of layer, with output channel ``k``
    of the weight scaled by ``s_k`` and a new bias (:func:`fold_weights`). The inputs are left unchanged.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d`` (with or without bias) feeding ``bn``.
        bn: a :class:`BatchNorm` or torch BatchNorm layer with running statistics, in eval mode,
            with one channel per output of ``layer``.

    Raises:
        TypeError: unsupported layer or normalization types.
        ValueError: ``bn`` is in training mode, keeps no running statistics, or its channel count
            differs from ``layer``'s outputs.
    """
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"layer must be an nn.Linear or nn.Conv2d, got {type(layer).__name__}")
    if not _is_batchnorm(bn):
        raise TypeError(f"bn must be a bncourse BatchNorm or a torch BatchNorm layer, got {type(bn).__name__}")
    if bn.training:
        raise ValueError("folding uses the running statistics, so it is only valid in eval mode: call model.eval() first")
    if bn.running_mean is None:
        raise ValueError("bn keeps no running statistics (track_running_stats=False), so there is nothing fixed to fold")
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out:
        raise ValueError(f"bn normalizes {bn.num_features} channels but the layer has {out} outputs")
    with torch.no_grad():
        weight, bias = fold_weights(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        folded = copy.deepcopy(layer)
        folded.weight.copy_(weight)
        folded.bias = nn.Parameter(bias.to(layer.weight.dtype))
    folded.train(False)
    return folded


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` for inference, each BN that directly follows a Linear / Conv2d folded into it.

    Works through nested ``nn.Sequential`` containers; modules keep their names, the folded BN
    layers disappear. BN layers that do not directly follow a Linear / Conv2d (e.g. placed after the
    activation) are kept as they are. The copy is in eval mode and gives the same outputs as
    ``model.eval()``; ``model`` itself is not changed.

    Raises:
        TypeError: ``model`` is not an ``nn.Sequential``.
        ValueError: ``model`` is in training mode (see :func:`fold_into`).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential (such as bncourse.models.MLP or LeNet), got {type(model).__name__}")
    if any(_is_batchnorm(m) and m.training for m in model.modules()):
        raise ValueError("folding uses the running statistics, so it is only valid in eval mode: call model.eval() first")
    kept: list[tuple[str, nn.Module]] = []
    # zip(names, model) and not named_children(): a module object used twice appears twice here, and
    # each use is folded (or copied) on its own.
    for name, module in zip(model._modules, model):
        if isinstance(module, nn.Sequential):
            module = fold_batchnorm(module)
        elif (
            _is_batchnorm(module)
            and kept
            and isinstance(kept[-1][1], (nn.Linear, nn.Conv2d))
            and module.running_mean is not None
        ):
            kept[-1] = (kept[-1][0], fold_into(kept[-1][1], module))
            continue
        else:
            module = copy.deepcopy(module)
        kept.append((name, module))
    return nn.Sequential(OrderedDict(kept)).eval()
