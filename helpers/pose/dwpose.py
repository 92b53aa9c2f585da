"""DWPose whole-body pose detection with onnxruntime: YOLOX-L finds people, DWPose-L (384×288) finds 133 keypoints.

>>> runner = DWPoseRunner.from_weights()            # pack "dwpose": roles "detector" and "pose_model"
>>> pose = runner(image)                            # image: [H, W, 3] uint8 RGB  →  PoseFrame
>>> pose.num_people, pose.body.shape
(1, (1, 18, 2))

Tests and SMOKE mode pass their own sessions: ``DWPoseRunner(detector_session, pose_session)``; any object with
onnxruntime's ``get_inputs()`` / ``run(output_names, feeds)`` works (see ``helpers.testing.pose``).

Pre- and post-processing follow the DWPose ONNX front-end used by ControlNeXt-SVD v2 and MimicMotion:

* detector: letterbox into 640×640 (scale to fit, top-left, grey 114 padding), raw 0-255 **RGB** floats, NCHW (no
  normalisation, no channel swap: the original feeds its decoded RGB frames as they are, and so do we);
  YOLOX decode on the 8/16/32 grids, class-aware NMS (IoU 0.45, legacy "+1" box areas, score > 0.1), then people
  (class 0) scoring > 0.3, best first;
* pose model, per person: box centre, box size × 1.25, widened to the model's 3:4 aspect ratio, affine-warped to
  288×384 (bilinear), normalised with the ImageNet mean/std; SimCC decode: argmax per axis, split ratio 2, score =
  the smaller of the two axis maxima; mapped back to the image;
* nobody detected → the whole image is used as one person's box (the original's fallback; marked
  ``PoseFrame.detected = False`` so alignment can leave such frames out);
* neck = mean of the shoulders (score 1 when both shoulders score > 0.3, else 0), body re-ordered to OpenPose-18.

Why not ``rtmlib`` (installed, and close to this): version 0.0.16 differs from the original on three points that
change the poses the models were trained on: its SimCC score is the *mean* of the two axis maxima (the original
takes the minimum, so different keypoints pass the 0.3 visibility threshold), its neck score is the smaller
shoulder score (the original: 1 or 0), and its "human" detector mode keeps boxes of every class above its own
threshold (the original keeps only people scoring > 0.3). It also builds its sessions from file paths only. So the
runner is written here; it is small.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ..errors import InputError
from .keypoints import WHOLEBODY_NUM_KEYPOINTS, PoseFrame

DETECTOR_FILE = "yolox_l.onnx"
POSE_MODEL_FILE = "dw-ll_ucoco_384.onnx"
WEIGHTS_PACK, DETECTOR_ROLE, POSE_MODEL_ROLE = "dwpose", "detector", "pose_model"

DETECTOR_INPUT_SIZE = (640, 640)  # (height, width) when the model does not declare it
DETECTOR_STRIDES = (8, 16, 32)
LETTERBOX_PAD_VALUE = 114
NMS_IOU_THRESHOLD = 0.45
NMS_SCORE_THRESHOLD = 0.1
PERSON_SCORE_THRESHOLD = 0.3
PERSON_CLASS = 0

POSE_INPUT_SIZE = (384, 288)  # (height, width) when the model does not declare it
BOX_PADDING = 1.25
POSE_MEAN = np.array([123.675, 116.28, 103.53])
POSE_STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT_RATIO = 2.0


class OnnxSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the runner uses."""

    def get_inputs(self) -> Sequence[Any]: ...

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


# ------------------------------------------------------------------------------------------------------- detector


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Scale ``image`` to fit ``size`` (h, w), paste it top-left on grey: the detector's [1, 3, h, w] float32 input."""
    height, width = size
    ratio = min(height / image.shape[0], width / image.shape[1])
    new_w, new_h = int(image.shape[1] * ratio), int(image.shape[0] * ratio)
    canvas = np.full((height, width, 3), LETTERBOX_PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)[None], ratio


def _yolox_grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) and stride of every YOLOX prediction row, strides 8/16/32, each grid row-major."""
    cells, strides = [], []
    for stride in DETECTOR_STRIDES:
        rows, cols = size[0] // stride, size[1] // stride
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((rows * cols, 1), stride))
    return np.concatenate(cells), np.concatenate(strides)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS, best score first; box areas use the legacy inclusive-pixel ``+ 1`` (as the original)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = inter_w * inter_h
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= iou_threshold]
    return keep


def decode_person_boxes(raw: np.ndarray, input_size: tuple[int, int], ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """YOLOX output [1, N, 5 + classes] → person boxes [P, 4] (x1, y1, x2, y2 in image pixels) and scores, best first.

    Only the person class is decoded: NMS is per class, so other classes never affect people.
    """
    predictions = np.array(raw, dtype=np.float32).reshape(-1, raw.shape[-1])
    cells, strides = _yolox_grid(input_size)
    if predictions.shape[0] != cells.shape[0]:
        raise RuntimeError(
            f"The detector returned {predictions.shape[0]} predictions, a YOLOX head on {input_size} gives "
            f"{cells.shape[0]}: is {DETECTOR_FILE} the right file?"
        )
    # float32 storage between steps, as the original (it writes the decoded values back into the float32 output).
    centres = ((predictions[:, :2] + cells) * strides).astype(np.float32)
    sizes = (np.exp(predictions[:, 2:4]) * strides).astype(np.float32)
    boxes = np.concatenate([centres - sizes / 2.0, centres + sizes / 2.0], axis=1)
    boxes /= ratio
    scores = predictions[:, 4] * predictions[:, 5 + PERSON_CLASS]
    candidates = scores > NMS_SCORE_THRESHOLD
    boxes, scores = boxes[candidates], scores[candidates]
    keep = non_max_suppression(boxes, scores, NMS_IOU_THRESHOLD)
    boxes, scores = boxes[keep].astype(np.float64), scores[keep].astype(np.float64)
    people = scores > PERSON_SCORE_THRESHOLD
    return boxes[people], scores[people]


# ----------------------------------------------------------------------------------------------------- pose model


def person_crop_transform(box: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, padded size (w, h) and the 2×3 image → model-input affine matrix for one person box.

    The box is padded by 1.25 and widened to the model's aspect ratio; the matrix comes from three float32 point
    pairs (centre, top-middle, and that vector turned 90°), exactly as the original builds it.
    """
    input_h, input_w = input_size
    x1, y1, x2, y2 = (float(v) for v in box)
    centre = np.array([x1 + x2, y1 + y2]) * 0.5
    size = np.array([x2 - x1, y2 - y1]) * BOX_PADDING
    aspect = input_w / input_h
    if size[0] > size[1] * aspect:
        size = np.array([size[0], size[0] / aspect])
    else:
        size = np.array([size[1] * aspect, size[1]])

    def third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = a - b
        return b + np.array([-d[1], d[0]], dtype=np.float32)

    source = np.zeros((3, 2), dtype=np.float32)
    source[0] = centre
    source[1] = centre + np.array([0.0, size[0] * -0.5])
    source[2] = third_point(source[0], source[1])
    target = np.zeros((3, 2), dtype=np.float32)
    target[0] = [input_w * 0.5, input_h * 0.5]
    target[1] = np.array([input_w * 0.5, input_h * 0.5]) + np.array([0.0, input_w * -0.5])
    target[2] = third_point(target[0], target[1])
    return centre, size, cv2.getAffineTransform(source, target)


def crop_person(image: np.ndarray, box: np.ndarray, input_size: tuple[int, int]):
    """The pose model's normalised [1, 3, h, w] float32 input for one box, with the box's centre and padded size."""
    centre, size, matrix = person_crop_transform(box, input_size)
    crop = cv2.warpAffine(image, matrix, (input_size[1], input_size[0]), flags=cv2.INTER_LINEAR)
    normalised = (crop - POSE_MEAN) / POSE_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)[None], centre, size


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, size: np.ndarray, input_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC outputs [1, K, Wx], [1, K, Wy] → keypoints [K, 2] in image pixels and scores [K]."""
    simcc_x, simcc_y = simcc_x.reshape(-1, simcc_x.shape[-1]), simcc_y.reshape(-1, simcc_y.shape[-1])
    locations = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locations[scores <= 0.0] = -1
    locations /= SIMCC_SPLIT_RATIO
    model_size = np.array([input_size[1], input_size[0]])  # (w, h)
    keypoints = locations / model_size * size + centre - size / 2
    return keypoints, scores


# --------------------------------------------------------------------------------------------------------- runner


def _static_hw(session: OnnxSession, default: tuple[int, int]) -> tuple[int, int]:
    shape = list(session.get_inputs()[0].shape)
    if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return int(shape[2]), int(shape[3])
    return default


def default_providers() -> list[str]:
    """onnxruntime providers to use: CUDA first when this onnxruntime build has it (``onnxruntime-gpu``), then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _torch_has_cuda() -> bool:
    """True when torch is already loaded and sees a CUDA GPU (never imports torch just to ask)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def model_fingerprint(detector_path: str | Path, pose_model_path: str | Path) -> str:
    """A short id of two model files (names, sizes, modification times) that tags cached keypoints."""
    parts = []
    for path in (Path(detector_path), Path(pose_model_path)):
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "dwpose-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class DWPoseRunner:
    """Whole-body pose detection on RGB images; call it on an image to get a :class:`PoseFrame`.

    ``fingerprint`` names the models for the keypoint cache (:func:`helpers.pose.detect_video`): two runners with
    the same fingerprint must give the same keypoints.
    """

    def __init__(self, detector: OnnxSession, pose_model: OnnxSession, *, fingerprint: str = "injected-sessions"):
        self.detector, self.pose_model = detector, pose_model
        self.detector_input_size = _static_hw(detector, DETECTOR_INPUT_SIZE)
        self.pose_input_size = _static_hw(pose_model, POSE_INPUT_SIZE)
        self.fingerprint = fingerprint

    @classmethod
    def from_files(
        cls, detector_path: str | Path, pose_model_path: str | Path, *, providers: Sequence[str] | None = None
    ) -> DWPoseRunner:
        """Open the two ONNX files with onnxruntime (CUDA when available, else CPU; warns on a CPU fallback)."""
        import onnxruntime

        from ..runtime import prepare_onnxruntime_cuda

        chosen_here = providers is None
        providers = default_providers() if chosen_here else list(providers)
        if "CUDAExecutionProvider" in providers:
            prepare_onnxruntime_cuda()
        elif chosen_here and _torch_has_cuda():
            warnings.warn("DWPose runs on the CPU (~1 s per frame) because this onnxruntime has no CUDA: run "
                          "helpers.runtime.install_gpu_onnxruntime() and restart the runtime", stacklevel=2)
        paths = [Path(detector_path), Path(pose_model_path)]
        sessions = [onnxruntime.InferenceSession(str(p), providers=providers) for p in paths]
        if "CUDAExecutionProvider" in providers and "CUDAExecutionProvider" not in sessions[1].get_providers():
            warnings.warn(
                "DWPose runs on the CPU (onnxruntime could not use CUDA): expect ~1 s per frame", stacklevel=2
            )
        return cls(sessions[0], sessions[1], fingerprint=model_fingerprint(*paths))

    @classmethod
    def from_weights(cls, *, root: str | Path | None = None, providers: Sequence[str] | None = None) -> DWPoseRunner:
        """Open the DWPose pack from the weights folder (``weights.resolve("dwpose", "detector" | "pose_model")``).

        Raises ``MissingWeightsError`` (saying how to download it) when the pack is not on disk.
        """
        from .. import weights

        detector = weights.resolve(WEIGHTS_PACK, DETECTOR_ROLE, root)
        pose_model = weights.resolve(WEIGHTS_PACK, POSE_MODEL_ROLE, root)
        return cls.from_files(detector, pose_model, providers=providers)

    def detect_people(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes [P, 4] (x1, y1, x2, y2 pixels) and their scores, best first; may be empty."""
        batch, ratio = letterbox(image, self.detector_input_size)
        raw = self.detector.run(None, {self.detector.get_inputs()[0].name: batch})[0]
        return decode_person_boxes(raw, self.detector_input_size, ratio)

    def estimate_keypoints(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """133 keypoints per box: pixels [P, 133, 2] and scores [P, 133]; one model call per box."""
        name = self.pose_model.get_inputs()[0].name
        keypoints, scores = [], []
        for box in boxes:
            batch, centre, size = crop_person(image, box, self.pose_input_size)
            simcc_x, simcc_y = self.pose_model.run(None, {name: batch})[:2]
            points, point_scores = decode_simcc(simcc_x, simcc_y, centre, size, self.pose_input_size)
            if points.shape[0] != WHOLEBODY_NUM_KEYPOINTS:
                raise RuntimeError(
                    f"The pose model returned {points.shape[0]} keypoints instead of {WHOLEBODY_NUM_KEYPOINTS}: "
                    f"is {POSE_MODEL_FILE} the right file?"
                )
            keypoints.append(points)
            scores.append(point_scores)
        return np.stack(keypoints), np.stack(scores)

    def __call__(self, image: np.ndarray) -> PoseFrame:
        """Detect everyone in an RGB uint8 image [H, W, 3]; coordinates normalised by the image size."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"Pose detection needs an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}.")
        height, width = image.shape[:2]
        boxes, _ = self.detect_people(image)
        detected = len(boxes) > 0
        if not detected:  # the original's fallback: the whole image as one person
            boxes = np.array([[0.0, 0.0, float(width), float(height)]])
        keypoints, scores = self.estimate_keypoints(image, boxes)
        return PoseFrame.from_wholebody(keypoints, scores, height, width, boxes=boxes, detected=detected)

    def close(self) -> None:
        """Drop the onnxruntime sessions (frees GPU memory before the video model loads)."""
        self.detector = self.pose_model = None  # type: ignore[assignment]
