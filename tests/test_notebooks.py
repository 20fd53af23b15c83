"""Static checks of the committed notebooks (nbval executes them separately).

Learners read the notebooks on the web with their outputs, so each must be committed executed top to
bottom, without errors, and open the course's way: a title, what you will learn, one setup cell.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_the_course_has_its_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no course notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_executed_in_order_without_errors(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert None not in counts, f"{path.name}: {counts.count(None)} code cells were not executed"
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: cells executed out of order: rerun top to bottom"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs: {[e.get('ename') for e in errors]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opens_the_course_way_and_checks_its_claims(path):
    cells = _cells(path)
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and first.startswith("# "), f"{path.name}: first cell must be a title"
    assert re.search(r"what you will learn", first, re.I), f"{path.name}: first cell must say what you will learn"
    code = [c for c in cells if c["cell_type"] == "code"]
    setup = "".join(code[0]["source"])
    assert "configure(" in setup, f"{path.name}: the first code cell must be the setup cell (bncourse.config.configure)"
    later_imports = [i for i, c in enumerate(code[1:], 2) if re.search(r"^\s*(import|from)\s+\w", "".join(c["source"]), re.M)]
    assert not later_imports, f"{path.name}: imports belong in the setup cell, found in code cells {later_imports}"
    asserts = sum(bool(re.search(r"^\s*assert\b", "".join(c["source"]), re.M)) for c in code)
    assert asserts >= 3, f"{path.name}: claims must be backed by assert cells (found {asserts})"
