"""OpenPose-style pose images: coloured limbs on black, as the pose-conditioned models were trained on.

Two looks, both pixel-faithful to the code that produced the training data of the models we drive:

``style="dwpose"`` (default; ControlNeXt-SVD v2 and the MimicMotion family)
    Drawn on a supersampled canvas whose short side is 2160 px, then shrunk to the output size, so limbs come out
    about 1 px wide at 576 px. Colours are scaled by the keypoint confidences (limbs by s₁·s₂, points by s); limbs
    need both end scores ≥ 0.3 and are dimmed to 60 %; hands and face have no score threshold (low confidence only
    draws dimmer) and are not dimmed. The canvas is finally reversed BGR → RGB, so the first limb colour, listed as
    (255, 0, 0), comes out **blue** and hand points come out red. (One deliberate difference: for a body keypoint
    scoring exactly 0.3 the original draws its limbs to an unrelated keypoint, a row-lookup slip; we use the
    keypoint itself.)

``style="openpose"`` (the ControlNet OpenPose annotator: SD1.5/SD2.1 OpenPose ControlNets, MuseV's pose path)
    Drawn directly at the output size with full colours (no confidence scaling); a keypoint is drawn when its score
    passes 0.3; limbs dimmed to 60 %; no channel swap (the first limb is red, hand points blue).

>>> from helpers.pose.keypoints import PoseFrame
>>> image = draw_pose(PoseFrame.empty(512, 288))
>>> image.shape, image.dtype, int(image.max())
((512, 288, 3), dtype('uint8'), 0)

Body only, e.g. for the SD2.1 OpenPose ControlNet: ``draw_pose(pose, style="openpose", hands=False, face=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from .keypoints import BODY_LIMBS, HAND_EDGES, VISIBILITY_THRESHOLD, PoseFrame

PoseStyle = Literal["dwpose", "openpose"]

#: OpenPose colours, one per limb (in ``BODY_LIMBS`` order) and per body keypoint, written into canvas channels 0-2.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

SUPERSAMPLED_SHORT_SIDE = 2160  # the dwpose look draws on a canvas whose short side is this many pixels
LIMB_HALF_WIDTH = 4  # ellipse half-width of a limb, in canvas pixels
BODY_POINT_RADIUS = 4
HAND_POINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
FACE_POINT_RADIUS = 3
LIMB_DIMMING = 0.6


def _hue_to_rgb(hue: float) -> tuple[float, float, float]:
    """RGB in [0, 1] of a fully saturated, full-value HSV colour (the hand-bone rainbow).

    Written with saturation and value kept in the expressions so the floats are exactly those of the usual HSV
    conversion: OpenCV rounds them after scaling, and a last-bit difference could flip a level.
    """
    s, v = 1.0, 1.0
    i = int(hue * 6.0)
    f = hue * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]


_HAND_EDGE_RGB = tuple(_hue_to_rgb(i / float(len(HAND_EDGES))) for i in range(len(HAND_EDGES)))


def _draw_limb(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, color) -> None:
    """A limb as a filled ellipse between two points given in canvas pixels (x, y)."""
    height, width = canvas.shape[:2]
    # Same arithmetic as the reference renderer: rows/columns as float64, the angle of the vector end→start.
    ys = (start[1] * float(height), end[1] * float(height))
    xs = (start[0] * float(width), end[0] * float(width))
    mid_y, mid_x = (ys[0] + ys[1]) / 2, (xs[0] + xs[1]) / 2
    length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
    angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
    polygon = cv2.ellipse2Poly((int(mid_x), int(mid_y)), (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, color)


def _draw_body(canvas: np.ndarray, pose: PoseFrame, weighted: bool) -> np.ndarray:
    score = pose.body_score
    # Limbs first (limb-major, people inside: later people paint over earlier ones), then dim, then the points.
    for limb, (a, b) in enumerate(BODY_LIMBS):
        for n in range(pose.num_people):
            if weighted:
                if score[n, a] < VISIBILITY_THRESHOLD or score[n, b] < VISIBILITY_THRESHOLD:
                    continue
                alpha = score[n, a] * score[n, b]
                color = [int(c * alpha) for c in OPENPOSE_COLORS[limb]]
            else:
                if not (pose.body_visible[n, a] and pose.body_visible[n, b]):
                    continue
                color = list(OPENPOSE_COLORS[limb])
            _draw_limb(canvas, pose.body[n, a], pose.body[n, b], color)
    canvas = (canvas * LIMB_DIMMING).astype(np.uint8)
    height, width = canvas.shape[:2]
    for k in range(18):
        for n in range(pose.num_people):
            if not pose.body_visible[n, k]:
                continue
            x, y = int(pose.body[n, k, 0] * width), int(pose.body[n, k, 1] * height)
            color = [int(c * score[n, k]) for c in OPENPOSE_COLORS[k]] if weighted else list(OPENPOSE_COLORS[k])
            cv2.circle(canvas, (x, y), BODY_POINT_RADIUS, color, thickness=-1)
    return canvas


def _inside(*coordinates: int) -> bool:
    # The reference renderers only reject points at or left of / above the canvas origin (pixel coordinate < 1).
    return all(c > 0.01 for c in coordinates)


def _draw_hands(canvas: np.ndarray, pose: PoseFrame, weighted: bool) -> None:
    height, width = canvas.shape[:2]
    # Every person's left hand, then every right hand: the order of the original detector's hand rows.
    for side in (0, 1):
        for n in range(pose.num_people):
            points, scores = pose.hands[n, side], pose.hands_score[n, side]
            shown = np.ones(21, bool) if weighted else scores >= VISIBILITY_THRESHOLD
            pixels = [(int(x * width), int(y * height)) if ok else (-1, -1) for (x, y), ok in zip(points, shown)]
            for edge, (a, b) in enumerate(HAND_EDGES):
                if not _inside(*pixels[a], *pixels[b]):
                    continue
                level = int(scores[a] * scores[b] * 255) if weighted else 255
                color = tuple(c * level for c in _HAND_EDGE_RGB[edge])
                cv2.line(canvas, pixels[a], pixels[b], color, thickness=HAND_LINE_THICKNESS)
            for k, pixel in enumerate(pixels):
                if _inside(*pixel):
                    level = int(scores[k] * 255) if weighted else 255
                    cv2.circle(canvas, pixel, HAND_POINT_RADIUS, (0, 0, level), thickness=-1)


def _draw_face(canvas: np.ndarray, pose: PoseFrame, weighted: bool) -> None:
    height, width = canvas.shape[:2]
    for n in range(pose.num_people):
        for (x, y), score in zip(pose.face[n], pose.face_score[n]):
            if not weighted and score < VISIBILITY_THRESHOLD:
                continue
            pixel = (int(x * width), int(y * height))
            if _inside(*pixel):
                level = int(score * 255) if weighted else 255
                cv2.circle(canvas, pixel, FACE_POINT_RADIUS, (level, level, level), thickness=-1)


def draw_pose(
    pose: PoseFrame,
    height: int | None = None,
    width: int | None = None,
    *,
    style: PoseStyle = "dwpose",
    body: bool = True,
    hands: bool = True,
    face: bool = True,
) -> np.ndarray:
    """Render one frame's people as an ``height × width`` RGB uint8 image (default: the pose's own size).

    Coordinates are normalised, so a pose can be drawn at any size. ``style`` picks the look (module docstring);
    ``body`` / ``hands`` / ``face`` choose the parts.

    >>> from helpers.pose.keypoints import PoseFrame
    >>> draw_pose(PoseFrame.empty(160, 96), style="openpose", hands=False, face=False).shape
    (160, 96, 3)
    """
    height = pose.height if height is None else int(height)
    width = pose.width if width is None else int(width)
    if style not in ("dwpose", "openpose"):
        raise ValueError(f"style must be 'dwpose' or 'openpose', not {style!r}")
    weighted = style == "dwpose"
    if weighted:
        short_side = min(height, width)
        ratio = (SUPERSAMPLED_SHORT_SIDE / short_side) if short_side != SUPERSAMPLED_SHORT_SIDE else 1
        canvas = np.zeros((int(height * ratio), int(width * ratio), 3), dtype=np.uint8)
    else:
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if body:
        canvas = _draw_body(canvas, pose, weighted)
    if hands:
        _draw_hands(canvas, pose, weighted)
    if face:
        _draw_face(canvas, pose, weighted)
    if not weighted:
        return canvas
    # Shrink the supersampled canvas, then reverse the channels: the reference wrote its colours as BGR.
    return np.ascontiguousarray(cv2.resize(canvas, (width, height))[:, :, ::-1])


def draw_poses(
    poses: Sequence[PoseFrame], height: int | None = None, width: int | None = None, **options
) -> np.ndarray:
    """Render a pose sequence as [N, H, W, 3] uint8 (size default: the first pose's). Options as :func:`draw_pose`."""
    if not poses:
        raise ValueError("draw_poses needs at least one pose")
    height = poses[0].height if height is None else height
    width = poses[0].width if width is None else width
    return np.stack([draw_pose(p, height, width, **options) for p in poses])
