"""MuseV video-to-video conditions: the list and its registry roles, the processor's re-crop, DWPose body + hands
renders (and the one-line error without a person), and controlnet-aux's processors on random weights (SMOKE) and on
weight files placed in the pack layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import registry
from helpers.errors import InputError
from helpers.pipelines.musev import conditions
from helpers.pipelines.musev.preprocess import crop_box
from helpers.pose.keypoints import PoseFrame
from helpers.pose.render import draw_pose
from helpers.testing.pose import dancer_pose

H, W = 64, 128


def _frames(n=2, seed=0):
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, H, W, 3), np.uint8)
    frames[:, 16:48, 40:88] = rng.integers(60, 255, (n, 32, 48, 3), dtype=np.uint8)  # a textured block on black
    return frames


# -- the list and the registry ----------------------------------------------------------------------------------
def test_conditions_name_their_controlnet_and_annotator_roles():
    assert list(conditions.CONDITIONS)[:5] == ["dwpose_body_hand", "canny", "depth", "lineart", "softedge"]
    musev = registry.PACKS["musev"].roles
    for name, spec in conditions.CONDITIONS.items():
        assert conditions.controlnet_role(name) == spec.controlnet_role
        assert musev[spec.controlnet_role].optional, name
        if spec.annotator_role is not None:
            assert musev[spec.annotator_role].optional, name
        assert (spec.processor is None) == spec.pose, name
    assert conditions.controlnet_role("dwpose_body_hand") == "controlnet_openpose"
    with pytest.raises(InputError, match="unknown condition 'sketch': choose one of dwpose_body_hand, canny"):
        conditions.controlnet_role("sketch")


def test_registry_offers_no_musev_extra_that_nothing_uses():
    """Every optional MuseV role is a condition's ControlNet or annotator, or part of the video-to-video run."""
    optional = {r.name for r in registry.PACKS["musev"].roles.values() if r.optional}
    used = {role for spec in conditions.CONDITIONS.values() for role in (spec.controlnet_role, spec.annotator_role)}
    used |= {item.split("/")[1] for item in registry.TASKS["video_to_video"].packs if item.startswith("musev/")}
    assert optional <= used, optional - used
    extras = registry.TASK_EXTRAS["video_to_video"]
    assert all(f"musev/{spec.controlnet_role}" in extras + registry.TASKS["video_to_video"].packs
               for spec in conditions.CONDITIONS.values())
    assert "text_image_to_video" not in registry.TASK_EXTRAS  # the pose weights moved to video_to_video
    assert "dwpose" in registry.TASKS["video_to_video"].packs


# -- the processor's own crop/resize ----------------------------------------------------------------------------
def test_processor_view_recrops_like_the_original():
    frame = _frames(1)[0]
    expected = np.asarray(Image.fromarray(frame).crop((0, 0, W - 1, H - 1)).resize((W, H), Image.Resampling.BICUBIC))
    assert crop_box(H, W, H, W) == (0, 0, W - 1, H - 1)
    np.testing.assert_array_equal(conditions.processor_view(frame), expected)
    assert not np.array_equal(conditions.processor_view(frame), frame)


# -- DWPose body + hands ----------------------------------------------------------------------------------------
def test_dwpose_body_hand_draws_body_and_hands_without_the_face():
    seen = []
    poses = [dancer_pose(phase, H, W, size=0.8) for phase in (0.1, 0.6)]

    def detect(image):
        seen.append(image)
        return poses[len(seen) - 1]

    frames = _frames(2)
    out = conditions.render_condition_frames("dwpose_body_hand", frames, smoke=False, detect=detect)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for i, pose in enumerate(poses):
        np.testing.assert_array_equal(out[i], draw_pose(pose, H, W, style="openpose", face=False))
        assert not np.array_equal(out[i], draw_pose(pose, H, W, style="openpose"))  # the face would show
        assert not np.array_equal(out[i], draw_pose(pose, H, W, style="openpose", hands=False, face=False))
        np.testing.assert_array_equal(seen[i], conditions.processor_view(frames[i]))  # the detector's input


def test_pose_condition_without_a_person_is_one_line_error():
    nobody = PoseFrame.empty(H, W)
    with pytest.raises(InputError, match="no person was found in any of the 2 source frames") as info:
        conditions.render_condition_frames("dwpose_body_hand", _frames(2), smoke=False, detect=lambda _image: nobody)
    assert "\n" not in str(info.value)


def test_dwpose_body_hand_runs_our_runner_on_the_smoke_pack(tmp_path):
    out = conditions.render_condition_frames("dwpose_body_hand", _frames(2), smoke=True, root=tmp_path)
    assert out.shape == (2, H, W, 3) and out.dtype == np.uint8 and out.max() > 0
    assert (tmp_path / "models" / "dwpose").is_dir()


@pytest.mark.parametrize("bad", [np.zeros((2, H, W), np.uint8), np.zeros((2, H, W, 3), np.float32),
                                 np.zeros((0, H, W, 3), np.uint8)])
def test_bad_frames_are_input_errors(bad):
    with pytest.raises(InputError, match="uint8 RGB"):
        conditions.render_condition_frames("canny", bad, smoke=True)


# -- controlnet-aux processors ----------------------------------------------------------------------------------
def test_canny_is_opencv_canny_of_the_processor_view():
    import cv2

    frames = _frames(2)
    out = conditions.render_condition_frames("canny", frames, smoke=False)
    for i in range(2):
        edges = cv2.Canny(conditions.processor_view(frames[i]), 100, 200)
        np.testing.assert_array_equal(out[i], np.repeat(edges[..., None], 3, axis=2))
    assert out.max() == 255


@pytest.mark.parametrize("name", ["depth", "lineart", "softedge", "hed"])
def test_smoke_processors_run_on_random_weights(name):
    frames = _frames(2)
    out = conditions.render_condition_frames(name, frames, smoke=True)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert not np.array_equal(out[0], out[1])  # the maps follow the frames


def test_annotator_weights_load_from_the_pack_layout(tmp_path):
    """HED and line art read their files from ``<root>/models/musev/<role>/`` through controlnet-aux's loaders."""
    import torch
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector
    from controlnet_aux.lineart import Generator, LineartDetector

    torch.manual_seed(1)
    hed, fine, coarse = ControlNetHED_Apache2(), Generator(3, 1, 3), Generator(3, 1, 3)
    folder = tmp_path / "models" / "musev"
    (folder / "annotator_hed").mkdir(parents=True)
    (folder / "annotator_lineart").mkdir(parents=True)
    torch.save(hed.state_dict(), folder / "annotator_hed" / "ControlNetHED.pth")
    torch.save(fine.state_dict(), folder / "annotator_lineart" / "sk_model.pth")
    torch.save(coarse.state_dict(), folder / "annotator_lineart" / "sk_model2.pth")

    frames = _frames(1)
    view = conditions.processor_view(frames[0])
    got = conditions.render_condition_frames("softedge", frames, smoke=False, root=tmp_path)[0]
    expected = HEDdetector(hed.eval())(Image.fromarray(view), detect_resolution=H, image_resolution=H,
                                       output_type="np")
    np.testing.assert_array_equal(got, expected)
    got = conditions.render_condition_frames("lineart", frames, smoke=False, root=tmp_path)[0]
    detector = LineartDetector(fine.eval(), coarse.eval())
    expected = detector(Image.fromarray(view), coarse=True, detect_resolution=H, image_resolution=H, output_type="np")
    np.testing.assert_array_equal(got, expected)
    fine_only = detector(Image.fromarray(view), coarse=False, detect_resolution=H, image_resolution=H,
                         output_type="np")
    assert not np.array_equal(got, fine_only)  # the coarse generator, as the original asks for
