"""Renderer: colours and channel order, supersampled line widths, score weighting, part selection (both looks).

The pixel-exact check of the dwpose look against the original is in test_pose_parity.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helpers.pose import OPENPOSE_COLORS, PoseFrame, draw_pose, draw_poses

H, W = 576, 576


def _pose(*, score: float = 1.0, hand_score: float = 0.9, face_score: float = 0.9) -> PoseFrame:
    """One person: only the neck (0.5, 0.3) and right shoulder (0.3, 0.3) visible, so only limb 0 is drawn; one hand
    point far right; one face landmark bottom left."""
    body = np.zeros((1, 18, 2))
    body_score = np.zeros((1, 18))
    body[0, 1], body[0, 2] = (0.5, 0.3), (0.3, 0.3)
    body_score[0, [1, 2]] = score
    hands = np.zeros((1, 2, 21, 2))  # all at (0, 0): rejected by the renderer's "> 0" pixel test
    hands_score = np.full((1, 2, 21), hand_score)
    hands[0, 1, 0] = (0.8, 0.7)  # right wrist
    face = np.zeros((1, 68, 2))
    face[0, 0] = (0.2, 0.8)
    return PoseFrame(body, body_score, hands, hands_score, face, np.full((1, 68), face_score), H, W)


def _at(image: np.ndarray, x: float, y: float) -> tuple[int, ...]:
    return tuple(int(v) for v in image[int(y * H), int(x * W)])


def test_openpose_look_is_rgb_full_colour_and_dimmed_limbs():
    image = draw_pose(_pose(score=0.8), style="openpose")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    dimmed_red = tuple(int(c * 0.6) for c in OPENPOSE_COLORS[0])  # limb 0, no score weighting
    assert _at(image, 0.4, 0.3) == dimmed_red
    assert _at(image, 0.5, 0.3) == OPENPOSE_COLORS[1]  # the neck point, not dimmed
    assert _at(image, 0.8, 0.7) == (0, 0, 255)  # hand point: blue in RGB
    assert _at(image, 0.2, 0.8) == (255, 255, 255)  # face landmark


def test_dwpose_look_swaps_channels_and_weights_by_score():
    image = draw_pose(_pose(score=0.8, hand_score=0.5, face_score=0.5))
    limb = _at(image, 0.4, 0.3)
    assert limb[0] == 0 and limb[1] == 0 and 0 < limb[2] <= int(int(255 * 0.8 * 0.8) * 0.6)  # blue, dimmer
    hand = _at(image, 0.8, 0.7)
    assert hand[1] == hand[2] == 0 and 0 < hand[0] <= 127  # red after the swap, at half brightness
    face = _at(image, 0.2, 0.8)
    assert face[0] == face[1] == face[2] and 0 < face[0] <= 127


def test_dwpose_limbs_are_thin_and_openpose_limbs_thick():
    """Limb half-width is 4 px on the drawing canvas: 2160 px (then shrunk ×3.75) vs the output itself."""

    def limb_thickness(image: np.ndarray) -> int:
        column = image[:, int(0.4 * W)]  # crosses the horizontal limb 0 at y = 0.3
        return int((column.max(axis=1) > 0).sum())

    thin, thick = limb_thickness(draw_pose(_pose())), limb_thickness(draw_pose(_pose(), style="openpose"))
    assert 2 <= thin <= 4
    assert 8 <= thick <= 10


def test_limbs_need_both_ends_visible():
    for style in ("dwpose", "openpose"):
        image = draw_pose(_pose(score=0.25), style=style, hands=False, face=False)
        assert image.max() == 0, style  # below 0.3: neither limb nor points


def test_hand_and_face_thresholds_differ_between_looks():
    pose = _pose(hand_score=0.2, face_score=0.2)
    assert _at(draw_pose(pose), 0.8, 0.7) != (0, 0, 0)  # dwpose: no threshold, just dimmer
    assert _at(draw_pose(pose, style="openpose"), 0.8, 0.7) == (0, 0, 0)  # annotator: hidden below 0.3
    assert _at(draw_pose(pose, style="openpose"), 0.2, 0.8) == (0, 0, 0)


@pytest.mark.parametrize("style", ["dwpose", "openpose"])
def test_parts_can_be_switched_off(style):
    pose = _pose()
    body_only = draw_pose(pose, style=style, hands=False, face=False)
    assert _at(body_only, 0.8, 0.7) == (0, 0, 0) and _at(body_only, 0.2, 0.8) == (0, 0, 0)
    assert body_only.max() > 0
    no_body = draw_pose(pose, style=style, body=False)
    assert _at(no_body, 0.4, 0.3) == (0, 0, 0) and _at(no_body, 0.8, 0.7) != (0, 0, 0)


def test_sizes_and_sequences():
    pose = _pose()
    assert draw_pose(pose, 160, 96).shape == (160, 96, 3)
    frames = draw_poses([pose, PoseFrame.empty(H, W)], 64, 48, style="openpose")
    assert frames.shape == (2, 64, 48, 3) and frames[1].max() == 0
    with pytest.raises(ValueError):
        draw_pose(pose, style="comic")
    with pytest.raises(ValueError):
        draw_poses([])


def _annotator_drawing():
    """controlnet_aux's drawing module alone: the package itself imports every detector (slow, needs torchvision)."""
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or spec.origin is None:
        pytest.skip("controlnet_aux is not installed (an optional reference for this check)")
    path = Path(spec.origin).parent / "dwpose" / "util.py"
    module_spec = importlib.util.spec_from_file_location("controlnet_aux_dwpose_drawing", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_openpose_look_matches_the_controlnet_annotator_drawing():
    """Pixel-identical to controlnet_aux's DWPose drawing (the annotator the OpenPose ControlNets' data came from)."""
    util = _annotator_drawing()
    from helpers.testing.pose import dancer_wholebody

    rng = np.random.default_rng(1)
    people = [dancer_wholebody(phase, 512, 384, size=0.6, centre_x=x) for phase, x in ((0.1, 0.3), (0.6, 0.7))]
    scores = rng.uniform(0.1, 1.0, (2, 133))  # some keypoints of each part fall below 0.3
    pose = PoseFrame.from_wholebody(np.stack([p for p, _ in people]), scores, 512, 384)
    layout = pose.to_dwpose_dict()
    # The annotator hides hand and face points scoring below 0.3 by moving them to -1.
    hands = np.where(layout["hands_score"][..., None] < 0.3, -1.0, layout["hands"])
    faces = np.where(layout["faces_score"][..., None] < 0.3, -1.0, layout["faces"])
    canvas = util.draw_bodypose(
        np.zeros((512, 384, 3), np.uint8), layout["bodies"]["candidate"], layout["bodies"]["subset"]
    )
    canvas = util.draw_facepose(util.draw_handpose(canvas, hands), faces)
    np.testing.assert_array_equal(draw_pose(pose, style="openpose"), canvas)


def test_body_and_hands_without_face_match_the_annotator_drawing():
    """MuseV's ``dwpose_body_hand`` condition: the annotator's body and hand drawing, no face landmarks."""
    util = _annotator_drawing()
    from helpers.testing.pose import dancer_wholebody

    rng = np.random.default_rng(2)
    pixels, _ = dancer_wholebody(0.3, 384, 512, size=0.7)
    scores = rng.uniform(0.1, 1.0, (1, 133))
    pose = PoseFrame.from_wholebody(pixels[None], scores, 384, 512)
    layout = pose.to_dwpose_dict()
    hands = np.where(layout["hands_score"][..., None] < 0.3, -1.0, layout["hands"])
    canvas = util.draw_bodypose(
        np.zeros((384, 512, 3), np.uint8), layout["bodies"]["candidate"], layout["bodies"]["subset"]
    )
    canvas = util.draw_handpose(canvas, hands)
    drawn = draw_pose(pose, style="openpose", face=False)
    np.testing.assert_array_equal(drawn, canvas)
    assert not np.array_equal(drawn, draw_pose(pose, style="openpose"))  # the face would have been drawn
