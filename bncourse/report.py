"""The claims table of a notebook's summary: each claim, the number computed for it, the cell that asserts it.

A notebook records a claim in the cell that checks it, right after the ``assert`` lines -- so only a
claim whose check passed is ever recorded -- and shows the table in its summary::

    claims = report.Claims()
    ...
    assert bn_accuracy > plain_accuracy + 0.005
    claims.add("BN is more accurate than the plain network", f"{bn_accuracy:.4f} vs {plain_accuracy:.4f}")
    ...
    claims        # in the summary: renders as a Markdown table

The cell is named by its execution count, ``In [n]``, as the executed notebook shows it (a notebook
committed executed top to bottom numbers its cells 1, 2, 3, ...).

A comparison of two kinds of run is stated once, by :func:`compare`, never by eye. The runs are paired
by seed (seed ``i`` of one kind against seed ``i`` of the other) and the rule is:

    *A is ahead of B* when A is better in **every** seed **and** the mean of the per-seed differences is
    larger than their seed-to-seed standard deviation (and than ``min_effect``, when one is given).
    Anything else is *no clear difference*.

So a difference is claimed only when no seed contradicts it and it stands out of its own noise; the
claim's ``assert`` (``cmp.ahead == "A"``) then holds by more than the spread the notebook prints. With one
seed there is no spread: the verdict names the run as "in this run (one seed)" and needs ``min_effect``.
"""

from __future__ import annotations

__all__ = ["Claim", "Claims", "Comparison", "compare"]

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real


@dataclass(frozen=True)
class Claim:
    """One row: the claim in words, the value computed for it, the execution count of its assert cell."""

    claim: str
    computed: str
    cell: int | None


def _current_cell() -> int | None:
    """The execution count of the running notebook cell, or ``None`` outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is part of the course's environment
        return None
    shell = get_ipython()
    inputs = getattr(shell, "user_ns", {}).get("In")
    # ``In`` holds "" and then one entry per cell run, the running cell's included (its
    # ``execution_count`` is already the next cell's number while it runs).
    return len(inputs) - 1 if isinstance(inputs, list) and len(inputs) > 1 else None


def _cell_text(text: str) -> str:
    """``text`` safe inside a Markdown table cell (no line breaks, pipes escaped)."""
    return " ".join(text.split()).replace("\\|", "|").replace("|", "\\|")


class Claims:
    """The claims a notebook has checked, in the order they were checked."""

    def __init__(self) -> None:
        self._rows: list[Claim] = []

    def add(self, claim: str, computed: str, cell: int | None = None) -> None:
        """Record ``claim`` with the value ``computed`` for it; call it right after the claim's asserts.

        Args:
            claim: the claim in words, as the prose states it.
            computed: the computed number(s), formatted.
            cell: the asserting cell's execution count; default the cell that is running.

        Raises:
            TypeError: ``claim`` or ``computed`` is not a string, or ``cell`` not an int or ``None``.
            ValueError: ``claim`` or ``computed`` is empty, or ``cell`` < 1.
        """
        for name, value in (("claim", claim), ("computed", computed)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
            if not value.strip():
                raise ValueError(f"{name} must not be empty")
        if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int)):
            raise TypeError(f"cell must be an int or None, got {type(cell).__name__}")
        if cell is not None and cell < 1:
            raise ValueError(f"cell must be an execution count >= 1 (as in In [1]), got {cell}")
        self._rows.append(Claim(claim, computed, cell if cell is not None else _current_cell()))

    @property
    def rows(self) -> tuple[Claim, ...]:
        """The recorded claims."""
        return tuple(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def markdown(self) -> str:
        """The claims as a Markdown table."""
        lines = ["| claim | computed | asserted in |", "|---|---|---|"]
        for row in self._rows:
            where = f"In [{row.cell}]" if row.cell is not None else "(outside a notebook)"
            lines.append(f"| {_cell_text(row.claim)} | {_cell_text(row.computed)} | {where} |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        return self.markdown()



@dataclass(frozen=True)
class Comparison:
    """The verdict of :func:`compare`: two kinds of run, paired by seed, under the module's one rule.

    Attributes:
        a, b: the two kinds' labels.
        diffs: per seed, how much better ``a`` did than ``b`` (``a - b``, or ``b - a`` when lower is better).
        mean: the mean of ``diffs``.
        spread: the seed-to-seed standard deviation of ``diffs`` (sample, ``n - 1``); ``nan`` for one seed.
        ahead: the label of the kind that is ahead under the rule, or ``None`` (no clear difference).
        metric: what was compared, for the text.
    """

    a: str
    b: str
    diffs: tuple[float, ...]
    mean: float
    spread: float
    ahead: str | None
    metric: str

    @property
    def seeds(self) -> int:
        """The number of seeds (pairs) compared."""
        return len(self.diffs)

    @property
    def wins(self) -> int:
        """In how many seeds ``a`` did better than ``b``."""
        return sum(d > 0 for d in self.diffs)

    def __str__(self) -> str:
        lo, hi = min(self.diffs), max(self.diffs)
        lead = f"{self.a}'s advantage in {self.metric}"
        numbers = (f"{lead} {self.mean:+.4f}" if self.seeds == 1 else
                   f"{lead}: mean {self.mean:+.4f} (range {lo:+.4f}…{hi:+.4f}, seed spread {self.spread:.4f})")
        if self.seeds == 1:
            head = f"in this run (one seed): {self.ahead} ahead" if self.ahead else "in this run (one seed): no clear difference"
        elif self.ahead is None:
            head = f"no clear difference ({self.a} better in {self.wins}/{self.seeds} seeds)"
        else:
            wins = self.wins if self.ahead == self.a else self.seeds - self.wins
            head = f"{self.ahead} ahead in {wins}/{self.seeds} seeds"
        return f"{head}; {numbers}"

    def _repr_markdown_(self) -> str:
        return str(self)


def _scores(name: str, values: object) -> list[float]:
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):   # a NumPy array or a torch tensor
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers (one per seed), got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"{name}[{i}] must be a number, got {type(v).__name__} {v!r}")
        try:
            v = float(v)
        except OverflowError:
            raise ValueError(f"{name}[{i}] is too large for a float ({len(str(v))} digits)") from None
        if not math.isfinite(v):
            raise ValueError(f"{name}[{i}] is {v!r}: a diverged run has no score to compare; report it as diverged")
        out.append(v)
    if not out:
        raise ValueError(f"{name} must hold one value per seed, got an empty sequence")
    return out


def compare(
    a: Sequence[float],
    b: Sequence[float],
    labels: tuple[str, str] = ("A", "B"),
    metric: str = "score",
    higher_is_better: bool = True,
    min_effect: float = 0.0,
) -> Comparison:
    """Compare two kinds of run paired by seed, under the rule in this module's docstring.

    Args:
        a, b: one score per seed for each kind, in the same seed order (``a[i]`` and ``b[i]`` share seed ``i``).
        labels: the two kinds' names, as the verdict will say them.
        metric: what the scores are (``"test accuracy"``), for the verdict's text.
        higher_is_better: ``False`` for losses and gaps.
        min_effect: the smallest mean difference worth a claim (>= 0); required > 0 when there is one seed.

    Returns:
        A :class:`Comparison`; ``str()`` of it is the verdict in words ("BN ahead in 3/3 seeds; ...").

    Raises:
        TypeError: scores that are not numbers, labels that are not two strings.
        ValueError: different numbers of seeds, no seeds, a non-finite score, ``min_effect`` < 0, or one
            seed without ``min_effect``.
    """
    xs, ys = _scores("a", a), _scores("b", b)
    if len(xs) != len(ys):
        raise ValueError(f"a and b must hold one score per seed each, paired by seed: got {len(xs)} and {len(ys)}")
    if not isinstance(labels, tuple) or len(labels) != 2 or not all(isinstance(x, str) for x in labels):
        raise TypeError(f"labels must be a tuple of two strings, got {labels!r}")
    if not all(x.strip() for x in labels) or labels[0] == labels[1]:
        raise ValueError(f"labels must be two different non-blank names, got {labels!r}")
    if not isinstance(metric, str) or not metric.strip():
        raise TypeError(f"metric must be a non-blank str, got {metric!r}")
    if not isinstance(higher_is_better, bool):
        raise TypeError(f"higher_is_better must be True or False, got {type(higher_is_better).__name__} {higher_is_better!r}")
    if isinstance(min_effect, bool) or not isinstance(min_effect, Real):
        raise TypeError(f"min_effect must be a number >= 0, got {type(min_effect).__name__} {min_effect!r}")
    if not math.isfinite(float(min_effect)) or min_effect < 0:
        raise ValueError(f"min_effect must be a finite number >= 0, got {min_effect!r}")
    if len(xs) == 1 and min_effect == 0:
        raise ValueError("one seed has no seed spread to compare with: give min_effect, the smallest difference worth a claim")
    sign = 1.0 if higher_is_better else -1.0
    diffs = tuple(sign * (x - y) for x, y in zip(xs, ys))
    try:
        mean = statistics.fmean(diffs)
        spread = statistics.stdev(diffs) if len(diffs) > 1 else math.nan
    except (OverflowError, AttributeError):   # statistics' exact arithmetic on differences beyond float range
        mean = math.inf
    if not math.isfinite(mean) or not all(math.isfinite(d) for d in diffs):
        raise ValueError("the scores' differences overflow a float: compare scores of a sensible size")
    noise = max(min_effect, spread if len(diffs) > 1 else 0.0)
    ahead = None
    if all(d > 0 for d in diffs) and mean > noise:
        ahead = labels[0]
    elif all(d < 0 for d in diffs) and -mean > noise:
        ahead = labels[1]
    return Comparison(labels[0], labels[1], diffs, mean, spread, ahead, metric)
