"""Pose front-end without real weights: tiny DWPose ONNX files, fake sessions, and a synthetic dancer.

* :func:`write_tiny_dwpose_pack` writes two tiny random-weight ONNX models (YOLOX- and SimCC-shaped outputs) into the
  weights layout, so SMOKE mode and tests open them with onnxruntime through the real runner code. Their outputs
  decode to one person standing in a plausible pose, whatever the image.
* :class:`FakeDetectorSession` / :class:`FakePoseSession` answer like the real models on *coordinate images*
  (:func:`coordinate_image`: red = column, green = row, blue marks person boxes), so a test can check that the
  runner's letterbox, crop and decoding bring known boxes and keypoints back to the right pixels.
* :func:`dancer_wholebody` / :func:`draw_dancer` / :func:`write_dancer_assets`: a cartoon dancer whose true keypoints
  are known; ``python -m helpers.testing.pose assets/pose`` rewrites the example assets.

>>> from helpers.testing import pose as pose_testing
>>> pose_testing.write_tiny_dwpose_pack()          # into the weights root ($HV_ROOT in tests)
>>> runner = DWPoseRunner.from_weights()
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from helpers.pose.dwpose import (
    DETECTOR_FILE,
    DETECTOR_ROLE,
    DETECTOR_STRIDES,
    POSE_MEAN,
    POSE_MODEL_FILE,
    POSE_MODEL_ROLE,
    POSE_STD,
    SIMCC_SPLIT_RATIO,
    WEIGHTS_PACK,
)
from helpers.pose.keypoints import WHOLEBODY_NUM_KEYPOINTS, PoseFrame

# ------------------------------------------------------------------------------------ a minimal ONNX file writer
# An ONNX model is a protobuf message; the few fields a tiny graph needs are written directly, so no extra package
# is needed to make test models. Field numbers are those of onnx.proto (ModelProto, GraphProto, NodeProto, ...).

_FLOAT, _INT64 = 1, 7  # TensorProto data types
_ONNX_IR_VERSION, _ONNX_OPSET = 8, 13


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values are written as two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    kind = _INT64 if array.dtype == np.int64 else _FLOAT
    array = array.astype("<i8" if kind == _INT64 else "<f4")
    return b"".join(_field(1, d) for d in array.shape) + _field(2, kind) + _field(8, name) + _field(9, array.tobytes())


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_field(1, _field(1, d)) for d in shape)
    return _field(1, name) + _field(2, _field(1, _field(1, _FLOAT) + _field(2, dims)))


def _node(op: str, inputs: list[str], outputs: list[str], **attributes) -> bytes:
    out = b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op)
    for key, value in attributes.items():
        if isinstance(value, int):
            attribute = _field(1, key) + _field(3, value) + _field(20, 2)
        else:  # a list of ints
            attribute = _field(1, key) + b"".join(_field(8, v) for v in value) + _field(20, 7)
        out += _field(5, attribute)
    return out


def _write_onnx(path: Path, nodes, initializers: dict, inputs: dict, outputs: dict) -> Path:
    graph = (
        b"".join(_field(1, n) for n in nodes)
        + _field(2, path.stem)
        + b"".join(_field(5, _tensor(k, v)) for k, v in initializers.items())
        + b"".join(_field(11, _value_info(k, s)) for k, s in inputs.items())
        + b"".join(_field(12, _value_info(k, s)) for k, s in outputs.items())
    )
    model = (
        _field(1, _ONNX_IR_VERSION)
        + _field(2, "helpers.testing")
        + _field(7, graph)
        + _field(8, _field(2, _ONNX_OPSET))
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return path


# -------------------------------------------------------------------------------------------- the tiny DWPose pack


def _tiny_detector(path: Path, rng: np.random.Generator, size: int = 640) -> Path:
    """YOLOX-shaped: per stride, average-pool → 1×1 conv (tiny random weights) → [1, N, 85], plus fixed priors that
    make one stride-32 cell predict a confident 192×320 person box (letterbox pixels)."""
    cells = [(size // s) ** 2 for s in DETECTOR_STRIDES]
    total = sum(cells)
    objectness = np.full((1, total, 1), 0.02, np.float32)
    objectness[0, cells[0] + cells[1] + 5 * (size // 32) + 3] = 0.95  # stride-32 cell (x=3, y=5)
    inits = {
        "w": rng.uniform(-1e-4, 1e-4, (85, 3, 1, 1)),
        "reg": np.array([[[0.5, 0.5, math.log(6.0), math.log(10.0)]]]),
        "reg_shape": np.array([1, total, 4], np.int64),
        "objectness": objectness,
        "cls": np.concatenate([[0.9], np.full(79, 0.05)])[None, None],
        "cls_shape": np.array([1, total, 80], np.int64),
        "flat": np.array([1, 85, -1], np.int64),
    }
    nodes = []
    for s in DETECTOR_STRIDES:
        nodes += [
            _node("AveragePool", ["images"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]),
            _node("Conv", [f"p{s}", "w"], [f"c{s}"]),
            _node("Reshape", [f"c{s}", "flat"], [f"r{s}"]),
        ]
    nodes += [
        _node("Concat", [f"r{s}" for s in DETECTOR_STRIDES], ["features"], axis=2),
        _node("Transpose", ["features"], ["rows"], perm=[0, 2, 1]),
        _node("Expand", ["reg", "reg_shape"], ["reg_prior"]),
        _node("Expand", ["cls", "cls_shape"], ["cls_prior"]),
        _node("Concat", ["reg_prior", "objectness", "cls_prior"], ["prior"], axis=2),
        _node("Add", ["rows", "prior"], ["output"]),
    ]
    return _write_onnx(path, nodes, inits, {"images": (1, 3, size, size)}, {"output": (1, total, 85)})


def _tiny_pose_model(path: Path, rng: np.random.Generator, height: int = 384, width: int = 288) -> Path:
    """SimCC-shaped: average-pool → 1×1 conv → mean over rows / columns → small matmul, plus Gaussian priors at a
    standing person's keypoints, so the argmax lands near them (moved a little by the image) with scores ≈ 0.7."""
    template = _standing_template(height, width) * SIMCC_SPLIT_RATIO  # [133, 2] SimCC bins
    bins_x, bins_y = np.arange(int(width * SIMCC_SPLIT_RATIO)), np.arange(int(height * SIMCC_SPLIT_RATIO))
    pooled_h, pooled_w = height // 32, width // 32
    inits = {
        "w": rng.uniform(-0.5, 0.5, (WHOLEBODY_NUM_KEYPOINTS, 3, 1, 1)),
        "mx": rng.uniform(-0.01, 0.01, (pooled_w, bins_x.size)),
        "my": rng.uniform(-0.01, 0.01, (pooled_h, bins_y.size)),
        "bx": 0.7 * np.exp(-0.5 * ((bins_x[None] - template[:, :1]) / 6.0) ** 2),
        "by": 0.7 * np.exp(-0.5 * ((bins_y[None] - template[:, 1:]) / 6.0) ** 2),
    }
    nodes = [
        _node("AveragePool", ["input"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        _node("Conv", ["pooled", "w"], ["features"]),
        _node("ReduceMean", ["features"], ["columns"], axes=[2], keepdims=0),
        _node("ReduceMean", ["features"], ["rows"], axes=[3], keepdims=0),
        _node("MatMul", ["columns", "mx"], ["sx"]),
        _node("MatMul", ["rows", "my"], ["sy"]),
        _node("Add", ["sx", "bx"], ["simcc_x"]),
        _node("Add", ["sy", "by"], ["simcc_y"]),
    ]
    outputs = {
        "simcc_x": (1, WHOLEBODY_NUM_KEYPOINTS, bins_x.size),
        "simcc_y": (1, WHOLEBODY_NUM_KEYPOINTS, bins_y.size),
    }
    return _write_onnx(path, nodes, inits, {"input": (1, 3, height, width)}, outputs)


def write_tiny_dwpose_pack(root: str | Path | None = None, *, seed: int = 0) -> tuple[Path, Path]:
    """Write tiny ``yolox_l.onnx`` / ``dw-ll_ucoco_384.onnx`` under ``<root>/models/dwpose/<role>/``; return both paths.

    ``root`` defaults to the weights root, so ``DWPoseRunner.from_weights()`` then opens them.
    """
    if root is None:
        from helpers import weights

        root = weights.root()
    rng = np.random.default_rng(seed)
    folder = Path(root) / "models" / WEIGHTS_PACK
    detector = _tiny_detector(folder / DETECTOR_ROLE / DETECTOR_FILE, rng)
    pose_model = _tiny_pose_model(folder / POSE_MODEL_ROLE / POSE_MODEL_FILE, rng)
    return detector, pose_model


# ------------------------------------------------------------------------------------------ the synthetic dancer
# A person 1 unit tall in local coordinates: x to the image right, y down, (0, 0) the top of the head.
# COCO-WholeBody order: 17 body, 6 feet, 68 face, 21 left hand, 21 right hand. The person faces the camera, so
# their left side is on the image right (+x).

_HEAD = np.array([0.0, 0.07])


def _arm(shoulder: np.ndarray, side: float, raise_deg: float, bend_deg: float) -> tuple[np.ndarray, np.ndarray]:
    upper = math.radians(raise_deg)
    elbow = shoulder + 0.16 * np.array([side * math.sin(upper), math.cos(upper)])
    lower = upper + math.radians(bend_deg)
    return elbow, elbow + 0.14 * np.array([side * math.sin(lower), math.cos(lower)])


def _hand(wrist: np.ndarray, elbow: np.ndarray) -> np.ndarray:
    """Wrist, then 5 fingers × 4 points fanned around the forearm direction."""
    direction = math.atan2(*(wrist - elbow)[::-1])
    points = [wrist]
    for finger, spread in enumerate(np.linspace(-0.6, 0.6, 5)):
        angle = direction + spread
        for joint in range(1, 5):
            length = 0.012 * joint * (0.8 if finger in (0, 4) else 1.0)
            points.append(wrist + length * np.array([math.cos(angle), math.sin(angle)]))
    return np.array(points)


def _face() -> np.ndarray:
    """68 landmarks in the iBUG order (jaw 17, brows 10, nose 9, eyes 12, mouth 20), roughly placed."""
    jaw = [_HEAD + [0.045 * math.cos(a), 0.01 + 0.05 * math.sin(a)] for a in np.linspace(math.pi, 0, 17)]
    brows = [_HEAD + [x, -0.03] for x in np.r_[np.linspace(-0.035, -0.01, 5), np.linspace(0.01, 0.035, 5)]]
    nose = [_HEAD + [0.0, y] for y in np.linspace(-0.02, 0.005, 4)] + [
        _HEAD + [x, 0.012] for x in np.linspace(-0.012, 0.012, 5)
    ]
    eyes = [
        _HEAD + [cx + 0.008 * math.cos(a), -0.015 + 0.004 * math.sin(a)]
        for cx in (-0.022, 0.022)
        for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)
    ]
    mouth = [_HEAD + [r * math.cos(a), 0.03 + 0.4 * r * math.sin(a)] for r, n in ((0.02, 12), (0.012, 8))
             for a in np.linspace(0, 2 * math.pi, n, endpoint=False)]  # fmt: skip
    return np.array(jaw + brows + nose + eyes + mouth)


def dancer_local(phase: float) -> np.ndarray:
    """[133, 2] keypoints of the dancer at ``phase`` (one dance cycle per unit) in person-local units."""
    a = 2 * math.pi * phase
    sway, bounce = 0.03 * math.sin(a), 0.015 * abs(math.sin(2 * a))
    shoulders = np.array([[0.11, 0.19], [-0.11, 0.19]]) + [sway, bounce]  # left (image right), right
    hips = np.array([[0.075, 0.52], [-0.075, 0.52]]) + [0.5 * sway, bounce]
    knees = np.array([[0.08 + 0.02 * math.sin(a), 0.73], [-0.08 + 0.02 * math.sin(a), 0.73]]) + [0, 0.5 * bounce]
    ankles = np.array([[0.085, 0.95], [-0.085, 0.95]])
    left_elbow, left_wrist = _arm(shoulders[0], +1, 35 + 55 * math.sin(a), 40 + 30 * math.sin(a + 1))
    right_elbow, right_wrist = _arm(shoulders[1], -1, 35 + 55 * math.sin(a + math.pi), 40 + 30 * math.cos(a))
    head = np.array([sway, bounce])
    body = np.array([
        _HEAD + head, _HEAD + head + [0.025, -0.015], _HEAD + head + [-0.025, -0.015],
        _HEAD + head + [0.05, -0.005], _HEAD + head + [-0.05, -0.005],
        shoulders[0], shoulders[1], left_elbow, right_elbow, left_wrist, right_wrist,
        hips[0], hips[1], knees[0], knees[1], ankles[0], ankles[1],
    ])  # fmt: skip
    feet = np.array([ankles[0] + [0.03, 0.04], ankles[0] + [0.05, 0.035], ankles[0] + [-0.01, 0.03],
                     ankles[1] + [-0.03, 0.04], ankles[1] + [-0.05, 0.035], ankles[1] + [0.01, 0.03]])  # fmt: skip
    hands = np.concatenate([_hand(left_wrist, left_elbow), _hand(right_wrist, right_elbow)])
    return np.concatenate([body, feet, _face() + head, hands])


def _standing_template(height: int, width: int) -> np.ndarray:
    """The dancer at rest placed in a pose-model crop: 80 % of the crop height, centred (crop pixels)."""
    local = dancer_local(0.0)
    return np.stack([width / 2 + local[:, 0] * 0.8 * height, 0.1 * height + local[:, 1] * 0.8 * height], axis=1)


def dancer_wholebody(phase: float, height: int, width: int, *, size: float = 0.8, centre_x: float = 0.5):
    """The dancer's 133 keypoints in pixels of a ``height × width`` frame ([133, 2]) and their scores ([133])."""
    local = dancer_local(phase)
    scale = size * height
    pixels = np.stack([centre_x * width + local[:, 0] * scale, (1 - size) / 2 * height + local[:, 1] * scale], axis=1)
    return pixels, np.full(WHOLEBODY_NUM_KEYPOINTS, 0.9)


def dancer_pose(phase: float, height: int, width: int, **placement) -> PoseFrame:
    """Ground-truth :class:`PoseFrame` of the dancer (what a perfect detector would return)."""
    pixels, scores = dancer_wholebody(phase, height, width, **placement)
    return PoseFrame.from_wholebody(pixels[None], scores[None], height, width)


def draw_dancer(phase: float, height: int, width: int, *, shirt=(200, 60, 60), **placement) -> np.ndarray:
    """An RGB uint8 cartoon of the dancer on a light background."""
    image = np.full((height, width, 3), (236, 232, 222), np.uint8)
    image[int(0.92 * height) :] = (190, 180, 165)  # floor
    p, _ = dancer_wholebody(phase, height, width, **placement)
    scale = (p[15, 1] - p[0, 1]) / 0.88

    def pt(i: int) -> tuple[int, int]:
        return int(round(p[i, 0])), int(round(p[i, 1]))

    limb = max(2, int(0.05 * scale))
    trousers, skin = (50, 60, 110), (225, 180, 150)
    for a, b, colour in ((11, 13, trousers), (13, 15, trousers), (12, 14, trousers), (14, 16, trousers)):
        cv2.line(image, pt(a), pt(b), colour, limb, cv2.LINE_AA)
    torso = np.array([pt(5), pt(6), pt(12), pt(11)], np.int32)
    cv2.fillConvexPoly(image, torso, shirt, cv2.LINE_AA)
    for a, b, colour in ((5, 7, shirt), (7, 9, skin), (6, 8, shirt), (8, 10, skin)):
        cv2.line(image, pt(a), pt(b), colour, max(2, int(0.8 * limb)), cv2.LINE_AA)
    for wrist in (9, 10):
        cv2.circle(image, pt(wrist), max(2, int(0.03 * scale)), skin, -1, cv2.LINE_AA)
    cv2.circle(image, pt(0), max(3, int(0.07 * scale)), skin, -1, cv2.LINE_AA)
    return image


def write_dancer_assets(folder: str | Path, *, frames: int = 48, fps: float = 12.0) -> tuple[Path, Path]:
    """Write ``dancer.mp4`` (320×240, one dance cycle) and ``reference.png`` (192×288, another person at rest)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "dancer.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(frames):
        frame = draw_dancer(i / frames, 240, 320, size=0.8, centre_x=0.45 + 0.1 * math.sin(2 * math.pi * i / frames))
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    reference = folder / "reference.png"
    image = draw_dancer(0.0, 288, 192, size=0.7, centre_x=0.5, shirt=(60, 140, 90))
    cv2.imwrite(str(reference), np.ascontiguousarray(image[:, :, ::-1]))
    return video, reference


# ------------------------------------------------------------------------------------ fake sessions for unit tests


def coordinate_image(height: int, width: int, boxes=()) -> np.ndarray:
    """RGB uint8 test image: red = column, green = row (so ≤ 256 × 256), blue = 200 inside person ``boxes``.

    ``boxes`` are (x1, y1, x2, y2) pixel boxes; blue covers columns x1 ≤ x < x2 and rows y1 ≤ y < y2.
    """
    if height > 256 or width > 256:
        raise ValueError("a coordinate image is at most 256 × 256 (coordinates are stored in 8 bits)")
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([cols, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[int(y1) : int(y2), int(x1) : int(x2), 2] = 200
    return image


class FakeDetectorSession:
    """Answers like YOLOX-L: every blue region (> 150) of the letterboxed input becomes one person prediction.

    People are reported in region order with scores 0.9, 0.85, ... With ``decoys`` it also predicts what the runner
    must reject: a lower-scoring near-duplicate of each person (NMS), a confident box of another class, and a person
    box scoring below 0.3. ``calls`` counts ``run`` calls.
    """

    def __init__(self, *, decoys: bool = True, size: int = 640):
        self.decoys, self.size, self.calls = decoys, size, 0

    def get_inputs(self):
        return [SimpleNamespace(name="images", shape=[1, 3, self.size, self.size])]

    def _row(self, stride: int, cell_x: int, cell_y: int) -> int:
        offset = sum((self.size // s) ** 2 for s in DETECTOR_STRIDES if s < stride)
        return offset + cell_y * (self.size // stride) + cell_x

    def _put(self, out: np.ndarray, stride: int, box, objectness: float, scores: dict[int, float]) -> None:
        x1, y1, x2, y2 = box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        cell_x, cell_y = int(cx // stride), int(cy // stride)
        row = out[0, self._row(stride, cell_x, cell_y)]
        row[:4] = [
            cx / stride - cell_x,
            cy / stride - cell_y,
            math.log((x2 - x1) / stride),
            math.log((y2 - y1) / stride),
        ]
        row[4] = objectness
        for cls, score in scores.items():
            row[5 + cls] = score

    def run(self, output_names, feeds):
        self.calls += 1
        (image,) = feeds.values()
        total = sum((self.size // s) ** 2 for s in DETECTOR_STRIDES)
        out = np.zeros((1, total, 85), np.float32)
        out[0, :, 2:4] = -5.0  # tiny boxes with zero score everywhere else
        mask = (image[0, 2] > 150).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        for person, (x, y, w, h, _) in enumerate(stats[1:]):
            box = (float(x), float(y), float(x + w), float(y + h))
            self._put(out, 32, box, 1.0, {0: 0.9 - 0.05 * person})
            if self.decoys:  # a shifted copy, overlapping enough for NMS to drop it
                shifted = (box[0] + 0.05 * w, box[1], box[2] + 0.05 * w, box[3])
                self._put(out, 16, shifted, 1.0, {0: 0.6})
        if self.decoys:
            self._put(out, 8, (2.0, 2.0, 14.0, 14.0), 1.0, {5: 0.95})  # another class, confident
            self._put(out, 8, (18.0, 2.0, 30.0, 14.0), 0.5, {0: 0.5})  # a person scoring 0.25
        return [out]


class FakePoseSession:
    """Answers like DWPose on a coordinate image: it reads which image pixel each crop pixel shows and puts each
    keypoint's SimCC peaks on the crop pixels showing (nearest to) its true position; the x peak's height is its true
    score, the y peak is higher.

    ``keypoints`` [P, 133, 2] (integer pixels inside the image) and ``scores`` [P, 133] belong to the people whose
    boxes are ``boxes`` [P, 4]; the person in a crop is the one whose box centre the crop centre shows.
    """

    def __init__(self, keypoints, scores, boxes, *, height: int = 384, width: int = 288):
        self.keypoints = np.asarray(keypoints, np.float64).reshape(-1, WHOLEBODY_NUM_KEYPOINTS, 2)
        self.scores = np.asarray(scores, np.float32).reshape(-1, WHOLEBODY_NUM_KEYPOINTS)
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.height, self.width, self.calls = height, width, 0

    def get_inputs(self):
        return [SimpleNamespace(name="input", shape=[1, 3, self.height, self.width])]

    def run(self, output_names, feeds):
        self.calls += 1
        (crop,) = feeds.values()
        pixels = np.rint(crop[0].transpose(1, 2, 0) * POSE_STD + POSE_MEAN)  # back to 0-255 RGB
        shown_x, shown_y = pixels[..., 0], pixels[..., 1]
        # Crop pixels next to the image border blend with the black outside: their colours are no coordinates.
        smooth = np.zeros(shown_x.shape, bool)
        step_x, step_y = shown_x[1:-1, 2:] - shown_x[1:-1, :-2], shown_y[2:, 1:-1] - shown_y[:-2, 1:-1]
        smooth[1:-1, 1:-1] = (step_x >= 0) & (step_x <= 4) & (step_y >= 0) & (step_y <= 4)
        centre = np.array([shown_x[self.height // 2, self.width // 2], shown_y[self.height // 2, self.width // 2]])
        box_centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2
        person = int(np.argmin(np.abs(box_centres - centre).sum(axis=1)))
        ratio = SIMCC_SPLIT_RATIO
        simcc_x = np.zeros((1, WHOLEBODY_NUM_KEYPOINTS, int(self.width * ratio)), np.float32)
        simcc_y = np.zeros((1, WHOLEBODY_NUM_KEYPOINTS, int(self.height * ratio)), np.float32)
        for k, (x, y) in enumerate(self.keypoints[person]):
            distance = np.where(smooth, (shown_x - x) ** 2 + (shown_y - y) ** 2, np.inf)
            if distance.min() > 2:  # not in this crop
                continue
            rows, cols = np.nonzero(distance == distance.min())
            simcc_x[0, k, int(round(cols.mean() * ratio))] = self.scores[person, k]
            # The y peak is higher: the runner's score must be the smaller of the two peaks.
            simcc_y[0, k, int(round(rows.mean() * ratio))] = min(1.0, self.scores[person, k] + 0.1)
        return [simcc_x, simcc_y]


if __name__ == "__main__":  # python -m helpers.testing.pose assets/pose
    print(*write_dancer_assets(sys.argv[1] if len(sys.argv) > 1 else "assets/pose"))
