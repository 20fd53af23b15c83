"""The exercises of notebook 01 (the intuition, measured): ``q1`` … ``q3``, each an
:class:`~bncourse.exercises.core.Exercise` with ``check``, ``hint`` and ``solution``.

They practise the three measurements of the notebook: the saturated fraction of a layer of tanh or sigmoid
units, the drift of a unit's percentiles relative to its spread (Figure 1 (b, c)), and reading per-layer
gradient norms as vanishing, exploding or healthy.

Example:
    >>> from bncourse.exercises import ____
    >>> def saturated_fraction(pre_activations, activation, level=0.97):
    ...     return ____
    >>> saturated_fraction = q1.answer_or_solution(saturated_fraction)  # doctest: +SKIP
    >>> q1.check(saturated_fraction)                                     # doctest: +SKIP
"""

from __future__ import annotations

__all__ = [
    "EXERCISES", "q1", "q2", "q3",
    # the reference solutions
    "saturated_fraction", "unit_drift", "gradient_health",
    # the exercise classes
    "SaturatedFraction", "PercentileDrift", "GradientHealth",
]

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .. import diagnostics
from .core import Exercise, _Forbidden, _Wrong, _generator


# ---------------------------------------------------------------------------------------------
# 1. The saturated fraction of a layer
# ---------------------------------------------------------------------------------------------
def saturated_fraction(pre_activations: torch.Tensor, activation: str, level: float = 0.97) -> torch.Tensor:
    """Reference solution of :class:`SaturatedFraction`."""
    if activation == "tanh":
        y = torch.tanh(pre_activations)
        saturated = y.abs() >= level                     # both tails: -1 and +1
    else:                                                # "sigmoid": outputs in (0, 1)
        y = torch.sigmoid(pre_activations)
        saturated = (y >= level) | (y <= 1 - level)      # both tails: 0 and 1
    return saturated.float().mean(dim=0)                 # one fraction per unit, over the batch


class SaturatedFraction(Exercise):
    """The fraction of a batch for which each tanh or sigmoid unit sits in a flat tail."""

    number = 1
    title = "The saturated fraction of a layer"
    task = ("A layer's units receive the pre-activations `pre_activations` (shape (N, U): N examples, U units). "
            "Write `saturated_fraction(pre_activations, activation, level=0.97)` returning, for each unit, the "
            "fraction of the N examples on which its output is saturated (a tensor of shape (U,)). For "
            "`activation='tanh'` an output y is saturated when |y| ≥ level; for `'sigmoid'` when y ≥ level or "
            "y ≤ 1 − level (the notebook's `diagnostics.SATURATION_BOUNDS` use level 0.97).")
    hint_text = ("Apply the nonlinearity first (`torch.tanh`, `torch.sigmoid`): saturation is about the output. "
                 "Both functions have two flat tails. A boolean tensor's `.float().mean(dim=0)` is a fraction per "
                 "column.")
    explanation = ("Where tanh's output is beyond ±0.97 its slope 1 − y² is below 6 % of its maximum, and the same "
                   "holds for a sigmoid beyond 0.03 and 0.97 (slope y(1 − y) against 1/4): a unit there passes "
                   "almost no gradient back. Both tails count, and the fraction is per unit, over the batch, "
                   "because it is individual units that get stuck.")
    reference = staticmethod(saturated_fraction)

    def _verify(self, answer: Callable[..., Any]) -> str:
        g = _generator(101)
        z = (torch.randn(200, 5, generator=g) * torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0])
             + torch.tensor([0.0, 1.0, -1.5, 2.0, 0.5]))
        for activation, level in (("tanh", 0.97), ("sigmoid", 0.97), ("tanh", 0.9), ("sigmoid", 0.8)):
            given = z.clone()
            got = self._call(answer, given, activation, level=level)
            if not torch.equal(given, z):
                raise _Wrong("you changed pre_activations in place; compute the outputs in a new tensor")
            where = f"for activation={activation!r} and level={level}"
            if isinstance(got, torch.Tensor) and got.dim() == 0:
                raise _Wrong(f"{where} you returned one number for the whole layer; return one fraction per unit "
                             "(average over the batch, dim 0)")
            if isinstance(got, torch.Tensor) and got.shape == (z.shape[0],):
                raise _Wrong(f"{where} you returned one value per example; the fraction is per unit, over the "
                             "examples (dim 0)")
            if isinstance(got, torch.Tensor) and got.dtype == torch.bool:
                raise _Wrong(f"{where} you returned a boolean tensor; return the fraction (a float per unit)")
            y = torch.tanh(z) if activation == "tanh" else torch.sigmoid(z)
            if activation == "tanh":
                raw = z.abs() >= level
                wrong_level = y.abs() >= 0.97
            else:
                raw = (z >= level) | (z <= 1 - level)
                wrong_level = (y >= 0.97) | (y <= 0.03)
            mistakes = {
                "you tested the pre-activations; saturation is about the unit's output (apply the nonlinearity first)":
                    raw.float().mean(0),
                "only the upper tail was counted; the flat tail near −1 (tanh) or 0 (sigmoid) saturates too":
                    (y >= level).float().mean(0),
                "the sigmoid's lower tail is y ≤ 1 − level (its outputs are never negative)":
                    (y.abs() >= level).float().mean(0),
            }
            if level != 0.97:
                mistakes["the level 0.97 is hard-coded; use the level you are given"] = wrong_level.float().mean(0)
            self._diagnose(got, saturated_fraction(z, activation, level), mistakes, f"{where}, the fraction")
        return "per-unit fractions right for tanh and sigmoid, both tails, at levels 0.97, 0.9 and 0.8."


# ---------------------------------------------------------------------------------------------
# 2. Percentile drift relative to spread
# ---------------------------------------------------------------------------------------------
def unit_drift(tracks: np.ndarray, min_spread: float) -> np.ndarray:
    """Reference solution of :class:`PercentileDrift`."""
    width = tracks[:, -1, :] - tracks[:, 0, :]                 # p85 - p15 of every unit at every probe
    spread = np.maximum(width.mean(axis=0), min_spread)        # typical spread over the run, floored
    moved = np.abs(tracks[-1] - tracks[0]).max(axis=0)         # largest percentile move, first -> last probe
    return moved / spread


class PercentileDrift(Exercise):
    """Figure 1 (b, c) as a number: how far a unit's percentiles move, in units of its own spread."""

    number = 2
    title = "Percentile drift relative to spread"
    task = ("`tracks` is a NumPy array of shape (T, 3, U): at each of T probes, the 15th, 50th and 85th percentile "
            "(in that order) of the input of each of U units. Write `unit_drift(tracks, min_spread)` "
            "returning an array of shape (U,): for each unit the largest absolute move of any of its three "
            "percentiles from the first probe to the last, divided by its *typical spread* — the width p85 − p15 "
            "averaged over all T probes, but never less than `min_spread`. A unit whose width is ~0 must not give "
            "an infinite or huge drift. Don't modify `tracks`.")
    hint_text = ("`tracks[:, -1, :] - tracks[:, 0, :]` is the width at every probe; `.mean(axis=0)` averages it over "
                 "the run and `np.maximum(…, min_spread)` floors it. The move is `np.abs(tracks[-1] - "
                 "tracks[0]).max(axis=0)`.")
    explanation = ("This is `diagnostics.unit_drift` (printed in the notebook). Dividing by the "
                   "width of the *first* probe would make the plain network's drift explode, since its small "
                   "initial weights make every unit's input nearly constant at step 0; the run's average width is a "
                   "fair yardstick, and the floor keeps a unit that never spreads out finite. Absolute values: a "
                   "move down is as much a move as a move up.")
    reference = staticmethod(unit_drift)

    @staticmethod
    def _tracks(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.linspace(0.0, 1.0, 7)[:, None]                               # 7 probes
        centre = np.concatenate([rng.normal(0, 0.3, (7, 4)) + t * np.array([1.0, -2.0, 0.3, 3.0]),
                                 2.0 * t - 0.5 + 0.2 * np.sin(7 * t)], axis=1)   # 5 units; the last never spreads
        width = np.concatenate([np.full((7, 1), 1.0), 0.5 + t, 0.01 + 2.0 * t, np.full((7, 1), 0.2),
                                np.zeros((7, 1))], axis=1)
        low, high = centre - 0.5 * width, centre + 0.5 * width
        median = centre + 0.1 * width * rng.uniform(-1, 1, (7, 5))
        median[0, 2] += 0.4                                                  # a median that moves back
        return np.stack([low, median, high], axis=1)

    def _verify(self, answer: Callable[..., Any]) -> str:
        for seed, min_spread in ((1, 0.1), (2, 0.5)):
            tracks = self._tracks(seed)
            given = tracks.copy()
            with _Forbidden({"bncourse.diagnostics.unit_drift": (diagnostics, "unit_drift")}) as guard:
                try:
                    got = self._call(answer, given, min_spread)
                except _Wrong:
                    if not guard.used:
                        raise
            if guard.used:
                raise _Wrong("your function called bncourse.diagnostics.unit_drift: the exercise is to write it "
                             "yourself, from NumPy operations")
            if not np.array_equal(given, tracks):
                raise _Wrong("you changed `tracks` in place; compute the widths and moves in new arrays")
            where = f"with min_spread={min_spread}"
            try:
                got_arr = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
            except (TypeError, ValueError):
                raise _Wrong(f"expected an array of shape (U,), got {type(got).__name__}") from None
            if got_arr.shape == (tracks.shape[2],) and not np.isfinite(got_arr).all():
                raise _Wrong(f"{where} some drifts are not finite ({got_arr.tolist()}): a unit whose width is 0 "
                             "needs the floor, max(typical spread, min_spread)")
            width = tracks[:, -1, :] - tracks[:, 0, :]
            spread = np.maximum(width.mean(axis=0), min_spread)
            moved = np.abs(tracks[-1] - tracks[0]).max(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                mistakes = {
                    "you divided by the width at the first probe; the typical spread is the width averaged over all probes":
                        moved / np.maximum(width[0], min_spread),
                    "you divided by the width at the last probe; the typical spread is the width averaged over all probes":
                        moved / np.maximum(width[-1], min_spread),
                    "min_spread was added to the spread; it is a floor: max(spread, min_spread)":
                        moved / (width.mean(axis=0) + min_spread),
                    "only the median's move was measured; take the largest move of the three percentiles":
                        np.abs(tracks[-1, 1] - tracks[0, 1]) / spread,
                    "the moves are signed; take the absolute value, a move down counts as much as a move up":
                        (tracks[-1] - tracks[0]).max(axis=0) / spread,
                    "you took the largest move at any probe; the drift compares the last probe with the first":
                        np.abs(tracks - tracks[0]).max(axis=(0, 1)) / spread,
                    "the floor 0.1 is hard-coded; use min_spread": moved / np.maximum(width.mean(axis=0), 0.1),
                }
            if min_spread == 0.1:
                mistakes.pop("the floor 0.1 is hard-coded; use min_spread")
            expected = diagnostics.unit_drift(tracks, min_spread=min_spread)
            self._diagnose(torch.from_numpy(got_arr), torch.from_numpy(expected),
                           {k: torch.from_numpy(np.nan_to_num(v, nan=1e300, posinf=1e300)) for k, v in mistakes.items()},
                           f"{where}, the drift", atol=1e-9)
        return "equals diagnostics.unit_drift, with two floors and a unit that never spreads out."


# ---------------------------------------------------------------------------------------------
# 3. Vanishing, exploding or healthy?
# ---------------------------------------------------------------------------------------------
def gradient_health(grad_norms: Sequence[float], factor: float) -> str:
    """Reference solution of :class:`GradientHealth`."""
    if not all(math.isfinite(g) for g in grad_norms):
        return "exploding"                                  # an overflow on the way back
    ratio = grad_norms[0] / grad_norms[-1]                  # first layer (input side) over the last
    if ratio > factor:
        return "exploding"
    if ratio < 1 / factor:
        return "vanishing"
    return "healthy"


class GradientHealth(Exercise):
    """Read a list of per-layer gradient norms like the diagnostics of the notebook."""

    number = 3
    title = "Vanishing, exploding or healthy?"
    task = ("`grad_norms` lists the norm of the loss gradient at each layer, from the *first* layer (next to the "
            "input) to the *last* (next to the loss). Write `gradient_health(grad_norms, factor)` returning "
            "`'exploding'` if any norm is nan or inf, or if the first layer's norm is more than `factor` times the "
            "last layer's; `'vanishing'` if it is less than 1/`factor` times the last layer's; `'healthy'` "
            "otherwise.")
    hint_text = ("Gradients travel backwards, from the loss to the input: compare `grad_norms[0]` with "
                 "`grad_norms[-1]`. Test for non-finite values first — every comparison with nan is False.")
    explanation = ("The backward pass starts at the loss, so the last layer's gradient is the reference and the "
                   "first layer's shows what is left after passing through every layer: in the notebook's plain "
                   "tanh network it is more than 30 times smaller (vanishing), in the ReLU network initialized too "
                   "large it is much larger (exploding). A nan or inf means the growth overflowed.")
    reference = staticmethod(gradient_health)

    CASES: tuple[tuple[tuple[float, ...], float, str], ...] = (
        ((1e-4, 1e-3, 1e-2, 0.1), 10.0, "vanishing"),
        ((50.0, 5.0, 0.5, 0.05), 10.0, "exploding"),
        ((0.2, 0.3, 0.25, 0.1), 10.0, "healthy"),
        ((0.01, 0.5, 0.3), 100.0, "healthy"),
        ((3.0, 1.0), 2.0, "exploding"),
        ((0.3, 0.8, 1.0), 3.0, "vanishing"),
        ((float("nan"), 1.0, 1.0), 10.0, "exploding"),
        ((1.0, 2.0, float("inf")), 10.0, "exploding"),
    )

    def _verify(self, answer: Callable[..., Any]) -> str:
        for norms, factor, expected in self.CASES:
            given = list(norms)
            got = self._call(answer, given, factor)
            if given != list(norms) and not any(math.isnan(v) for v in norms):
                raise _Wrong("you changed grad_norms in place; leave the list as it is")
            if got == expected:
                continue
            what = f"for grad_norms={list(norms)} and factor={factor} the answer is {expected!r}, you returned {got!r}"
            finite = all(math.isfinite(v) for v in norms)
            if not finite:
                raise _Wrong(f"{what}: a nan or inf norm means the gradients overflowed — test math.isfinite first")
            ratio = norms[0] / norms[-1]
            if {got, expected} == {"vanishing", "exploding"}:
                raise _Wrong(f"{what}: the comparison is the wrong way round — gradients vanish when the *first* "
                             "layer (next to the input) receives much less than the last")
            ten = "exploding" if ratio > 10 else ("vanishing" if ratio < 0.1 else "healthy")
            if factor != 10 and got == ten:
                raise _Wrong(f"{what}: it looks as if the factor 10 were hard-coded; use the factor you are given")
            if got not in ("vanishing", "exploding", "healthy"):
                raise _Wrong(f"{what}: return one of the strings 'vanishing', 'exploding', 'healthy'")
            raise _Wrong(f"{what} (the first layer's norm is {ratio:.3g} times the last layer's)")
        return "right for vanishing, exploding and healthy gradients, for factors 2, 3, 10 and 100, and for nan/inf."


#: Notebook 01's exercises in order; ``q1`` … ``q3`` are the same objects.
EXERCISES: tuple[Exercise, ...] = (SaturatedFraction(), PercentileDrift(), GradientHealth())
q1, q2, q3 = EXERCISES
