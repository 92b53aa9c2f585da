"""Video-to-video task (MuseV): every bad input is one line before any video model (SMOKE and real), presets pinned
to the original's video examples, SMOKE never downloads, the condition preview (source frame | condition | ControlNet
input), SMOKE runs end to end through the real loaders on tiny packs (both which2video modes, the pose model), a
missing ControlNet named before anything loads, form and CLI."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import media
from helpers.errors import InputError
from helpers.tasks import base
from helpers.tasks import video_to_video as task
from helpers.tasks.base import params_from_dict

README_RUN = "dance1 · spark girl (the README pose2video run)"


@pytest.fixture(scope="module")
def shared_smoke(tmp_path_factory):
    """One SMOKE folder for the module: tiny packs are written once and the pipelines stay cached."""
    yield tmp_path_factory.mktemp("smoke")
    base.clear_cache()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, shared_smoke):
    monkeypatch.setenv("HV_SMOKE_ROOT", str(shared_smoke))
    monkeypatch.delenv("HV_SMOKE", raising=False)
    monkeypatch.delenv("HV_PLAN", raising=False)
    task._INPUTS.clear()


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if tiny packs are written or a video pipeline starts loading."""
    from helpers.pipelines.musev import pipeline as musev_pipeline

    def refuse(*_args, **_kwargs):
        raise AssertionError("a video model was loaded (or tiny packs written) before the input was checked")

    monkeypatch.setattr(task, "_load", refuse)
    monkeypatch.setattr(task, "_packs_root", refuse)
    monkeypatch.setattr(musev_pipeline, "load_musev_pipeline", refuse)


def _video(path: Path, frames: int = 6, size: tuple[int, int] = (48, 32)) -> str:
    rng = np.random.default_rng(frames)
    return str(media.write_video(path, (rng.random((frames, size[1], size[0], 3)) * 255).astype(np.uint8), 8))


def _picture(path: Path, size: tuple[int, int] = (96, 128)) -> str:
    rng = np.random.default_rng(1)
    return str(media.write_image(path, (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)))


# -- input checks ---------------------------------------------------------------------------------------------------
def _bad_inputs(tmp_path: Path, case: str) -> dict:
    if case == "empty prompt":
        return {"prompt": " "}
    if case == "no source video":
        return {"source_video": ""}
    if case == "missing source video":
        return {"source_video": str(tmp_path / "gone.mp4")}
    if case == "picture as source video":
        return {"source_video": _picture(tmp_path / "still.png")}
    if case == "source video too short":
        return {"source_video": _video(tmp_path / "short.mp4", frames=3)}
    if case == "too short at this sample rate":
        return {"source_video": _video(tmp_path / "six.mp4", frames=6), "frames": 4, "sample_rate": 2}
    if case == "condition video of another size":
        return {"source_video": _video(tmp_path / "src.mp4", 12), "condition_video": _video(
            tmp_path / "cond.mp4", 12, size=(64, 32)), "frames": 5, "condition": "canny", "model": "musev"}
    if case == "condition video of another length":
        return {"source_video": _video(tmp_path / "src.mp4", 12), "condition_video": _video(tmp_path / "cond.mp4", 10),
                "frames": 5, "condition": "canny", "model": "musev"}
    if case == "pose model with another condition":
        return {"condition": "depth"}
    if case == "rgb start from a condition video":
        return {"video_is_middle": True, "which2video": "video"}
    if case == "condition video beside a condition video":
        return {"video_is_middle": True, "condition_video": _video(tmp_path / "cond.mp4")}
    if case == "overlap not below window":
        return {"window": 6, "overlap": 6}
    if case == "control ends before it starts":
        return {"control_start": 0.6, "control_end": 0.4}
    if case == "no reference image":
        return {"reference_image": ""}
    if case == "video as reference image":
        return {"reference_image": _video(tmp_path / "ref.mp4")}
    if case == "size below 64":
        return {"width": 40, "height": 40}
    if case == "unknown condition":
        return {"condition": "sketch"}
    if case == "missing base model":
        return {"base_model": str(tmp_path / "gone.safetensors")}
    raise ValueError(case)


BAD_INPUTS = {
    "empty prompt": "prompt is empty",
    "no source video": "no source video",
    "missing source video": "source video not found",
    "picture as source video": "still.png is a single image",
    "source video too short": "short.mp4 has 3 frame",
    "too short at this sample rate": r"six.mp4 has 6 frame\(s\), 4 frames every 2 need 7",
    "condition video of another size": r"condition video is 64x32 px with 12 frames, the source video 48x32 px",
    "condition video of another length": "same size and length",
    "pose model with another condition": "trained on dwpose_body_hand poses only",
    "rgb start from a condition video": "which2video 'video' starts from the RGB source frames",
    "condition video beside a condition video": "leave condition_video empty",
    "overlap not below window": r"overlap \(6\) must be smaller than window \(6\)",
    "control ends before it starts": r"control_start \(0.6\) must be below control_end",
    "no reference image": "no reference image",
    "video as reference image": "ref.mp4 is a video",
    "size below 64": "would be 0x0 px",
    "unknown condition": "condition must be one of dwpose_body_hand, canny, depth, lineart, softedge, hed",
    "missing base model": "base model not found",
}


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "real"])
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_error_before_any_model(case, smoke, tmp_path, no_models):
    params = task.Params(smoke=smoke, **_bad_inputs(tmp_path, case))
    with pytest.raises(InputError, match=BAD_INPUTS[case]) as caught:
        task.validate(params)
    assert "\n" not in str(caught.value)


class _FakeRunner:
    """A DWPose runner that finds what the test says (nobody, or a person without a visible face)."""

    def __init__(self, face: bool, person: bool = True):
        self.face, self.person, self.closed = face, person, False

    def __call__(self, image):
        from helpers.pose.keypoints import PoseFrame
        from helpers.testing.pose import dancer_pose

        height, width = image.shape[:2]
        if not self.person:
            return PoseFrame.empty(height, width)
        pose = dancer_pose(0.0, height, width)
        if not self.face:
            pose.body_score[:, list(task.FACE_POINTS)] = 0.05
        return pose

    def close(self):
        self.closed = True


@pytest.mark.parametrize("person", [False, True], ids=["nobody", "no face"])
def test_pose_model_needs_a_face_on_the_reference_before_any_model(person, monkeypatch, no_models):
    from helpers.tasks import inputs

    runner = _FakeRunner(face=False, person=person)
    monkeypatch.setattr(inputs, "open_dwpose", lambda smoke: (runner, []))
    params = task.Params(smoke=True, video_is_middle=True, source_video="https://example.org/poses.mp4")
    expected = "no face found on the reference image" if person else "the reference image shows no person"
    with pytest.raises(InputError, match=expected):
        task.validate(params)
    assert runner.closed
    # the other models do not need a face: the same picture passes
    monkeypatch.setattr(inputs, "open_dwpose", lambda smoke: pytest.fail("DWPose ran on the reference"))
    task.validate(task.Params(smoke=True, video_is_middle=True, model="musev_referencenet",
                              source_video="https://example.org/poses.mp4"))


# -- presets and downloads ------------------------------------------------------------------------------------------
def test_presets_are_the_originals_video_examples():
    assert list(task.PRESETS)[0] == README_RUN
    for name, values in task.PRESETS.items():
        params = params_from_dict(task.Params, values)
        base.check_params(params)
        assert params.video_is_middle and params.condition == "dwpose_body_hand", name  # the yaml's pose videos
        assert (params.which2video, params.frames, params.fps, params.steps, params.guidance_scale) == (
            "video_middle", 96 if "96 frames" in name else 12, 12.0, 10, 3.5), name
        assert (params.window, params.overlap, params.sample_rate, params.controlnet_scale) == (12, 4, 1, 1.0), name
        assert params.source_video.startswith(task.DATA + "/source_video/"), name
        assert params.reference_image.startswith(task.DATA + "/images/"), name
    dance1, dance2, duffy = (task.PRESETS[k] for k in (README_RUN, "dance2 · cyber girl", "duffy"))
    assert dance1["source_video"].endswith("video1_girl_poseseq.mp4") and dance1["reference_image"].endswith(
        "spark_girl.png") and (dance1["height"], dance1["width"]) == (960, 512) and dance1["model"] == task.POSE_MODEL
    assert "wearing a dress made of stars" in dance1["prompt"]
    assert dance2["source_video"] == dance1["source_video"] and dance2["reference_image"].endswith("cyber_girl.png")
    assert duffy["source_video"].endswith("pose-for-Duffy-4.mp4") and (duffy["height"], duffy["width"]) == (1280, 704)
    assert {task.PRESETS[k]["model"] for k in task.PRESETS} == set(task.MODELS)
    # the defaults are the README's video2video command
    d = task.Params()
    assert (d.condition, d.which2video, d.model, d.frames, d.fps, d.steps, d.guidance_scale, d.window,
            d.overlap) == ("dwpose_body_hand", "video_middle", task.POSE_MODEL, 12, 12.0, 10, 3.5, 12, 4)


def test_smoke_mode_never_downloads(monkeypatch, no_models):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("SMOKE mode downloaded"))
    p = task.plan(params_from_dict(task.Params, {**task.PRESETS[README_RUN], "smoke": True}))
    assert p.video.name == "dancer_poses.mp4" and p.image.name == "reference.png"
    assert "SMOKE: replaced by the synthetic dancer_poses.mp4" in p.sources["source video"]
    assert (p.width, p.height, p.frames) == (task.SMOKE_SIDE, 2 * task.SMOKE_SIDE, task.SMOKE_FRAMES)


def test_presets_download_once_and_say_what_to_do_offline(monkeypatch, tmp_path, no_models):
    from helpers.tasks import inputs

    video, picture = _video(tmp_path / "v.mp4", 12, size=(64, 128)), _picture(tmp_path / "p.png", (64, 128))
    fetched = []

    def fake_download(url, target, timeout, label=None):
        fetched.append(url)
        shutil.copy(video if url.endswith(".mp4") else picture, target)

    monkeypatch.setattr(inputs, "_download", fake_download)
    values = {**task.PRESETS[README_RUN], "model": "musev"}
    p = task.plan(params_from_dict(task.Params, values))
    assert sorted(fetched) == sorted([values["source_video"], values["reference_image"]])
    assert p.video == inputs.cached_input(values["source_video"])
    assert p.video.parent == Path(os.environ["HV_ROOT"]) / "inputs" / "examples"
    assert (p.width, p.height, p.frames) == (512, 960, 12) and p.windows == ((0, 10),)
    task.plan(params_from_dict(task.Params, values))
    assert len(fetched) == 2  # the second plan reads the local copies
    monkeypatch.setattr(inputs, "_download", lambda url, target, timeout, label=None: (_ for _ in ()).throw(
        InputError(f"could not download {target.name} (offline)")))
    with pytest.raises(InputError, match="could not download"):
        task.plan(params_from_dict(task.Params, {**values, "reference_image": task.DATA + "/images/duffy.png"}))


def test_sizes_follow_the_picture_and_floor_to_64(tmp_path, no_models):
    """0 = the picture's own size (the image-to-video task's rule), floored to multiples of 64."""
    def size(width, height, picture):
        p = task.plan(task.Params(model="musev", width=width, height=height,
                                  reference_image=_picture(tmp_path / "ref.png", picture)))
        return p.width, p.height

    assert size(0, 0, (700, 1000)) == (640, 960)
    assert size(512, 0, (500, 1000)) == (512, 1024)
    assert size(0, 0, (1000, 2000)) == (640, 1280)  # the longer side stays within 1280


# -- preview --------------------------------------------------------------------------------------------------------
def test_preview_shows_source_condition_and_controlnet_input_before_any_model(no_models, capsys):
    from helpers.pipelines.musev import preprocess

    params = task.Params(smoke=True, video_is_middle=True, source_video="https://example.org/poses.mp4")
    preview = task.preview_inputs(params)
    inputs, p = preview.inputs, preview.inputs.plan
    assert inputs.control.shape == (p.frames, p.height, p.width, 3) and inputs.control.dtype == np.uint8
    assert np.array_equal(inputs.control, preprocess.crop_resize_video_frames(inputs.source, p.height, p.width))
    assert np.array_equal(inputs.reference, preprocess.crop_resize_condition_image(
        media.read_image(p.image), p.height, p.width))
    assert preview.sheet.ndim == 3 and preview.sheet.shape[1] > 3 * 192  # three columns
    assert preview.sheet.shape[0] > 4 * 192 * p.height / p.width  # first, middle, last frame and the reference
    assert inputs.provenance and {r["pack"] for r in inputs.provenance} == {"dwpose"}  # the face check ran DWPose
    assert task.prepare(params).control is inputs.control  # Generate after the preview detects nothing again
    preview.show()
    out = capsys.readouterr().out
    assert f"{p.frames} frames at {p.width}x{p.height}" in out and "video_has_condition" in out


# -- form, CLI ------------------------------------------------------------------------------------------------------
def test_form_builds_and_presets_fill_it():
    from helpers import ui

    form = ui.TaskForm(task, smoke=True)
    assert isinstance(form.controls["source_video"], ui.FileField)
    assert isinstance(form.controls["reference_image"], ui.FileField)
    assert {"condition", "which2video", "video_is_middle", "model", "frames", "condition_video"} <= set(form.controls)
    form.preset.value = "duffy"
    params = form.params()
    assert params.smoke and params.video_is_middle and (params.width, params.height) == (704, 1280)
    assert params.source_video.endswith("pose-for-Duffy-4.mp4")
    form.preset.value = "(defaults)"
    assert form.params().source_video == task.DEFAULT_VIDEO and not form.params().video_is_middle


def test_registered_and_help_does_not_import_torch(capsys):
    import subprocess
    import sys

    from helpers import __main__ as cli
    from helpers import tasks

    assert "video_to_video" in tasks.available() and tasks.load("video_to_video") is task
    with pytest.raises(SystemExit) as done:
        cli.main(["video_to_video", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for spec in base.field_specs(task.Params):
        assert f"--{spec.name}" in text, spec.name
    assert "--preset" in text and "dance1" in text and "video_middle" in text
    code = ("import sys, helpers.tasks.video_to_video as task; from helpers import __main__ as cli\n"
            "try:\n    cli.main(['video_to_video', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(task.__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"



# -- SMOKE runs through the real loaders -----------------------------------------------------------------------------
def test_conditions_are_the_ones_the_conditions_module_draws():
    from helpers.pipelines.musev import conditions

    assert task.CONDITIONS == tuple(conditions.CONDITIONS)
    assert conditions.controlnet_role("dwpose_body_hand") == "controlnet_openpose"


@pytest.fixture
def pipeline_calls(monkeypatch):
    """Record what the task hands the ControlNet pipeline (the call itself runs unchanged)."""
    from helpers.pipelines.musev.controlnet import MuseVControlNetPipeline

    calls, call = [], MuseVControlNetPipeline.__call__

    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(MuseVControlNetPipeline, "__call__", spy)
    return calls


def test_smoke_pose_to_video_runs_the_readme_preset_end_to_end(monkeypatch, pipeline_calls):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("SMOKE mode downloaded"))
    ticks = []
    params = params_from_dict(task.Params, {**task.PRESETS[README_RUN], "smoke": True, "seed": 3})
    result = task.run(params, progress=lambda *tick: ticks.append(tick))
    inputs = task.prepare(params)
    p = inputs.plan
    assert result.frames.shape == (task.SMOKE_FRAMES, p.height, p.width, 3) and result.frames.dtype == np.uint8
    assert result.video_path.is_file() and result.preview_path.is_file()
    (args, kwargs), = pipeline_calls
    assert np.array_equal(args[1], inputs.reference) and kwargs["video"] is None  # video_middle: noise start
    assert np.array_equal(kwargs["control_frames"], inputs.control) and kwargs["time_size"] == p.frames - 1
    assert (kwargs["motion_speed"], kwargs["guidance_scale"], kwargs["controlnet_conditioning_scale"]) == (1.0, 3.5, 1.0)
    meta = result.metadata
    roles = {(r["pack"], r["role"]) for r in meta["weights"]}
    assert {("musev", "unet_referencenet_pose"), ("musev", "ip_adapter_image_proj_pose"), ("musev", "referencenet"),
            ("musev", "controlnet_openpose"), ("musev", task.FANTASTICMIX_ROLE), ("dwpose", "detector")} <= roles
    assert meta["smoke"] is True and meta["params"]["frames"] == task.SMOKE_FRAMES
    assert meta["inputs"]["video_is_middle"] is True and meta["requested_params"]["frames"] == 12
    assert any(stage == "denoise" for stage, *_ in ticks) and ticks[-1] == ("save", 1, 1)
    assert json.loads(result.sidecar_path.read_text())["method"].startswith("MuseV musev_referencenet_pose")


def test_smoke_video_mode_starts_from_the_source_frames_with_drawn_poses(pipeline_calls):
    """An RGB source, DWPose skeletons drawn from it, which2video="video": the frames 1.. go to the pipeline."""
    params = task.Params(smoke=True, seed=5, which2video="video")
    result = task.run(params)
    inputs = task.prepare(params)
    assert result.frames.shape == (task.SMOKE_FRAMES, 128, 64, 3)
    (args, kwargs), = pipeline_calls
    assert np.array_equal(kwargs["video"], inputs.video[1:]) and np.array_equal(kwargs["control_frames"],
                                                                                 inputs.control)
    assert inputs.control.max() > 0 and not np.array_equal(inputs.control, inputs.video)  # skeletons, not frames
    assert result.metadata["method"].endswith("(dwpose_body_hand), video")


def test_the_precision_setting_reaches_the_memory_plan(monkeypatch):
    asked = []

    def plan(smoke, precision="auto"):
        asked.append(precision)
        raise InputError("stopped before the models")

    monkeypatch.setattr(task, "run_memory_plan", plan)
    with pytest.raises(InputError, match="stopped before the models"):
        task.run(task.Params(smoke=True, precision="bfloat16"))
    assert asked == ["bfloat16"]


def test_missing_controlnet_is_named_before_any_model_loads(monkeypatch):
    """Without SMOKE, on packs in the Drive layout: a missing ControlNet stops the run before anything loads."""
    from helpers.errors import MissingWeightsError
    from helpers.testing.musev_v2v import write_tiny_v2v_packs
    from helpers.testing.pose import write_tiny_dwpose_pack

    root = Path(os.environ["HV_ROOT"])
    write_tiny_v2v_packs(root)
    write_tiny_dwpose_pack(root)
    shutil.rmtree(root / "models" / "musev" / "controlnet_openpose")
    monkeypatch.setattr(task, "_load", lambda *a, **k: pytest.fail("a model loaded before the weights were checked"))
    with pytest.raises(MissingWeightsError, match="controlnet_openpose") as caught:
        task.run(task.Params(model="musev", width=64, height=128, frames=3, steps=1, window=2, overlap=0))
    assert "\n" not in str(caught.value)


def test_pose_condition_without_a_person_in_the_source_video(monkeypatch, no_models):
    from helpers.tasks import inputs

    monkeypatch.setattr(inputs, "open_dwpose", lambda smoke: (_FakeRunner(face=False, person=False), []))
    with pytest.raises(InputError, match="no person") as caught:
        task.validate(task.Params(smoke=True, model="musev"))
    assert "\n" not in str(caught.value)
