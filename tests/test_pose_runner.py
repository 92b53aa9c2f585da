"""DWPose runner: detector letterbox/decoding/NMS and pose crop/SimCC decoding, checked with fake ONNX sessions on
coordinate images (the fakes read which image pixel every model-input pixel shows), plus the tiny ONNX pack."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from helpers.errors import InputError
from helpers.pose import DWPoseRunner, PoseFrame
from helpers.pose.dwpose import non_max_suppression
from helpers.testing import pose as pose_testing

HEIGHT, WIDTH = 200, 240
BOXES = np.array([[20.0, 20.0, 100.0, 190.0], [140.0, 30.0, 220.0, 180.0]])  # the fake finds the left one first


def _ground_truth(seed: int = 0):
    """133 integer keypoints inside each box, scores in (0.35, 0.95); person 1's right shoulder scores 0.2."""
    rng = np.random.default_rng(seed)
    keypoints = np.stack([rng.integers(box[:2] + 2, box[2:] - 2, size=(133, 2)) for box in BOXES]).astype(float)
    scores = rng.uniform(0.35, 0.95, size=(2, 133)).astype(np.float32)
    scores[1, 6] = 0.2  # COCO right shoulder: person 1's neck must get score 0
    return keypoints, scores


def _runner(decoys: bool = True, seed: int = 0) -> DWPoseRunner:
    keypoints, scores = _ground_truth(seed)
    detector = pose_testing.FakeDetectorSession(decoys=decoys)
    return DWPoseRunner(detector, pose_testing.FakePoseSession(keypoints, scores, BOXES))


def test_two_people_come_back_at_their_boxes_and_keypoints():
    image = pose_testing.coordinate_image(HEIGHT, WIDTH, BOXES)
    runner = _runner()
    pose = runner(image)
    keypoints, scores = _ground_truth()
    expected = PoseFrame.from_wholebody(keypoints, scores, HEIGHT, WIDTH)

    assert pose.num_people == 2 and pose.detected and (pose.height, pose.width) == (HEIGHT, WIDTH)
    # Letterbox 640/240: one letterbox pixel is 0.375 image pixels; region edges may move by one of them.
    np.testing.assert_allclose(pose.boxes, BOXES, atol=1.0)
    size = np.array([WIDTH, HEIGHT])
    # Keypoints: within one image pixel (crop pixels are ~0.5 image pixels; the fake reads rounded coordinates).
    for name in ("body", "face"):
        error = np.abs((getattr(pose, name) - getattr(expected, name)) * size).max()
        assert error <= 1.0, f"{name} off by {error:.2f} px"
    assert np.abs((pose.hands - expected.hands) * size).max() <= 1.0
    # Scores are the SimCC peak heights: exact.
    np.testing.assert_array_equal(pose.body_score, expected.body_score)
    np.testing.assert_array_equal(pose.hands_score, expected.hands_score)
    np.testing.assert_array_equal(pose.face_score, expected.face_score)
    # Neck: between the shoulders; score 1 when both shoulders pass 0.3, else 0.
    np.testing.assert_allclose(pose.body[:, 1], (pose.body[:, 2] + pose.body[:, 5]) / 2)
    np.testing.assert_array_equal(pose.body_score[:, 1], [1.0, 0.0])
    assert runner.detector.calls == 1 and runner.pose_model.calls == 2


def test_nms_class_filter_and_score_threshold_reject_the_decoys():
    image = pose_testing.coordinate_image(HEIGHT, WIDTH, BOXES)
    with_decoys, without = _runner(decoys=True)(image), _runner(decoys=False)(image)
    np.testing.assert_array_equal(with_decoys.boxes, without.boxes)
    np.testing.assert_array_equal(with_decoys.body, without.body)


def test_people_are_ordered_by_detector_score():
    boxes, scores = _runner().detect_people(pose_testing.coordinate_image(HEIGHT, WIDTH, BOXES))
    assert len(boxes) == 2 and scores[0] > scores[1]
    assert boxes[0, 0] < 60 < boxes[1, 0]  # the fake scores the first-found (left) region higher


def test_nobody_detected_falls_back_to_the_whole_image():
    image = pose_testing.coordinate_image(HEIGHT, WIDTH)  # no person boxes
    keypoints, scores = _ground_truth()
    whole = np.array([[0.0, 0.0, WIDTH, HEIGHT]])
    runner = DWPoseRunner(
        pose_testing.FakeDetectorSession(), pose_testing.FakePoseSession(keypoints[:1], scores[:1], whole)
    )
    pose = runner(image)
    assert pose.num_people == 1 and not pose.detected
    np.testing.assert_array_equal(pose.boxes, whole)
    expected = PoseFrame.from_wholebody(keypoints[:1], scores[:1], HEIGHT, WIDTH)
    assert np.abs((pose.body - expected.body) * [WIDTH, HEIGHT]).max() <= 1.0


def test_non_max_suppression_uses_inclusive_pixel_areas():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 7], [20, 20, 29, 29]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    # With +1 areas the IoU of the first two is 80/100 = 0.8 (without: 63/81); both above 0.45.
    assert non_max_suppression(boxes, scores, 0.45) == [0, 2]
    # 0.79 separates the two conventions: +1 areas suppress (0.8 > 0.79), plain areas (0.78) would keep it.
    assert non_max_suppression(boxes, scores, 0.79) == [0, 2]


def test_rejects_images_that_are_not_rgb_uint8():
    runner = _runner()
    with pytest.raises(InputError):
        runner(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputError):
        runner(np.zeros((32, 32), np.uint8))


def test_tiny_onnx_pack_runs_through_onnxruntime(tmp_path):
    detector, pose_model = pose_testing.write_tiny_dwpose_pack(tmp_path)
    assert detector == tmp_path / "models/dwpose/detector/yolox_l.onnx"
    assert pose_model == tmp_path / "models/dwpose/pose_model/dw-ll_ucoco_384.onnx"
    runner = DWPoseRunner.from_files(detector, pose_model, providers=["CPUExecutionProvider"])
    assert runner.detector_input_size == (640, 640) and runner.pose_input_size == (384, 288)
    image = pose_testing.draw_dancer(0.25, 96, 128)
    pose = runner(image)
    assert pose.num_people == 1 and pose.detected
    assert pose.body_visible.all()  # the tiny model is built to answer a plausible, fully visible person
    nose, ankle = pose.body[0, 0], pose.body[0, 10]
    assert nose[1] < ankle[1]  # head above feet
    assert runner.fingerprint == DWPoseRunner.from_files(detector, pose_model).fingerprint
    runner.close()
    assert runner.detector is None and runner.pose_model is None


def test_from_weights_opens_the_pack_in_the_weights_layout():
    from helpers.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError):
        DWPoseRunner.from_weights()
    pose_testing.write_tiny_dwpose_pack()  # into $HV_ROOT (set per test by conftest)
    runner = DWPoseRunner.from_weights(providers=["CPUExecutionProvider"])
    assert runner(pose_testing.draw_dancer(0.5, 64, 48)).num_people == 1


def test_a_cpu_onnxruntime_on_a_gpu_machine_says_how_to_get_the_gpu_build(tmp_path, monkeypatch):
    from helpers.pose import dwpose

    detector, pose_model = pose_testing.write_tiny_dwpose_pack(tmp_path)
    monkeypatch.setattr(dwpose, "_torch_has_cuda", lambda: True)
    with pytest.warns(UserWarning, match=r"install_gpu_onnxruntime\(\)"):
        DWPoseRunner.from_files(detector, pose_model).close()
    monkeypatch.setattr(dwpose, "_torch_has_cuda", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DWPoseRunner.from_files(detector, pose_model).close()
