"""Pose alignment: recovers a known map, which frames enter the fit, and the guards around it; reference crop."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.errors import InputError
from helpers.pose import ALIGNMENT_KEYPOINTS, PoseFrame, align_poses, crop_reference_image, fit_pose_alignment
from helpers.testing.pose import dancer_pose

TARGET = (512, 288)  # generation size (h, w): the reference frame
VIDEO = (720, 1280)  # driving frame size (h, w)
ARMS = [3, 4, 6, 7]  # elbows and wrists: not used by the fit


def _known_map():
    """A pixel map driving → reference with the same scale in x and y (what the fit assumes), in normalised terms."""
    scale, shift_x, shift_y = 0.55, -240.0, 31.0  # pixels: X = 0.55·x − 240, Y = 0.55·y + 31
    (h, w), (fh, fw) = TARGET, VIDEO
    return scale * fw / w, scale * fh / h, shift_x / w, shift_y / h


def _driving_frames(count: int = 5, seed: int = 0) -> tuple[PoseFrame, list[PoseFrame]]:
    """Reference = the dancer at rest; driving frames = its inverse image with the arms moved at random."""
    reference = dancer_pose(0.0, *TARGET)
    ax, ay, bx, by = _known_map()
    inverse = reference.transformed((1 / ax, 1 / ay), (-bx / ax, -by / ay), *VIDEO)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        body = inverse.body.copy()
        body[0, ARMS] += rng.normal(0, 0.05, (len(ARMS), 2))
        frames.append(PoseFrame(body, inverse.body_score, inverse.hands, inverse.hands_score, inverse.face,
                                inverse.face_score, *VIDEO))  # fmt: skip
    return reference, frames


def _two_people(pose: PoseFrame) -> PoseFrame:
    other = pose.transformed((1.0, 1.0), (0.3, 0.0), pose.height, pose.width)
    stack = {n: np.concatenate([getattr(pose, n), getattr(other, n)]) for n in
             ("body", "body_score", "hands", "hands_score", "face", "face_score")}  # fmt: skip
    return PoseFrame(**stack, height=pose.height, width=pose.width)


def test_recovers_a_known_isotropic_map():
    reference, driving = _driving_frames()
    aligned, alignment = align_poses(reference, driving)
    np.testing.assert_allclose([alignment.ax, alignment.ay, alignment.bx, alignment.by], _known_map(), atol=1e-12)
    assert alignment.fit_frames == tuple(range(len(driving)))
    visible = [k for k in ALIGNMENT_KEYPOINTS if reference.body_visible[0, k]]
    assert alignment.reference_keypoints == tuple(visible)
    for pose in aligned:
        assert (pose.height, pose.width) == TARGET
        torso = [k for k in range(18) if k not in ARMS]
        np.testing.assert_allclose(pose.body[0, torso], reference.body[0, torso], atol=1e-12)
        np.testing.assert_allclose(pose.hands, reference.hands, atol=1e-12)
        np.testing.assert_allclose(pose.face, reference.face, atol=1e-12)


def test_invisible_reference_keypoints_are_left_out_of_the_fit():
    reference, driving = _driving_frames()
    reference.body_score[0, [0, 14, 15, 16, 17]] = 0.1  # head not visible
    alignment = fit_pose_alignment(reference, driving)
    assert alignment.reference_keypoints == (1, 2, 5, 8, 9, 10, 11, 12, 13)
    np.testing.assert_allclose([alignment.ax, alignment.ay, alignment.bx, alignment.by], _known_map(), atol=1e-12)


def test_multi_person_frames_are_mapped_but_not_fitted():
    reference, driving = _driving_frames()
    driving[2] = _two_people(driving[2])
    aligned, alignment = align_poses(reference, driving)
    assert alignment.fit_frames == (0, 1, 3, 4)
    np.testing.assert_allclose([alignment.ax, alignment.ay, alignment.bx, alignment.by], _known_map(), atol=1e-12)
    assert aligned[2].num_people == 2
    np.testing.assert_allclose(aligned[2].body[1], aligned[2].body[0] + [0.3 * alignment.ax, 0.0], atol=1e-12)


def test_frames_without_a_detection_are_kept_unless_skipping_is_asked_for():
    reference, driving = _driving_frames()
    guess = driving[1]
    driving[1] = PoseFrame(guess.body * 0.2, guess.body_score, guess.hands, guess.hands_score, guess.face,
                           guess.face_score, *VIDEO, detected=False)  # fmt: skip
    original = fit_pose_alignment(reference, driving)  # the original keeps the guessed person in the fit
    assert original.fit_frames == (0, 1, 2, 3, 4)
    robust = fit_pose_alignment(reference, driving, skip_undetected=True)
    assert robust.fit_frames == (0, 2, 3, 4)
    np.testing.assert_allclose([robust.ax, robust.ay, robust.bx, robust.by], _known_map(), atol=1e-12)
    assert abs(original.ay - robust.ay) > 1e-3  # the guessed person pulls the original's fit


def test_first_reference_person_is_used_when_several_are_found():
    reference, driving = _driving_frames()
    both = fit_pose_alignment(_two_people(reference), driving)
    alone = fit_pose_alignment(reference, driving)
    assert (both.ax, both.ay, both.bx, both.by) == (alone.ax, alone.ay, alone.bx, alone.by)


@pytest.mark.parametrize(
    "case",
    ["nobody_in_reference", "reference_not_visible", "no_driving_frames", "only_groups", "only_guesses", "frozen"],
)
def test_unusable_inputs_raise_input_errors(case):
    reference, driving = _driving_frames()
    skip = False
    if case == "nobody_in_reference":
        reference = PoseFrame.empty(*TARGET)
    elif case == "reference_not_visible":
        reference.body_score[:] = 0.2
    elif case == "no_driving_frames":
        driving = []
    elif case == "only_groups":
        driving = [_two_people(p) for p in driving] + [PoseFrame.empty(*VIDEO)]
    elif case == "only_guesses":
        for pose in driving:
            pose.detected = False
        skip = True
    elif case == "frozen":  # every fit keypoint at the same height: no line can be fitted
        for pose in driving:
            pose.body[:, :, 1] = 0.5
    with pytest.raises(InputError) as error:
        fit_pose_alignment(reference, driving, skip_undetected=skip)
    assert "\n" not in str(error.value)


def test_reference_crop_covers_then_centres():
    # A wide photo: the height fits, the sides are cut evenly. Columns carry their index so the cut is visible.
    wide = np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (100, 1, 3))
    crop = crop_reference_image(wide, 100, 50)
    assert crop.shape == (100, 50, 3)
    np.testing.assert_array_equal(crop[0, :, 0], np.arange(75, 125))
    tall = np.tile(np.arange(200, dtype=np.uint8)[:, None, None], (1, 60, 3))
    crop = crop_reference_image(tall, 40, 60)
    np.testing.assert_array_equal(crop[:, 0, 0], np.arange(80, 120))
    # Upscaling a small photo: the short side is stretched to the target.
    assert crop_reference_image(np.zeros((30, 20, 3), np.uint8), 300, 200).shape == (300, 200, 3)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3))])
def test_reference_crop_rejects_non_rgb_images(bad):
    with pytest.raises(InputError):
        crop_reference_image(bad, 64, 64)


def test_original_dictionary_layout_round_trips():
    pose = _two_people(dancer_pose(0.3, *TARGET))
    layout = pose.to_dwpose_dict()
    assert layout["bodies"]["candidate"].shape == (36, 2) and layout["hands"].shape == (4, 21, 2)
    np.testing.assert_array_equal(layout["hands"][1], pose.hands[1, 0])  # rows: every left hand, then every right
    np.testing.assert_array_equal(layout["bodies"]["subset"][1, :3], [18.0, 19.0, 20.0])
    back = PoseFrame.from_dwpose_dict(layout, *TARGET)
    for name in ("body", "body_score", "hands", "hands_score", "face", "face_score"):
        np.testing.assert_array_equal(getattr(back, name), getattr(pose, name))
