"""Test-suite set-up shared by tests/ and notebooks/ (nbval): the offline guard, the Gluon
notebook skipped where mxnet does not exist, and the browser test's screenshots listed at the end.

During the suite, the tests and every notebook kernel run with ``tests/offline/sitecustomize.py``
active: reaching any non-loopback address raises, is logged, and fails the test or notebook cell
during which it happened.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

_GUARD_DIR = Path(__file__).resolve().parent / "tests" / "offline"
_fd, _LOG = tempfile.mkstemp(prefix="bncourse-network-", suffix=".log")
os.close(_fd)
os.environ["BNCOURSE_NETWORK_LOG"] = _LOG
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_GUARD_DIR), os.environ.get("PYTHONPATH")]))
# The exercise notebook runs its reference solutions in place of the learner's placeholders, so
# that every check executes (bncourse.exercises reads this variable).
os.environ["BNCOURSE_EXERCISE_SOLUTIONS"] = "1"
# Matplotlib without a display in the test process; kernels use the inline backend anyway.
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(_GUARD_DIR))
import sitecustomize as _guard  # noqa: E402  (the file above, whatever sitecustomize ran before)

if getattr(_guard, "LOG_ENV", None) != "BNCOURSE_NETWORK_LOG":  # another sitecustomize was imported first
    import importlib.util

    _spec = importlib.util.spec_from_file_location("bncourse_offline_guard", _GUARD_DIR / "sitecustomize.py")
    _guard = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_guard)
_guard.install()


def _log_size() -> int:
    try:
        return os.path.getsize(_LOG)
    except OSError:
        return 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    before = _log_size()
    try:
        return (yield)
    finally:
        if _log_size() > before:
            with open(_LOG) as fh:
                fh.seek(before)
                attempts = fh.read()
            raise _guard.NetworkBlocked(f"{item.nodeid} tried to reach the network:\n{attempts}")


#: The notebooks that run MXNet Gluon: skipped, with the reason, where mxnet cannot be imported.
GLUON_NOTEBOOKS = ("05_*.ipynb",)


def _needs_mxnet(item: pytest.Item) -> bool:
    return type(item).__name__ == "IPyNbCell" and any(fnmatch.fnmatch(item.path.name, p) for p in GLUON_NOTEBOOKS)


def pytest_collection_modifyitems(config, items):
    """Give nbval more patience reading a finished cell's outputs than its default 5 s, which a
    loaded machine can exceed after a long training cell (the cell timeout itself is in pyproject).

    Where mxnet cannot be imported (macOS, Windows: it has no wheel there), the Gluon notebook's
    cells are marked skipped with the sentence that says why and where to run them, so the suite
    reports them as skipped (``-rs`` prints the sentence) instead of failing at their first cell."""
    gluon_cells = [item for item in items if _needs_mxnet(item)]
    if gluon_cells:
        from bncourse import _mxnet

        if not _mxnet.available():
            skip = pytest.mark.skip(reason=_mxnet.skip_reason())
            for item in gluon_cells:
                item.add_marker(skip)
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = 60


#: Where tests/test_browser.py keeps its screenshots.
BROWSER_ARTIFACTS = Path(__file__).resolve().parent / "test-artifacts" / "browser"
_SESSION_START = time.time()


def pytest_terminal_summary(terminalreporter):
    """Name the screenshots the browser test took during this run."""
    shots = sorted(p for p in BROWSER_ARTIFACTS.glob("*.png") if p.stat().st_mtime >= _SESSION_START)
    if shots:
        terminalreporter.section("browser test screenshots")
        for shot in shots:
            terminalreporter.write_line(str(shot))
