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
"""

from __future__ import annotations

__all__ = ["Claim", "Claims"]

from dataclasses import dataclass


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
    return " ".join(text.split()).replace("|", "\\|")


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
            ValueError: ``claim`` or ``computed`` is empty.
        """
        for name, value in (("claim", claim), ("computed", computed)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {type(value).__name__}")
            if not value.strip():
                raise ValueError(f"{name} must not be empty")
        if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int)):
            raise TypeError(f"cell must be an int or None, got {type(cell).__name__}")
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

