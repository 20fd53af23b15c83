"""The exercises of notebook 05 (Batch Normalization in Gluon): ``q1`` … ``q3``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

They practise the conventions that differ between the frameworks when a model is ported: Gluon's momentum
(the weight of the old value) and its biased running variance, the conversion of a PyTorch running variance
into the one Gluon would have recorded, and the renaming of a BN layer's state. The checks use NumPy and
PyTorch only, so they run where mxnet cannot be imported.

Example:
    >>> from bncourse.exercises import ____
    >>> def gluon_moving_update(running_mean, running_var, batch, momentum):
    ...     return ____
    >>> gluon_moving_update = q1.answer_or_solution(gluon_moving_update)  # doctest: +SKIP
    >>> q1.check(gluon_moving_update)                                     # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2", "q3",
    # the reference solutions
    "gluon_moving_update", "gluon_running_var_from_torch", "convert_bn_state",
    # the exercise classes
    "GluonMovingUpdate", "GluonVarianceFromTorch", "ConvertBatchNormState",
]

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .. import layers
from .core import Exercise, _Wrong, _generator


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    """A learner's array (NumPy or torch) as a float64 tensor, or feedback naming what came back."""
    if isinstance(value, torch.Tensor):
        return value.detach().double()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.asarray(value, dtype=np.float64))
    raise _Wrong(f"{what}: expected a NumPy array, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# 1. Gluon's moving statistics
# ---------------------------------------------------------------------------------------------
def gluon_moving_update(running_mean: np.ndarray, running_var: np.ndarray, batch: np.ndarray,
                        momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference solution of :class:`GluonMovingUpdate`."""
    batch_mean = batch.mean(axis=0)
    batch_var = batch.var(axis=0)                         # NumPy's default ddof=0: biased, as Gluon keeps it
    new_mean = momentum * running_mean + (1 - momentum) * batch_mean     # momentum weighs the OLD value
    new_var = momentum * running_var + (1 - momentum) * batch_var
    return new_mean, new_var


class GluonMovingUpdate(Exercise):
    """One update of Gluon's moving mean and variance: the other framework's convention."""

    number = 1
    title = "Gluon's moving statistics"
    task = ("Write `gluon_moving_update(running_mean, running_var, batch, momentum)` for NumPy arrays (`batch` of "
            "shape (N, C), the statistics of shape (C,)) returning the new `(running_mean, running_var)` after one "
            "training step of Gluon's `nn.BatchNorm(momentum=momentum)`: new = momentum·old + (1 − momentum)·batch "
            "statistic, where Gluon tracks the *biased* batch variance. Return new arrays; don't modify the ones "
            "you are given.")
    hint_text = ("`batch.mean(axis=0)` and `batch.var(axis=0)` (NumPy's default `ddof=0` is the biased variance). "
                 "Gluon's momentum 0.9 is PyTorch's 0.1: it weighs the old value.")
    explanation = ("Both frameworks compute the same exponential moving average of the mean; Gluon's `momentum` is "
                   "1 − PyTorch's. For the variance they remember different things: Gluon the biased batch variance "
                   "(÷ m), PyTorch the unbiased one (÷ (m − 1)). Both *normalize* a batch with the biased one.")
    reference = staticmethod(gluon_moving_update)

    def _verify(self, answer: Callable[..., Any]) -> str:
        rng = np.random.default_rng(501)
        for momentum, n in ((0.9, 8), (0.7, 4)):
            batch = rng.normal(1.0, 2.0, (n, 3))
            mean0, var0 = np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.5])
            args = (mean0.copy(), var0.copy(), batch.copy(), momentum)
            out = self._call(answer, *args)
            if not (np.array_equal(args[0], mean0) and np.array_equal(args[1], var0) and np.array_equal(args[2], batch)):
                raise _Wrong("you changed an argument in place (running_mean / running_var); return new arrays instead")
            if not (isinstance(out, tuple) and len(out) == 2):
                raise _Wrong(f"expected a pair (running_mean, running_var), got {type(out).__name__}")
            new_mean, new_var = gluon_moving_update(mean0, var0, batch, momentum)
            m = momentum
            bm, bv, bvu = batch.mean(0), batch.var(0), batch.var(0, ddof=1)
            where = f"with momentum={momentum} and a batch of {n}"
            t = torch.from_numpy
            self._diagnose(_as_tensor(out[0], f"{where}, the running mean"), t(new_mean), {
                "momentum is applied PyTorch's way round; in Gluon momentum weighs the old value": t((1 - m) * mean0 + m * bm),
                "the old running mean was replaced instead of averaged": t(bm),
            }, f"{where}, the running mean", atol=1e-9)
            self._diagnose(_as_tensor(out[1], f"{where}, the running variance"), t(new_var), {
                "you tracked the unbiased batch variance (ddof=1), PyTorch's convention; Gluon tracks the biased one":
                    t(m * var0 + (1 - m) * bvu),
                "momentum is applied PyTorch's way round; in Gluon momentum weighs the old value":
                    t((1 - m) * var0 + m * bv),
                "that is PyTorch's update (momentum on the new value, unbiased variance)": t((1 - m) * var0 + m * bvu),
                "you tracked the standard deviation instead of the variance": t(m * var0 + (1 - m) * np.sqrt(bv)),
            }, f"{where}, the running variance", atol=1e-9)
        return "running mean and variance right for Gluon's momentum 0.9 and 0.7, with the biased variance."


# ---------------------------------------------------------------------------------------------
# 2. From PyTorch's running variance to Gluon's
# ---------------------------------------------------------------------------------------------
def gluon_running_var_from_torch(torch_running_var: torch.Tensor, num_batches: int, m: int, momentum: float,
                                 initial: float = 1.0) -> torch.Tensor:
    """Reference solution of :class:`GluonVarianceFromTorch`."""
    decay = (1 - momentum) ** num_batches                 # the weight left on the initial value
    learned = torch_running_var - decay * initial         # the part averaged from unbiased batch variances
    return decay * initial + (m - 1) / m * learned        # the same average of the biased ones


class GluonVarianceFromTorch(Exercise):
    """Convert a PyTorch running variance into the one Gluon records from the same batches."""

    number = 2
    title = "From PyTorch's running variance to Gluon's"
    task = ("A PyTorch BN layer started with `running_var` = `initial` and trained on `num_batches` batches, each "
            "with `m` values per channel (m = N for (N, C) input, N·H·W for images), with PyTorch momentum "
            "`momentum`; its running variance is now `torch_running_var` (a tensor of shape (C,)). Write "
            "`gluon_running_var_from_torch(torch_running_var, num_batches, m, momentum, initial=1.0)` returning "
            "the running variance a Gluon layer (momentum 1 − `momentum`) would hold after the same batches, from "
            "the same initial value. Return a new tensor.")
    hint_text = ("Unroll the average: running = (1 − p)ᵗ·initial + Σₖ p(1 − p)ᵗ⁻ᵏ·vₖ. PyTorch's vₖ are unbiased, "
                 "Gluon's biased: vₖ·(m − 1)/m. Only the part that came from batches gets the factor.")
    explanation = ("The moving average is linear in the batch variances, and each biased variance is (m − 1)/m times "
                   "the unbiased one when every batch has m values per channel; the initial value, which still "
                   "carries weight (1 − p)ᵗ, is not a batch variance and keeps its weight unchanged. With many "
                   "batches that weight vanishes and the conversion is the factor alone. For inference, though, a "
                   "ported model should keep PyTorch's value: it is the better estimate of the population variance.")
    reference = staticmethod(gluon_running_var_from_torch)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(502)
        cases = (("nn.BatchNorm2d", (2, 3, 3, 3), 0.3, 3, 1.0), ("nn.BatchNorm1d", (4, 3), 0.1, 5, 1.0),
                 ("the course's BatchNorm", (6, 3), 0.2, 4, 2.5))
        for label, shape, p, steps, initial in cases:
            layer = (nn.BatchNorm1d(3, momentum=p) if label == "nn.BatchNorm1d" else
                     nn.BatchNorm2d(3, momentum=p) if label == "nn.BatchNorm2d" else layers.BatchNorm(3, momentum=p))
            layer = layer.double().train()
            with torch.no_grad():
                layer.running_var.fill_(initial)
            gluon_var = torch.full((3,), initial, dtype=torch.float64)
            dims = (0,) + tuple(range(2, len(shape)))
            for _ in range(steps):
                x = torch.randn(*shape, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64).reshape((1, 3) + (1,) * (len(shape) - 2))
                with torch.no_grad():
                    layer(x)
                gluon_var = (1 - p) * gluon_var + p * x.var(dims, unbiased=False)      # Gluon's momentum 1 - p
            m = int(np.prod([shape[d] for d in dims]))
            torch_var = layer.running_var.detach().clone()
            given = torch_var.clone()
            got = self._call(answer, given, steps, m, p, initial=initial)
            if not torch.equal(given, torch_var):
                raise _Wrong("you changed torch_running_var in place; return a new tensor")
            where = f"for {label} on batches of shape {shape} (m = {m}), momentum {p}, {steps} batches, initial {initial}"
            decay = (1 - p) ** steps
            learned = torch_var - decay * initial
            self._diagnose(_as_tensor(got, where), gluon_var, {
                "the (m − 1)/m factor is missing: PyTorch's running variance averages unbiased batch variances":
                    torch_var,
                "the factor is inverted: the biased variance is (m − 1)/m times the unbiased one, not m/(m − 1)":
                    decay * initial + m / (m - 1) * learned,
                "the factor was applied to the initial value's share too; only the part averaged from batches gets it":
                    (m - 1) / m * torch_var,
                "momentum is the wrong way round: after t batches the initial value keeps the weight (1 − momentum)ᵗ":
                    p ** steps * initial + (m - 1) / m * (torch_var - p ** steps * initial),
                "m counts every value of a channel in a batch — N·H·W for images, not only N":
                    decay * initial + (shape[0] - 1) / shape[0] * learned if len(shape) > 2 else torch_var + 1e9,
                "the initial value was taken to be 1; use `initial`":
                    decay * 1.0 + (m - 1) / m * (torch_var - decay * 1.0),
            }, f"{where}, the Gluon running variance", atol=1e-9)
        return "matches a Gluon-convention average of the same batches for BatchNorm1d, BatchNorm2d and the course's layer."


# ---------------------------------------------------------------------------------------------
# 3. Rename a BN layer's state
# ---------------------------------------------------------------------------------------------
_GLUON_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def convert_bn_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Reference solution of :class:`ConvertBatchNormState`."""
    converted = {}
    for name, tensor in state_dict.items():
        if name in _GLUON_NAMES:                          # num_batches_tracked has no Gluon counterpart
            converted[_GLUON_NAMES[name]] = tensor.detach().cpu().numpy().copy()   # own memory, not a view
    return converted


class ConvertBatchNormState(Exercise):
    """Port one BN layer's state from PyTorch's names to Gluon's."""

    number = 3
    title = "Rename a BN layer's state"
    task = ("Write `convert_bn_state(state_dict)` taking the `state_dict()` of one PyTorch BN layer and returning a "
            "new dict of NumPy arrays under Gluon's names: `weight` → `gamma`, `bias` → `beta`, `running_mean` and "
            "`running_var` unchanged (the values copied as they are), `num_batches_tracked` dropped (Gluon has no "
            "counter). A layer built with `affine=False` has no `weight` and `bias`. The arrays must have their own "
            "memory — changing them must not change the torch tensors — and `state_dict` must stay unchanged.")
    hint_text = ("A dict from torch names to Gluon names, and a loop over `state_dict.items()` skipping what is not "
                 "in it. `tensor.numpy()` is a *view* of the tensor's memory: add `.copy()`.")
    explanation = ("Gluon calls BN's scale and shift γ and β and keeps the moving statistics under the same names; "
                   "PyTorch's integer `num_batches_tracked` is only needed for `momentum=None`. `Tensor.numpy()` shares "
                   "memory with the tensor, so a converted model would change whenever the PyTorch one trains on — "
                   "copy. (`bncourse.gluon.copy_torch_parameters` ports a whole LeNet the same way, pairing the "
                   "entries in order.)")
    reference = staticmethod(convert_bn_state)

    @staticmethod
    def _layers() -> list[tuple[str, nn.Module]]:
        torch.manual_seed(503)
        found = []
        for label, layer in (("nn.BatchNorm2d(4)", nn.BatchNorm2d(4)), ("the course's BatchNorm(3)", layers.BatchNorm(3)),
                             ("nn.BatchNorm1d(5, affine=False)", nn.BatchNorm1d(5, affine=False))):
            with torch.no_grad():
                if layer.affine:
                    layer.weight.uniform_(0.5, 1.5), layer.bias.normal_()
                x = torch.randn(8, layer.num_features, 2, 2) if isinstance(layer, nn.BatchNorm2d) else torch.randn(8, layer.num_features)
                layer(x * 2 + 1)
            found.append((label, layer))
        return found

    def _verify(self, answer: Callable[..., Any]) -> str:
        for label, layer in self._layers():
            state = layer.state_dict()
            original = {k: v.clone() for k, v in state.items()}
            got = self._call(answer, state)
            where = f"for {label}"
            if list(state) != list(original) or any(not torch.equal(state[k], v) for k, v in original.items()):
                raise _Wrong(f"{where} you changed the state_dict you were given; build a new dict")
            if not isinstance(got, Mapping):
                raise _Wrong(f"{where} expected a dict, got {type(got).__name__}")
            expected = convert_bn_state(original)
            if set(got) != set(expected):
                extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
                if "num_batches_tracked" in extra:
                    raise _Wrong(f"{where} num_batches_tracked should be dropped: Gluon's BN has no such counter")
                if "weight" in extra or "bias" in extra:
                    raise _Wrong(f"{where} 'weight' and 'bias' keep PyTorch's names; Gluon calls them 'gamma' and 'beta'")
                raise _Wrong(f"{where} expected the keys {sorted(expected)}, got {sorted(got)} (extra {extra}, missing {missing})")
            for key, value in got.items():
                if isinstance(value, torch.Tensor):
                    raise _Wrong(f"{where} '{key}' is a torch tensor; return NumPy arrays (what Gluon's set_data takes)")
                if not isinstance(value, np.ndarray):
                    raise _Wrong(f"{where} '{key}' should be a NumPy array, got {type(value).__name__}")
                source = state["weight" if key == "gamma" else "bias" if key == "beta" else key]
                if np.shares_memory(value, source.numpy()):
                    raise _Wrong(f"{where} '{key}' shares memory with the torch tensor (Tensor.numpy() is a view): "
                                 "changing one would change the other — copy it")
            for key in expected:
                if key == "gamma" and np.allclose(got[key], expected["beta"]) and not np.allclose(expected["gamma"], expected["beta"]):
                    raise _Wrong(f"{where} gamma holds β: 'weight' is γ (the scale) and 'bias' is β (the shift)")
                if not (got[key].shape == expected[key].shape and np.allclose(got[key], expected[key], rtol=0, atol=1e-7)):
                    raise _Wrong(f"{where} '{key}' does not hold the values of the torch entry it comes from (copy them "
                                 "as they are)")
        return "names, values and own memory right for BatchNorm2d, the course's BatchNorm and affine=False; input untouched."


#: Notebook 05's exercises in order; ``q1`` … ``q3`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (GluonMovingUpdate(), GluonVarianceFromTorch(), ConvertBatchNormState())
q1, q2, q3 = EXERCISES
