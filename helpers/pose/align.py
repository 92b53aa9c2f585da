"""Fit the driving dancer onto the reference person, and crop the reference photo to the generation size.

ControlNeXt-SVD v2 (following MimicMotion) draws the driving poses where the *reference* person stands, at the
reference person's size: one linear map per video, fitted on the torso and head.

>>> align = PoseAlignment(ax=0.5, ay=0.5, bx=0.25, by=0.25, height=512, width=288)
>>> align.map_xy(1.0, 1.0)
(0.75, 0.75)

How the fit is computed (exactly as the original, so results match it to the last bits):

1. Candidate keypoints: nose, neck, shoulders, hips, knees, ankles, eyes, ears (elbows and wrists move too much);
   keep those visible (score > 0.3) on the **first** person of the reference.
2. Fit frames: driving frames with exactly one person, including frames where the detector found nobody (the whole
   image then stands in as a guessed person). Their keypoints enter the fit whatever their scores. The original fits
   on every sampled frame of the driving video, not only on those that are generated: pass them all.
3. y: least-squares line (``numpy.polyfit``, degree 1) from driving y to reference y over all (frame, keypoint) pairs.
4. x: the same pixel scale as y (``ax = ay · (fw/fh) · (H/W)``, isotropic), offset = mean residual.
5. Every driving frame (several people too) is mapped; scores are unchanged.

Guards added around it (the original crashes or silently misfits in these cases):

* no visible candidate keypoint on the reference → :class:`~helpers.errors.InputError`;
* several people on the reference → the most confident detection (person 0) is used, as the original does;
* no driving frame with exactly one person → ``InputError``;
* a driving frame where the detector found nobody is kept in the fit, as the original does; ``skip_undetected=True``
  leaves it out (the guessed person then no longer pulls the fit);
* driving y values all equal (no fit possible) → ``InputError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .keypoints import PoseFrame

#: Body keypoints (OpenPose indices) the fit may use: nose, neck, shoulders, hips, knees, ankles, eyes, ears.
ALIGNMENT_KEYPOINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)


@dataclass(frozen=True)
class PoseAlignment:
    """``x' = ax·x + bx``, ``y' = ay·y + by`` on normalised coordinates; results belong to an ``height × width`` frame.

    ``reference_keypoints`` and ``fit_frames`` record what the fit used (OpenPose ids; indices into the driving list).
    """

    ax: float
    ay: float
    bx: float
    by: float
    height: int
    width: int
    reference_keypoints: tuple[int, ...] = ()
    fit_frames: tuple[int, ...] = ()

    def map_xy(self, x: float, y: float) -> tuple[float, float]:
        return x * self.ax + self.bx, y * self.ay + self.by

    def apply(self, pose: PoseFrame) -> PoseFrame:
        """The pose mapped onto the reference frame (body, hands and face; every person)."""
        return pose.transformed((self.ax, self.ay), (self.bx, self.by), self.height, self.width)


def _reference_keypoint_ids(reference: PoseFrame) -> list[int]:
    if reference.num_people == 0:
        return []
    visible = reference.body_visible[0]
    return [k for k in ALIGNMENT_KEYPOINTS if visible[k]]


def fit_pose_alignment(
    reference: PoseFrame,
    driving: Sequence[PoseFrame],
    *,
    skip_undetected: bool = False,
) -> PoseAlignment:
    """Fit the map from the driving poses onto the reference pose (module docstring for the exact rule).

    ``reference`` is the detection on the (cropped) reference image, whose size is the generation size;
    ``driving`` are the detections on the driving video's frames (all of the same size).

    Raises ``InputError`` when the reference shows nobody usable or no driving frame shows exactly one person.
    """
    ids = _reference_keypoint_ids(reference)
    if not ids:
        raise InputError(
            "No person found in the reference image: use a photo of one person, body visible from head to knees."
        )
    if not driving:
        raise InputError("The driving video gave no frames: check the video file and the frame range.")
    fit = [
        i for i, pose in enumerate(driving)
        if pose.num_people == 1 and (pose.detected or not skip_undetected)
    ]  # fmt: skip
    if not fit:
        raise InputError(
            "No frame of the driving video shows exactly one person: use a video of a single dancer, whole body in view."
        )
    ref_body = reference.body[0, ids]  # [K, 2]
    driving_body = np.stack([driving[i].body[0, ids] for i in fit])  # [F, K, 2]
    driving_y = driving_body[:, :, 1].flatten()
    if np.ptp(driving_y) == 0:
        raise InputError(
            "The dancer's keypoints do not move vertically at all: use a video where the dancer is visible."
        )
    ref_y = np.tile(ref_body[:, 1], len(fit))
    ay, by = np.polyfit(driving_y, ref_y, 1)
    frame_height, frame_width = driving[fit[0]].height, driving[fit[0]].width
    height, width = reference.height, reference.width
    # Same pixel scale in x and y; evaluated in the original's order (it matters in the last bits).
    ax = ay / (frame_height / frame_width / height * width)
    bx = np.mean(np.tile(ref_body[:, 0], len(fit)) - driving_body[:, :, 0].flatten() * ax)
    return PoseAlignment(
        float(ax), float(ay), float(bx), float(by), height, width, reference_keypoints=tuple(ids), fit_frames=tuple(fit)
    )


def align_poses(
    reference: PoseFrame, driving: Sequence[PoseFrame], *, skip_undetected: bool = False
) -> tuple[list[PoseFrame], PoseAlignment]:
    """Fit (:func:`fit_pose_alignment`) and apply the map to every driving frame.

    Returns the aligned poses (in the reference frame's size) and the fitted map.
    """
    alignment = fit_pose_alignment(reference, driving, skip_undetected=skip_undetected)
    return [alignment.apply(pose) for pose in driving], alignment


def crop_reference_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize-to-cover and centre-crop an RGB uint8 photo [h, w, 3] to exactly ``height × width`` (the original's way).

    The photo is scaled so that it covers the target (the side that is relatively too short fits exactly), with
    bilinear interpolation and no anti-aliasing (as the original), then the centre is cut out.

    >>> crop_reference_image(np.zeros((300, 200, 3), np.uint8), 160, 96).shape
    (160, 96, 3)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError("The reference image must be an RGB picture (8-bit, 3 channels).")
    if height < 1 or width < 1:
        raise InputError(f"The target size must be positive, got {height}x{width}.")
    source_height, source_width = image.shape[:2]
    source_ratio, target_ratio = source_height / source_width, height / width
    if source_ratio < target_ratio:  # relatively wider than the target: fit the height
        size = (height, math.ceil(height / source_ratio))
    else:
        size = (math.ceil(width * source_ratio), width)
    import torch  # imported here: the rest of the pose front-end does not need torch
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=False)
    resized = resized.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    top, left = round((size[0] - height) / 2), round((size[1] - width) / 2)  # Python round: halves to even
    return np.ascontiguousarray(resized[top : top + height, left : left + width])
