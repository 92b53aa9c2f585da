"""Run all: the last cell of a task notebook generates one video with the form's values on a GPU runtime
(``TaskForm.run_all``), says in one line to switch the runtime type without a GPU, and leaves it to the Generate
button when ``GENERATE_ON_RUN_ALL = False``. Every task notebook's cells are wired that way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toy_task

from helpers import runtime, ui

REPO = Path(__file__).resolve().parents[1]
TASK_NOTEBOOKS = [nb for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                  if not nb.name.startswith("00_")]
FAKE_GPU = runtime.GPUInfo(name="Tesla T4", total_gb=14.7, bf16=False, capability=(7, 5))


class Shown:
    """Records what ``Result.show`` would display in the cell."""

    def __init__(self, monkeypatch):
        self.videos = []
        monkeypatch.setattr("helpers.media.show_video", lambda frames, fps=None, **_: self.videos.append(len(frames)))


def test_run_all_on_a_gpu_generates_once_with_the_form_values(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "gpu_info", lambda: FAKE_GPU)
    shown = Shown(monkeypatch)
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path), "frames": 5, "shape": "bar"})

    result = form.run_all(True)

    assert result is not None and result.video_path.exists() and result.frames.shape[0] == 5
    assert json.loads(result.sidecar_path.read_text())["params"]["shape"] == "bar"
    assert len(list(tmp_path.rglob("*.json"))) == 1, "exactly one video (one sidecar)"
    assert len(shown.videos) == 2, "the video is shown in the form's output area and in the cell"
    assert form.result is result and form.status.value.startswith("done in")
    assert "press Generate" in capsys.readouterr().out


def test_run_all_without_a_gpu_says_so_in_one_line_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "gpu_info", lambda: None)
    monkeypatch.setattr(toy_task, "run", lambda *a, **k: pytest.fail("a CPU runtime must not start a real run"))
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path)})

    assert form.run_all(True) is None

    out = capsys.readouterr().out
    assert out.strip() == ui.NO_GPU_LINE and len(out.strip().splitlines()) == 1
    assert "Change runtime type" in out and "GPU" in out
    assert not list(tmp_path.rglob("*.mp4"))


def test_generate_on_run_all_false_leaves_it_to_the_button(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "gpu_info", lambda: FAKE_GPU)
    monkeypatch.setattr(toy_task, "run", lambda *a, **k: pytest.fail("GENERATE_ON_RUN_ALL = False must not run"))
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path)})

    assert form.run_all(False) is None
    assert "press Generate" in capsys.readouterr().out


def test_run_all_input_error_is_one_line_in_the_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "gpu_info", lambda: FAKE_GPU)
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path), "prompt": "fail"})

    assert form.run_all(True) is None
    # (outside a kernel the form's output area writes to stdout too; in a notebook it holds its own copy)
    printed = [line for line in capsys.readouterr().out.splitlines() if "⚠" in line]
    assert printed == ["⚠ the prompt says fail: write another prompt"]
    assert not form.button.disabled


def test_gpu_ready(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "gpu_info", lambda: None)
    assert ui.gpu_ready(smoke=True) and capsys.readouterr().out == ""
    assert not ui.gpu_ready() and capsys.readouterr().out.strip() == ui.NO_GPU_LINE
    monkeypatch.setattr(runtime, "gpu_info", lambda: FAKE_GPU)
    assert ui.gpu_ready() and capsys.readouterr().out == ""


def _code_cells(notebook: Path) -> list[tuple[list[str], str]]:
    nb = json.loads(notebook.read_text())
    return [(c.get("metadata", {}).get("tags", []), "".join(c["source"])) for c in nb["cells"]
            if c["cell_type"] == "code"]


@pytest.mark.parametrize("notebook", TASK_NOTEBOOKS, ids=[nb.stem for nb in TASK_NOTEBOOKS])
def test_task_notebook_is_wired_for_run_all(notebook):
    cells = _code_cells(notebook)
    [params] = [source for tags, source in cells if "parameters" in tags]
    assert "GENERATE_ON_RUN_ALL = True" in params, "the first parameters cell turns run-all generation on/off"
    last = cells[-1][1]
    smoke, _, rest = last.partition("else:")
    assert smoke.startswith("if SMOKE:") and "form.generate(raise_errors=True)" in smoke, "SMOKE path unchanged"
    assert "form.run_all(GENERATE_ON_RUN_ALL)" in rest, "outside SMOKE, run all generates via form.run_all"
