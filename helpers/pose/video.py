"""Pose detection on chosen frames of a video (each detected once), with a keypoint cache beside the video.

>>> runner = DWPoseRunner.from_weights()
>>> poses = detect_video("dance.mp4", range(0, 96, 2), runner=runner)     # 48 PoseFrames
>>> poses = detect_video("dance.mp4", range(0, 96, 2), runner=runner)     # again: read from dance.mp4.dwpose.npz

The cache ``<video>.dwpose.npz`` holds the keypoints of every frame detected so far, tagged with the video's
SHA-256 and the runner's ``fingerprint`` (which models): a changed video or other models start a new cache, and a
later call with more frames only detects the new ones. If the video's folder is read-only the cache goes to
``<weights root>/cache/pose/`` instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .keypoints import PoseFrame

CACHE_SUFFIX = ".dwpose.npz"
CACHE_FORMAT = 1
# (name in the file, PoseFrame attribute) for the per-person arrays, stacked over all cached frames.
_PERSON_ARRAYS = (
    ("body", "body"), ("body_score", "body_score"), ("hands", "hands"), ("hands_score", "hands_score"),
    ("face", "face"), ("face_score", "face_score"), ("boxes", "boxes"),
)  # fmt: skip

Progress = Callable[[str, int, int], None]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_path(video: str | Path) -> Path:
    """``<video>.dwpose.npz`` when the video's folder is writable, else a file under the weights root."""
    video = Path(video)
    beside = video.with_name(video.name + CACHE_SUFFIX)
    if os.access(video.parent, os.W_OK):
        return beside
    from ..runtime import drive_root

    return (
        drive_root()
        / "cache"
        / "pose"
        / (hashlib.sha256(str(video.resolve()).encode()).hexdigest()[:16] + CACHE_SUFFIX)
    )


# ------------------------------------------------------------------------------------------------------ the cache


def save_poses(path: str | Path, poses: dict[int, PoseFrame], *, video_sha256: str, fingerprint: str) -> Path:
    """Write ``{frame index: PoseFrame}`` to an ``.npz`` (no pickles), atomically."""
    path = Path(path)
    indices = sorted(poses)
    frames = [poses[i] for i in indices]
    arrays = {
        "format": np.array(CACHE_FORMAT),
        "video_sha256": np.array(video_sha256),
        "fingerprint": np.array(fingerprint),
        "frame_indices": np.array(indices, dtype=np.int64),
        "people": np.array([p.num_people for p in frames], dtype=np.int64),
        "sizes": np.array([(p.height, p.width) for p in frames], dtype=np.int64).reshape(-1, 2),
        "detected": np.array([p.detected for p in frames], dtype=bool),
    }
    empty = PoseFrame.empty(1, 1)
    for name, attribute in _PERSON_ARRAYS:
        arrays[name] = np.concatenate([getattr(p, attribute) for p in frames] or [getattr(empty, attribute)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp.npz", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)
    return path


def load_poses(path: str | Path, *, video_sha256: str, fingerprint: str) -> dict[int, PoseFrame]:
    """The cached ``{frame index: PoseFrame}``; empty when the file is missing, unreadable or for another video/model."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if (
                int(data["format"]) != CACHE_FORMAT
                or str(data["video_sha256"]) != video_sha256
                or str(data["fingerprint"]) != fingerprint
            ):
                return {}
            arrays = {name: data[name] for name, _ in _PERSON_ARRAYS}
            indices, people, sizes, detected = data["frame_indices"], data["people"], data["sizes"], data["detected"]
    except (OSError, KeyError, ValueError):
        return {}
    poses, start = {}, 0
    for index, count, (height, width), found in zip(indices, people, sizes, detected):
        rows = slice(start, start + int(count))
        fields = {attribute: arrays[name][rows] for name, attribute in _PERSON_ARRAYS}
        poses[int(index)] = PoseFrame(**fields, height=int(height), width=int(width), detected=bool(found))
        start += int(count)
    return poses


# ------------------------------------------------------------------------------------------------------ detection


def read_frames(video: str | Path, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, RGB uint8 frame)`` for the given frame indices (ascending), decoding the video once."""
    import cv2

    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return
    if wanted[0] < 0:
        raise InputError(f"Frame indices must be ≥ 0, got {wanted[0]}.")
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise InputError(f"Cannot open {Path(video).name} as a video: use an mp4/mov/webm file.")
        position = 0
        for index in wanted:
            while position < index:  # skip without converting the frame
                if not capture.grab():
                    raise InputError(
                        f"{Path(video).name} has only {position} frames; frame {index} was asked for: "
                        "use fewer frames or a smaller sample stride."
                    )
                position += 1
            ok, frame = capture.read()
            if not ok:
                raise InputError(
                    f"{Path(video).name} has only {position} frames; frame {index} was asked for: "
                    "use fewer frames or a smaller sample stride."
                )
            position += 1
            yield index, np.ascontiguousarray(frame[:, :, ::-1])
    finally:
        capture.release()


def detect_frames(frames: Iterable[np.ndarray], runner: Callable[[np.ndarray], PoseFrame]) -> list[PoseFrame]:
    """Run the pose runner on RGB uint8 frames (no cache)."""
    return [runner(frame) for frame in frames]


def detect_video(
    video: str | Path,
    frame_indices: Sequence[int],
    *,
    runner: Callable[[np.ndarray], PoseFrame] | None = None,
    cache: bool | str | Path = True,
    progress: Progress | None = None,
) -> list[PoseFrame]:
    """Poses of the frames ``frame_indices`` of ``video`` (in that order), detecting only frames not yet cached.

    ``runner``: a :class:`~helpers.pose.dwpose.DWPoseRunner` (or anything with ``__call__(image) -> PoseFrame`` and a
    ``fingerprint``); default: ``DWPoseRunner.from_weights()``, opened only if some frame must be detected.
    ``cache``: True (``<video>.dwpose.npz``), False, or a path. ``progress(stage, done, total)`` is called per frame.
    """
    video = Path(video)
    if not video.is_file():
        raise InputError(f"Video not found: {video} — check the path or upload the file again.")
    frame_indices = [int(i) for i in frame_indices]
    if not frame_indices:
        raise InputError("No frames to detect: the frame range is empty (check the frame count and stride).")
    if runner is None:
        from .dwpose import DWPoseRunner

        runner_factory: Callable[[], object] = DWPoseRunner.from_weights
    else:
        runner_factory = lambda: runner  # noqa: E731
    fingerprint = getattr(runner, "fingerprint", None) or _default_fingerprint()
    cache_path = None if cache is False else (default_cache_path(video) if cache is True else Path(cache))
    video_sha256 = file_sha256(video) if cache_path is not None else ""
    poses = load_poses(cache_path, video_sha256=video_sha256, fingerprint=fingerprint) if cache_path else {}
    missing = sorted(set(frame_indices) - set(poses))
    if missing:
        active = runner_factory()
        for done, (index, frame) in enumerate(read_frames(video, missing), start=1):
            poses[index] = active(frame)
            if progress is not None:
                progress("pose detection", done, len(missing))
        if cache_path is not None:
            try:
                save_poses(cache_path, poses, video_sha256=video_sha256, fingerprint=fingerprint)
            except OSError as error:  # a cache we cannot write only costs time on the next run
                warnings.warn(f"Could not write the pose cache {cache_path}: {error}", stacklevel=2)
    return [poses[i] for i in frame_indices]


def _default_fingerprint() -> str:
    """The fingerprint ``DWPoseRunner.from_weights()`` will have, without opening the models."""
    from .. import weights
    from .dwpose import DETECTOR_ROLE, POSE_MODEL_ROLE, WEIGHTS_PACK, model_fingerprint

    return model_fingerprint(
        weights.resolve(WEIGHTS_PACK, DETECTOR_ROLE), weights.resolve(WEIGHTS_PACK, POSE_MODEL_ROLE)
    )
