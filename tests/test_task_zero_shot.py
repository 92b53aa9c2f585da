"""The zero-shot pose-video task: input checks (before any model loads), techniques, presets, example downloads,
SMOKE runs end to end, the comparison grid and the command line."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import __main__ as cli
from helpers import media
from helpers.errors import InputError
from helpers.pipelines.zero_shot_pose import original_v2_cli, recommended
from helpers.tasks import base, inputs
from helpers.tasks import zero_shot_pose_video as task
from helpers.tasks.base import field_specs, params_from_dict
from helpers.testing.zero_shot import stick_figure_poses


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """One SMOKE root for the module: the tiny packs are written once."""
    return tmp_path_factory.mktemp("zero_shot_smoke")


@pytest.fixture(autouse=True)
def _smoke_root_and_one_thread(smoke_dir, monkeypatch):
    monkeypatch.setenv("HV_SMOKE_ROOT", str(smoke_dir))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread (and the machine is shared)
    yield
    torch.set_num_threads(previous)


def smoke_params(**values) -> task.Params:
    return task.Params(smoke=True, **values)


def write_frames(folder: Path, frames: np.ndarray, stem: str = "frame") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        media.write_image(folder / f"{stem}_{i:04d}.png", frame)
    return folder


def upscaled_poses(count: int, size: int = 96) -> np.ndarray:
    """Stick-figure pose stand-ins at ``size`` px, so the crop to the SMOKE size really resizes."""
    return media.resize(stick_figure_poses(count, 32), (size, size))


# ---------------------------------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(("values", "message"), [
    ({"prompt": "   "}, "prompt is empty"),
    ({"copy_steps": 30, "steps": 20}, "lower copy steps to at most 20"),
    ({"width": 500}, "width must be a multiple of 64"),
    ({"height": 200}, "height must be at least 256"),
    ({"frames": 40, "sample_stride": 2}, "gives 24 at sample stride 2: ask for at most 24"),
    ({"technique": "morphing"}, "technique must be one of"),
    ({"guidance_scale": 1.0}, "negative prompt only acts with guidance above 1"),
    ({"driving_video": "/nowhere/swing.mp4"}, "driving video not found"),
    ({"detector": "none", "technique": "latent_differences"}, "set source_video"),
])
def test_bad_settings_are_refused_with_what_to_do(values, message):
    with pytest.raises(InputError, match=message):
        task.validate(task.Params(**values))


def test_unreadable_and_unsuitable_inputs_are_refused(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="broken.mp4"):
        task.validate(task.Params(driving_video=str(broken)))
    photo = media.write_image(tmp_path / "photo.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="single image"):
        task.validate(task.Params(driving_video=str(photo)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images in"):
        task.validate(task.Params(driving_video=str(tmp_path / "empty")))
    poses = write_frames(tmp_path / "poses", upscaled_poses(3))
    with pytest.raises(InputError, match="at most 3 frames"):
        task.validate(task.Params(driving_video=str(poses), detector="none", sample_stride=1))
    masks = write_frames(tmp_path / "masks", np.full((16, 32, 32, 3), 255, np.uint8))
    with pytest.raises(InputError, match="shared_noise has none"):
        task.validate(task.Params(technique="shared_noise", masks=str(masks)))


def test_checking_inputs_imports_no_model_library():
    """validate() stays quick: the pipeline package loads torch and diffusers only when a model is needed."""
    code = ("import sys; from helpers.tasks import zero_shot_pose_video as task; task.validate(task.Params()); "
            "print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_errors_come_before_any_model_or_pose_work(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("a model or the pose detector was touched before the input check")

    for name in ("_model_paths", "load_pipeline", "prepare_inputs", "_detect"):
        monkeypatch.setattr(task, name, must_not_run)
    with pytest.raises(InputError, match="copy steps"):
        task.run(smoke_params(copy_steps=60, steps=50))
    with pytest.raises(InputError, match="techniques must be distinct names"):
        task.compare(smoke_params(), ["shared_noise", "warp_everything"])
    with pytest.raises(InputError, match="width must be a multiple"):
        task.compare(smoke_params(width=320 + 32), ["shared_noise"])


# ------------------------------------------------------------------------------------------- techniques, presets


def test_techniques_map_to_the_pipeline_options():
    params = task.Params()
    assert task.options_for(replace(params, technique="recommended")) == recommended()
    assert task.options_for(replace(params, technique="original_v2")) == original_v2_cli()
    baseline = task.options_for(replace(params, technique="independent_noise"))
    assert baseline.noise == "independent" and baseline.latent_reference == "off"
    keyframe = task.options_for(replace(params, technique="keyframe_differences", copy_steps=16, strength=0.5,
                                        reference_schedule="last_step", match_noise_level=False))
    assert (keyframe.latent_reference, keyframe.reference_steps, keyframe.reference_strength) == ("keyframe", 16, 0.5)
    assert keyframe.reference_schedule == "last_step" and not keyframe.match_noise_level
    for name, technique in task.TECHNIQUES.items():
        options = task.options_for(replace(params, technique=name))
        assert options.needs_source == technique.needs_source, name
        assert (options.latent_reference != "off") == technique.uses_reference, name


def test_presets_are_valid_params_pointing_at_the_original_demo():
    for name, values in task.PRESETS.items():
        params = params_from_dict(task.Params, values)
        base.check_params(params)
        assert params.driving_video.startswith(task.ORIGINAL_DEMO), name
    urls = inputs.expand_url_range(task.GOLF_POSES)
    assert len(urls) == 26
    assert urls[0].endswith("/demo/poses/frame_0000_rendered.png")
    assert urls[-1].endswith("/demo/poses/frame_0025_rendered.png")
    assert inputs.expand_url_range(task.GOLF_MASKS)[7].endswith("/demo/masks/mask_07.png")


def test_smoke_mode_never_downloads_and_says_what_it_used():
    preset = task.PRESETS["golf swing · source latents inside the masks"]
    plan = task.plan(smoke_params(**preset))
    assert plan.driving.name == "dancer.mp4" and plan.masks is None
    assert "SMOKE" in plan.notes["driving video"] and "SMOKE" in plan.notes["masks"]
    assert (plan.width, plan.height, plan.frames, plan.steps) == (64, 64, 4, 3)
    assert plan.copy_steps == 3 and plan.fps == 10.0
    openpose = task.preview_inputs(smoke_params(detector="openpose"))  # no tiny OpenPose: DWPose stands in
    assert "SMOKE" in openpose.plan.notes["detector"] and openpose.inputs.poses.shape == (4, 64, 64, 3)


def test_numbered_frames_download_once_into_their_own_folder(tmp_path):
    published = write_frames(tmp_path / "published", upscaled_poses(3, 16), stem="pose")
    url = published.as_uri() + "/pose_{0000..0002}.png"

    folder = inputs.fetch_input(url, tmp_path / "inputs")

    assert sorted(p.name for p in folder.iterdir()) == ["pose_0000.png", "pose_0001.png", "pose_0002.png"]
    single = inputs.fetch_input(published.as_uri() + "/pose_0001.png", tmp_path / "inputs")
    assert single.is_file() and single.read_bytes() == (published / "pose_0001.png").read_bytes()
    for p in published.iterdir():
        p.unlink()
    assert inputs.fetch_input(url, tmp_path / "inputs") == folder  # already there: no download needed
    with pytest.raises(InputError, match="could not download .*check the internet connection"):
        inputs.fetch_input("http://127.0.0.1:9/demo/frame_{0..1}.png", tmp_path / "offline", timeout=5)
    with pytest.raises(InputError, match="counts down"):
        inputs.expand_url_range("https://example.org/f_{5..1}.png")


# ---------------------------------------------------------------------------------------------------- SMOKE runs


def test_smoke_run_writes_video_preview_and_sidecar(tmp_path, capsys):
    steps = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the original's long prompt is a note, not a warning from inside torch
        result = task.run(smoke_params(output_dir=str(tmp_path), seed=5), progress=lambda *a: steps.append(a))

    assert result.frames.shape == (4, 64, 64, 3) and result.control.shape == (4, 64, 64, 3)
    assert result.video_path.is_file() and result.preview_path.is_file()
    assert media.read_video(result.video_path).frames.shape[0] == 4
    preview = media.read_video(result.preview_path).frames
    assert preview.shape[2] > preview.shape[1]  # poses | result, side by side
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["seed"] == 5 and meta["smoke"] and meta["params"]["technique"] == "recommended"
    assert meta["params"]["steps"] == 3 and meta["requested_params"]["steps"] == 50
    assert meta["technique"]["options"]["cross_frame_attention"] == "first_and_previous"
    packs = {(w["pack"], w["role"]) for w in meta["weights"]}
    assert {("sd21", "base"), ("controlnet_sd21_openpose", "controlnet"), ("dwpose", "detector")} <= packs
    assert {"inputs", "poses", "load", "generate", "total"} <= set(meta["timings_s"])
    assert {s[0] for s in steps} >= {"pose detection", "denoise", "decode"}
    note = meta["inputs"]["notes"]["prompt"]
    assert note.startswith("the prompt is 233 tokens long; only the first 77 reach the model")
    assert capsys.readouterr().out.count(note) == 1


def test_smoke_run_from_pose_renders_with_source_frames_and_masks(tmp_path):
    renders = upscaled_poses(5)
    poses = write_frames(tmp_path / "poses", renders, stem="frame")
    source = write_frames(tmp_path / "frames", np.random.default_rng(0).integers(0, 256, (5, 80, 80, 3), np.uint8))
    masks = write_frames(tmp_path / "masks", np.full((5, 80, 80, 3), 255, np.uint8), stem="mask")
    params = smoke_params(driving_video=str(poses), detector="none", source_video=str(source), masks=str(masks),
                          technique="source_latents", sample_stride=1, frames=4, output_dir=str(tmp_path / "out"))

    preview = task.preview_inputs(params)
    result = task.run(params)

    assert np.array_equal(preview.inputs.poses, media.center_crop_resize(renders[:4], (64, 64)))
    assert preview.inputs.source.shape == (4, 64, 64, 3) and preview.inputs.masks.shape == (4, 64, 64)
    assert "source × 1.0" in preview.summary()
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["inputs"]["detector"] == "none" and meta["inputs"]["masks"] == str(masks)
    assert meta["technique"]["options"]["latent_reference"] == "source"
    assert meta["fps"] == task.DEFAULT_FOLDER_FPS  # frame folders have no fps of their own


def test_compare_grid_holds_poses_and_one_labelled_tile_per_technique(tmp_path, capsys):
    techniques = ["independent_noise", "shared_noise", "copy_first_frame"]

    comparison = task.compare(smoke_params(output_dir=str(tmp_path)), techniques, columns=2, tile=128)
    assert capsys.readouterr().out.count("note: the prompt is 233 tokens long") == 1  # not once per technique

    tile_height = 22 + 128  # label band + a square tile
    assert comparison.grid.shape == (4, 2 * tile_height + 4, 2 * 128 + 4, 3)
    assert comparison.sheet.shape[0] == 22 + 4 * 96  # header + poses + 3 techniques
    assert set(comparison.videos) == set(techniques)
    assert np.array_equal(comparison.grid[:, 22:tile_height, :128], media.resize(comparison.poses, (128, 128)))
    # the SMOKE detector finds the same pose in every frame: shared noise then gives the same frame every time
    assert comparison.change["shared_noise"] == 0.0 < comparison.change["independent_noise"]
    meta = json.loads(comparison.result.sidecar_path.read_text())
    assert meta["task"] == "zero_shot_pose_video_comparison"
    assert meta["comparison"]["techniques"] == techniques
    assert comparison.result.video_path.parent == tmp_path and comparison.result.video_path.is_file()
    assert "independent_noise" in comparison.table()


def test_compare_masks_every_technique_with_a_reference_whatever_the_order(tmp_path):
    half = np.zeros((4, 96, 96, 3), np.uint8)
    half[:, :, :48] = 255
    rng = np.random.default_rng(1)
    unmasked = dict(driving_video=str(write_frames(tmp_path / "poses", upscaled_poses(4))), detector="none",
                    source_video=str(write_frames(tmp_path / "frames", rng.integers(0, 256, (4, 96, 96, 3), np.uint8))),
                    sample_stride=1, frames=4, output_dir=str(tmp_path))
    values = dict(unmasked, masks=str(write_frames(tmp_path / "masks", half, stem="mask")))
    first = task.compare(smoke_params(**values), ["independent_noise", "copy_first_frame"])
    last = task.compare(smoke_params(**values), ["copy_first_frame", "independent_noise"])
    plain = task.compare(smoke_params(**unmasked), ["copy_first_frame"])
    np.testing.assert_array_equal(first.videos["copy_first_frame"], last.videos["copy_first_frame"])
    assert not np.array_equal(first.videos["copy_first_frame"], plain.videos["copy_first_frame"])
    meta = json.loads(first.result.sidecar_path.read_text())
    assert meta["comparison"]["masked"] == {"techniques": ["copy_first_frame"], "mask_mode": "source_inside"}
    assert json.loads(plain.result.sidecar_path.read_text())["comparison"]["masked"] is None


def test_masks_default_to_the_originals_meaning(tmp_path):
    assert task.Params().mask_mode == "source_inside"
    options = task.options_for(task.Params(technique="copy_first_frame", mask_mode="reference_inside"))
    assert options.mask_mode == "reference_inside"
    poses = write_frames(tmp_path / "poses", upscaled_poses(4))
    masks = write_frames(tmp_path / "masks", np.full((4, 96, 96, 3), 255, np.uint8), stem="mask")
    values = dict(driving_video=str(poses), detector="none", masks=str(masks), technique="copy_first_frame",
                  sample_stride=1, frames=4)
    with pytest.raises(InputError, match=r"masks \(mask mode source_inside.*set source_video"):
        task.validate(task.Params(**values))
    assert task.plan(task.Params(**values, mask_mode="reference_inside")).source is None
    assert task.plan(task.Params(**values, source_video=str(poses))).source == poses


def test_noise_progression_is_in_the_task_and_the_form():
    specs = {spec.name: spec for spec in field_specs(task.Params)}
    assert "noise_progression" in specs and specs["noise_progression"].group is None  # in the form, not Advanced
    options = task.options_for(task.Params(technique="shared_noise", noise_progression=0.3))
    assert (options.noise, options.noise_independence) == ("shared", 0.3)
    assert task.options_for(task.Params(technique="recommended", noise_progression=0.5)).noise_independence == 0.5
    with pytest.raises(InputError, match="shares none: set noise progression to 0"):
        task.validate(task.Params(technique="independent_noise", noise_progression=0.3))


def test_the_v2_command_line_preset_is_that_command():
    (name,) = [n for n in task.PRESETS if "v2 command line" in n]
    params = params_from_dict(task.Params, task.PRESETS[name])
    assert params.technique == "original_v2" and params.base_model == "sd21-768"  # the model it loaded
    assert (params.width, params.height, params.steps, params.frames) == (512, 512, 50, 16)
    assert params.negative_prompt == ""  # its negative prompt never reached the model
    assert "own seeded noise" in name  # its own seed never acted: the noise is ours, and the name says so
    assert task.plan(smoke_params(**task.PRESETS[name])).base_role == "base_768"


# ---------------------------------------------------------------------------------------------------- the CLI


def test_cli_help_lists_every_parameter_and_technique():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli.main(["zero_shot_pose_video", "--help"])
    text = out.getvalue()
    assert exit_info.value.code == 0
    for spec in field_specs(task.Params):
        assert f"--{spec.name}" in text, spec.name
    for name in task.TECHNIQUES:
        assert name in text
    assert "--preset" in text and "golf swing" in text
