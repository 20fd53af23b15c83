"""The notebooks as a learner runs them before answering anything (placeholders untouched).

The suite executes every notebook with the reference solutions (``BNCOURSE_EXERCISE_SOLUTIONS=1``), so
that every check runs. A learner runs them with the placeholders in place. These tests prove, for every
notebook, that this works too:

* every exercise cell (the task, the answer cell with its check, hint/solution, the scoreboard),
  executed after the notebook's setup cell in a kernel in learner mode, runs without an error output,
  and each check reports its exercise as not answered yet;
* no other cell of the notebook uses a learner's answer without going through the exercise's
  ``usable()`` (the reference solution, with a visible note, until the learner's answer passes), so
  that Run All cannot crash on an unanswered exercise further down either.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.ipynb"))
ANSWER_CELL = re.compile(r"^(\w+) = (q\d+)\.answer_or_solution\(\1\)$", re.MULTILINE)


def _code_cells(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def _is_exercise_cell(source: str) -> bool:
    return bool(ANSWER_CELL.search(source)
                or re.fullmatch(r"print\(q\d+\.task\)", source.strip())
                or re.fullmatch(r"(# q\d+\.(hint|solution)\(\)\s*)+", source.strip())
                or "exercises.summary(EXERCISES)" in source)


def _answers(path: Path) -> dict[str, str]:
    """The learner's answer names of a notebook, mapped to their exercise (``{"freeze_bn": "q1"}``)."""
    return {name: q for source in _code_cells(path) for name, q in ANSWER_CELL.findall(source)}


def test_every_notebook_has_at_least_three_exercises():
    for path in NOTEBOOKS:
        least = 2 if path.name.startswith(("07", "08")) else 3     # 07 and 08 end with two exercises each
        assert len(_answers(path)) >= least, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name[:2] for p in NOTEBOOKS])
def test_no_cell_uses_an_unchecked_answer(path):
    """Outside its own exercise cell, an answer is used only through ``qN.usable(answer)``."""
    answers = _answers(path)
    for index, source in enumerate(_code_cells(path)):
        if _is_exercise_cell(source):
            continue
        try:
            tree = ast.parse(source.replace("%matplotlib inline", ""))
        except SyntaxError:  # pragma: no cover - a notebook cell that is not Python
            continue
        allowed = {id(node.args[0]) for node in ast.walk(tree)
                   if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and node.func.attr == "usable" and node.args}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in answers and id(node) not in allowed:
                raise AssertionError(f"{path.name}, code cell {index}: {node.id!r} is the learner's answer to "
                                     f"{answers[node.id]}; use {answers[node.id]}.usable({node.id}) so that an "
                                     "unanswered exercise cannot break the cell")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name[:2] for p in NOTEBOOKS])
def test_exercise_cells_run_in_learner_mode(path, monkeypatch, tmp_path):
    cells = _code_cells(path)
    selected = [cells[0]] + [source for source in cells[1:] if _is_exercise_cell(source)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in selected])
    monkeypatch.setenv("BNCOURSE_EXERCISE_SOLUTIONS", "0")       # the kernel inherits the learner's setting
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [(cell.source.splitlines()[0], out.get("ename"), out.get("evalue"))
              for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{path.name} in learner mode: {errors}"
    checks = [cell for cell in nb.cells if ANSWER_CELL.search(cell.source)]
    assert checks, path.name
    for cell in checks:
        shown = "".join(str(out.get("data", {}).get("text/plain", "")) + out.get("text", "") for out in cell.outputs)
        assert "not answered" in shown.lower() or "skipped" in shown.lower(), (path.name, cell.source, shown)
    assert os.environ["BNCOURSE_EXERCISE_SOLUTIONS"] == "0"
