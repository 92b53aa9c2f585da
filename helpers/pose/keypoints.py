"""The keypoint format every pose helper speaks: :class:`PoseFrame`.

One ``PoseFrame`` holds the people found in one image: 18 body keypoints in OpenPose order, 68 face landmarks and
21 keypoints per hand, each with a confidence. Coordinates are **normalised**: x by the image width, y by its height,
so (0, 0) is the top-left corner and (1, 1) the bottom-right one (values may fall outside [0, 1]).

>>> import numpy as np
>>> pose = PoseFrame.empty(height=512, width=288)
>>> pose.num_people
0
>>> pose.body.shape, pose.hands.shape, pose.face.shape
((0, 18, 2), (0, 2, 21, 2), (0, 68, 2))

The DWPose model itself predicts the 133 COCO-WholeBody keypoints; :meth:`PoseFrame.from_wholebody` turns them into
this format the way the original DWPose front-end does (a neck point is added, the body is re-ordered, the six foot
points are dropped). :meth:`PoseFrame.from_dwpose_dict` and :meth:`PoseFrame.to_dwpose_dict` convert to and from the
dictionary layout of the original code (``bodies.candidate`` / ``subset`` / ``score``, ``hands``, ``faces``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

#: A body keypoint counts as visible when its confidence is above this (the original's threshold everywhere).
VISIBILITY_THRESHOLD = 0.3

BODY_KEYPOINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

#: The 17 limbs of the OpenPose skeleton as (from, to) body keypoint indices, in drawing (and colour) order.
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

#: The 20 bones of a 21-point hand (wrist, then thumb, index, middle, ring and little finger, 4 points each).
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip

# COCO-WholeBody layout of the 133 DWPose keypoints: 17 body, 6 feet, 68 face, 21 left hand, 21 right hand.
WHOLEBODY_NUM_KEYPOINTS = 133
_WB_FACE = slice(23, 91)
_WB_LEFT_HAND = slice(91, 112)
_WB_RIGHT_HAND = slice(112, 133)
_WB_LEFT_SHOULDER, _WB_RIGHT_SHOULDER = 5, 6
# OpenPose body index -> COCO body index (the neck, OpenPose index 1, has no COCO counterpart: -1).
_OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)


def _as_float64(array, shape_tail: tuple[int, ...], what: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if array.shape[1:] != shape_tail:
        raise ValueError(f"{what}: expected shape [P, {', '.join(map(str, shape_tail))}], got {list(array.shape)}")
    return array


@dataclass(eq=False)
class PoseFrame:
    """Keypoints of P people detected in one image of ``height`` × ``width`` pixels (normalised coordinates).

    Attributes:
        body: [P, 18, 2] (x, y) in OpenPose order (see ``BODY_KEYPOINT_NAMES``).
        body_score: [P, 18] confidences; a keypoint is visible when its score is above ``VISIBILITY_THRESHOLD``.
        hands: [P, 2, 21, 2]: index 0 is the person's left hand, 1 the right hand.
        hands_score: [P, 2, 21].
        face: [P, 68, 2] face landmarks.
        face_score: [P, 68].
        height, width: size in pixels of the image the coordinates are normalised by.
        boxes: [P, 4] person boxes (x1, y1, x2, y2) in pixels of that image; NaN where unknown.
        detected: False when the person detector found nobody and, as in the original, the whole image was used as
            one person's box: the "person" is then a guess and may not exist.
    """

    body: np.ndarray
    body_score: np.ndarray
    hands: np.ndarray
    hands_score: np.ndarray
    face: np.ndarray
    face_score: np.ndarray
    height: int
    width: int
    boxes: np.ndarray = field(default=None)  # type: ignore[assignment]
    detected: bool = True

    def __post_init__(self) -> None:
        self.body = _as_float64(self.body, (18, 2), "body")
        people = self.body.shape[0]
        self.body_score = _as_float64(self.body_score, (18,), "body_score")
        self.hands = _as_float64(self.hands, (2, 21, 2), "hands")
        self.hands_score = _as_float64(self.hands_score, (2, 21), "hands_score")
        self.face = _as_float64(self.face, (68, 2), "face")
        self.face_score = _as_float64(self.face_score, (68,), "face_score")
        if self.boxes is None:
            self.boxes = np.full((people, 4), np.nan)
        self.boxes = _as_float64(self.boxes, (4,), "boxes")
        arrays = (self.body_score, self.hands, self.hands_score, self.face, self.face_score, self.boxes)
        if any(a.shape[0] != people for a in arrays):
            raise ValueError("PoseFrame: every array must have one row per person")
        self.height, self.width = int(self.height), int(self.width)

    @property
    def num_people(self) -> int:
        return self.body.shape[0]

    @property
    def body_visible(self) -> np.ndarray:
        """[P, 18] bool: body keypoints whose score is above the visibility threshold."""
        return self.body_score > VISIBILITY_THRESHOLD

    @classmethod
    def empty(cls, height: int, width: int) -> PoseFrame:
        """A frame with nobody in it."""
        z = np.zeros
        return cls(z((0, 18, 2)), z((0, 18)), z((0, 2, 21, 2)), z((0, 2, 21)), z((0, 68, 2)), z((0, 68)), height, width)

    def person(self, index: int) -> PoseFrame:
        """A frame holding only person ``index`` (people are ordered by detector confidence, best first)."""
        keep = slice(index, index + 1)
        return replace(
            self,
            body=self.body[keep], body_score=self.body_score[keep], hands=self.hands[keep],
            hands_score=self.hands_score[keep], face=self.face[keep], face_score=self.face_score[keep],
            boxes=self.boxes[keep],
        )  # fmt: skip

    def transformed(self, scale_xy, offset_xy, height: int, width: int) -> PoseFrame:
        """Every coordinate mapped by ``value · scale + offset`` (per axis), re-labelled as an ``height × width`` frame.

        Scores are unchanged. Boxes are dropped (set to NaN): they belong to the source image.
        """
        scale, offset = np.asarray(scale_xy, dtype=np.float64), np.asarray(offset_xy, dtype=np.float64)
        return replace(
            self,
            body=self.body * scale + offset, hands=self.hands * scale + offset, face=self.face * scale + offset,
            height=height, width=width, boxes=np.full_like(self.boxes, np.nan),
        )  # fmt: skip

    # ---- the original's layouts -----------------------------------------------------------------------------

    @classmethod
    def from_wholebody(
        cls,
        keypoints: np.ndarray,
        scores: np.ndarray,
        height: int,
        width: int,
        boxes: np.ndarray | None = None,
        detected: bool = True,
    ) -> PoseFrame:
        """From DWPose's 133 COCO-WholeBody keypoints in pixels ([P, 133, 2]) and their scores ([P, 133]).

        As the original: the neck is the mean of the two shoulders, with score 1 when both shoulders score above 0.3
        and 0 otherwise; the body is re-ordered to OpenPose-18; x is divided by ``width``, y by ``height``.
        """
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, WHOLEBODY_NUM_KEYPOINTS, 2)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1, WHOLEBODY_NUM_KEYPOINTS)
        # The neck is computed in pixels and normalised afterwards, in the original's order of operations.
        neck = (keypoints[:, _WB_LEFT_SHOULDER] + keypoints[:, _WB_RIGHT_SHOULDER]) / 2
        size = np.array([float(width), float(height)])
        normalised, neck = keypoints / size, neck / size
        neck_score = (
            (scores[:, _WB_LEFT_SHOULDER] > VISIBILITY_THRESHOLD)
            & (scores[:, _WB_RIGHT_SHOULDER] > VISIBILITY_THRESHOLD)
        ).astype(np.float64)
        coco = list(_OPENPOSE_FROM_COCO)
        body = normalised[:, coco]
        body_score = scores[:, coco]
        body[:, 1], body_score[:, 1] = neck, neck_score
        hands = np.stack([normalised[:, _WB_LEFT_HAND], normalised[:, _WB_RIGHT_HAND]], axis=1)
        hands_score = np.stack([scores[:, _WB_LEFT_HAND], scores[:, _WB_RIGHT_HAND]], axis=1)
        return cls(
            body, body_score, hands, hands_score, normalised[:, _WB_FACE], scores[:, _WB_FACE],
            height, width, boxes=boxes, detected=detected,
        )  # fmt: skip

    @classmethod
    def from_dwpose_dict(cls, pose: dict, height: int, width: int) -> PoseFrame:
        """From the original detector's output dictionary (flat ``"bodies.candidate"`` keys or a nested ``bodies``).

        ``bodies.candidate`` is [P·18, 2], ``bodies.score`` [P, 18], ``hands`` [2P, 21, 2] with every person's left
        hand first and then every right hand, ``faces`` [P, 68, 2], plus ``hands_score`` and ``faces_score``.
        ``bodies.subset`` is not needed: it is the score test (> 0.3) written as candidate row numbers.
        """
        bodies = pose.get("bodies", {})

        def get(name: str) -> np.ndarray:
            flat = name.removeprefix("bodies.")
            value = pose[name] if name in pose else bodies[flat]
            return np.asarray(value, dtype=np.float64)

        score = get("bodies.score").reshape(-1, 18)
        people = score.shape[0]
        hands = get("hands").reshape(2, people, 21, 2).transpose(1, 0, 2, 3)
        hands_score = get("hands_score").reshape(2, people, 21).transpose(1, 0, 2)
        return cls(
            get("bodies.candidate").reshape(people, 18, 2), score, hands, hands_score,
            get("faces").reshape(people, 68, 2), get("faces_score").reshape(people, 68), height, width,
        )  # fmt: skip

    def to_dwpose_dict(self) -> dict:
        """The original detector's output dictionary (nested ``bodies``), e.g. to compare with the original code."""
        people = self.num_people
        rows = np.arange(people * 18, dtype=np.float64).reshape(people, 18)
        return {
            "bodies": {
                "candidate": self.body.reshape(people * 18, 2).copy(),
                "subset": np.where(self.body_visible, rows, -1.0),
                "score": self.body_score.copy(),
            },
            "hands": self.hands.transpose(1, 0, 2, 3).reshape(2 * people, 21, 2).copy(),
            "hands_score": self.hands_score.transpose(1, 0, 2).reshape(2 * people, 21).copy(),
            "faces": self.face.copy(),
            "faces_score": self.face_score.copy(),
        }
