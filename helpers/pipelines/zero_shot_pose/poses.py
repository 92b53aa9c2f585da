"""Pose inputs for the zero-shot method: OpenPose-style body renders, one per frame, at the generation size.

Three routes, all ending in ``[F, H, W, 3]`` uint8 renders on black (what the SD2.1 OpenPose ControlNet was trained
on: 18 body keypoints, OpenPose colours, no hands or face):

- pre-rendered pose images or a pose video: :func:`prepare_pose_frames`;
- detected from a video with our DWPose runner (``detector="dwpose"``, the default) or with controlnet-aux's OpenPose
  body estimator (``detector="openpose"``): :func:`poses_from_video`.

Frames without a person (a blank render, or no body keypoint found) hold the previous frame's pose (the first
found pose for leading frames), with one warning listing them: a ControlNet fed a blank map generates "no person
here", which breaks the clip. A clip without any person is an input error.

>>> poses = poses_from_video("swing.mp4", size=(512, 512))              # DWPose, body only, OpenPose style
>>> poses.frames.shape, poses.held                                      # ((F, 512, 512, 3), [frames held])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import media
from helpers.errors import InputError, MissingWeightsError
from helpers.pose.keypoints import PoseFrame
from helpers.pose.render import draw_pose

from .inputs import as_frame_array

#: A pre-rendered pose frame counts as blank when no pixel channel reaches this value (renders are drawn on black;
#: a little compression noise stays below it).
BLANK_LEVEL = 16
DETECTORS = ("dwpose", "openpose")
OPENPOSE_PACK, OPENPOSE_ROLE, OPENPOSE_FILE = "openpose_annotator", "body", "body_pose_model.pth"

PoseDetector = Callable[[np.ndarray], PoseFrame]


@dataclass
class PoseFrames:
    """Pose renders ready for the pipeline.

    Attributes:
        frames: ``[F, H, W, 3]`` uint8 OpenPose-style body renders.
        held: indices of frames that had no person and show a neighbour's pose instead.
        keypoints: the detected poses (detector routes only), for previews and sidecars.
    """

    frames: np.ndarray
    held: list[int] = field(default_factory=list)
    keypoints: list[PoseFrame] | None = None


def read_frames(source, name: str) -> np.ndarray:
    """A video file, a folder of images (sorted by name), an image list or an array → ``[F, H, W, 3]`` uint8."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in media.IMAGE_SUFFIXES)
            if not files:
                raise InputError(f"{name}: no images in {path} — give a folder of PNG/JPEG frames or a video")
            return as_frame_array([media.read_image(p) for p in files], name)
        return media.read_video(path).frames
    return as_frame_array(source, name)


def hold_last_pose(frames: np.ndarray, has_person: Sequence[bool], *, what: str = "pose frames") -> tuple[np.ndarray,
                                                                                                          list[int]]:
    """Replace frames without a person by the previous frame's (leading ones by the first found); warn once.

    >>> frames = np.zeros((3, 8, 8, 3), np.uint8); frames[1] = 200
    >>> held, indices = hold_last_pose(frames, [False, True, False])     # warns: frames 0 and 2 hold a pose
    >>> indices, bool((held == 200).all())
    ([0, 2], True)
    """
    present = [i for i, flag in enumerate(has_person) if flag]
    if not present:
        raise InputError(f"no person was found in any of the {len(frames)} {what}: use a clip where the person is "
                         "visible (or check the pose renders are not blank)")
    held = [i for i, flag in enumerate(has_person) if not flag]
    if not held:
        return frames, []
    filled = frames.copy()
    last = present[0]
    for i in range(len(frames)):
        if has_person[i]:
            last = i
        else:
            filled[i] = frames[last]
    warnings.warn(f"no person in {what} {_ranges(held)} of {len(frames)}: those frames hold the nearest earlier "
                  "pose (the first found pose for leading frames)", stacklevel=2)
    return filled, held


def prepare_pose_frames(poses, *, size: tuple[int, int] | None = None) -> PoseFrames:
    """Pre-rendered pose images or a pose video → :class:`PoseFrames` at ``size = (width, height)`` (centre crop).

    Blank frames hold the previous pose (module docstring).
    """
    frames = read_frames(poses, "poses")
    if size is not None:
        frames = as_frame_array(frames, "poses", size=size)
    frames, held = hold_last_pose(frames, [int(f.max()) >= BLANK_LEVEL for f in frames])
    return PoseFrames(frames=frames, held=held)


def poses_from_video(video, *, detector: str = "dwpose", size: tuple[int, int] | None = None,
                     detect: PoseDetector | None = None, openpose_weights: str | Path | None = None) -> PoseFrames:
    """Detect the body pose in every frame of ``video`` and render it body-only in the OpenPose style.

    Frames are first centre-cropped and resized to ``size`` (when given) so the renders line up with the source
    frames fed to the latent references. ``detect`` injects any ``image -> PoseFrame`` callable (tests, caching);
    otherwise ``detector`` picks our DWPose runner or controlnet-aux's OpenPose body estimator.
    """
    if detector not in DETECTORS:
        raise InputError(f"detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
    frames = read_frames(video, "video")
    if size is not None:
        frames = as_frame_array(frames, "video", size=size)
    owned = detect is None  # a detector opened here is closed here (frees GPU memory before generation)
    if owned:
        detect = dwpose_detector() if detector == "dwpose" else openpose_body_detector(openpose_weights)
    try:
        keypoints = [detect(frame) for frame in frames]
    finally:
        if owned and hasattr(detect, "close"):
            detect.close()
    renders = np.stack([draw_pose(pose, style="openpose", hands=False, face=False) for pose in keypoints])
    renders, held = hold_last_pose(renders, [has_person(pose) for pose in keypoints], what="video frames")
    return PoseFrames(frames=renders, held=held, keypoints=keypoints)


def has_person(pose: PoseFrame) -> bool:
    """A real detection with at least one visible body keypoint (DWPose's whole-image guess does not count)."""
    return bool(pose.detected and pose.num_people > 0 and pose.body_visible.any())


def dwpose_detector() -> PoseDetector:
    """Our DWPose ONNX runner from the ``dwpose`` pack."""
    from helpers.pose.dwpose import DWPoseRunner

    return DWPoseRunner.from_weights()


def openpose_body_detector(weights_file: str | Path | None = None) -> PoseDetector:
    """controlnet-aux's OpenPose body estimator (the annotator the OpenPose ControlNets were trained with).

    It needs its own weights, ``body_pose_model.pth`` from ``lllyasviel/Annotators``: ``weights_file``, or
    ``<root>/models/openpose_annotator/body/body_pose_model.pth``. controlnet-aux is imported only here.
    """
    path = Path(weights_file) if weights_file is not None else _openpose_weights_path()
    if not path.is_file():
        raise MissingWeightsError(f"the OpenPose body model is not at {path}: download body_pose_model.pth from "
                                  "lllyasviel/Annotators there, or use detector='dwpose'")
    try:
        from controlnet_aux.open_pose import OpenposeDetector
        from controlnet_aux.open_pose.body import Body
    except ImportError as error:
        raise InputError(f"controlnet-aux is not usable here ({error}): `pip install controlnet-aux==0.0.10`, or use "
                         "detector='dwpose'") from None
    estimator = OpenposeDetector(Body(str(path)))

    def detect(image: np.ndarray) -> PoseFrame:
        height, width = image.shape[:2]
        people = estimator.detect_poses(np.ascontiguousarray(image))
        if not people:
            return PoseFrame.empty(height, width)
        body = np.zeros((len(people), 18, 2))
        score = np.zeros((len(people), 18))
        for p, person in enumerate(people):
            for k, point in enumerate(person.body.keypoints[:18]):
                if point is not None:  # controlnet-aux marks missing keypoints with None, coordinates normalised
                    body[p, k] = (point.x, point.y)
                    score[p, k] = 1.0
        count = len(people)
        return PoseFrame(body, score, np.zeros((count, 2, 21, 2)), np.zeros((count, 2, 21)), np.zeros((count, 68, 2)),
                         np.zeros((count, 68)), height, width)

    return detect


def _openpose_weights_path() -> Path:
    """Where the annotator file lives in the weights folder (a pack of its own, fetched on demand)."""
    from helpers import weights

    return weights.root() / "models" / OPENPOSE_PACK / OPENPOSE_ROLE / OPENPOSE_FILE


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2, 5"``."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)
