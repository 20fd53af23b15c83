"""The exercises of notebook 02 (Batch Normalization from scratch): ``q1`` … ``q3``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

The learner writes the three pieces of the layer by hand: the training-mode forward pass with its batch
statistics, the backward pass of section 4, and the inference-mode forward pass from running statistics.
While a check runs, torch's and the course's batch-norm functions (and, for the backward pass, autograd) are
replaced by tripwires: the exercise is to write them.

Example:
    >>> from bncourse.exercises import ____
    >>> def batch_norm_train(x, gamma, beta, eps):
    ...     return ____
    >>> batch_norm_train = q1.answer_or_solution(batch_norm_train)  # doctest: +SKIP
    >>> q1.check(batch_norm_train)                                   # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2", "q3",
    # the reference solutions
    "batch_norm_train", "batch_norm_backward", "batch_norm_eval",
    # the exercise classes
    "ForwardByHand", "BackwardByHand", "InferenceByHand",
]

from typing import Any, Callable

import torch
from torch.nn import functional as F

from .. import layers
from .core import Exercise, _Forbidden, _Wrong, _generator


def _library_batch_norm() -> dict[str, tuple[Any, str]]:
    """The batch-norm implementations a learner must not call while a check runs (nn.BatchNorm* and the
    course's BatchNorm layer call them, so they are covered too)."""
    return {
        "torch.nn.functional.batch_norm": (F, "batch_norm"),
        "torch.batch_norm": (torch, "batch_norm"),
        "torch.native_batch_norm": (torch, "native_batch_norm"),
        "bncourse.layers.batch_norm": (layers, "batch_norm"),
        "bncourse.layers.BatchNormFunction": (layers.BatchNormFunction, "apply"),
    }


class _Handwritten(Exercise):
    """An exercise whose check runs the learner's function with the library's batch norm switched off."""

    forbidden: Callable[[], dict[str, tuple[Any, str]]] = staticmethod(_library_batch_norm)

    def _call_by_hand(self, fn: Callable[..., Any], *args: Any) -> Any:
        with _Forbidden(self.forbidden()) as guard:
            try:
                out = self._call(fn, *args)
            except _Wrong:
                if not guard.used:
                    raise
        if guard.used:
            raise _Wrong(f"your function called {guard.used[0]}: the exercise is to write it yourself, from tensor "
                         "operations")
        return out


# ---------------------------------------------------------------------------------------------
# 1. The training-mode forward pass
# ---------------------------------------------------------------------------------------------
def batch_norm_train(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference solution of :class:`ForwardByHand`."""
    mean = x.mean(dim=0)                                 # one mean per feature, over the batch
    var = ((x - mean) ** 2).mean(dim=0)                  # biased: divide by m
    x_hat = (x - mean) / torch.sqrt(var + eps)
    return gamma * x_hat + beta, mean, var


class ForwardByHand(_Handwritten):
    """Algorithm 1 of Ioffe & Szegedy: the training-mode forward pass and its batch statistics."""

    number = 1
    title = "The forward pass in training mode"
    task = ("Write `batch_norm_train(x, gamma, beta, eps)` for a batch `x` of shape (N, C) and per-feature `gamma`, "
            "`beta` of shape (C,): return `(y, mean, var)`, where `mean` and `var` are the batch statistics of "
            "each feature (shape (C,)) and `y = gamma * (x - mean) / sqrt(var + eps) + beta`, with Algorithm 1's "
            "*biased* variance. Use tensor operations only — no `F.batch_norm`, `nn.BatchNorm1d` or "
            "`bncourse.layers` — and don't modify `x`.")
    hint_text = ("Section 2 of the notebook writes the four lines out: `x.mean(dim=0)`, the mean of the squared "
                 "deviations (divide by m, not m − 1), normalize, scale and shift. Dim 0 is the batch.")
    explanation = ("Each feature is standardized with the statistics of the current batch; the variance divides by "
                   "m as in Algorithm 1 (the unbiased m/(m − 1) version belongs in the running estimate, section 5), "
                   "and ε sits *inside* the square root, so a feature that barely varies is not blown up. γ and β "
                   "then give the layer back any scale and shift it needs.")
    reference = staticmethod(batch_norm_train)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(201)
        for n, c, eps in ((4, 3, 1e-5), (16, 5, 0.5), (6, 4, 1e-2)):
            x = (torch.randn(n, c, generator=g, dtype=torch.float64) * torch.logspace(-1, 1, c, dtype=torch.float64)
                 + torch.randn(c, generator=g, dtype=torch.float64) * 3)
            gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
            beta = torch.randn(c, generator=g, dtype=torch.float64)
            given = (x.clone(), gamma.clone(), beta.clone())
            out = self._call_by_hand(answer, *given, eps)
            if not (torch.equal(given[0], x) and torch.equal(given[1], gamma) and torch.equal(given[2], beta)):
                raise _Wrong("you changed x, gamma or beta in place; compute the result in new tensors")
            if not (isinstance(out, tuple) and len(out) == 3):
                raise _Wrong(f"expected a triple (y, mean, var), got {type(out).__name__}")
            y, mean, var = out
            where = f"for a batch of {n} with {c} features and eps={eps}"
            mu, biased, unbiased = x.mean(0), x.var(0, unbiased=False), x.var(0, unbiased=True)
            if isinstance(mean, torch.Tensor) and mean.shape == (n,) and n != c:
                raise _Wrong(f"{where} mean has one value per example: take it over the batch (dim 0), one per feature")
            self._diagnose(mean, mu, {}, f"{where}, mean", atol=1e-9)
            self._diagnose(var, biased, {
                "this is the unbiased variance (divide by m − 1); Algorithm 1 normalizes with the biased one (divide by m)":
                    unbiased,
                "you returned the standard deviation; return the variance": biased.sqrt(),
                "eps was added to the variance you return; return the batch variance itself": biased + eps,
            }, f"{where}, var", atol=1e-9)

            def bn(v: torch.Tensor, e: float = eps, centre: torch.Tensor = mu) -> torch.Tensor:
                return gamma * (x - centre) / torch.sqrt(v + e) + beta

            mistakes = {
                "you normalized with the unbiased variance (m − 1); Algorithm 1 uses the biased one (m)": bn(unbiased),
                "eps is missing: divide by sqrt(var + eps)": bn(biased, 0.0),
                "eps goes inside the square root, sqrt(var + eps), not after it":
                    gamma * (x - mu) / (biased.sqrt() + eps) + beta,
                "γ and β are swapped: y = γ·x̂ + β": beta * (x - mu) / torch.sqrt(biased + eps) + gamma,
                "the statistics were taken over the features (dim 1); they belong over the batch (dim 0)":
                    gamma * (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + eps) + beta,
                "γ and β are missing": (x - mu) / torch.sqrt(biased + eps),
            }
            if eps != 1e-5:
                mistakes = {"eps = 1e-5 is hard-coded (or eps is missing): use the eps you are given": bn(biased, 1e-5), **mistakes}
            expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
            self._diagnose(y, expected, mistakes, f"{where}, y", atol=1e-9)
        return "y, mean and var equal torch's batch norm for three batches and three values of eps, written by hand."


# ---------------------------------------------------------------------------------------------
# 2. The backward pass
# ---------------------------------------------------------------------------------------------
def batch_norm_backward(dout: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor,
                        eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference solution of :class:`BackwardByHand`."""
    m = x.shape[0]
    mean = x.mean(dim=0)
    s = 1 / torch.sqrt(((x - mean) ** 2).mean(dim=0) + eps)    # 1 / sqrt(var + eps)
    x_hat = (x - mean) * s
    dbeta = dout.sum(dim=0)
    dgamma = (dout * x_hat).sum(dim=0)
    dx = gamma * s * (dout - dbeta / m - x_hat * dgamma / m)     # the boxed formula of section 4
    return dx, dgamma, dbeta


class BackwardByHand(_Handwritten):
    """Section 4's boxed formula: the gradients of BN with respect to x, γ and β."""

    number = 2
    title = "The backward pass by hand"
    task = ("Write `batch_norm_backward(dout, x, gamma, eps)` for the training-mode BN of exercise 1 (x of shape "
            "(N, C)): given `dout` = ∂ℓ/∂y (same shape as x), return `(dx, dgamma, dbeta)` = (∂ℓ/∂x, ∂ℓ/∂γ, ∂ℓ/∂β). "
            "Don't use autograd (`backward`, `torch.autograd.grad`) or a library batch norm: the check switches "
            "them off.")
    hint_text = ("Recompute x̂ and s = 1/√(σ² + ε) from x. Then ∂ℓ/∂β = Σᵢ gᵢ, ∂ℓ/∂γ = Σᵢ gᵢ x̂ᵢ (sums over the "
                 "batch), and ∂ℓ/∂x = γ·s·(g − mean(g) − x̂·mean(g·x̂)).")
    explanation = ("Each xᵢ reaches the loss directly and through μ and σ². Dropping the two indirect paths leaves "
                   "γ·s·g, the gradient 'as if the statistics were constants'; the path through μ removes the "
                   "batch mean of the gradient and the path through σ² its component along x̂. Both sums are "
                   "∂ℓ/∂β and ∂ℓ/∂γ again, which makes the backward pass two reductions and one fused expression.")
    reference = staticmethod(batch_norm_backward)

    @staticmethod
    def forbidden() -> dict[str, tuple[Any, str]]:
        return {**_library_batch_norm(),
                "torch.autograd.grad": (torch.autograd, "grad"),
                "torch.autograd.backward": (torch.autograd, "backward"),
                "Tensor.backward": (torch.Tensor, "backward")}

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(202)
        for n, c, eps in ((5, 3, 1e-5), (12, 4, 0.3)):
            x = torch.randn(n, c, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3, c, dtype=torch.float64) + 2
            gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
            beta = torch.randn(c, generator=g, dtype=torch.float64)
            dout = torch.randn(n, c, generator=g, dtype=torch.float64)
            xr, gr, br = (t.clone().requires_grad_() for t in (x, gamma, beta))
            F.batch_norm(xr, None, None, gr, br, training=True, eps=eps).backward(dout)
            given = (dout.clone(), x.clone(), gamma.clone())
            out = self._call_by_hand(answer, *given, eps)
            if not all(torch.equal(a, b) for a, b in zip(given, (dout, x, gamma))):
                raise _Wrong("you changed dout, x or gamma in place; compute the gradients in new tensors")
            if not (isinstance(out, tuple) and len(out) == 3):
                raise _Wrong(f"expected a triple (dx, dgamma, dbeta), got {type(out).__name__}")
            dx, dgamma, dbeta = out
            where = f"for a batch of {n} and eps={eps}"
            mu, var = x.mean(0), x.var(0, unbiased=False)
            s = 1 / torch.sqrt(var + eps)
            x_hat = (x - mu) * s
            self._diagnose(dbeta, br.grad, {
                "dbeta is Σ g·x̂ — that is dgamma; dbeta = Σᵢ gᵢ": (dout * x_hat).sum(0),
                "dbeta should be the sum over the batch, not the mean": dout.mean(0),
            }, f"{where}, dbeta", atol=1e-9)
            self._diagnose(dgamma, gr.grad, {
                "dgamma is Σ g — that is dbeta; dgamma = Σᵢ gᵢ·x̂ᵢ": dout.sum(0),
                "dgamma multiplies g by the raw x; it is Σᵢ gᵢ·x̂ᵢ with the normalized x̂": (dout * x).sum(0),
                "dgamma should be the sum over the batch, not the mean": (dout * x_hat).mean(0),
            }, f"{where}, dgamma", atol=1e-9)
            gm, gxm = dout.mean(0), (dout * x_hat).mean(0)
            unbiased_s = 1 / torch.sqrt(x.var(0, unbiased=True) + eps)
            self._diagnose(dx, xr.grad, {
                "dx treats the batch mean and variance as constants (γ·s·g); x also reaches the loss through μ and σ²":
                    gamma * s * dout,
                "dx misses the path through the variance: subtract x̂·mean(g·x̂) as well":
                    gamma * s * (dout - gm),
                "dx misses the path through the mean: subtract mean(g) as well":
                    gamma * s * (dout - x_hat * gxm),
                "γ is missing from dx": s * (dout - gm - x_hat * gxm),
                "s was computed with the unbiased variance; the forward pass used the biased one":
                    gamma * unbiased_s * (dout - gm - x_hat * gxm),
            }, f"{where}, dx", atol=1e-9)
        return "dx, dgamma and dbeta equal autograd's through torch's batch norm, for two batches and two values of eps."


# ---------------------------------------------------------------------------------------------
# 3. The inference-mode forward pass
# ---------------------------------------------------------------------------------------------
def batch_norm_eval(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, eps: float) -> torch.Tensor:
    """Reference solution of :class:`InferenceByHand`."""
    shape = (1, -1) + (1,) * (x.dim() - 2)               # per channel: axis 1 of (N, C), (N, C, L), (N, C, H, W)
    x_hat = (x - running_mean.reshape(shape)) / torch.sqrt(running_var.reshape(shape) + eps)
    return gamma.reshape(shape) * x_hat + beta.reshape(shape)


class InferenceByHand(_Handwritten):
    """BN at inference: a fixed affine map per channel, from the running statistics."""

    number = 3
    title = "The forward pass at inference"
    task = ("Write `batch_norm_eval(x, gamma, beta, running_mean, running_var, eps)` returning what a BN layer "
            "computes in eval mode for input `x` of shape (N, C), (N, C, L) or (N, C, H, W): every channel "
            "(axis 1) normalized with the *running* statistics, `gamma * (x - running_mean) / sqrt(running_var + "
            "eps) + beta`. It must work for a single example (N = 1) and must not change the running statistics. "
            "Tensor operations only — no library batch norm.")
    hint_text = ("Reshape each (C,) vector to (1, C, 1, …) — `(1, -1) + (1,) * (x.dim() - 2)` — so that it "
                 "broadcasts along axis 1 whatever the rank. No statistic of `x` is needed.")
    explanation = ("At inference the output for one example must not depend on its batch-mates, so BN uses the "
                   "population estimates it tracked during training; the layer becomes the affine map "
                   "y = γ/√(Var + ε)·x + (β − γ·E/√(Var + ε)) — which is why it can be folded into the layer before "
                   "it (section 10). Broadcasting a (C,) vector on its own lines it up with the *last* axis, which "
                   "is the channel axis only for (N, C) input.")
    reference = staticmethod(batch_norm_eval)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(203)
        for shape, eps in (((8, 4), 1e-5), ((1, 4), 0.3), ((3, 4, 5, 4), 1e-3), ((2, 4, 7), 0.1)):
            c = shape[1]
            x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1
            layer = layers.BatchNorm(c, eps=eps).double().eval()           # the course's layer, in eval mode
            with torch.no_grad():
                layer.weight.uniform_(0.5, 1.5, generator=g)
                layer.bias.normal_(generator=g)
                layer.running_mean.normal_(generator=g)
                layer.running_var.uniform_(0.05, 3.0, generator=g)
                expected = layer(x)
            gamma, beta, rm, rv = (t.detach().clone() for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var))
            given = (x.clone(), gamma.clone(), beta.clone(), rm.clone(), rv.clone())
            got = self._call_by_hand(answer, *given, eps)
            if not all(torch.equal(a, b) for a, b in zip(given, (x, gamma, beta, rm, rv))):
                raise _Wrong("you changed an argument in place (the running statistics must stay as they are); "
                             "compute the output in a new tensor")
            where = f"for input of shape {shape} and eps={eps}"
            if not isinstance(got, torch.Tensor):
                raise _Wrong(f"{where}: expected a tensor, got {type(got).__name__}")
            if got.shape == expected.shape and bool(torch.isnan(got).any()) and shape[0] == 1:
                raise _Wrong(f"{where} the output contains nan: you used batch statistics (one example has no "
                             "variance); eval mode uses running_mean and running_var")
            view = (1, -1) + (1,) * (x.dim() - 2)

            def affine(normalized: torch.Tensor) -> torch.Tensor:
                return gamma.reshape(view) * normalized + beta.reshape(view)

            centred = x - rm.reshape(view)
            dims = (0,) + tuple(range(2, x.dim()))
            mistakes = {
                "you normalized with the batch's own statistics; eval mode uses running_mean and running_var":
                    affine((x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + eps))
                    if x.numel() > c else expected + 1e9,
                "eps is missing: divide by sqrt(running_var + eps)": affine(centred / rv.reshape(view).sqrt()),
                "the square root is missing: divide by sqrt(running_var + eps), running_var is a variance":
                    affine(centred / (rv.reshape(view) + eps)),
                "γ and β are swapped": beta.reshape(view) * centred / torch.sqrt(rv.reshape(view) + eps) + gamma.reshape(view),
            }
            if eps != 1e-5:
                mistakes = {"eps = 1e-5 is hard-coded (or eps is missing): use the eps you are given": affine(centred / torch.sqrt(rv.reshape(view) + 1e-5)), **mistakes}
            if x.dim() == 4 and shape[-1] == c:
                mistakes["the (C,) vectors were broadcast along the last axis (W), not along the channel axis 1: "
                         "reshape them to (1, C, 1, 1)"] = (gamma * (x - rm) / torch.sqrt(rv + eps) + beta)
            self._diagnose(got, expected, mistakes, f"{where}, the output", atol=1e-9)
        return "equals the course's BatchNorm in eval mode for (N, C), (N, C, L), (N, C, H, W) input and a single example."


#: Notebook 02's exercises in order; ``q1`` … ``q3`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (ForwardByHand(), BackwardByHand(), InferenceByHand())
q1, q2, q3 = EXERCISES
