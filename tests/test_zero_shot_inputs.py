"""Zero-shot pose video without models: input checks (raised before anything loads), pose inputs, latent arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.errors import InputError, MissingWeightsError
from helpers.pipelines.zero_shot_pose import (
    ConsistencyOptions,
    check_call_inputs,
    original_v2_cli,
    poses_from_video,
    prepare_pose_frames,
    recommended,
)
from helpers.pipelines.zero_shot_pose.latents import initial_noise, pull_towards_previous, signal_weight
from helpers.pose.keypoints import PoseFrame
from helpers.pose.render import draw_pose

POSES = np.zeros((4, 32, 32, 3), np.uint8)
POSES[:, 8:24, 14:18] = 200


def check(**overrides) -> None:
    arguments = dict(prompt="a dancer", negative_prompt=None, poses=POSES, options=ConsistencyOptions(),
                     num_inference_steps=10)
    arguments.update(overrides)
    check_call_inputs(**arguments)


# ---------------------------------------------------------------------------------------------------- input errors


def test_valid_inputs_pass_silently():
    check()
    check(options=recommended(), negative_prompt="blurry")
    check(options=ConsistencyOptions(latent_reference="source", reference_steps=10), source_frames=POSES,
          masks=np.ones((4, 32, 32), bool))
    check(options=ConsistencyOptions(latent_reference="first_frame"), source_frames=POSES,
          masks=np.ones((4, 32, 32), bool))  # the original's masks: the source inside, frame 0 outside


@pytest.mark.parametrize(("overrides", "message"), [
    ({"options": ConsistencyOptions(latent_reference="first_frame", reference_steps=60)}, "lower it to at most 10"),
    ({"options": ConsistencyOptions(latent_reference="first_frame", reference_steps=0)}, "whole number ≥ 1"),
    ({"options": ConsistencyOptions(reference_strength=1.5)}, "between 0 and 1"),
    ({"options": ConsistencyOptions(noise_independence=0.3)}, "set noise='shared'"),
    ({"options": ConsistencyOptions(noise="fixed")}, "noise must be one of"),
    ({"options": ConsistencyOptions(cross_frame_attention="all")}, "cross_frame_attention must be one of"),
    ({"options": ConsistencyOptions(latent_reference="copy_raw_img_lat")}, "latent_reference must be one of"),
    ({"options": ConsistencyOptions(latent_reference="source_motion")}, "pass source_frames"),
    ({"source_frames": POSES}, "only used by the latent references"),
    ({"options": ConsistencyOptions(latent_reference="source"), "source_frames": POSES[:3]}, "one source frame per"),
    ({"masks": np.ones((4, 32, 32))}, "set latent_reference"),
    ({"options": ConsistencyOptions(latent_reference="first_frame"), "masks": np.ones((4, 32, 32))},
     "masks take the source video's latents inside the mask.*pass source_frames, or set mask_mode='reference_inside'"),
    ({"options": ConsistencyOptions(mask_mode="person")}, "mask_mode must be one of"),
    ({"options": ConsistencyOptions(latent_reference="first_frame", mask_mode="reference_inside"),
      "masks": np.ones((4, 32, 32)), "source_frames": POSES}, "only used by the latent references"),
    ({"options": ConsistencyOptions(latent_reference="first_frame"), "source_frames": POSES,
      "masks": np.ones((3, 32, 32))}, "one mask per"),
    ({"options": ConsistencyOptions(latent_reference="first_frame", mask_mode="reference_inside"),
      "masks": np.ones((4, 16, 16))}, "pose size"),
    ({"poses": np.zeros((2, 30, 30, 3), np.uint8)}, "multiple of 8"),
    ({"poses": [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)]}, "different sizes"),
    ({"poses": []}, "at least one frame"),
    ({"poses": "poses.mp4"}, "list of images"),
    ({"prompt": "  "}, "prompt is empty"),
    ({"negative_prompt": "blurry", "guidance_scale": 1.0}, "raise guidance_scale"),
    ({"controlnet_conditioning_scale": -1}, "controlnet_conditioning_scale"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"output_type": "pil"}, "output_type"),
])
def test_bad_inputs_raise_one_line_saying_what_to_do(overrides, message):
    with pytest.raises(InputError, match=message) as caught:
        check(**overrides)
    assert "\n" not in str(caught.value)


def test_options_describe_themselves():
    assert "after step 9" in original_v2_cli().describe()
    assert "first_and_previous" in recommended().describe()
    assert ConsistencyOptions().reference_applies_after(0) is False
    assert [original_v2_cli().reference_applies_after(i) for i in (7, 8, 9)] == [False, True, False]


# ---------------------------------------------------------------------------------------------------- latent arithmetic


def test_initial_noise_modes():
    def draw(**kw):
        return initial_noise(4, (4, 8, 8), generator=torch.Generator().manual_seed(1), **kw)

    shared, independent = draw(mode="shared"), draw(mode="independent")
    assert all(torch.equal(shared[k], shared[0]) for k in range(4))
    assert not torch.equal(independent[1], independent[0])
    mixed = draw(mode="shared", independence=0.25)
    assert not torch.equal(mixed[1], mixed[0])
    # the shared part is drawn first, so mixing keeps it: mixed ≈ √0.75·shared + √0.25·own
    assert torch.corrcoef(torch.stack([mixed[1].flatten(), shared[0].flatten()]))[0, 1] > 0.7
    assert abs(float(draw(mode="shared", independence=0.5).std()) - 1.0) < 0.15


def test_previous_frame_scan_weights():
    frames = torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1, 1)
    s = 0.5
    pulled = pull_towards_previous(frames, s).flatten().tolist()
    frame_1 = (1 - s) * 10 + s * 1
    assert pulled == [1.0, frame_1, (1 - s) * 100 + s * frame_1]
    assert pull_towards_previous(frames, 1.0).flatten().tolist() == [1.0, 1.0, 1.0]


def test_signal_weights_match_the_noise_levels_of_the_original_schedule():
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              set_alpha_to_one=False, steps_offset=1, clip_sample=False)
    scheduler.set_timesteps(50)
    # 50 steps, leading spacing: after step 15 the latents sit at t = 661, a third signal (notes §3.3)
    assert int(scheduler.timesteps[16]) == 661
    assert round(signal_weight(scheduler, scheduler.timesteps[16]), 2) == 0.33
    assert signal_weight(scheduler, None) == 1.0


# ---------------------------------------------------------------------------------------------------- pose inputs


def test_blank_pose_frames_hold_the_last_pose():
    poses = POSES.copy()
    poses[1] = 0
    poses[2, 8:24, 14:18] = 90
    with pytest.warns(UserWarning, match=r"no person in pose frames 1 of 4"):
        prepared = prepare_pose_frames(poses)
    assert prepared.held == [1]
    assert np.array_equal(prepared.frames[1], poses[0])
    assert np.array_equal(prepared.frames[2], poses[2])


def test_leading_blank_frames_take_the_first_found_pose_and_an_empty_clip_is_an_error():
    poses = POSES.copy()
    poses[:2] = 0
    with pytest.warns(UserWarning, match="0-1"):
        prepared = prepare_pose_frames(poses)
    assert np.array_equal(prepared.frames[0], poses[2])
    with pytest.raises(InputError, match="no person"):
        prepare_pose_frames(np.zeros((3, 32, 32, 3), np.uint8))


def test_pose_frames_from_a_folder_are_fitted_to_the_size(tmp_path):
    from helpers import media

    for i in range(3):
        image = np.zeros((48, 64, 3), np.uint8)
        image[10:30, 20 + i:24 + i] = 255
        media.write_image(tmp_path / f"frame_{i:04d}.png", image)
    prepared = prepare_pose_frames(tmp_path, size=(32, 32))
    assert prepared.frames.shape == (3, 32, 32, 3) and prepared.held == []


def _person(height: int, width: int, x: float) -> PoseFrame:
    body = np.full((1, 18, 2), 0.5)
    body[0, :, 0] = x
    body[0, :, 1] = np.linspace(0.1, 0.9, 18)
    zeros = np.zeros
    return PoseFrame(body, np.ones((1, 18)), zeros((1, 2, 21, 2)), zeros((1, 2, 21)), zeros((1, 68, 2)),
                     zeros((1, 68)), height, width)


def test_detected_poses_are_rendered_body_only_and_missing_people_held():
    video = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    seen_sizes = []

    def detect(frame):
        seen_sizes.append(frame.shape)
        index = len(seen_sizes) - 1
        return PoseFrame.empty(*frame.shape[:2]) if index == 2 else _person(*frame.shape[:2], 0.3 + 0.1 * index)

    with pytest.warns(UserWarning, match="video frames 2 of 4"):
        poses = poses_from_video(video, size=(32, 32), detect=detect)
    assert seen_sizes == [(32, 32, 3)] * 4  # detection runs on the frames as they will be generated
    assert poses.held == [2]
    assert np.array_equal(poses.frames[2], poses.frames[1])
    expected = draw_pose(poses.keypoints[0], style="openpose", hands=False, face=False)
    assert np.array_equal(poses.frames[0], expected) and expected.max() > 0


def test_openpose_detector_without_its_weights_says_where_to_put_them(tmp_path):
    video = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(MissingWeightsError, match="body_pose_model.pth"):
        poses_from_video(video, detector="openpose", openpose_weights=tmp_path / "body_pose_model.pth")
    with pytest.raises(InputError, match="detector must be one of"):
        poses_from_video(video, detector="mediapipe")
