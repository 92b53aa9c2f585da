"""A widget form generated from a task's Params dataclass, with presets, a Generate button, progress bars and an
output area. Works with ipywidgets 7.7 (Colab) and 8.

>>> from helpers import ui, tasks
>>> form = ui.TaskForm(tasks.load("pose_to_dance"), smoke=SMOKE)
>>> form.display()          # sliders, dropdowns, upload boxes, presets, Generate
>>> form.generate()         # what the button does (used when running unattended)
"""

from __future__ import annotations

import html
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import ipywidgets as W

from helpers.errors import HelpersError
from helpers.tasks.base import FieldSpec, Result, field_specs, params_from_dict

FORM_WIDTH = "640px"  # readable on a laptop screen next to Colab's side panel
_STYLE = {"description_width": "170px"}
# ipywidgets 8 renamed description_tooltip to tooltip; Colab still ships 7.7
_TOOLTIP = "tooltip" if int(W.__version__.split(".")[0]) >= 8 else "description_tooltip"


NO_GPU_LINE = ("No GPU on this runtime: choose Runtime → Change runtime type → a GPU (a T4 is enough), then run all "
               "again; Generate in the form would run on the CPU, which takes hours.")


def gpu_ready(*, smoke: bool = False) -> bool:
    """True where a real run is worth starting (a CUDA GPU, or SMOKE mode); otherwise prints :data:`NO_GPU_LINE`."""
    from helpers import runtime

    if smoke or runtime.gpu_info() is not None:
        return True
    print(NO_GPU_LINE)
    return False


def _layout(**extra) -> W.Layout:
    return W.Layout(width="100%", max_width=FORM_WIDTH, **extra)


def widget_for(spec: FieldSpec) -> W.Widget:
    """The control for one field: dropdown for choices, slider for bounded numbers, checkbox, text or upload."""
    common = {"description": spec.name.replace("_", " "), _TOOLTIP: spec.help, "style": _STYLE,
              "layout": _layout()}
    value = spec.default
    if spec.choices is not None:
        return W.Dropdown(options=list(spec.choices), value=value, **common)
    if spec.type is bool:
        return W.Checkbox(value=bool(value), indent=True, **common)  # the box lines up with the other inputs
    if spec.type is int:
        if spec.min is not None and spec.max is not None and spec.max - spec.min <= 100_000:
            return W.IntSlider(value=value, min=spec.min, max=spec.max, step=spec.step or 1,
                               continuous_update=False, **common)
        return W.BoundedIntText(value=value, min=spec.min if spec.min is not None else -(2**31),
                                max=spec.max if spec.max is not None else 2**31 - 1, **common)
    if spec.type is float:
        if spec.min is not None and spec.max is not None:
            step = spec.step or round((spec.max - spec.min) / 100, 6) or 0.01
            return W.FloatSlider(value=value, min=spec.min, max=spec.max, step=step, continuous_update=False,
                                 readout_format=".3g", **common)
        return W.FloatText(value=value, **common)
    if spec.widget == "textarea":
        return W.Textarea(value=str(value), rows=3, **common)
    if spec.widget == "file":
        return FileField(spec)
    return W.Text(value=str(value), **common)


def uploaded_files(upload: W.FileUpload) -> list[tuple[str, bytes]]:
    """(name, content) of the files in an upload widget; ipywidgets 7 uses a dict, 8 a tuple of dicts."""
    value = upload.value
    if isinstance(value, dict):  # ipywidgets 7.x: {name: {"content": bytes, "metadata": {...}}}
        return [(name, bytes(item["content"])) for name, item in value.items()]
    return [(item["name"], bytes(item["content"])) for item in value]


class FileField(W.VBox):
    """A path text box plus an upload button; an upload is saved under ``<Drive root>/inputs`` and fills the path."""

    def __init__(self, spec: FieldSpec):
        self.spec = spec
        self.path = W.Text(value=str(spec.default or ""), description=spec.name.replace("_", " "),
                           placeholder="path, or upload →", style=_STYLE, layout=W.Layout(width="100%"),
                           **{_TOOLTIP: spec.help})
        # sized to its label (a fixed width cut "Upload" short next to the icon in JupyterLab)
        self.upload = W.FileUpload(multiple=False, description="Upload",
                                   layout=W.Layout(width="auto", min_width="110px", flex="0 0 auto"),
                                   **{_TOOLTIP: f"upload the {spec.name.replace('_', ' ')} from this computer; "
                                                "it is saved under the inputs folder of your Drive root"})
        self.upload.observe(self._on_upload, names="value")
        super().__init__([W.HBox([self.path, self.upload], layout=_layout())])

    @property
    def value(self) -> str:
        return self.path.value

    @value.setter
    def value(self, new: str) -> None:
        self.path.value = str(new)

    def _on_upload(self, _change=None) -> None:
        from helpers import runtime

        files = uploaded_files(self.upload)
        if not files:
            return
        name, content = files[-1]
        folder = runtime.drive_root() / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / Path(name).name
        target.write_bytes(content)
        self.path.value = str(target)


class WidgetProgress:
    """Progress bars in the form, one per stage, with elapsed time and an ETA. Callable as ``progress``."""

    def __init__(self) -> None:
        self.box = W.VBox(layout=_layout())
        self._bars: dict[str, tuple[W.IntProgress, W.Label, float]] = {}

    def reset(self) -> None:
        self._bars.clear()
        self.box.children = ()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._bars:
            bar = W.IntProgress(value=0, min=0, max=max(total, 1), description=stage, style=_STYLE,
                                layout=W.Layout(width="60%"))
            label = W.Label("")
            self._bars[stage] = (bar, label, time.perf_counter())
            self.box.children = (*self.box.children, W.HBox([bar, label]))
        bar, label, start = self._bars[stage]
        bar.max = max(total, 1)
        bar.value = min(done, bar.max)
        elapsed = time.perf_counter() - start
        eta = f", ~{elapsed / done * (total - done):.0f}s left" if 0 < done < total else ""
        label.value = f"{done}/{total} · {elapsed:.0f}s{eta}"
        if done >= total:
            bar.bar_style = "success"


def error_html(exc: BaseException) -> str:
    """One red line for expected errors; unexpected ones add a collapsed traceback for bug reports."""
    line = html.escape(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    out = f'<div class="hv-error" style="color:#b00020;font-weight:600">⚠ {line}</div>'
    if isinstance(exc, HelpersError) and "\n" in str(exc):
        details = html.escape(str(exc))
        out += f"<details><summary>details</summary><pre>{details}</pre></details>"
    elif not isinstance(exc, HelpersError):
        tb = html.escape("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        out = out.replace("⚠ ", "⚠ Unexpected error: ")
        out += f"<details><summary>traceback (for a bug report)</summary><pre>{tb}</pre></details>"
    return out


class TaskForm:
    """The form for one task module (``NAME``, ``Params``, ``PRESETS``, ``run``)."""

    def __init__(self, task: ModuleType, *, smoke: bool = False, values: dict | None = None):
        self.task = task
        self.smoke = smoke
        self.specs = [s for s in field_specs(task.Params) if s.widget != "hidden"]
        self.controls: dict[str, W.Widget] = {s.name: widget_for(s) for s in self.specs}
        self.presets: dict[str, dict] = dict(getattr(task, "PRESETS", {}))
        self.preset = W.Dropdown(options=["(defaults)", *self.presets], value="(defaults)", description="preset",
                                 style=_STYLE, layout=_layout())
        self.preset.observe(self._on_preset, names="value")
        self.button = W.Button(description="Generate", button_style="primary", icon="play",
                               layout=W.Layout(width="160px"))
        self.button.on_click(lambda _b: self.generate())
        self.status = W.HTML("")
        self.progress = WidgetProgress()
        self.output = W.Output(layout=_layout())
        self.result: Result | None = None
        if values:
            self.set(**values)

    # ---- values
    def set(self, **values: Any) -> None:
        for name, value in values.items():
            if name in self.controls:
                self.controls[name].value = value

    def _on_preset(self, change) -> None:
        defaults = {s.name: s.default for s in self.specs}
        self.set(**defaults)
        self.set(**self.presets.get(change["new"], {}))

    def params(self):
        values = {name: control.value for name, control in self.controls.items()}
        if self.smoke:
            values["smoke"] = True
        return params_from_dict(self.task.Params, values)

    # ---- layout
    def widget(self) -> W.Widget:
        groups: dict[str | None, list[W.Widget]] = {}
        for spec in self.specs:
            groups.setdefault(spec.group, []).append(self.controls[spec.name])
        rows: list[W.Widget] = []
        if self.presets:
            rows.append(self.preset)
        rows += groups.pop(None, [])
        for name, items in groups.items():
            box = W.Accordion(children=[W.VBox(items)], layout=_layout())
            box.set_title(0, name)
            box.selected_index = None
            rows.append(box)
        rows += [W.HBox([self.button, self.status]), self.progress.box, self.output]
        return W.VBox(rows, layout=W.Layout(max_width=FORM_WIDTH))

    def display(self) -> None:
        from IPython.display import display

        display(self.widget())

    # ---- action
    def run_all(self, enabled: bool = True) -> Result | None:
        """What the notebooks' last cell does outside SMOKE mode: on a GPU runtime, generate one video with the
        form's current values and show it (in the form and in the cell); without a GPU, one line saying to switch
        the runtime type. ``enabled=False`` (``GENERATE_ON_RUN_ALL = False``) leaves it to the Generate button."""
        if not enabled:
            print("GENERATE_ON_RUN_ALL is False: set the form above and press Generate.")
            return None
        if not gpu_ready():
            return None
        try:
            result = self.generate(raise_errors=True)
        except HelpersError as exc:  # shown in the form already; the line here is where the reader is
            print(f"⚠ {(str(exc).splitlines() or [type(exc).__name__])[0]}")
            return None
        result.show()
        print("Change the settings in the form and press Generate for another video.")
        return result

    def generate(self, *, raise_errors: bool = False) -> Result | None:
        """Validate, run the task with progress bars, and show the result (or a one-line error) in the output.

        ``raise_errors=True`` (unattended runs) re-raises after showing the error line."""
        self.button.disabled = True
        self.status.value = "<i>running…</i>"
        self.progress.reset()
        self.output.clear_output()
        try:
            params = self.params()
            if getattr(params, "fresh_start", False) and "fresh_start" in self.controls:
                # Discarding saved progress is a one-time action: if this run is interrupted too, the next
                # Generate resumes it.
                self.controls["fresh_start"].value = False
            result = self.task.run(params, progress=self.progress)
        except Exception as exc:  # every failure ends in the output area as one readable line
            self.status.value = ""
            with self.output:
                from IPython.display import HTML, display

                display(HTML(error_html(exc)))
            if raise_errors:
                raise
            return None
        finally:
            self.button.disabled = False
        self.result = result
        self.status.value = f"done in {result.metadata.get('timings_s', {}).get('total', 0):.1f}s"
        with self.output:
            from IPython.display import HTML, display

            result.show()
            display(HTML(f"<small>saved: {html.escape(str(result.video_path))}<br>"
                         f"settings: {html.escape(str(result.sidecar_path))}</small>"))
        return result
