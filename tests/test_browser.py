"""The course as a learner meets it: JupyterLab in a browser.

JupyterLab is started from this environment with the course's configuration (the one ``make lab``
uses, ``jupyter/jupyter_lab_config.py``) on a free loopback port, with a token, and headless
Chromium (driven by Playwright) opens the notebooks and runs their cells:

* notebook 02 runs top to bottom with no error (read back from the file JupyterLab saves);
* notebook 01's interactive BN forward pass renders, and moving a slider redraws its figure;
* an exercise of notebook 06 shows its verdict, "Not answered yet" while the placeholder is there;
* JupyterLab opens without asking about Jupyter news.

Lab runs on copies of the notebooks in a temporary folder: the committed notebooks are never
touched. Screenshots are kept in ``test-artifacts/browser/`` (the summary of the run lists them).

Chromium is Debian's package (``/usr/bin/chromium``; ``make test`` installs it with apt-get where
it can) or the executable named by ``BNCOURSE_CHROMIUM``; where there is none the tests are skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LAB_CONFIG = ROOT / "jupyter" / "jupyter_lab_config.py"
ARTIFACTS = ROOT / "test-artifacts" / "browser"

NB_RUN_ALL = "02_batchnorm_from_scratch.ipynb"
NB_WIDGET = "01_intuition.ipynb"
NB_EXERCISES = "06_controversy_and_exercises.ipynb"

#: Seconds allowed for JupyterLab to answer, for a kernel to start or a cell to run, for notebook 02 to run
#: (generous: a busy machine is slow; they only bound how long a failure takes to be reported).
SERVER_TIMEOUT = 180
KERNEL_TIMEOUT = 300
RUN_ALL_TIMEOUT = 900


def chromium_path() -> str | None:
    """The Chromium the tests drive: ``BNCOURSE_CHROMIUM``, else Debian's ``/usr/bin/chromium``."""
    path = os.environ.get("BNCOURSE_CHROMIUM") or "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else None


pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="the browser test needs Chromium: /usr/bin/chromium is missing (make test installs it with apt-get "
    "where it can: as root or with sudo; elsewhere install Chromium or set BNCOURSE_CHROMIUM to a Chromium "
    "or Chrome executable)",
)


_START = time.monotonic()


def step(message: str) -> None:
    """Print what the test is doing, with the seconds since the module started (shown on failure, or with -s)."""
    print(f"[browser test {time.monotonic() - _START:6.1f} s] {message}", flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _code_cell_index(notebook: Path, needle: str) -> int:
    """Index of the first code cell of ``notebook`` whose source contains ``needle``."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and needle in "".join(cell["source"]):
            return i
    raise AssertionError(f"{notebook.name} has no code cell containing {needle!r}")


class Lab:
    """A JupyterLab server on copies of the course's notebooks, stopped by :meth:`stop`."""

    def __init__(self, workdir: Path):
        self.root = workdir / "course"
        shutil.copytree(NOTEBOOKS, self.root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            # The notebooks read the course's data, wherever lab's folder is.
            BNCOURSE_DATA_DIR=str(ROOT / "data"),
            # What a learner sees: the placeholders, not the reference solutions the suite fills in.
            BNCOURSE_EXERCISE_SOLUTIONS="0",
            # Only the course's configuration: none of this machine's ~/.jupyter, nothing written there.
            JUPYTER_CONFIG_DIR=str(workdir / "config"),
            JUPYTER_RUNTIME_DIR=str(workdir / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(workdir / "user-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(workdir / "workspaces"),
        )
        env.pop("MPLBACKEND", None)  # the kernels draw inline, as in make lab
        command = [
            sys.executable, "-m", "jupyterlab",
            f"--config={LAB_CONFIG}",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands, read the notebook model
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")
        self.log_path = workdir / "jupyterlab.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_until_up()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with code {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer within {SERVER_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    step("starting JupyterLab")
    server = Lab(tmp_path_factory.mktemp("lab"))
    step(f"JupyterLab answers at {server.url}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page; on the way out, a screenshot of it in test-artifacts/browser/."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    # Stop the kernels the page started, freeing their CPU for the next test.
    page.evaluate("() => window.jupyterapp && window.jupyterapp.serviceManager.sessions.shutdownAll()")
    context.close()


# ---------------------------------------------------------------------------------------------
# What a learner does, in JupyterLab's own commands (window.jupyterapp).

def open_notebook(page, lab: Lab, name: str) -> None:
    """Open notebooks/<name> in JupyterLab and wait until its kernel has started and is idle."""
    # A workspace of its own (no tabs restored from an earlier page), as when a learner first opens lab.
    workspace = name.split("_")[0] + "-" + secrets.token_hex(4)
    step(f"opening {name}")
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/notebooks/{name}?token={lab.token}")
    page.wait_for_function(
        """name => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return w && w.context && w.context.path.endsWith(name) && w.content && w.content.model;
        }""",
        arg=name,
        timeout=KERNEL_TIMEOUT * 1000,
    )
    page.wait_for_function(
        """() => {
            const s = window.jupyterapp.shell.currentWidget.sessionContext;
            return s.session && s.session.kernel && s.session.kernel.status === "idle";
        }""",
        timeout=KERNEL_TIMEOUT * 1000,
    )
    step(f"{name}: kernel idle")
    # The copy holds the committed outputs: clear them, so that everything checked below is this run's.
    execute(page, "notebook:clear-all-cell-outputs", 30)
    counts = page.evaluate(
        "() => Array.from(window.jupyterapp.shell.currentWidget.content.model.cells).map(c => c.executionCount ?? null)"
    )
    assert all(count is None for count in counts), f"outputs not cleared: execution counts {counts}"


def execute(page, command: str, timeout: float) -> None:
    """Run one of JupyterLab's commands (what a menu item or shortcut does) and wait until it has finished."""
    page.evaluate(
        """([command, ms]) => Promise.race([
            window.jupyterapp.commands.execute(command),
            new Promise((_, reject) => setTimeout(() => reject(new Error(`${command} took longer than ${ms / 1000} s`)), ms)),
        ])""",
        [command, timeout * 1000],
    )


def kernel_display_name(page) -> str:
    return page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayName")


def run_cells(page, indices: list[int], timeout: float = KERNEL_TIMEOUT) -> None:
    """Select each cell in turn and run it (Shift+Enter without moving on: notebook:run-cell)."""
    for index in indices:
        step(f"running cell {index}")
        page.evaluate(
            """async index => {
                const notebook = window.jupyterapp.shell.currentWidget.content;
                notebook.mode = "command";
                notebook.activeCellIndex = index;
                notebook.deselectAll();
                await notebook.scrollToItem(index);
            }""",
            index,
        )
        execute(page, "notebook:run-cell", timeout)
        wait_until_executed(page, [index], timeout)
        step(f"cell {index} done")


def wait_until_executed(page, indices: list[int] | None, timeout: float) -> None:
    """Wait until the kernel is idle and the given code cells (all when None) have an execution count."""
    page.wait_for_function(
        """indices => {
            const panel = window.jupyterapp.shell.currentWidget;
            const cells = Array.from(panel.content.model.cells);
            const wanted = indices === null ? cells.map((_, i) => i) : indices;
            const done = wanted.every(i => cells[i].type !== "code" || cells[i].executionCount !== null);
            return done && panel.sessionContext.session.kernel.status === "idle";
        }""",
        arg=indices,
        timeout=timeout * 1000,
        polling=500,
    )


def save(page, lab: Lab, name: str) -> dict:
    """Save the notebook (File > Save) and read the saved .ipynb back from disk."""
    execute(page, "docmanager:save", 30)
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
    return json.loads((lab.root / "notebooks" / name).read_text(encoding="utf-8"))


def cell_selector(page, index: int) -> str:
    """CSS selector of the cell at ``index`` of the notebook in front."""
    panel = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return f"#{panel} .jp-Notebook .jp-Cell[data-windowed-list-index='{index}']"


def cell_output(page, index: int):
    """The rendered output area of the cell at ``index`` (a Playwright locator)."""
    return page.locator(f"{cell_selector(page, index)} .jp-OutputArea")





def no_news_question(page) -> None:
    """JupyterLab neither asks about Jupyter news nor fetches it: the course's overrides.json is in effect."""
    assert page.get_by_text("official Jupyter news").count() == 0, "JupyterLab asks about Jupyter news"
    settings = page.evaluate(
        """async () => {
            const s = await window.jupyterapp.serviceManager.settings.fetch("@jupyterlab/apputils-extension:notification");
            const defaults = s.schema.properties;
            return {fetchNews: defaults.fetchNews.default, checkForUpdates: defaults.checkForUpdates.default};
        }"""
    )
    assert settings == {"fetchNews": "false", "checkForUpdates": False}, f"notification settings: {settings}"


# ---------------------------------------------------------------------------------------------

def test_notebook_02_runs_in_jupyterlab_without_errors(lab, page):
    open_notebook(page, lab, NB_RUN_ALL)
    assert "Python 3" in kernel_display_name(page)
    no_news_question(page)
    step("run all cells")
    execute(page, "notebook:run-all-cells", RUN_ALL_TIMEOUT)
    wait_until_executed(page, None, RUN_ALL_TIMEOUT)
    step("all cells done")
    saved = save(page, lab, NB_RUN_ALL)
    code = [c for c in saved["cells"] if c["cell_type"] == "code"]
    errors = [
        f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
        for i, c in enumerate(saved["cells"]) for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert not errors, "cells of notebook 02 raised in JupyterLab:\n" + "\n".join(errors)
    counts = [c["execution_count"] for c in code]
    assert None not in counts, f"not every code cell of notebook 02 ran: execution counts {counts}"
    assert counts == sorted(counts), f"the cells did not run top to bottom: {counts}"
    # The page shows the setup cell's output, and no traceback anywhere on it.
    expect_text(cell_output(page, _code_cell_index(NOTEBOOKS / NB_RUN_ALL, "config.configure")), "seed=0")
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors}"
    assert not (NOTEBOOKS / NB_RUN_ALL).samefile(lab.root / "notebooks" / NB_RUN_ALL)


def test_notebook_01_widget_renders_and_responds(lab, page):
    open_notebook(page, lab, NB_WIDGET)
    no_news_question(page)
    setup = _code_cell_index(NOTEBOOKS / NB_WIDGET, "config.configure")
    widget = _code_cell_index(NOTEBOOKS / NB_WIDGET, "widgets.interact(")
    run_cells(page, [setup, widget])
    output = cell_output(page, widget)
    sliders = output.locator(".widget-slider")
    sliders.first.wait_for(timeout=30_000)
    assert sliders.count() == 3, f"expected the scale, shift and batch-size sliders, found {sliders.count()}"
    shift = output.locator(".widget-slider", has_text="shift")
    figure = output.locator(".widget-output img")
    # The widget's own figure is drawn by a callback after the sliders appear; only its src is read, so it
    # must be in the page, not on screen (JupyterLab may not lay out a cell scrolled out of view).
    sliders.first.scroll_into_view_if_needed()
    figure.first.wait_for(state="attached", timeout=90_000)
    before = figure.last.get_attribute("src")
    readout = shift.locator(".widget-readout")
    assert readout.inner_text().strip() == "5.00"
    # Move the shift slider two steps to the right with the keyboard, as a learner can.
    handle = shift.locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    expect_text(readout, "6.00")
    page.wait_for_function(
        """([selector, before]) => {
            const cell = document.querySelector(selector);
            const imgs = cell ? cell.querySelectorAll(".widget-output img") : [];
            return imgs.length > 0 && imgs[imgs.length - 1].getAttribute("src") !== before;
        }""",
        arg=[cell_selector(page, widget), before],
        timeout=60_000,
    )
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors}"


def test_notebook_06_exercise_shows_its_verdict(lab, page):
    open_notebook(page, lab, NB_EXERCISES)
    no_news_question(page)
    setup = _code_cell_index(NOTEBOOKS / NB_EXERCISES, "config.configure")
    exercise = _code_cell_index(NOTEBOOKS / NB_EXERCISES, "q1.check(")
    run_cells(page, [setup, exercise])
    output = cell_output(page, exercise)
    expect_text(output, "Not answered yet")
    assert "Traceback" not in output.inner_text()
    assert not page.js_errors, f"JavaScript errors on the page: {page.js_errors}"


def expect_text(locator, text: str, timeout: float = 30) -> None:
    """Wait until ``locator`` shows ``text``."""
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text, timeout=timeout * 1000)
