"""The exercises of notebook 04 (BatchNorm2d in LeNet): ``q1`` … ``q3``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

They practise what changes for convolutional feature maps: statistics per channel over (N, H, W), the
BatchNorm2d forward pass written by hand (torch's and the course's batch norm switched off while it is checked),
and choosing the right torch layer for batch, layer, instance and group normalization.

Example:
    >>> from bncourse.exercises import ____
    >>> def channel_stats(fmap):
    ...     return ____
    >>> channel_stats = q1.answer_or_solution(channel_stats)  # doctest: +SKIP
    >>> q1.check(channel_stats)                                # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2", "q3",
    # the reference solutions
    "channel_stats", "batchnorm2d_train", "make_norm",
    # the exercise classes
    "ChannelStatistics", "BatchNorm2dByHand", "ChooseNormalization",
]

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .. import layers
from .core import Exercise, _Wrong, _generator
from .ex02 import _Handwritten


# ---------------------------------------------------------------------------------------------
# 1. Per-channel statistics
# ---------------------------------------------------------------------------------------------
def channel_stats(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference solution of :class:`ChannelStatistics`."""
    dims = (0, 2, 3)                                           # every example and every position of a channel
    mean = fmap.mean(dim=dims)
    var = ((fmap - mean.reshape(1, -1, 1, 1)) ** 2).mean(dim=dims)   # biased: divide by m = N·H·W
    return mean, var


class ChannelStatistics(Exercise):
    """The statistics BatchNorm2d normalizes with: one mean and variance per channel."""

    number = 1
    title = "Per-channel statistics"
    task = ("Write `channel_stats(fmap)` for a feature map of shape (N, C, H, W) returning `(mean, var)`, two "
            "tensors of shape (C,): the mean and the *biased* variance of each channel over all N·H·W values — "
            "what BatchNorm2d normalizes with in training mode. Don't modify `fmap`.")
    hint_text = ("Reduce over dims (0, 2, 3) at once: `fmap.mean(dim=(0, 2, 3))` and "
                 "`fmap.var(dim=(0, 2, 3), unbiased=False)`.")
    explanation = ("In a convolution every position of a channel is computed by the same filter, so BatchNorm2d "
                   "treats all N·H·W values of a channel as one sample: m = N·H·W. Reducing over N only gives one "
                   "statistic per pixel (what BatchNorm1d would do to a flattened map), and averaging per-pixel or "
                   "per-image variances misses the spread *between* pixels or images.")
    reference = staticmethod(channel_stats)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(401)
        for n, c, h, w in ((3, 4, 5, 6), (2, 5, 3, 3)):
            fmap = (torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
                    + torch.linspace(-2, 2, w, dtype=torch.float64)                          # positions differ
                    + 1.5 * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)        # images differ
                    ) * torch.linspace(0.5, 2, c, dtype=torch.float64).reshape(1, c, 1, 1)
            given = fmap.clone()
            out = self._call(answer, given)
            if not torch.equal(given, fmap):
                raise _Wrong("you changed fmap in place")
            if not (isinstance(out, tuple) and len(out) == 2):
                raise _Wrong(f"expected a pair (mean, var), got {type(out).__name__}")
            where = f"for a feature map of shape {(n, c, h, w)}"
            for name, t in zip(("mean", "var"), out):
                if isinstance(t, torch.Tensor) and t.shape == (c, h, w):
                    raise _Wrong(f"{where} {name} has one value per channel *and pixel* (C, H, W): you reduced over "
                                 "the batch only; reduce over N, H and W")
                if isinstance(t, torch.Tensor) and t.shape == (n,):
                    raise _Wrong(f"{where} {name} has one value per example: that reduces over (C, H, W), what "
                                 "LayerNorm does; BatchNorm2d reduces over (N, H, W)")
                if isinstance(t, torch.Tensor) and t.shape in ((n, c), (c, n)):
                    raise _Wrong(f"{where} {name} has one value per example and channel: that is InstanceNorm's "
                                 "statistic; reduce over the batch too, dims (0, 2, 3)")
            mean, var = channel_stats(fmap)
            self._diagnose(out[0], mean, {}, f"{where}, mean", atol=1e-9)
            self._diagnose(out[1], var, {
                "you used the unbiased variance (divide by N·H·W − 1); BN normalizes with the biased one":
                    fmap.var(dim=(0, 2, 3), unbiased=True),
                "you averaged per-pixel variances over the batch; that misses the spread between positions — take "
                "the variance over N, H and W at once": fmap.var(dim=0, unbiased=False).mean(dim=(1, 2)),
                "you averaged per-image variances; that misses the spread between images — take the variance over "
                "N, H and W at once": fmap.var(dim=(2, 3), unbiased=False).mean(dim=0),
                "you returned the standard deviation; return the variance": var.sqrt(),
            }, f"{where}, var", atol=1e-9)
        return "mean and biased variance per channel over (N, H, W), for two feature maps."


# ---------------------------------------------------------------------------------------------
# 2. BatchNorm2d by hand
# ---------------------------------------------------------------------------------------------
def batchnorm2d_train(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference solution of :class:`BatchNorm2dByHand`."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)                          # (1, C, 1, 1)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    return gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)


class BatchNorm2dByHand(_Handwritten):
    """The training-mode forward pass of BatchNorm2d, from tensor operations."""

    number = 2
    title = "BatchNorm2d by hand"
    task = ("Write `batchnorm2d_train(x, gamma, beta, eps)` for `x` of shape (N, C, H, W) and per-channel `gamma`, "
            "`beta` of shape (C,): normalize each channel with its mean and biased variance over (N, H, W), then "
            "scale by γ and shift by β — what `nn.BatchNorm2d` computes in training mode. Tensor operations only "
            "(no `F.batch_norm`, `nn.BatchNorm2d` or `bncourse.layers`); don't modify the arguments.")
    hint_text = ("`keepdim=True` keeps the statistics as (1, C, 1, 1), ready to broadcast; reshape γ and β the same "
                 "way — a bare (C,) vector would line up with the last axis, W.")
    explanation = ("The same four lines as for BatchNorm1d, with m = N·H·W values per channel. The statistics and "
                   "the affine parameters are per channel, so each (C,) vector must be broadcast along axis 1; when "
                   "W happens to equal C a forgotten reshape gives no error, only wrong numbers.")
    reference = staticmethod(batchnorm2d_train)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(402)
        for shape, eps in (((4, 3, 5, 5), 1e-5), ((2, 4, 3, 4), 0.1), ((6, 2, 1, 1), 1e-3)):
            c = shape[1]
            x = torch.randn(*shape, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, c, dtype=torch.float64).reshape(1, c, 1, 1) + 1
            gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
            beta = torch.randn(c, generator=g, dtype=torch.float64)
            torch_bn, ours = nn.BatchNorm2d(c, eps=eps).double(), layers.BatchNorm(c, eps=eps).double()
            with torch.no_grad():
                for layer in (torch_bn, ours):
                    layer.weight.copy_(gamma), layer.bias.copy_(beta)
                expected = torch_bn(x)
                assert torch.allclose(expected, ours(x), atol=1e-9)        # torch's layer and the course's agree
            given = (x.clone(), gamma.clone(), beta.clone())
            got = self._call_by_hand(answer, *given, eps)
            if not all(torch.equal(a, b) for a, b in zip(given, (x, gamma, beta))):
                raise _Wrong("you changed x, gamma or beta in place")
            where = f"for x of shape {shape} and eps={eps}"
            view = (1, c, 1, 1)
            gm, bt = gamma.reshape(view), beta.reshape(view)

            def normalize(dims: tuple[int, ...], unbiased: bool = False, e: float = eps) -> torch.Tensor:
                return (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, unbiased=unbiased, keepdim=True) + e)

            mistakes = {
                "the statistics are per pixel (over N only), as BatchNorm1d on a flattened map; BatchNorm2d pools "
                "N, H and W": gm * normalize((0,)) + bt,
                "the statistics are per image and channel (over H and W): that is InstanceNorm; pool the batch too":
                    gm * normalize((2, 3)) + bt,
                "you normalized with the unbiased variance; BN uses the biased one": gm * normalize((0, 2, 3), True) + bt,
                "eps is missing: divide by sqrt(var + eps)": gm * normalize((0, 2, 3), e=0.0) + bt,
                "γ and β are missing": normalize((0, 2, 3)),
            }
            if eps != 1e-5:
                mistakes = {"eps = 1e-5 is hard-coded (or eps is missing): use the eps you are given": gm * normalize((0, 2, 3), e=1e-5) + bt, **mistakes}
            if shape[-1] == c:
                mistakes["γ and β were broadcast along the last axis (W), not the channel axis: reshape them to "
                         "(1, C, 1, 1)"] = gamma * normalize((0, 2, 3)) + beta
            self._diagnose(got, expected, mistakes, f"{where}, the output", atol=1e-9)
        return "equals nn.BatchNorm2d and the course's BatchNorm in training mode for three shapes and three values of eps."


# ---------------------------------------------------------------------------------------------
# 3. Choose the normalization layer
# ---------------------------------------------------------------------------------------------
def make_norm(kind: str, channels: int, num_groups: int = 2) -> nn.Module:
    """Reference solution of :class:`ChooseNormalization`."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)                          # over (N, H, W), running statistics for eval
    if kind == "layer":
        return nn.GroupNorm(1, channels)                         # over (C, H, W) of each example
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)          # over (H, W) of each example and channel
    return nn.GroupNorm(num_groups, channels)                    # "group": over groups of channels and (H, W)


class ChooseNormalization(Exercise):
    """The four normalizations of notebook 04, section 6, as torch layers with the right options."""

    number = 3
    title = "Choose the normalization layer"
    task = ("Write `make_norm(kind, channels, num_groups=2)` returning a *new* torch layer for feature maps (N, C, H, "
            "W) with C = `channels`: for `kind='batch'` batch normalization (running statistics for eval mode), for "
            "`'layer'` layer normalization over (C, H, W) of each example, for `'instance'` instance normalization "
            "over (H, W) of each example and channel, for `'group'` group normalization with `num_groups` groups. "
            "Every layer learns a per-channel γ and β (2·C values); only batch norm keeps running statistics.")
    hint_text = ("`nn.GroupNorm(G, C)` normalizes each example over groups of C/G channels: G = 1 is layer norm "
                 "with per-channel γ, β (what the course uses; `nn.LayerNorm` would need H and W). "
                 "`nn.InstanceNorm2d` has `affine=False` by default — and `GroupNorm(C, C)` is instance norm too.")
    explanation = ("The four differ only in the set of values a statistic is taken over: (N, H, W) per channel for "
                   "batch norm, (H, W) per example and channel for instance norm, (C/G, H, W) per example for group "
                   "norm, (C, H, W) per example for layer norm. Only batch norm crosses examples, so only it needs "
                   "running statistics for eval mode; `InstanceNorm2d`'s defaults (no γ, β) are an option silently "
                   "off, and `GroupNorm(1, C)` for instance norm mixes all channels.")
    reference = staticmethod(make_norm)

    @staticmethod
    def _functional(x: torch.Tensor, c: int) -> dict[str, torch.Tensor]:
        return {"batch norm": F.batch_norm(x, None, None, training=True),
                "layer norm (GroupNorm(1, C))": F.group_norm(x, 1),
                "instance norm": F.group_norm(x, c),
                "group norm with 2 groups": F.group_norm(x, 2),
                "group norm with 3 groups": F.group_norm(x, 3)}

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(403)
        c = 6
        for kind, groups in (("batch", 2), ("layer", 2), ("instance", 2), ("group", 2), ("group", 3)):
            where = f"make_norm({kind!r}, {c}, num_groups={groups})"
            layer = self._call(answer, kind, c, num_groups=groups)
            if not isinstance(layer, nn.Module):
                raise _Wrong(f"{where} should return an nn.Module, got {type(layer).__name__}")
            again = self._call(answer, kind, c, num_groups=groups)
            if again is layer or {id(p) for p in layer.parameters()} & {id(p) for p in again.parameters()}:
                raise _Wrong(f"{where} returned the same layer (or shared parameters) twice: create a new layer each call")
            n_learned = sum(p.numel() for p in layer.parameters() if p.requires_grad)
            if n_learned != 2 * c:
                raise _Wrong(f"{where} learns {n_learned} values; it should learn a per-channel γ and β, {2 * c} "
                             "values" + (" — affine is off" if n_learned == 0 else ""))
            reference = make_norm(kind, c, groups).double()
            layer = layer.double().train()
            with torch.no_grad():
                for p_ref, p in zip(reference.parameters(), layer.parameters()):
                    values = torch.rand(p.shape, generator=g, dtype=torch.float64) + 0.5
                    p_ref.copy_(values), p.copy_(values)
            try:
                for step in range(3):                         # training mode; batch norm moves its statistics
                    x = torch.randn(4, c, 5, 5, generator=g, dtype=torch.float64) * 2 + step
                    with torch.no_grad():
                        expected = reference(x)
                    got = self._call(layer, x)
                    if not (isinstance(got, torch.Tensor) and got.shape == x.shape):
                        raise _Wrong(f"{where}: the layer's output should have the input's shape {tuple(x.shape)}")
                    if not torch.allclose(got.detach(), expected, atol=1e-6):
                        found = [name for name, out in self._functional(x, c).items()
                                 if torch.allclose(_standardized(got, layer), out, atol=1e-6)]
                        if found and kind == "group" and found[0].startswith("group norm"):
                            raise _Wrong(f"{where} normalizes like {found[0]}: use num_groups={groups}, the number "
                                         "you are given")
                        if found:
                            raise _Wrong(f"{where} normalizes like {found[0]}; the {kind} normalization was asked for")
                        raise _Wrong(f"{where}: in training mode the output differs from {kind} normalization by up "
                                     f"to {(got.detach() - expected).abs().max().item():.3g}")
                reference.eval(), layer.eval()
                x = torch.randn(3, c, 5, 5, generator=g, dtype=torch.float64) - 1
                with torch.no_grad():
                    expected = reference(x)
                    got = self._call(layer, x)
            except _Wrong as wrong:
                if str(wrong).startswith("your function raised"):
                    raise _Wrong(f"{where}: running the layer raised: {str(wrong)[len('your function raised '):]}") from None
                raise
            if not torch.allclose(got, expected, atol=1e-6):
                if kind == "batch":
                    raise _Wrong(f"{where}: in eval mode the output differs by up to {(got - expected).abs().max().item():.3g}; "
                                 "batch norm must keep running statistics (track_running_stats) and use them in eval mode")
                raise _Wrong(f"{where}: in eval mode the output differs by up to {(got - expected).abs().max().item():.3g}; "
                             f"{kind} normalization keeps no running statistics (track_running_stats=False): it uses "
                             "each example's own statistics in eval mode as well")
        return "batch, layer, instance and group norm (2 and 3 groups) right in training and eval mode, with γ and β."


def _standardized(out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The layer's output with its per-channel γ and β undone (the normalized x̂), to name what it normalized over."""
    params = [p.detach() for p in layer.parameters()]
    weight, bias = (params + [None, None])[:2]
    if weight is None or bias is None or weight.shape != (out.shape[1],):
        return out.detach()
    return (out.detach() - bias.reshape(1, -1, 1, 1)) / weight.reshape(1, -1, 1, 1)


#: Notebook 04's exercises in order; ``q1`` … ``q3`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (ChannelStatistics(), BatchNorm2dByHand(), ChooseNormalization())
q1, q2, q3 = EXERCISES
