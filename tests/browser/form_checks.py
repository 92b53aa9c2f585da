"""The TaskForm checks run inside a real kernel of a given environment (ipywidgets 8, or Colab's 7.7).

``notebook(tests_dir)`` builds a notebook whose cells build the toy task's form, then drive it with the very messages
a browser sends (``update`` of a slider value or a dropdown index, the button's ``click``, a file upload in the
format of each ipywidgets major version), and record what happened in a ``facts`` dict that the last cell prints
as JSON. nbclient executes it and plays the part of the front end for Output widgets: what the form shows in its
output area is synced back to the kernel, so the cell after an action can read ``form.output.outputs``.
"""

from __future__ import annotations

import json

import nbformat

SETUP = '''\
import json, sys, types
sys.path.insert(0, {tests_dir!r})
try:
    import torch  # noqa: F401
except ImportError:
    # This small environment has no torch (Colab always does). The result sidecar only asks torch whether CUDA
    # is there and which version it is; answer as a CPU-only machine would.
    torch = types.ModuleType("torch")
    torch.__version__ = "(not installed)"
    torch.cuda = types.SimpleNamespace(is_available=lambda: False)
    sys.modules["torch"] = torch

import ipywidgets as W
import toy_task
from helpers import ui
from helpers.errors import InputError

MAJOR = int(W.__version__.split(".")[0])
facts = {{"ipywidgets": W.__version__}}


def from_browser(widget, **state):
    """An ``update`` message as the browser sends it when a person changes a control."""
    buffers, paths = [], []
    for key, value in list(state.items()):
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    for k, v in item.items():
                        if isinstance(v, bytes):
                            paths.append([key, i, k]); buffers.append(memoryview(v)); item[k] = None
                elif isinstance(item, bytes):
                    paths.append([key, i]); buffers.append(memoryview(item)); value[i] = None
    widget._handle_msg({{"content": {{"data": {{"method": "update", "state": state, "buffer_paths": paths}}}},
                        "buffers": buffers}})


def click(button):
    """The ``click`` event a browser sends when the button is pressed."""
    button._handle_msg({{"content": {{"data": {{"method": "custom", "content": {{"event": "click"}}}}}}, "buffers": []}})


def shown(output):
    """The HTML/text an Output widget shows (synced back by the front end)."""
    parts = []
    for out in output.outputs:
        data = out.get("data", {{}})
        parts.append(data.get("text/html") or data.get("text/plain") or out.get("text", ""))
    return "\\n".join(p if isinstance(p, str) else "".join(p) for p in parts)
'''

BUILD = '''\
form = ui.TaskForm(toy_task, smoke=True)
form.display()
tooltip = "tooltip" if MAJOR >= 8 else "description_tooltip"
facts["controls"] = {name: type(control).__name__ for name, control in form.controls.items()}
facts["tooltips"] = {name: getattr(control, tooltip, None) for name, control in form.controls.items()
                     if name != "image"}
facts["image_tooltip"] = getattr(form.controls["image"].path, tooltip, None)
'''

CHANGE = '''\
from_browser(form.controls["frames"], value=6)
from_browser(form.controls["shape"], index=form.controls["shape"].options.index("bar"))
from_browser(form.controls["brightness"], value=0.25)
facts["changed"] = {k: getattr(form.params(), k) for k in ("frames", "shape", "brightness", "smoke")}

from_browser(form.preset, index=list(form.preset.options).index("bright bars"))
facts["preset"] = {k: getattr(form.params(), k) for k in ("frames", "shape", "brightness")}
from_browser(form.preset, index=0)
facts["preset_back"] = {k: getattr(form.params(), k) for k in ("frames", "shape", "brightness")}
'''

GENERATE = '''\
from_browser(form.controls["frames"], value=6)
from_browser(form.controls["shape"], index=form.controls["shape"].options.index("bar"))
click(form.button)
result = form.result
facts["result"] = {"frames": int(result.frames.shape[0]), "video": result.video_path.is_file(),
                   "params": json.load(open(result.sidecar_path))["params"]}
facts["status"] = form.status.value
facts["button_disabled"] = form.button.disabled
facts["progress"] = [
    {"stage": hbox.children[0].description, "value": hbox.children[0].value, "max": hbox.children[0].max,
     "style": hbox.children[0].bar_style, "label": hbox.children[1].value}
    for hbox in form.progress.box.children]
'''

RECORD_RESULT = '''\
facts["result_shown"] = shown(form.output)
'''

INPUT_ERROR = '''\
before = form.result
from_browser(form.controls["prompt"], value="fail")
click(form.button)
facts["input_error"] = {"result_kept": form.result is before, "status": form.status.value,
                        "button_disabled": form.button.disabled}
try:
    form.generate(raise_errors=True)
    facts["input_error"]["raised"] = None
except InputError as exc:
    facts["input_error"]["raised"] = str(exc)
'''

RECORD_INPUT_ERROR = '''\
facts["input_error"]["shown"] = shown(form.output)
'''

UNEXPECTED_ERROR = '''\
broken = types.ModuleType("broken_task")
broken.NAME, broken.Params, broken.PRESETS = "broken", toy_task.Params, {}
def _run(params, *, progress=None):
    progress("load", 0, 2)
    raise RuntimeError("the model exploded")
broken.run = _run
broken_form = ui.TaskForm(broken, smoke=True)
broken_form.display()
click(broken_form.button)
facts["unexpected_error"] = {"status": broken_form.status.value, "button_disabled": broken_form.button.disabled}
'''

RECORD_UNEXPECTED_ERROR = '''\
facts["unexpected_error"]["shown"] = shown(broken_form.output)
'''

UPLOAD = '''\
content = b"\\x89PNG\\r\\n\\x1a\\n" + bytes(range(40))
upload = form.controls["image"].upload
if MAJOR >= 8:
    from_browser(upload, value=[{"name": "ref photo.png", "type": "image/png", "size": len(content),
                                 "last_modified": 1700000000000, "content": content}])
else:
    from_browser(upload, _counter=upload._counter + 1, data=[content],
                 metadata=[{"name": "ref photo.png", "type": "image/png", "size": len(content),
                            "lastModified": 1700000000000}])
from pathlib import Path
stored = Path(form.controls["image"].value)
facts["upload"] = {"value_type": type(upload.value).__name__, "files": [(n, len(b)) for n, b in ui.uploaded_files(upload)],
                   "path": str(stored), "same_bytes": stored.is_file() and stored.read_bytes() == content,
                   "param": form.params().image}
form.set(image="/somewhere/else.png")
facts["upload"]["set_path"] = form.controls["image"].value
'''

REPORT = '''\
print("FACTS " + json.dumps(facts, default=str))
'''


def notebook(tests_dir: str) -> nbformat.NotebookNode:
    cells = [SETUP.format(tests_dir=tests_dir), BUILD, CHANGE, GENERATE, RECORD_RESULT, INPUT_ERROR,
             RECORD_INPUT_ERROR, UNEXPECTED_ERROR, RECORD_UNEXPECTED_ERROR, UPLOAD, REPORT]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells],
                                    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}})


def facts_of(executed: nbformat.NotebookNode) -> dict:
    """The ``facts`` printed by the last cell."""
    for output in executed.cells[-1].get("outputs", []):
        text = output.get("text", "")
        for line in (text if isinstance(text, str) else "".join(text)).splitlines():
            if line.startswith("FACTS "):
                return json.loads(line[len("FACTS "):])
    raise AssertionError(f"the checks printed no facts: {executed.cells[-1].get('outputs')}")
