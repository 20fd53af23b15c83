"""requirements.txt installs on every platform and Python the course supports.

uv (pinned in requirements-dev.txt) resolves the pins, wheels only, as pip would on each target
machine, applying the environment markers: mxnet only on Linux. This reads the package index, so it
runs in CI (``CI=true``) or when asked (``BNCOURSE_PLATFORMS=1``, as ``make platforms`` does); the rest
of the suite stays offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: uv's name of each platform the README's table promises, and whether mxnet installs there.
PLATFORMS = {
    "x86_64-unknown-linux-gnu": True,
    "aarch64-unknown-linux-gnu": True,
    "aarch64-apple-darwin": False,
    "x86_64-pc-windows-msvc": False,
}
PYTHONS = ("3.11", "3.12")
#: torch 2.14.1's macOS wheel is built for macOS 14 (Sonoma) and newer.
MACOS_TARGET = "14.0"

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CI", "").lower() == "true" or os.environ.get("BNCOURSE_PLATFORMS") == "1"),
    reason="resolving for every platform reads the package index: runs in CI or with BNCOURSE_PLATFORMS=1",
)


def _uv() -> str:
    """The uv of this environment (requirements-dev.txt), else one on PATH."""
    here = Path(sys.executable).with_name("uv.exe" if os.name == "nt" else "uv")
    found = str(here) if here.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed: pip install -r requirements-dev.txt")
    return found


def _resolve(platform: str, python: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MACOSX_DEPLOYMENT_TARGET=MACOS_TARGET)
    cmd = [_uv(), "pip", "compile", "--quiet", "--no-header", "--no-python-downloads", "--only-binary", ":all:",
           "--python-platform", platform, "--python-version", python, str(ROOT / "requirements.txt")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", text, re.M))


def _wanted() -> dict[str, str]:
    """The direct pins of requirements.txt (with markers or not)."""
    return _pins((ROOT / "requirements.txt").read_text())


def test_requirements_resolve_for_every_platform_and_python():
    targets = [(p, v) for p in PLATFORMS for v in PYTHONS]
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = dict(zip(targets, pool.map(lambda t: _resolve(*t), targets)))
    failed = {t: r.stderr.strip() for t, r in results.items() if r.returncode != 0}
    assert not failed, "requirements.txt no longer resolves for:\n" + "\n\n".join(
        f"{p}, Python {v}:\n{err}" for (p, v), err in failed.items())
    wanted = _wanted()
    for (platform, python), result in results.items():
        pins = _pins(result.stdout)
        mxnet = PLATFORMS[platform]
        for name, version in wanted.items():
            if name in ("mxnet", "setuptools") and not mxnet:
                continue  # not asked for there (setuptools may still come in for torch)
            assert pins.get(name) == version, f"{platform}, Python {python}: {name} resolves to {pins.get(name)}, not {version}"
        assert ("mxnet" in pins) == mxnet, f"{platform}, Python {python}: mxnet {'missing' if mxnet else 'installed'}"
