"""Execute the course's notebooks the one way they are committed, and check that what is committed is fresh.

    python tools/notebooks.py 04 06        # or: make notebooks NB="04 06"   (no argument: every notebook)

Each notebook is executed top to bottom in a fresh kernel **in learner mode** (``BNCOURSE_EXERCISE_SOLUTIONS``
removed from the kernel's environment, placeholders untouched), in ``notebooks/``. Then:

* every code cell gets ``metadata["bncourse"]["source_sha256"]``, the hash of the source it ran, so that a
  cell edited after execution is caught by ``tests/test_freshness.py`` without running a kernel;
* the saved widget state keeps what a progress bar says but not its per-run timings (elapsed time,
  s/epoch, it/s): those differ on every run and belong in ``benchmarks/``;
* the file is replaced only if every cell ran without an error; otherwise it is left as it was and the
  error is printed.

The checks the freshness test applies (:func:`problems`) live here too, beside the code that makes them hold.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KEY = "bncourse"
#: What an exercise prints when it runs its reference solution (solution mode) or passes its check: a
#: committed notebook, executed in learner mode, shows neither.
SOLUTION_MODE = (re.compile(r"using the reference solution \(BNCOURSE_EXERCISE_SOLUTIONS"),
                 re.compile(r"✔ Exercise \d+ .*Correct"))
GETSOURCE = re.compile(r"^\s*print\(inspect\.getsource\(([\w.]+)\)", re.MULTILINE)
#: A tqdm bar's bracket: "[elapsed<remaining, rate, postfix]" or "[elapsed, rate, postfix]" (no total). The
#: elapsed and remaining times and the rate differ on every run; the postfix (train_loss=...) does not.
_SEP = r"[\s\u2007]*"
_TIME = r"(?:\d+:)?\d+:\d\d"
_BAR = re.compile(r"\[" + _TIME + r"(?:(?:&lt;|<)(?:" + _TIME + r"|\?))?," + _SEP + r"(?:\?|[\d.]+)[^\s\u2007,\]]*"
                  + r"(?:," + _SEP + r"(?P<postfix>[^\]]*))?\]")


def source_hash(source: str) -> str:
    """The sha256 of a cell's source text, as recorded in its metadata."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def notebook_paths(selection: list[str] | None = None) -> list[Path]:
    """The course's notebooks, or those whose file name starts with one of ``selection`` (``["04", "06"]``)."""
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return paths
    chosen = [p for p in paths if any(p.name.startswith(s) for s in selection)]
    unknown = [s for s in selection if not any(p.name.startswith(s) for p in paths)]
    if unknown:
        raise SystemExit(f"no notebook starts with {unknown}; the notebooks are {[p.name[:2] for p in paths]}")
    return chosen


def strip_timings(text: str) -> str:
    """``text`` of a progress bar without elapsed time, remaining time and rate; label, counts and postfix stay.

    Only a bracket that starts the way tqdm's does (``[00:37<00:00, 3.75s/epoch, ...]``) is touched.
    """
    def keep_postfix(match: re.Match) -> str:
        postfix = match.group("postfix")
        return f"[{postfix}]" if postfix else ""

    return _BAR.sub(keep_postfix, text)


def _strip_widget_timings(nb: nbformat.NotebookNode) -> None:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for model in state.values():
        value = model.get("state", {}).get("value")
        if isinstance(value, str) and model.get("model_name") == "HTMLModel":
            model["state"]["value"] = strip_timings(value)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            plain = output.get("data", {}).get("text/plain")
            if isinstance(plain, str) and "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                output["data"]["text/plain"] = strip_timings(plain)


def execute(path: Path, timeout: int = 1800) -> float:
    """Execute ``path`` in learner mode, record source hashes, strip timings, and replace the file; seconds taken."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop(KEY, None)
    env = {k: v for k, v in os.environ.items() if k != "BNCOURSE_EXERCISE_SOLUTIONS"}
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}},
                            store_widget_state=True)
    start = time.perf_counter()
    client.execute(env=env)   # raises CellExecutionError on the first failing cell; the file is not touched then
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.metadata[KEY] = {"source_sha256": source_hash(cell.source)}
    _strip_widget_timings(nb)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".ipynb")
    os.close(fd)
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return seconds


def _setup_namespace(nb: nbformat.NotebookNode) -> dict:
    """The names the notebook's setup cell imports (only its import statements are run)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    python = "\n".join(line for line in (code[0].source if code else "").splitlines() if not line.lstrip().startswith(("%", "!")))
    tree = ast.parse(python)
    imports = ast.Module(body=[s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))], type_ignores=[])
    namespace: dict = {}
    exec(compile(imports, "<setup cell imports>", "exec"), namespace)
    return namespace


def _stdout(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


def problems(path: Path, check_printed_source: bool = True) -> list[str]:
    """What makes the committed ``path`` stale: each a sentence naming the cell (empty when it is fresh).

    * a code cell without a recorded hash (not executed by this tool) or whose source differs from it;
    * output that only solution mode prints (the reference solution used, an exercise marked correct);
    * a cell that prints ``inspect.getsource(x)`` showing text other than ``x``'s current source.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    found = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    for n, cell in enumerate(code, 1):
        record = cell.metadata.get(KEY)
        recorded = record.get("source_sha256") if isinstance(record, dict) else None
        if recorded is None:
            found.append(f"{path.name} code cell {n}: no recorded source hash (execute it with make notebooks NB={path.name[:2]})")
        elif recorded != source_hash(cell.source):
            found.append(f"{path.name} code cell {n}: source edited after execution (re-execute with make notebooks NB={path.name[:2]})")
        text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))
        for pattern in SOLUTION_MODE:
            if pattern.search(text):
                found.append(f"{path.name} code cell {n}: solution-mode output ({pattern.pattern!r}): execute in learner mode")
    if check_printed_source and any(GETSOURCE.search(c.source) for c in code):
        try:
            namespace = _setup_namespace(nb)
        except Exception as error:  # the setup cell's imports must run for the names to be resolved
            return found + [f"{path.name}: the setup cell's imports fail ({type(error).__name__}: {error}), "
                            "so printed source cannot be checked"]
        for n, cell in enumerate(code, 1):
            printed = _stdout(cell)
            for name in GETSOURCE.findall(cell.source):
                try:
                    current = inspect.getsource(eval(name, namespace))   # a dotted name from the setup cell's imports
                except Exception as error:
                    found.append(f"{path.name} code cell {n}: cannot read the source of {name} "
                                 f"({type(error).__name__}: {error})")
                    continue
                if current not in printed:
                    found.append(f"{path.name} code cell {n}: printed source of {name} differs from the current source")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="file-name prefixes, e.g. 04 06 (default: every notebook)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    failed = []
    for path in notebook_paths(args.notebooks):
        print(f"executing {path.name} ...", flush=True)
        try:
            seconds = execute(path, args.timeout)
        except Exception as error:  # a failing cell: report it, leave the committed file as it was
            print(f"{path.name} FAILED, file left unchanged:\n{error}", file=sys.stderr)
            failed.append(path.name)
            continue
        left = problems(path)
        print(f"{path.name}: executed in {seconds:.0f} s" + (f"; still stale: {left}" if left else ""), flush=True)
        if left:
            failed.append(path.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
