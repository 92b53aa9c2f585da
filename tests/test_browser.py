"""Every notebook, run in a real browser: JupyterLab + headless Chromium (Debian's), driven by Playwright.

For each notebook in ``notebooks/`` (found automatically) and for a toy task notebook built from
``tests/toy_task.py``, the test opens a SMOKE copy of the notebook in JupyterLab, runs all cells, and checks that no
cell failed. In a task notebook it then uses the form like a person would: moves the first slider one step with the
keyboard, picks another option in the first dropdown, clicks Generate, and checks that progress bars were shown and
filled, that a ``<video>`` appears and plays, and that the result's JSON sidecar holds the values that were picked.

A screenshot of the finished notebook (and the executed notebook) goes to the test's ``tmp_path`` and to
``outputs/browser/``. One JupyterLab server and one browser serve the whole session.

Run alone: ``make browser-test`` or ``.venv/bin/python -m pytest -m browser tests/test_browser.py``.
Chromium comes from ``apt-get install chromium`` (``scripts/install.sh`` does it); without it these tests skip,
except under CI (``$CI`` or ``$HV_REQUIRE_BROWSER`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from browser import notebooks
from browser.lab import CHROMIUM_ARGS, LabServer, find_chromium

try:
    from browser import page as jl
except ImportError:  # no playwright: the `chromium` fixture skips (or fails under CI) with the reason
    jl = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "outputs" / "browser"
FAKE_TOKEN = "hf_browserTestToken0123456789"
VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen
TOY = "toy_task"
CASES = [TOY, *(nb.stem for nb in notebooks.discover())]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("HV_REQUIRE_BROWSER"):
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        _unavailable("no Chromium found (install Debian's browser: `apt-get install chromium`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the `playwright` Python package is missing (`pip install -r requirements-dev.txt`)")
    return path


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory) -> Path:
    """A folder that mirrors the repository, with SMOKE copies of the notebooks in its ``notebooks/``."""
    base = tmp_path_factory.mktemp("lab")
    folder = notebooks.mirror_repository(base / "root")
    toy = notebooks.write_toy_notebook(base / "toy")
    shutil.copy(toy.parent / notebooks.TOY_TASK.name, folder / notebooks.TOY_TASK.name)
    notebooks.parameterized_copy(toy, folder / f"{TOY}.ipynb", SMOKE=True)
    for source in notebooks.discover():
        notebooks.parameterized_copy(source, folder / source.name, SMOKE=True)
    failing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('meant to fail')")],
                                       metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}})
    nbformat.write(failing, folder / "harness_failing_cell.ipynb")
    return base


@pytest.fixture(scope="session")
def lab(chromium, lab_root):
    env = {
        "HV_ROOT": str(lab_root / "drive"), "HV_SMOKE_ROOT": str(lab_root / "smoke"), "HF_TOKEN": FAKE_TOKEN,
        "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "MPLBACKEND": "Agg",
    }
    server = LabServer(root=lab_root / "root", workdir=lab_root / "jupyter", env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield chrome
        chrome.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
    lab.shutdown_kernels()


def _keep(source: Path, tmp_path: Path) -> Path:
    """Copy an artefact to the test's folder and to outputs/browser/ (where people look at them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, SCREENSHOTS / source.name)
    if source.parent != tmp_path:
        shutil.copy(source, tmp_path / source.name)
    return tmp_path / source.name


def _same_value(shown: str, stored) -> bool:
    if isinstance(stored, bool) or not isinstance(stored, (int, float)):
        return str(stored) == shown
    return math.isclose(float(shown), float(stored), rel_tol=5e-3, abs_tol=1e-6)


def _check_upload_and_error_line(form, lab_root: Path, tmp_path: Path) -> None:
    """Toy task only: a real upload through the browser's file chooser lands in <Drive root>/inputs, and a wrong
    setting is reported in the output area as one readable line (no traceback), with the form still usable."""
    upload = tmp_path / "reference.png"
    upload.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    stored = Path(form.upload(upload))
    assert stored.parent == lab_root / "drive" / "inputs", stored
    assert stored.read_bytes() == upload.read_bytes()

    form.fill("prompt", "fail")
    error = form.generate_expecting_error()
    assert error.inner_text().strip() == "⚠ the prompt says fail: write another prompt"
    box = error.bounding_box()
    line_height = error.evaluate("el => parseFloat(getComputedStyle(el).lineHeight) || 20")
    assert box and box["height"] < 1.6 * line_height, f"the error line wraps or grew: {box}"
    assert not form.output.locator("details, pre").count(), "an input error must not show a traceback"
    form.root.screenshot(path=str(tmp_path / "toy_task_error.png"))
    _keep(tmp_path / "toy_task_error.png", tmp_path)
    form.fill("prompt", "a square")


class _Clock:
    """Seconds per phase, printed at the end of a test (``-s`` shows them)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.laps)
        return f"{time.perf_counter() - self.start:.1f}s in the browser ({parts})"


@pytest.mark.timeout(420)
@pytest.mark.parametrize("name", CASES)
def test_notebook_in_browser(name, page, lab, lab_root, tmp_path):
    clock = _Clock()
    notebook = f"{name}.ipynb"
    jl.open_notebook(page, lab.notebook_url(f"notebooks/{notebook}"))
    clock.lap("open")
    finished = jl.run_all_cells(page)
    clock.lap("run all")
    report = jl.cell_report(page)
    try:
        assert not report.errors, f"{notebook}: cells failed in the browser: {report.errors}"
        assert finished, f"{notebook}: Run All did not finish"
        assert report.unexecuted == 0, f"{notebook}: {report.unexecuted} code cell(s) did not run"
        assert not report.render_errors, f"{notebook}: outputs the page could not show: {report.render_errors}"

        if name == TOY or notebooks.is_task_notebook(Path(notebook)):
            form = jl.TaskFormView(page)
            form.wait_until_shown()
            if name == TOY:
                _check_upload_and_error_line(form, lab_root, tmp_path)
                clock.lap("upload, error")
            slider, slider_value = form.change_first_slider()
            dropdown, dropdown_value = form.change_first_dropdown()
            clock.lap("form")
            sidecar = jl.read_sidecar(form.generate())
            clock.lap("generate")

            # in SMOKE mode tasks shrink sizes and steps; what the form asked for is kept as requested_params
            params = sidecar.get("requested_params") or sidecar["params"]
            for label, shown in ((slider, slider_value), (dropdown, dropdown_value)):
                field = label.replace(" ", "_")
                assert field in params, f"{notebook}: the form's {label!r} is not a parameter: {sorted(params)}"
                assert _same_value(shown, params[field]), (
                    f"{notebook}: the form showed {label}={shown} but the run used {params[field]!r}")

            bars = form.progress_bars()
            assert bars, f"{notebook}: no progress bar was shown while generating"
            assert all(bar["full"] for bar in bars), f"{notebook}: a progress bar stopped short: {bars}"
            video = form.video_state()
            assert video["duration"] > 0 and video["width"] > 0, video
            assert form.error_line() is None
        report = jl.cell_report(page)
        assert not report.errors, f"{notebook}: cells failed in the browser: {report.errors}"
        assert not report.render_errors, f"{notebook}: outputs the page could not show: {report.render_errors}"
    finally:
        shot = jl.photograph(page, tmp_path / f"{name}.png")
        _keep(shot, tmp_path)
        jl.save_notebook(page)
        executed = lab_root / "root" / "notebooks" / notebook
        _keep(executed, tmp_path)
    assert FAKE_TOKEN not in executed.read_text(), f"{notebook}: the HF token leaked into the page"
    print(f"{notebook}: {clock}")


@pytest.mark.timeout(180)
def test_harness_sees_a_failing_cell(page, lab):
    """The checks above have teeth: a cell that raises is reported, with its error, and Run All says so."""
    jl.open_notebook(page, lab.notebook_url("notebooks/harness_failing_cell.ipynb"))
    finished = jl.run_all_cells(page)
    report = jl.cell_report(page)
    assert report.errors == ["ValueError: meant to fail"]
    assert finished is False
