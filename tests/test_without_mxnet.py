"""The course on a machine without mxnet (macOS, Windows: mxnet 1.9.1 has no wheel there).

Each test runs Python in a subprocess in which ``import mxnet`` fails as it does where mxnet is not
installed (a stand-in ``mxnet`` package first on ``PYTHONPATH`` raises ``ModuleNotFoundError``):
``import bncourse`` and every module but :mod:`bncourse.gluon` work, and the Gluon tests, the Gluon
exercise and notebook 05 are reported as skipped with the sentence that says why.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bncourse import _mxnet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_mxnet_env(tmp_path):
    """The environment for a subprocess in which mxnet cannot be imported."""
    shim = tmp_path / "no_mxnet" / "mxnet"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mxnet'\", name='mxnet')  # as where it is not installed\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim.parent), str(ROOT), env.get("PYTHONPATH")]))
    env.pop("OMP_NUM_THREADS", None)
    return env


def _run(args, env, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


IMPORT_EVERYTHING = """
import json, pkgutil, importlib, numpy
import bncourse
from bncourse import _mxnet
names = sorted(m.name for m in pkgutil.iter_modules(bncourse.__path__) if m.name != "gluon")
for name in names:
    importlib.import_module("bncourse." + name)
alias_before = "bool" in vars(numpy)
try:
    import bncourse.gluon
    gluon_error = None
except ImportError as err:
    gluon_error = [type(err).__name__, str(err)]
print(json.dumps({"modules": names, "alias_before_gluon": alias_before, "gluon_error": gluon_error,
                  "available": _mxnet.available(), "reason": _mxnet.skip_reason()}))
"""


def test_every_module_but_gluon_imports_and_gluon_says_why_it_cannot(no_mxnet_env):
    out = _run(["-c", IMPORT_EVERYTHING], no_mxnet_env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"config", "data", "models", "train", "evaluate", "plots", "layers", "exercises"} <= set(got["modules"])
    assert got["alias_before_gluon"] is False  # numpy.bool is restored only on the way to importing mxnet
    assert got["gluon_error"] == ["MxnetUnavailableError", _mxnet.MISSING]
    assert got["available"] is False and got["reason"] == _mxnet.MISSING


def test_gluon_tests_exercise_and_notebook_05_are_reported_skipped_with_the_reason(no_mxnet_env, tmp_path):
    """The same pytest run as ``make test`` on the Gluon parts: skipped, with the sentence, none failed."""
    report = tmp_path / "report.xml"
    notebook = next((ROOT / "notebooks").glob("05_*.ipynb"))
    out = _run(
        ["-m", "pytest", "-q", "-rs", f"--junitxml={report}",
         "tests/test_gluon.py", "tests/test_config.py::test_threads_restored_after_importing_mxnet",
         "tests/test_exercises.py",
         str(notebook.relative_to(ROOT))],
        no_mxnet_env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    cases = ET.parse(report).getroot().iter("testcase")
    outcome = {}
    for case in cases:
        skipped = case.find("skipped")
        # a test's skip has the reason as its message; a module skipped at collection, in its text
        reason = None if skipped is None else f"{skipped.get('message', '')} {skipped.text or ''}"
        outcome[(case.get("classname"), case.get("name"))] = reason
    skipped = {k: v for k, v in outcome.items() if v is not None}
    passed = [k for k, v in outcome.items() if v is None]
    # Every skip gives the sentence; every exercise test passes but those of exercise 10, skipped.
    assert skipped and all(_mxnet.MISSING in message for message in skipped.values()), skipped
    exercise_skips = sorted(name for cls, name in skipped if cls == "tests.test_exercises")
    assert exercise_skips == sorted(f"{test}[FreezeGammaBetaGluon]" for test in (
        "test_every_check_accepts_the_reference_solution", "test_placeholder_answers_are_reported_not_answered",
        "test_non_functions_and_crashing_functions_get_feedback")) + ["test_q10_rejects_freezing_everything_only_gamma_and_lr_mult"], skipped
    assert any(cls == "tests.test_exercises" for cls, _ in passed), passed
    notebook_cells = [k for k in skipped if "05_" in k[0] or "05_" in k[1]]
    assert len(notebook_cells) >= 10, f"notebook 05's cells should all be skipped, got {notebook_cells}"
    assert ("", "tests.test_gluon") in skipped  # the module, skipped as a whole at collection
    assert _mxnet.MISSING in out.stdout  # `-rs`: the summary prints the sentence
