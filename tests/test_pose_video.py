"""detect_video: only the asked frames are detected, keypoints are cached beside the video and reused."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.errors import InputError
from helpers.pose import DWPoseRunner, PoseFrame, align_poses, crop_reference_image, detect_video, draw_poses
from helpers.pose.video import load_poses, save_poses
from helpers.testing import pose as pose_testing

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "pose"
BOX = np.array([[8.0, 6.0, 40.0, 44.0]])


def _write_video(path: Path, frames: int = 8, shift: int = 0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (64, 48))
    for i in range(frames):
        image = pose_testing.coordinate_image(48, 64, BOX + [i + shift, 0, i + shift, 0])
        writer.write(np.ascontiguousarray(image[:, :, ::-1]))
    writer.release()
    return path


def _runner(fingerprint: str = "fake-models") -> DWPoseRunner:
    keypoints = np.tile([[20.0, 25.0]], (1, 133, 1))
    pose = pose_testing.FakePoseSession(keypoints, np.full((1, 133), 0.8), BOX)
    return DWPoseRunner(pose_testing.FakeDetectorSession(decoys=False), pose, fingerprint=fingerprint)


def _same(a: PoseFrame, b: PoseFrame) -> bool:
    names = ("body", "body_score", "hands", "hands_score", "face", "face_score", "boxes")
    return all(np.array_equal(getattr(a, n), getattr(b, n), equal_nan=True) for n in names) and (
        a.height,
        a.width,
        a.detected,
    ) == (b.height, b.width, b.detected)


def test_detects_only_the_asked_frames_then_reuses_the_cache(tmp_path):
    video = _write_video(tmp_path / "dance.mp4")
    runner = _runner()
    progress = []
    first = detect_video(video, [6, 0, 2], runner=runner, progress=lambda *a: progress.append(a))
    assert runner.detector.calls == 3 and len(first) == 3
    assert progress[-1] == ("pose detection", 3, 3)
    assert all((p.height, p.width) == (48, 64) and p.detected for p in first)
    assert first[0].boxes[0, 0] > first[1].boxes[0, 0]  # frame 6's box is further right: results follow the order
    assert (tmp_path / "dance.mp4.dwpose.npz").is_file()

    again = detect_video(video, [6, 0, 2], runner=runner)
    assert runner.detector.calls == 3  # nothing detected the second time
    assert all(_same(a, b) for a, b in zip(first, again))

    more = detect_video(video, [0, 2, 4, 6], runner=runner)
    assert runner.detector.calls == 4  # only frame 4 was new
    assert _same(more[0], first[1]) and _same(more[3], first[0])


def test_cache_is_dropped_for_a_changed_video_or_other_models(tmp_path):
    video = _write_video(tmp_path / "dance.mp4")
    detect_video(video, [0, 1], runner=_runner())
    runner = _runner()
    _write_video(video, shift=3)  # same name, other content
    detect_video(video, [0, 1], runner=runner)
    assert runner.detector.calls == 2
    other_models = _runner("other-models")
    detect_video(video, [0, 1], runner=other_models)
    assert other_models.detector.calls == 2


def test_cache_can_be_disabled_or_moved(tmp_path):
    video = _write_video(tmp_path / "dance.mp4")
    detect_video(video, [0], runner=_runner(), cache=False)
    assert not (tmp_path / "dance.mp4.dwpose.npz").exists()
    elsewhere = tmp_path / "cache" / "poses.npz"
    detect_video(video, [0], runner=_runner(), cache=elsewhere)
    assert elsewhere.is_file()


def test_cache_round_trip_keeps_empty_and_crowded_frames(tmp_path):
    pose = pose_testing.dancer_pose(0.2, 48, 64)
    crowd = PoseFrame(
        *(np.concatenate([getattr(pose, n)] * 3) for n in ("body", "body_score", "hands", "hands_score", "face")),
        np.concatenate([pose.face_score] * 3), 48, 64, detected=True,
    )  # fmt: skip
    guess = PoseFrame(pose.body, pose.body_score, pose.hands, pose.hands_score, pose.face, pose.face_score, 48, 64,
                      boxes=np.array([[0.0, 0.0, 64.0, 48.0]]), detected=False)  # fmt: skip
    poses = {3: crowd, 0: PoseFrame.empty(48, 64), 7: guess}
    path = save_poses(tmp_path / "p.npz", poses, video_sha256="abc", fingerprint="m")
    loaded = load_poses(path, video_sha256="abc", fingerprint="m")
    assert sorted(loaded) == [0, 3, 7] and all(_same(loaded[i], poses[i]) for i in poses)
    assert load_poses(path, video_sha256="abd", fingerprint="m") == {}
    assert load_poses(tmp_path / "missing.npz", video_sha256="abc", fingerprint="m") == {}


def test_bad_inputs_raise_input_errors(tmp_path):
    video = _write_video(tmp_path / "dance.mp4", frames=4)
    with pytest.raises(InputError, match="only 4 frames"):
        detect_video(video, [0, 9], runner=_runner())
    with pytest.raises(InputError, match="not found"):
        detect_video(tmp_path / "nope.mp4", [0], runner=_runner())
    with pytest.raises(InputError):
        detect_video(video, [], runner=_runner())
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(InputError):
        detect_video(tmp_path / "text.mp4", [0], runner=_runner(), cache=False)


def test_example_assets_run_end_to_end_with_the_tiny_models(tmp_path):
    """The shipped dancer through the real ONNX path (tiny models), aligned onto the shipped reference, rendered."""
    detector, pose_model = pose_testing.write_tiny_dwpose_pack(tmp_path)
    runner = DWPoseRunner.from_files(detector, pose_model, providers=["CPUExecutionProvider"])
    reference_image = crop_reference_image(cv2.imread(str(ASSETS / "reference.png"))[:, :, ::-1], 128, 96)
    reference = runner(reference_image)
    driving = detect_video(ASSETS / "dancer.mp4", [0, 12, 24], runner=runner, cache=tmp_path / "poses.npz")
    aligned, alignment = align_poses(reference, driving)
    control = draw_poses([reference, *aligned])
    assert control.shape == (4, 128, 96, 3) and control.max() > 0
    assert alignment.fit_frames == (0, 1, 2)


def test_default_runner_is_opened_only_when_a_frame_must_be_detected(tmp_path, monkeypatch):
    pose_testing.write_tiny_dwpose_pack()  # into $HV_ROOT (set per test by conftest)
    video = _write_video(tmp_path / "dance.mp4", frames=3)
    opened = []
    original = DWPoseRunner.from_weights.__func__

    def counting_from_weights(cls, **kwargs):
        opened.append(1)
        return original(cls, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(DWPoseRunner, "from_weights", classmethod(counting_from_weights))
    first = detect_video(video, [0, 2])
    second = detect_video(video, [2, 0])
    assert len(opened) == 1
    assert _same(first[0], second[1]) and _same(first[1], second[0])
