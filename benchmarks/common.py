"""Shared helpers of the benchmark scripts: timing and the result table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Row:
    """One measured comparison: ``ratio = numerator_s / denominator_s`` against a target."""

    name: str
    numerator: str
    numerator_s: float
    denominator: str
    denominator_s: float
    target: str
    passed: bool

    @property
    def ratio(self) -> float:
        return self.numerator_s / self.denominator_s


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def round_times(runs: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict[str, list[float]]:
    """Wall-clock seconds of each of ``runs`` in every round: the candidates timed in turn, round after round.

    Interleaving the candidates spreads slow spells of a shared machine over all of them, and the
    times of one round were taken close together, so their ratios can be compared round by round.
    """
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def best_times(runs: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict[str, float]:
    """Best wall-clock seconds of each of ``runs``, timed in turn, round after round (:func:`round_times`)."""
    return {name: min(times) for name, times in round_times(runs, rounds, warmup).items()}


def round_ratios(times: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """``numerator / denominator`` in each round of :func:`round_times`, sorted."""
    return sorted(a / b for a, b in zip(times[numerator], times[denominator]))


def ratio_row(name: str, numerator: str, numerator_s: float, denominator: str, denominator_s: float,
              target_ratio: float, at_most: bool = True) -> Row:
    """A :class:`Row` whose ratio must be ``<= target_ratio`` (``at_most``) or ``>= target_ratio``."""
    ratio = numerator_s / denominator_s
    passed = ratio <= target_ratio if at_most else ratio >= target_ratio
    target = f"{'<=' if at_most else '>='} {target_ratio:g}x"
    return Row(name, numerator, numerator_s, denominator, denominator_s, target, passed)


def format_rows(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    lines = ["| comparison | A | A (s) | B | B (s) | A / B | target | met |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.numerator} | {r.numerator_s:.4f} | {r.denominator} | {r.denominator_s:.4f} "
            f"| {r.ratio:.2f} | {r.target} | {'yes' if r.passed else 'no'} |"
        )
    return "\n".join(lines)
