import json

import ipywidgets as W
import numpy as np
import pytest
import toy_task

from helpers import __main__ as cli
from helpers import ui
from helpers.errors import InputError
from helpers.tasks import base
from helpers.tasks.base import check_params, field_specs, params_from_dict


def test_field_specs_put_task_fields_first():
    names = [s.name for s in field_specs(toy_task.Params)]
    assert names[:3] == ["frames", "brightness", "shape"] and names[-5:] == ["seed", "smoke", "precision", "output_dir", "fresh_start"]


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


@pytest.mark.parametrize("name", ["brightness", "fps", "frames", "width"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), np.float32("nan")])
def test_every_number_field_refuses_non_finite_values(name, value, tmp_path):
    with pytest.raises(InputError, match=f"^{name} must be a finite number") as err:
        check_params(toy_task.Params(output_dir=str(tmp_path), **{name: value}))
    assert "\n" not in str(err.value)


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_sidecars_are_always_valid_json(tmp_path):
    path = base.write_json(tmp_path / "s.json", {"a": float("nan"), "b": [np.float32("inf")], "c": 1.5})
    assert _strict_json(path.read_text()) == {"a": None, "b": [None], "c": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left beside it


def test_long_prompt_is_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^prompt is 10000 characters long: .* shorten it"):
        check_params(toy_task.Params(output_dir=str(tmp_path), prompt="a dancer " * 1111 + "x"))


def _frozen_clock(monkeypatch):
    monkeypatch.setattr(base.time, "strftime", lambda _fmt: "20260101-000000")
    return "toy_20260101-000000_seed7"


def test_a_result_never_overwrites_any_of_its_three_names(tmp_path, monkeypatch):
    stem = _frozen_clock(monkeypatch)
    (tmp_path / f"{stem}.json").write_text("earlier sidecar")
    (tmp_path / f"{stem}_2_preview.mp4").write_bytes(b"earlier preview")
    result = toy_task.run(toy_task.Params(output_dir=str(tmp_path), seed=7))
    assert result.video_path.name == f"{stem}_3.mp4" and result.sidecar_path.name == f"{stem}_3.json"
    assert (tmp_path / f"{stem}.json").read_text() == "earlier sidecar"
    assert (tmp_path / f"{stem}_2_preview.mp4").read_bytes() == b"earlier preview"
    assert not (tmp_path / f"{stem}.mp4").exists() and not (tmp_path / f"{stem}_2.mp4").exists()


def test_runs_started_together_reserve_different_names(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        stems = list(pool.map(lambda _i: base.reserve_outputs(tmp_path, "toy_same-second_seed1")[0], range(24)))
    assert len(set(stems)) == 24
    assert len(list(tmp_path.iterdir())) == 3 * 24


def test_gif_never_overwrites(tmp_path, monkeypatch):
    stem = _frozen_clock(monkeypatch)
    (tmp_path / f"{stem}.gif").write_bytes(b"earlier gif")
    gif = base.add_gif(toy_task.run(toy_task.Params(output_dir=str(tmp_path), seed=7, frames=2)))
    assert gif.name == f"{stem}_2.gif" and (tmp_path / f"{stem}.gif").read_bytes() == b"earlier gif"


@pytest.mark.parametrize("where", ["a file", "inside a file"])
def test_unusable_output_folder_is_refused_before_any_work(tmp_path, where):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    folder = blocker if where == "a file" else blocker / "videos"
    calls = []
    with pytest.raises(InputError, match=f"^output_dir {folder} cannot hold the results") as err:
        toy_task.run(toy_task.Params(output_dir=str(folder)), progress=lambda *a: calls.append(a))
    assert calls == [] and "\n" not in str(err.value)  # refused before the first frame was drawn


def test_read_only_output_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.write_text("")
            pytest.skip("this user writes into read-only folders (root)")
        except PermissionError:
            pass
        with pytest.raises(InputError, match="cannot write there"):
            check_params(toy_task.Params(output_dir=str(folder)))
    finally:
        folder.chmod(0o755)


def test_failed_write_leaves_no_stub_and_keeps_what_was_finished(tmp_path, monkeypatch):
    from helpers import media
    from helpers.errors import OutputError

    written = media.write_video

    def preview_fails(path, frames, fps, **kwargs):
        if "_preview" in path.name:
            raise OutputError(f"could not write {path.name}: disk full")
        return written(path, frames, fps, **kwargs)

    monkeypatch.setattr(media, "write_video", preview_fails)
    with pytest.raises(OutputError, match="disk full"):
        toy_task.run(toy_task.Params(output_dir=str(tmp_path)))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 1 and left[0].endswith(".mp4") and (tmp_path / left[0]).stat().st_size > 0


def test_cli_takes_negative_and_non_finite_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.__dict__, "load", lambda name: toy_task)
    assert cli.main(["toy", "--brightness", "-inf", "--output_dir", str(tmp_path)]) == 2
    assert "error: brightness must be a finite number (got -inf)" in capsys.readouterr().err
    assert cli.main(["toy", "--brightness", "-1e-3", "--output_dir", str(tmp_path)]) == 2
    assert "brightness must be at least 0.0 (got -0.001)" in capsys.readouterr().err
    assert cli.join_numeric_values(["--prompt", "-x", "--fps", "-2"], {"--fps"}) == ["--prompt", "-x", "--fps=-2"]


def test_every_float_field_of_every_task_refuses_nan(tmp_path):
    from helpers.tasks import available, load

    checked = []
    for name in available():
        task = load(name)
        for spec in field_specs(task.Params):
            if spec.type is float:
                params = task.Params(**{spec.name: float("nan")}, smoke=True, output_dir=str(tmp_path))
                with pytest.raises(InputError, match=f"^{spec.name} must be a finite number"):
                    task.validate(params)
                checked.append(f"{name}.{spec.name}")
    assert {"pose_to_dance.guidance_scale", "pose_to_dance.noise_aug_strength", "text_image_to_video.motion_speed",
            "id_preserving_video.mix_weight", "zero_shot_pose_video.guidance_scale"} <= set(checked)


def test_fresh_start_is_a_one_time_action_in_the_form(tmp_path):
    form = ui.TaskForm(toy_task, values={"output_dir": str(tmp_path)})
    assert isinstance(form.controls["fresh_start"], W.Checkbox) and form.controls["fresh_start"].value is False
    form.controls["fresh_start"].value = True
    seen = []
    original = toy_task.run

    def spy(params, progress=None):
        seen.append(params.fresh_start)
        return original(params, progress=progress)

    form.task = type("Task", (), {"run": staticmethod(spy), "Params": toy_task.Params})
    assert form.generate() is not None
    assert seen == [True] and form.controls["fresh_start"].value is False  # the next Generate resumes
