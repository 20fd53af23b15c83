"""Run every benchmark of the course in one process and print one table of ratios.

Usage: ``make bench`` (or ``.venv/bin/python benchmarks/run.py [name ...]``). Each
``benchmarks/bench_*.py`` module provides ``rows() -> list[Row]``; the ratios are measured in this
one run, so they compare like with like on whatever machine runs them.
"""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import format_rows  # noqa: E402


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    print(f"# bncourse benchmarks\n\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    rows = []
    for name in names:
        module = importlib.import_module(f"bench_{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += module.rows()
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
