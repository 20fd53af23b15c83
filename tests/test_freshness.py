"""The committed notebooks are exactly what their execution left (no kernel needed).

``make notebooks NB=04`` (tools/notebooks.py) executes a notebook in learner mode and records in each code
cell the hash of the source it ran. This test fails when a committed cell's source differs from that hash
(edited after execution), when a cell was never executed that way, when a notebook shows output that only
solution mode prints, or when a cell printing ``inspect.getsource(x)`` shows text other than ``x``'s
current source. It also proves on altered copies that each of these is caught.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "notebooks.py"
_spec = importlib.util.spec_from_file_location("bncourse_notebook_tool", _TOOL)
tool = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tool
_spec.loader.exec_module(tool)

NOTEBOOKS = tool.notebook_paths()


def _needs_mxnet(path: Path) -> bool:
    return path.name.startswith("05") and importlib.util.find_spec("mxnet") is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_committed_notebook_is_fresh(path):
    found = tool.problems(path, check_printed_source=not _needs_mxnet(path))
    assert not found, "\n".join(found)


def _write(nb, tmp_path, name="02_copy.ipynb"):
    out = tmp_path / name
    nbformat.write(nb, out)
    return out


@pytest.fixture
def fresh_copy():
    """Notebook 02 as committed (it prints getsource of the scratch layer), its hashes recorded as by the tool."""
    path = next(p for p in NOTEBOOKS if p.name.startswith("02"))
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.metadata["bncourse"] = {"source_sha256": tool.source_hash(cell.source)}
    return nb


def test_a_cell_edited_after_execution_is_caught(fresh_copy, tmp_path):
    assert tool.problems(_write(fresh_copy, tmp_path)) == []
    cell = next(c for c in fresh_copy.cells if c.cell_type == "code" and "assert" in c.source)
    cell.source = cell.source.replace("assert", "assert True or", 1)
    found = tool.problems(_write(fresh_copy, tmp_path))
    assert len(found) == 1 and "edited after execution" in found[0]


def test_a_cell_never_executed_by_the_tool_is_caught(fresh_copy, tmp_path):
    del next(c for c in fresh_copy.cells if c.cell_type == "code").metadata["bncourse"]
    found = tool.problems(_write(fresh_copy, tmp_path))
    assert len(found) == 1 and "no recorded source hash" in found[0]


@pytest.mark.parametrize("text", [
    "Exercise 1 · Batch-norm forward pass: using the reference solution (BNCOURSE_EXERCISE_SOLUTIONS=1).\n",
    "✔ Exercise 2 · Running statistics — Correct: every case matches.\n",
])
def test_solution_mode_output_is_caught(fresh_copy, tmp_path, text):
    cell = [c for c in fresh_copy.cells if c.cell_type == "code"][-1]
    cell.outputs = list(cell.outputs) + [nbformat.v4.new_output("stream", name="stdout", text=text)]
    found = tool.problems(_write(fresh_copy, tmp_path))
    assert len(found) == 1 and "solution-mode output" in found[0]


def test_a_cell_printing_two_sources_or_more_is_fresh_when_each_is_current(tmp_path):
    source = "print('the math:')\nprint(inspect.getsource(report.compare))\nprint(inspect.getsource(report.Claims.add))"
    import inspect
    from bncourse import report
    out = "the math:\n" + inspect.getsource(report.compare) + "\n" + inspect.getsource(report.Claims.add) + "\n"
    cells = [nbformat.v4.new_code_cell("import inspect\nfrom bncourse import report"),
             nbformat.v4.new_code_cell(source, outputs=[nbformat.v4.new_output("stream", name="stdout", text=out)])]
    nb = nbformat.v4.new_notebook(cells=cells)
    for cell in nb.cells:
        cell.metadata["bncourse"] = {"source_sha256": tool.source_hash(cell.source)}
    assert tool.problems(_write(nb, tmp_path)) == []
    cells[1].outputs[0]["text"] = out.replace("def add", "def  add")
    found = tool.problems(_write(nb, tmp_path))
    assert len(found) == 1 and "report.Claims.add differs" in found[0]


def test_a_name_that_cannot_be_resolved_is_a_problem_not_a_crash(tmp_path):
    cells = [nbformat.v4.new_code_cell("import inspect"),
             nbformat.v4.new_code_cell("print(inspect.getsource(helper))")]
    nb = nbformat.v4.new_notebook(cells=cells)
    for cell in nb.cells:
        cell.metadata["bncourse"] = "not a record"
    found = tool.problems(str(_write(nb, tmp_path)))
    assert sum("no recorded source hash" in f for f in found) == 2
    assert any("cannot read the source of helper (NameError" in f for f in found)


def test_printed_source_that_is_no_longer_current_is_caught(fresh_copy, tmp_path):
    cell = next(c for c in fresh_copy.cells if c.cell_type == "code" and tool.GETSOURCE.search(c.source))
    out = next(o for o in cell.outputs if o.get("name") == "stdout")
    out["text"] = out["text"].replace("def ", "def  ", 1)
    found = tool.problems(_write(fresh_copy, tmp_path))
    assert len(found) == 1 and "differs from the current source" in found[0]


@pytest.mark.parametrize("text, expected", [
    ("\u200710/10\u2007[00:37&lt;00:00,\u2007\u20073.75s/epoch,\u2007train_loss=0.2570,\u2007val_acc=0.90]",
     "\u200710/10\u2007[train_loss=0.2570,\u2007val_acc=0.90]"),
    (" 3/3 [00:10<00:00,  3.41s/epoch]", " 3/3 "),
    (" 0/5 [00:00<?, ?it/s]", " 0/5 "),
    ("100%|##| 5/5 [01:02:03<00:00, 12.4it/s]", "100%|##| 5/5 "),
    ("7it [00:37,  5.29s/it, train_loss=0.25]", "7it [train_loss=0.25]"),
    ("PyTorch scratch: 100%", "PyTorch scratch: 100%"),
    # labels and postfixes that look like rates are left alone
    ("BN 3/s: 100%", "BN 3/s: 100%"),
    ("runs [8, 4] bs=32/seed", "runs [8, 4] bs=32/seed"),
    (" 2/2 [00:01<00:00,  1.2s/run, lr=1e-3/s, note=10s/epoch budget]", " 2/2 [lr=1e-3/s, note=10s/epoch budget]"),
])
def test_progress_bars_keep_no_timings(text, expected):
    assert tool.strip_timings(text) == expected
