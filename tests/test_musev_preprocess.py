"""MuseV's crop-and-resize of pictures and clip frames against the original's predictor level (goldens' ``input.*``
from ``input.predictor.*``) and its crop box on shapes the goldens do not cover."""

from __future__ import annotations

import numpy as np
import pytest
from golden import golden_params, load_config
from safetensors.numpy import load_file

from helpers.pipelines.musev.preprocess import crop_box, crop_resize_condition_image, crop_resize_video_frames

FORMATS = ("musev_v2v", "musev")
PREPROCESS_TOL = {
    "image": "input.condition_image <- input.predictor.condition_image",
    "frames": "input.control_image|controlnet_condition_image|video <- input.predictor.*",
}


def _params():
    return [p for fmt in FORMATS for p in golden_params(fmt)]


def _tolerance(config: dict, prefix: str) -> tuple[float, float]:
    """(atol, rtol) of the pre-processing check, read from the set's own tolerance table."""
    for section in config.get("tolerances", {}).values():
        if isinstance(section, dict):
            for key, tol in section.items():
                if key.startswith(prefix):
                    return tol["atol"], tol["rtol"]
    raise AssertionError(f"no tolerance for {prefix!r} in config.json")


def _frames(t: np.ndarray) -> np.ndarray:  # (1, 3, T, H, W) -> (T, H, W, 3)
    return np.ascontiguousarray(t[0].transpose(1, 2, 3, 0))


def _predictor_sets(golden_dir):
    sets = [load_file(f) for f in sorted(golden_dir.glob("*.safetensors"))]
    sets = [t for t in sets if "input.predictor.condition_image" in t]
    if not sets:
        pytest.skip(f"{golden_dir} holds no predictor-level inputs (input.predictor.*)")
    return sets


def _assert_close(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float, what: str):
    assert actual.shape == expected.shape and actual.dtype == np.uint8, (what, actual.shape, expected.shape)
    err = np.abs(actual.astype(np.int64) - expected.astype(np.int64)).max()
    assert err <= atol + rtol * np.abs(expected).max(), f"{what}: max abs diff {err}"


@pytest.mark.parametrize("golden_dir", _params())
def test_condition_image_matches_original(golden_dir):
    sets = _predictor_sets(golden_dir)
    atol, rtol = _tolerance(load_config(golden_dir), PREPROCESS_TOL["image"])
    for t in sets:
        expected = _frames(t["input.condition_image"])[0]
        raw = _frames(t["input.predictor.condition_image"])[0]
        got = crop_resize_condition_image(raw, *expected.shape[:2])
        _assert_close(got, expected, atol, rtol, "condition image")
        # the check can fail: the original always resamples, even an input already at the video size
        if raw.shape == expected.shape:
            assert np.abs(raw.astype(int) - expected).max() > atol


@pytest.mark.parametrize("golden_dir", _params())
def test_clip_frames_match_original(golden_dir):
    sets = _predictor_sets(golden_dir)
    atol, rtol = _tolerance(load_config(golden_dir), PREPROCESS_TOL["frames"])
    for t in sets:
        clip = _frames(t["input.predictor.clip"])
        height, width = t["input.condition_image"].shape[-2:]
        got = crop_resize_video_frames(clip, height, width)
        if "input.predictor.detector_output" in t:  # RGB mode: frames 1.. are the pipeline's video
            _assert_close(got[1:], _frames(t["input.video"]), atol, rtol, "video frames")
        else:  # the clip is already the condition video: its frames are the control frames
            control = np.concatenate([t["input.controlnet_condition_image"], t["input.control_image"]], axis=2)
            _assert_close(got, _frames(control), atol, rtol, "control frames")


@pytest.mark.parametrize(("in_hw", "out_hw", "box"), [
    ((100, 200), (64, 64), (50, 0, 150, 99)),      # wider: full height minus the last row, centre of the width
    ((200, 100), (64, 64), (0, 50, 99, 150)),      # taller
    ((101, 203), (64, 128), (1, 0, 202, 100)),     # margins rounded up, end capped at the last pixel
    ((128, 128), (128, 128), (0, 0, 127, 127)),    # same size: the last row and column still go
    ((300, 400), (128, 64), (125, 0, 275, 299)),   # landscape picture, portrait video
])
def test_crop_box(in_hw, out_hw, box):
    assert crop_box(*in_hw, *out_hw) == box


def test_condition_image_is_pil_lanczos_of_the_box():
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    got = crop_resize_condition_image(image, 64, 64)
    x0, y0, x1, y1 = crop_box(90, 160, 64, 64)
    expected = np.asarray(Image.fromarray(image[y0:y1, x0:x1]).resize((64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(got, expected)
    assert got.shape == (64, 64, 3) and got.dtype == np.uint8


def test_video_frames_shape_and_range():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 72, 96, 3), dtype=np.uint8)
    got = crop_resize_video_frames(frames, 64, 128)
    assert got.shape == (3, 64, 128, 3) and got.dtype == np.uint8
    x0, y0, x1, y1 = crop_box(72, 96, 64, 128)
    # bilinear on uint8 stays within one level of the float computation on the same box
    import torch
    ref = torch.nn.functional.interpolate(torch.from_numpy(frames[:, y0:y1, x0:x1]).permute(0, 3, 1, 2).double(),
                                          size=(64, 128), mode="bilinear", align_corners=False)
    ref = ref.permute(0, 2, 3, 1).numpy()
    assert np.abs(got - ref).max() <= 1.0


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((1, 8, 3), np.uint8)])
def test_bad_arrays_are_refused(bad):
    with pytest.raises(ValueError):
        crop_resize_condition_image(bad, 8, 8)
