"""Pose-to-dance task: input checks before any model, presets, example downloads, the input preview, SMOKE runs
end to end (real loaders on tiny packs), the form and the CLI."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import media, pose
from helpers.errors import InputError, MissingWeightsError
from helpers.pipelines import controlnext_svd
from helpers.pose.video import read_frames
from helpers.tasks import base, inputs
from helpers.tasks import pose_to_dance as task
from helpers.tasks.base import params_from_dict

DANCER_FRAMES = 48  # assets/pose/dancer.mp4


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Each test gets its own SMOKE folder, one CPU thread, and no inputs or models left over from another test."""
    monkeypatch.setenv("HV_SMOKE_ROOT", str(tmp_path / "smoke"))
    monkeypatch.delenv("HV_SMOKE", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    task._PREPARED.clear()
    base.clear_cache()
    yield
    task._PREPARED.clear()
    base.clear_cache()
    torch.set_num_threads(threads)


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if a pose model or the video model starts loading."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(pose.DWPoseRunner, "from_weights", classmethod(refuse))
    monkeypatch.setattr(controlnext_svd, "load_pipeline", refuse)
    monkeypatch.setattr(task, "_video_model_paths", refuse)


def _write_video(path, frames: int, size=(96, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 + 10 * i, np.uint8))
    writer.release()
    return path


def _bad_inputs(tmp_path, case: str) -> dict:
    """Params values for one bad input."""
    if case == "missing image":
        return {"reference_image": str(tmp_path / "nobody.png")}
    if case == "empty image path":
        return {"reference_image": "  "}
    if case == "corrupt image":
        (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
        return {"reference_image": str(tmp_path / "broken.png")}
    if case == "video as image":
        return {"reference_image": task.DEFAULT_VIDEO}
    if case == "corrupt video":
        (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
        return {"driving_video": str(tmp_path / "broken.mp4")}
    if case == "zero-frame video":
        return {"driving_video": str(_write_video(tmp_path / "empty.mp4", 0))}
    if case == "one-frame video":
        return {"driving_video": str(_write_video(tmp_path / "still.mp4", 1))}
    if case == "image as video":
        return {"driving_video": task.DEFAULT_REFERENCE}
    if case == "more frames than the video":
        return {"frames": 40}  # 48 frames at stride 2 give 24, plus the reference pose: at most 25
    if case == "stride leaves one frame":
        return {"driving_video": str(_write_video(tmp_path / "short.mp4", 3)), "sample_stride": 4,
                "version": "v1", "pose_video": True}
    if case == "window <= overlap":
        return {"window": 6, "overlap": 6}
    if case == "width not a multiple of 64":
        return {"resolution": "custom", "width": 600}
    if case == "height not a multiple of 64":
        return {"resolution": "custom", "height": 1000}
    if case == "one frame":
        return {"frames": 1}
    if case == "zero steps":
        return {"steps": 0}
    if case == "unknown version":
        return {"version": "v3"}
    raise ValueError(case)


BAD_CASES = {
    "missing image": "reference image not found",
    "empty image path": "no reference image given",
    "corrupt image": "cannot read broken.png as an image",
    "video as image": "cannot read dancer.mp4 as an image",
    "corrupt video": "broken.mp4",
    "zero-frame video": "empty.mp4",
    "one-frame video": r"still.mp4 has 1 frame\(s\)",
    "image as video": "reference.png is a picture",
    "more frames than the video": "ask for at most 25 frames",
    "stride leaves one frame": "lower the stride",
    "window <= overlap": r"overlap \(6\) must be smaller than window \(6\)",
    "width not a multiple of 64": "width must be a multiple of 64",
    "height not a multiple of 64": "height must be a multiple of 64",
    "one frame": "at least 2",
    "zero steps": "steps must be at least 1",
    "unknown version": "version must be one of v2, v1",
}


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("smoke", [False, True], ids=["real", "smoke"])
def test_bad_input_is_one_line_error_before_any_model(case, smoke, tmp_path, no_models):
    params = task.Params(smoke=smoke, **_bad_inputs(tmp_path, case))
    with pytest.raises(InputError, match=BAD_CASES[case]) as error:
        task.run(params)
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match=BAD_CASES[case]):
        task.preview_inputs(params)


@pytest.mark.parametrize("kind", ["rgba", "grey", "16-bit", "huge"])
def test_awkward_photos_are_accepted(kind, tmp_path, no_models):
    rng = np.random.default_rng(0)
    if kind == "rgba":
        image = Image.fromarray(rng.integers(0, 255, (300, 200, 4), dtype=np.uint8), "RGBA")
    elif kind == "grey":
        image = Image.fromarray(rng.integers(0, 255, (300, 200), dtype=np.uint8), "L")
    elif kind == "16-bit":
        image = Image.fromarray(rng.integers(0, 65535, (300, 200), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (media.MAX_IMAGE_SIDE + 500, 64, 3), dtype=np.uint8))
    image.save(tmp_path / "photo.png")
    plan = task.plan(task.Params(reference_image=str(tmp_path / "photo.png")))
    assert plan.reference == tmp_path / "photo.png"
    assert (plan.width, plan.height, plan.num_frames) == (576, 1024, 25)


def test_output_fps_floors_as_the_original_unless_exact_is_asked_for():
    plan = replace(task.plan(task.Params()), video_fps=29.0)
    assert task.output_fps(task.Params(), plan) == 14.0  # the original: avg_fps // stride
    assert task.fps_rule(task.Params()).startswith("original")
    assert task.output_fps(task.Params(exact_fps=True), plan) == 14.5
    assert task.output_fps(task.Params(exact_fps=True, fps=10.0), plan) == 10.0
    assert task.output_fps(task.Params(), replace(plan, video_fps=29.97)) == 14.0


def test_alignment_is_fitted_on_every_sampled_frame_as_the_original():
    plan = task.plan(task.Params(frames=4))
    assert plan.driving_indices == (0, 2, 4) and plan.fit_indices == tuple(range(0, DANCER_FRAMES, 2))
    assert task.plan(task.Params(frames=4, align_frames="generated")).fit_indices == (0, 2, 4)


def test_plan_counts_frames_as_the_original():
    plan = task.plan(task.Params())
    # frame 0 = the reference pose, then driving frames 0, 2, 4, ... (48 frames at stride 2)
    assert plan.num_frames == 25 and plan.driving_indices == tuple(range(0, DANCER_FRAMES, 2))
    assert plan.prepend_reference_pose and plan.detect and plan.crop_reference
    assert task.plan(task.Params(frames=10, sample_stride=3)).driving_indices == tuple(range(0, 27, 3))
    v1_pose_video = task.plan(task.Params(version="v1", pose_video=True, sample_stride=1))
    assert v1_pose_video.num_frames == DANCER_FRAMES and not v1_pose_video.prepend_reference_pose
    assert not v1_pose_video.crop_reference and not v1_pose_video.detect
    assert task.output_fps(task.Params(), plan) == 6.0  # 12 fps / stride 2
    smoke = task.plan(task.Params(smoke=True))
    assert (smoke.width, smoke.height, smoke.num_frames, smoke.window, smoke.overlap) == (64, 128, 6, 4, 2)


# -- presets and example downloads -------------------------------------------------------------------------------------
def test_presets_are_valid_params_pinned_to_the_original_examples():
    published = task.PRESETS["v2 · ref 01 + dance 02 (the published run)"]
    assert published["reference_image"].endswith("ControlNeXt-SVD-v2/examples/ref_imgs/01.jpeg")
    assert published["driving_video"].endswith("ControlNeXt-SVD-v2/examples/video/02.mp4")
    defaults = task.Params()
    for name in ("version", "resolution", "sample_stride", "window", "overlap", "steps", "guidance_scale"):
        assert published[name] == getattr(defaults, name), name  # the defaults are the published run
    for name, values in task.PRESETS.items():
        params = params_from_dict(task.Params, values)
        base.check_params(params)
        for key in ("reference_image", "driving_video"):
            assert values[key].startswith(task.EXAMPLES + "/"), (name, key)
    v1 = [v for v in task.PRESETS.values() if v["version"] == "v1"]
    assert v1 and all(v["pose_video"] and v["guidance_scale"] == 3.5 and v["window"] == 14 for v in v1)


def test_fetch_input_downloads_once_into_the_drive_inputs(tmp_path, monkeypatch):
    source = tmp_path / "examples" / "video" / "02.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"0123456789" * 1000)
    local = inputs.fetch_input(source.as_uri())
    assert local.read_bytes() == source.read_bytes()
    assert local.parent == tmp_path / "hv_root" / "inputs" / "examples" and local.name.startswith("video_02-")

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert inputs.fetch_input(source.as_uri()) == local  # cached: no network needed


def test_offline_example_is_a_clear_error(monkeypatch, no_models):
    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    params = params_from_dict(task.Params, task.PRESETS["v2 · ref 02 + dance 01"])
    with pytest.raises(InputError, match="could not download ref_imgs_02.jpeg .*name resolution.*yourself"):
        task.run(params)


def test_smoke_mode_never_downloads(monkeypatch, no_models):
    def refuse(*_args, **_kwargs):
        raise AssertionError("SMOKE mode tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    values = dict(task.PRESETS["v1 · tiktok + pose video"], smoke=True)
    plan = task.plan(params_from_dict(task.Params, values))
    assert plan.reference.name == "reference.png" and plan.video.name == "dancer.mp4"
    assert "SMOKE" in plan.sources["driving video"]


# -- preview and SMOKE runs ---------------------------------------------------------------------------------------------
def _expected_control(smoke_root, indices, height=128, width=64, fit=range(0, DANCER_FRAMES, 2)):
    """The control frames recomputed step by step: DWPose on the cropped photo and the sampled frames, alignment
    fitted on every sampled frame (``fit``) as the original, drawing, with the reference pose first."""
    runner = pose.DWPoseRunner.from_weights(root=smoke_root)
    photo = pose.crop_reference_image(np.array(media.read_image(task.DEFAULT_REFERENCE)), height, width)
    reference_pose = runner(photo)
    sampled = [runner(frame) for _, frame in read_frames(task.DEFAULT_VIDEO, fit)]
    alignment = pose.fit_pose_alignment(reference_pose, sampled)
    driving = [runner(frame) for _, frame in read_frames(task.DEFAULT_VIDEO, indices)]
    return pose.draw_poses([reference_pose, *[alignment.apply(d) for d in driving]], height, width)


def test_preview_shows_detected_and_aligned_poses(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(media, "show_video", lambda frames, fps=None, title=None, **_: shown.append((frames, title)))
    preview = task.preview_inputs(task.Params(smoke=True))
    assert preview.driving.shape == (5, 240, 320, 3) and preview.detected.shape == preview.driving.shape
    assert preview.inputs.control.shape == preview.overlay.shape == (6, 128, 64, 3)
    assert (preview.detected >= preview.driving // 2).all() and preview.windows == 2
    np.testing.assert_array_equal(preview.inputs.control, _expected_control(tmp_path / "smoke", range(0, 10, 2)))
    preview.show()
    assert [title for _, title in shown] == ["dance video | detected poses",
                                              "control frames (frame 0 = your photo's pose) | over your photo"]
    assert "6 frames at 64x128" in preview.summary() and "alignment:" in preview.summary()
    # keypoints were cached for the next run, outside the bundled examples folder
    assert list((tmp_path / "smoke" / "cache" / "pose").glob("dancer-*.dwpose.npz"))
    assert not list(task.ASSETS.glob("*.dwpose.npz"))


def test_each_sampled_frame_is_detected_once(tmp_path, monkeypatch):
    calls = []
    detect = pose.DWPoseRunner.__call__
    monkeypatch.setattr(pose.DWPoseRunner, "__call__", lambda self, image: calls.append(1) or detect(self, image))
    task._PREPARED.clear()
    inputs_ = task.prepare_control(task.Params(smoke=True, frames=3))
    assert len(calls) == 1 + DANCER_FRAMES // 2  # the photo, then every sampled frame (the fit needs them all)
    assert len(inputs_.driving_poses) == 2 and len(inputs_.alignment.fit_frames) == DANCER_FRAMES // 2
    task._PREPARED.clear()
    generated = task.prepare_control(task.Params(smoke=True, frames=5, align_frames="generated"))
    assert len(calls) == 2 + DANCER_FRAMES // 2  # only the photo again: the frames come from the cache
    assert len(generated.alignment.fit_frames) == 4 and generated.alignment.ay != inputs_.alignment.ay


def test_smoke_run_end_to_end(tmp_path, monkeypatch):
    events, stages = [], set()
    original_close, original_load = pose.DWPoseRunner.close, controlnext_svd.load_pipeline

    def close(self):
        events.append("dwpose closed")
        original_close(self)

    def load(*args, **kwargs):
        events.append("video model loaded")
        return original_load(*args, **kwargs)

    monkeypatch.setattr(pose.DWPoseRunner, "close", close)
    monkeypatch.setattr(controlnext_svd, "load_pipeline", load)
    result = task.run(task.Params(smoke=True, seed=3), progress=lambda stage, done, total: stages.add(stage))
    assert events == ["dwpose closed", "video model loaded"]
    assert {"pose detection", "draw poses", "denoise", "decode"} <= stages

    assert result.frames.shape == (6, 128, 64, 3) and result.fps == 6.0
    np.testing.assert_array_equal(result.control, _expected_control(tmp_path / "smoke", range(0, 10, 2)))
    written = media.read_video(result.video_path)
    assert written.frames.shape == (6, 128, 64, 3)
    assert media.read_video(result.preview_path).frames.shape[2] > 128  # pose | result side by side
    assert result.video_path.parent == tmp_path / "smoke" / "outputs" / "pose_to_dance"

    meta = json.loads(result.sidecar_path.read_text())
    assert meta["seed"] == 3 and meta["smoke"] is True and meta["method"] == "ControlNeXt-SVD v2"
    assert meta["params"]["width"] == 64 and meta["params"]["steps"] == 2  # what actually ran
    assert meta["requested_params"]["resolution"] == "576x1024" and meta["requested_params"]["steps"] == 25
    assert {(w["pack"], w["role"]) for w in meta["weights"]} == {
        ("controlnext_svd_v2", "unet"), ("controlnext_svd_v2", "controlnext"), ("svd_xt_1_1", "components"),
        ("dwpose", "detector"), ("dwpose", "pose_model")}
    assert meta["memory_plan"]["tier"] == "cpu" and meta["peak_gpu_memory_gb"] == 0.0
    assert {"inputs", "poses", "load", "generate", "total"} <= set(meta["timings_s"])
    assert meta["control"]["driving_frame_indices"] == [0, 2, 4, 6, 8]
    assert meta["control"]["alignment"]["fit_frame_count"] == DANCER_FRAMES // 2  # every sampled frame
    assert meta["control"]["alignment"]["fit_on"] == "all" and meta["fps_rule"].startswith("original")
    assert meta["generation"] == {"width": 64, "height": 128, "frames": 6, "windows": 2, "unet_calls": 4,
                                  "added_time_ids": [6, 128, 0.02], "decode_chunk": 2}

    # Same seed, same video; the pipeline and the poses come from the caches.
    events.clear()
    again = task.run(task.Params(smoke=True, seed=3))
    assert events == [] and again.video_path != result.video_path
    np.testing.assert_array_equal(again.frames, result.frames)


def test_smoke_v1_with_a_pose_video_uses_its_frames_and_no_dwpose(tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("DWPose opened for a pose video")

    monkeypatch.setattr(pose.DWPoseRunner, "from_weights", classmethod(refuse))
    values = dict(task.PRESETS["v1 · tiktok + pose video"], smoke=True, drop_first_frame=True, override_time_ids=True,
                  motion_bucket_id=40)
    result = task.run(params_from_dict(task.Params, values))
    frames = np.stack([f for _, f in read_frames(task.DEFAULT_VIDEO, range(6))])
    np.testing.assert_array_equal(result.control, media.resize(frames, (64, 128))[1:])
    assert result.frames.shape == (5, 128, 64, 3) and result.fps == 14.0
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["method"] == "ControlNeXt-SVD v1" and meta["control"]["mode"] == "pose video as given"
    assert meta["generation"]["added_time_ids"] == [6, 40, 0.02] and meta["generation"]["decode_chunk"] == 2
    assert not any(w["pack"] == "dwpose" for w in meta["weights"])


def test_missing_weights_are_reported_before_pose_detection(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("poses were detected although the video model is missing")

    monkeypatch.setattr(pose.DWPoseRunner, "from_weights", classmethod(refuse))
    with pytest.raises(MissingWeightsError, match="controlnext_svd_v2/unet.*00_setup"):
        task.run(task.Params())


def test_real_path_reads_the_drive(tmp_path):
    """Not SMOKE: packs found under the Drive root, keypoints cached beside the video, outputs on the Drive."""
    import shutil

    from helpers.testing.controlnext import write_tiny_controlnext_packs
    from helpers.testing.pose import write_tiny_dwpose_pack

    drive = tmp_path / "hv_root"
    write_tiny_dwpose_pack(drive)
    write_tiny_controlnext_packs(drive, "v2")
    video = shutil.copy(task.DEFAULT_VIDEO, tmp_path / "my dance.mp4")
    params = task.Params(driving_video=str(video), resolution="custom", width=64, height=128, frames=5,
                         sample_stride=3, window=4, overlap=2, steps=1, fps=10.0)
    result = task.run(params)
    assert result.frames.shape == (5, 128, 64, 3) and result.fps == 10.0
    assert result.video_path.parent == drive / "outputs" / "pose_to_dance"
    assert (tmp_path / "my dance.mp4.dwpose.npz").is_file()
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["smoke"] is False and "requested_params" not in meta and meta["params"]["frames"] == 5
    assert meta["control"]["driving_frame_indices"] == [0, 3, 6, 9]
    assert not (tmp_path / "smoke").exists()


# -- form and command line ------------------------------------------------------------------------------------------
def test_form_builds_and_presets_fill_it():
    from helpers import ui

    form = ui.TaskForm(task, smoke=True)
    assert {"reference_image", "driving_video", "version", "resolution", "window", "overlap"} <= set(form.controls)
    assert isinstance(form.controls["reference_image"], ui.FileField)
    form.preset.value = "v1 · spiderman + pose video"
    params = form.params()
    assert params.version == "v1" and params.reference_image.endswith("spiderman.jpg") and params.smoke


def test_cli_help_lists_every_parameter(capsys):
    from helpers import __main__ as cli

    with pytest.raises(SystemExit) as done:
        cli.main(["pose_to_dance", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for spec in base.field_specs(task.Params):
        assert f"--{spec.name}" in text, spec.name
    assert "--preset" in text and "576x1024" in text
