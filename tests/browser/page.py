"""Drive a notebook in JupyterLab through Playwright: open it, run all cells, use its task form like a person would
(keyboard on a slider, a dropdown choice, the Generate button), and read back what the page shows.

The page talks to JupyterLab through ``window.jupyterapp`` (the server runs with ``expose_app_in_browser``), and to
the widgets only through the DOM.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Locator, Page

_GENERATE = re.compile(r"^\s*Generate\s*$")
_PANEL = "window.jupyterapp && window.jupyterapp.shell.currentWidget"

# The current notebook is open, its kernel started and idle.
_KERNEL_IDLE = f"""() => {{
  const panel = {_PANEL};
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
      && panel.sessionContext.session.kernel;
  return !!(kernel && kernel.status === 'idle' && panel.content && panel.content.widgets.length);
}}"""

_CELL_REPORT = f"""() => {{
  const panel = {_PANEL};
  const report = {{errors: [], unexecuted: 0, code_cells: 0, render_errors: []}};
  for (const cell of panel.content.widgets) {{
    if (cell.model.type !== 'code') continue;
    report.code_cells += 1;
    if (cell.model.executionCount === null) report.unexecuted += 1;
    const outputs = cell.model.outputs;
    for (let i = 0; i < outputs.length; i++) {{
      const out = outputs.get(i).toJSON();
      if (out.output_type === 'error') report.errors.push(`${{out.ename}}: ${{out.evalue}}`);
    }}
  }}
  // outputs JupyterLab could not show (e.g. a widget whose model never reached the page)
  for (const out of panel.content.node.querySelectorAll('.jp-OutputArea-output')) {{
    const text = (out.innerText || '').trim();
    if (/^Error (displaying widget|rendering output)/.test(text)) report.render_errors.push(text.slice(0, 200));
  }}
  return report;
}}"""


def open_notebook(page: Page, url: str, timeout_s: float = 120) -> None:
    """Load JupyterLab on one notebook and wait until its kernel is idle."""
    page.goto(url)
    page.wait_for_function(_KERNEL_IDLE, timeout=timeout_s * 1000, polling=250)


def run_all_cells(page: Page, timeout_s: float = 300) -> bool:
    """Run every cell (Run ▸ Run All Cells) and wait until the run ends; True when no cell failed."""
    page.evaluate("""() => {
      window.__hvRunAll = undefined;
      window.jupyterapp.commands.execute('notebook:run-all-cells').then(
        ok => { window.__hvRunAll = ok === false ? 'failed' : 'ok'; },
        err => { window.__hvRunAll = 'error: ' + err; });
    }""")
    page.wait_for_function("() => window.__hvRunAll !== undefined", timeout=timeout_s * 1000, polling=500)
    return page.evaluate("() => window.__hvRunAll") == "ok"


@dataclass
class CellReport:
    errors: list[str]  # error outputs of cells, "ename: evalue"
    unexecuted: int  # code cells without an execution count
    code_cells: int
    render_errors: list[str]  # outputs the page failed to display


def cell_report(page: Page) -> CellReport:
    """Error outputs (``ename: evalue``) and cells without an execution count, from the notebook model."""
    return CellReport(**page.evaluate(_CELL_REPORT))


def save_notebook(page: Page) -> None:
    """File ▸ Save (waits until the file is written)."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")


def photograph(page: Page, path: Path, *, max_height: int = 16000) -> Path:
    """Screenshot the whole notebook: hide the side panel, make the window as tall as the notebook, scroll to top."""
    page.evaluate("""() => {
      const app = window.jupyterapp;
      if (!app.shell.leftCollapsed) app.shell.collapseLeft();
    }""")
    page.wait_for_timeout(200)
    scroller = """() => {
      const panel = window.jupyterapp.shell.currentWidget;
      return panel.content.node.querySelector('.jp-WindowedPanel-outer') || panel.content.node;
    }"""
    needed = page.evaluate(f"""() => {{
      const scroller = ({scroller})();
      return Math.ceil(scroller.getBoundingClientRect().top + scroller.scrollHeight + 40);
    }}""")
    original = page.viewport_size
    width = original["width"] if original else 1280
    page.set_viewport_size({"width": width, "height": max(800, min(int(needed), max_height))})
    page.evaluate(f"() => {{ ({scroller})().scrollTop = 0; }}")
    page.wait_for_timeout(400)  # let the layout settle at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    if original:
        page.set_viewport_size(original)
    return path


class TaskFormView:
    """The rendered ``helpers.ui.TaskForm`` of a notebook: the cell output that holds a "Generate" button."""

    def __init__(self, page: Page):
        self.page = page
        # by its text: the accessible name also holds the icon font's glyph
        generate = page.locator("button.widget-button", has_text=_GENERATE)
        self.root: Locator = page.locator(".jp-Cell-outputArea .jp-OutputArea-output").filter(has=generate).first
        self.button = self.root.locator("button.widget-button", has_text=_GENERATE).first
        self.output = self.root.locator(".widget-output").last

    def wait_until_shown(self, timeout_s: float = 60) -> None:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.button.wait_for(state="visible", timeout=timeout_s * 1000)
        except PlaywrightTimeout:
            raise AssertionError("the notebook shows no task form (no Generate button) after running all cells") \
                from None

    # ---- controls
    @staticmethod
    def _label(control: Locator) -> str:
        return control.locator(".widget-label").first.inner_text().strip()

    def change_first_slider(self) -> tuple[str, str]:
        """Move a slider one step down with the keyboard: the first visible one whose value lies strictly inside
        its range (an end value is often special, e.g. "0 = all frames"), else the first one, one step up.

        Returns (field name, the value the slider's readout shows)."""
        sliders = self.root.locator(".widget-hslider:visible")
        assert sliders.count(), "the form has no visible slider"
        chosen, key = sliders.first, "ArrowRight"
        for i in range(sliders.count()):
            handle = sliders.nth(i).locator(".noUi-handle").first
            low, now, high = (float(handle.get_attribute(f"aria-value{a}") or "nan") for a in ("min", "now", "max"))
            if low < now < high:
                chosen, key = sliders.nth(i), "ArrowLeft"
                break
        chosen.scroll_into_view_if_needed()
        name = self._label(chosen)
        readout = chosen.locator(".widget-readout")
        before = readout.inner_text().strip()
        handle = chosen.locator(".noUi-handle").first
        handle.focus()
        handle.press(key)
        self.page.wait_for_function("([el, before]) => el.textContent.trim() !== before",
                                    arg=[readout.element_handle(), before], timeout=5_000)
        return name, readout.inner_text().strip()

    def change_first_dropdown(self, skip: tuple[str, ...] = ("preset",)) -> tuple[str, str]:
        """Pick the next option of the first visible dropdown (other than the presets). Returns (name, option)."""
        dropdowns = self.root.locator(".widget-dropdown:visible")
        for i in range(dropdowns.count()):
            dropdown = dropdowns.nth(i)
            name = self._label(dropdown)
            if name in skip:
                continue
            select = dropdown.locator("select")
            options = select.locator("option").all_inner_texts()
            if len(options) < 2:
                continue
            current = select.evaluate("el => el.selectedIndex")
            new_index = (current + 1) % len(options)
            select.scroll_into_view_if_needed()
            select.select_option(index=new_index)
            return name, select.evaluate("el => el.options[el.selectedIndex].value")
        raise AssertionError("the form has no dropdown with two or more options besides the presets")

    def upload(self, file: Path) -> str:
        """Upload a file with the first Upload button (through the browser's file chooser); returns the path that
        appears in the text box beside it."""
        button = self.root.locator(".widget-upload").first
        field = button.locator("xpath=..").locator("input[type=text]")
        before = field.input_value()
        with self.page.expect_file_chooser() as chooser:
            button.click()
        chooser.value.set_files(str(file))
        self.page.wait_for_function("([el, before]) => el.value && el.value !== before",
                                    arg=[field.element_handle(), before], timeout=30_000)
        return field.input_value()

    # ---- the action
    def shown_sidecar(self) -> Path | None:
        """The JSON sidecar the output area names after a successful run (a full path, or a file name followed by
        ``in <folder>``)."""
        text = self.output.inner_text() if self.output.count() else ""
        match = re.search(r"(\S+\.json)\b", text)
        if not match:
            return None
        path = Path(match.group(1))
        folder = re.search(r"\bin (/\S+)", text)
        return path if path.is_absolute() or not folder else Path(folder.group(1)) / path

    def error_line(self) -> str | None:
        errors = self.root.locator(".hv-error")
        return errors.first.inner_text().strip() if errors.count() else None

    def fill(self, label: str, text: str) -> None:
        """Type into the text box or text area labelled ``label``."""
        row = self.root.locator(".widget-text, .widget-textarea").filter(
            has=self.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))
        box = row.first.locator("textarea, input").first
        box.scroll_into_view_if_needed()
        box.fill(text)

    def _click_generate(self, timeout_s: float) -> None:
        """Click Generate and wait until this click's outcome is shown: an error line or a new saved result."""
        # mark what is shown now, so that only what this click produces counts
        self.output.evaluate("out => out.querySelectorAll('.jp-OutputArea-child').forEach("
                             "c => c.setAttribute('data-hv-earlier', ''))")
        self.button.scroll_into_view_if_needed()
        self.button.click()
        self.page.wait_for_function(
            r"""([root, out]) => {
              const fresh = [...out.querySelectorAll('.jp-OutputArea-child:not([data-hv-earlier])')];
              if (fresh.some(c => c.querySelector('.hv-error'))) return true;
              const button = [...root.querySelectorAll('button')].find(b => b.textContent.trim() === 'Generate');
              return !!button && !button.disabled && fresh.some(c => /\S+\.json\b/.test(c.innerText));
            }""",
            arg=[self.root.element_handle(), self.output.element_handle()], timeout=timeout_s * 1000, polling=250)

    def generate(self, timeout_s: float = 180) -> Path:
        """Click Generate and wait for the new result; returns its sidecar path. Fails with the form's error line."""
        self._click_generate(timeout_s)
        error = self.error_line()
        assert error is None, f"Generate failed in the browser: {error}"
        sidecar = self.shown_sidecar()
        assert sidecar is not None
        return sidecar

    def generate_expecting_error(self, timeout_s: float = 180) -> Locator:
        """Click Generate when the settings are wrong; returns the error shown in the output area."""
        self._click_generate(timeout_s)
        error = self.output.locator(".hv-error")
        assert error.count(), f"Generate did not fail; the output shows: {self.output.inner_text()!r}"
        return error.first

    # ---- what is shown
    def video_state(self, timeout_s: float = 20) -> dict:
        """Scroll the result video into view (browsers pause muted autoplay off screen) and wait until it plays.

        Returns its duration, size, and current time."""
        video = self.output.locator("video").first
        video.wait_for(state="attached", timeout=timeout_s * 1000)
        video.scroll_into_view_if_needed()
        handle = video.element_handle()
        self.page.wait_for_function("v => v.readyState >= 2 && v.duration > 0 && v.currentTime > 0 && !v.paused",
                                    arg=handle, timeout=timeout_s * 1000, polling=100)
        return video.evaluate("""v => ({duration: v.duration, currentTime: v.currentTime, paused: v.paused,
                                        width: v.videoWidth, height: v.videoHeight,
                                        shownWidth: v.clientWidth, shownHeight: v.clientHeight})""")

    def progress_bars(self) -> list[dict]:
        """Every progress bar of the form: its stage name, its label (``done/total · time``) and whether it is full."""
        return self.root.locator(".widget-hprogress").evaluate_all("""bars => bars.map(bar => ({
            stage: (bar.querySelector('.widget-label') || {}).textContent || '',
            label: (bar.parentElement.querySelector('.widget-label:not(.widget-hprogress *)') || {}).textContent || '',
            full: !!bar.querySelector('.progress-bar-success') ||
                  parseFloat((bar.querySelector('.progress-bar') || {style: {}}).style.width || '0') >= 99.9,
        }))""")


def read_sidecar(path: Path) -> dict:
    return json.loads(Path(path).read_text())
