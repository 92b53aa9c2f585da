import json

import ipywidgets as W
import numpy as np
import pytest
import toy_task

from helpers import __main__ as cli
from helpers import ui
from helpers.errors import InputError
from helpers.tasks.base import check_params, field_specs, params_from_dict


def test_field_specs_put_task_fields_first():
    names = [s.name for s in field_specs(toy_task.Params)]
    assert names[:3] == ["frames", "brightness", "shape"] and names[-4:] == ["seed", "smoke", "precision", "output_dir"]


@pytest.mark.parametrize("bad, message", [
    ({"frames": 0}, "frames must be at least 1"),
    ({"frames": 2.5}, "whole number"),
    ({"shape": "circle"}, "shape must be one of square, bar"),
    ({"brightness": "x"}, "brightness must be a number"),
    ({"loop": "yes"}, "true or false"),
])
def test_check_params(bad, message):
    with pytest.raises(InputError, match=message):
        check_params(toy_task.Params(**bad))


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(InputError, match="unknown parameter.*known: brightness"):
        params_from_dict(toy_task.Params, {"colour": 1})


def test_run_writes_video_preview_and_sidecar(tmp_path):
    result = toy_task.run(toy_task.Params(output_dir=str(tmp_path), seed=7))
    assert result.video_path.exists() and result.preview_path.exists()
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["params"]["seed"] == 7 and meta["params"]["frames"] == 4 and meta["seed"] == 7
    assert "draw" in meta["timings_s"] and "torch" in meta["environment"]
    again = toy_task.run(toy_task.Params(output_dir=str(tmp_path), seed=7))
    assert again.video_path != result.video_path  # nothing already written is overwritten


def test_form_widgets_presets_and_generate(tmp_path):
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path)})
    c = form.controls
    assert isinstance(c["frames"], W.IntSlider) and isinstance(c["brightness"], W.FloatSlider)
    assert isinstance(c["shape"], W.Dropdown) and isinstance(c["loop"], W.Checkbox)
    assert isinstance(c["prompt"], W.Textarea) and isinstance(c["image"], ui.FileField)
    assert "smoke" not in c  # hidden
    form.preset.value = "bright bars"
    assert c["shape"].value == "bar" and c["brightness"].value == 1.0
    form.preset.value = "(defaults)"
    assert c["shape"].value == "square"
    c["frames"].value = 6
    result = form.generate()
    assert result is not None and result.frames.shape[0] == 6
    assert form.progress.box.children, "progress was shown"
    bar = form.progress.box.children[0].children[0]
    assert bar.value == bar.max == 6
    form.widget()  # lays out without error


def test_form_shows_one_line_error_and_keeps_going(tmp_path):
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path), "prompt": "fail"})
    assert form.generate() is None
    assert not form.button.disabled
    with pytest.raises(InputError):
        form.generate(raise_errors=True)
    html = ui.error_html(InputError("the prompt says fail: write another prompt"))
    assert "the prompt says fail" in html and "Traceback" not in html
    html = ui.error_html(ZeroDivisionError("boom"))
    assert "Unexpected error: boom" in html and "<details>" in html


def test_upload_saves_file_and_fills_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HV_ROOT", str(tmp_path))
    field = ui.FileField(next(s for s in field_specs(toy_task.Params) if s.name == "image"))

    class FakeUpload:  # ipywidgets 8 value shape; 7.x uses a dict, both handled by uploaded_files
        value = ({"name": "me.png", "content": memoryview(b"PNGDATA")},)

    field.upload = FakeUpload()
    field._on_upload()
    assert field.value.endswith("inputs/me.png") and (tmp_path / "inputs" / "me.png").read_bytes() == b"PNGDATA"

    class FakeUpload7:
        value = {"old.png": {"content": b"OLD", "metadata": {}}}

    assert ui.uploaded_files(FakeUpload7()) == [("old.png", b"OLD")]


def test_cli_help_and_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.__dict__, "load", lambda name: toy_task)
    with pytest.raises(SystemExit):
        cli.main(["toy", "--help"])
    helptext = capsys.readouterr().out
    assert "--frames FRAMES" in helptext and "Number of frames" in helptext and "--preset" in helptext
    assert cli.main(["toy", "--preset", "bright bars", "--frames", "3", "--output_dir", str(tmp_path),
                     "--loop", "true"]) == 0
    out = capsys.readouterr().out
    assert "video:" in out and list(tmp_path.glob("*.mp4"))
    assert cli.main(["toy", "--prompt", "fail", "--output_dir", str(tmp_path)]) == 2
    assert "error: the prompt says fail" in capsys.readouterr().err


def test_result_frames_are_uint8(tmp_path):
    result = toy_task.run(toy_task.Params(output_dir=str(tmp_path), frames=2))
    assert result.frames.dtype == np.uint8
