"""Face preprocessing for identity-conditioned generation: detect, align (ArcFace 5-point), crop for CLIP.

What ID-Animator feeds its image encoder: the 5 keypoints of a detected face are mapped onto the standard ArcFace
112x112 template by a least-squares similarity transform (rotation + uniform scale + translation), the photo is warped
to a tight 112x112 face crop (bilinear, black outside the photo), converted to RGB and resized to 224x224 (bicubic).

>>> from helpers import face
>>> prepared = face.prepare_face("photo.jpg")                       # insightface detector (pack "insightface")
>>> prepared.image                                                  # 224x224 PIL image for the CLIP encoder
>>> face.prepare_face("crop.png", already_cropped=True).image       # a face crop you made yourself
>>> face.prepare_face(img, detector=my_detector)                    # any object with .detect(image_bgr)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import PIL.Image

from helpers.errors import InputError, MissingWeightsError

# Standard ArcFace 112x112 destination points: left eye, right eye, nose tip, left and right mouth corners (x, y).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
CROP_SIZE = 112
CLIP_SIZE = 224
MIN_FACE_SIZE = 40  # px, shorter side of the detected box; smaller faces are used (as the original) with a warning
DETECTOR_INPUT_SIZE = (320, 320)  # the detection size ID-Animator prepares insightface with
DETECTION_THRESHOLD = 0.5
INSIGHTFACE_HINT = ("pip install insightface==0.7.3 (its pretrained models are licensed for non-commercial research "
                    "only)")


class FaceError(InputError):
    """The photo cannot give a usable face crop; the message says what to do."""


@dataclass(frozen=True)
class DetectedFace:
    """One face: box ``(x1, y1, x2, y2)``, 5 keypoints ``(5, 2)`` in pixels (ArcFace order), detector score."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float = 1.0

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels."""
        x1, y1, x2, y2 = self.box
        return float(min(x2 - x1, y2 - y1))

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(x2 - x1, 0) * max(y2 - y1, 0))


class FaceDetector(Protocol):
    """Anything that finds faces in a uint8 BGR image (OpenCV channel order)."""

    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]: ...


@dataclass
class PreparedFace:
    """A face ready for the image encoder: ``image`` 224x224 RGB; ``crop_bgr`` the aligned 112x112 crop (None in
    already-cropped mode); ``face`` the detection used; ``matrix`` the 2x3 photo -> crop transform."""

    image: PIL.Image.Image
    crop_bgr: np.ndarray | None = None
    face: DetectedFace | None = None
    matrix: np.ndarray | None = None


# -- alignment maths -----------------------------------------------------------------------------------------------
def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991, with scale, no reflection) mapping ``src`` points onto
    ``dst`` points; returns the 2x3 float64 matrix ``[s*R | t]``.

    >>> similarity_transform(ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112).round(6)   # identity
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centered, dst_centered = src - src_mean, dst - dst_mean
    covariance = dst_centered.T @ src_centered / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    # a reflection would fit mirrored points better, but a face crop must stay a rotation
    sign = np.ones(2)
    if np.linalg.det(covariance) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    src_variance = (src_centered**2).sum() / len(src)
    scale = float(singular @ sign) / src_variance
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def arcface_matrix(keypoints: np.ndarray, crop_size: int = CROP_SIZE) -> np.ndarray:
    """The 2x3 transform from photo pixels to the ArcFace crop of side ``crop_size`` (a multiple of 112)."""
    if crop_size % CROP_SIZE:
        raise ValueError(f"crop_size must be a multiple of {CROP_SIZE}, got {crop_size}")
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    return similarity_transform(keypoints, ARCFACE_TEMPLATE_112 * (crop_size / CROP_SIZE))


def align_face(image_bgr: np.ndarray, keypoints: np.ndarray, crop_size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Warp the face with these 5 keypoints to an ArcFace crop: (crop ``[S, S, 3]`` uint8 BGR, 2x3 matrix).

    Bilinear sampling; pixels outside the photo are black.
    """
    import cv2

    matrix = arcface_matrix(keypoints, crop_size)
    crop = cv2.warpAffine(image_bgr, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, matrix


def crop_to_clip_image(crop_bgr: np.ndarray, size: int = CLIP_SIZE) -> PIL.Image.Image:
    """BGR face crop -> RGB PIL image of ``size`` x ``size`` (bicubic), as fed to the CLIP image encoder."""
    rgb = np.ascontiguousarray(crop_bgr[..., ::-1])
    return PIL.Image.fromarray(rgb).resize((size, size), PIL.Image.BICUBIC)


def choose_face(faces: list[DetectedFace], *, select: Literal["largest", "best_score"] = "best_score",
                source: str = "the photo") -> DetectedFace:
    """Pick one face: the highest detector score (default, as the original) or the largest box; warn when there were
    several."""
    if not faces:
        raise FaceError(f"No face found in {source}: use a photo where the face is clearly visible and frontal, "
                        f"or pass a face crop with already_cropped=True.")
    key = (lambda f: f.area) if select == "largest" else (lambda f: f.score)
    chosen = max(faces, key=key)
    if len(faces) > 1:
        what = "largest" if select == "largest" else "most confident"
        warnings.warn(f"{len(faces)} faces found in {source}; using the {what} one. Crop the photo to one person "
                      f"to choose another.", UserWarning, stacklevel=3)
    return chosen


# -- detectors -----------------------------------------------------------------------------------------------------
class InsightFaceDetector:
    """insightface's SCRFD-10G detector (``det_10g.onnx`` of ``buffalo_l``), detection only, on CPU by default.

    insightface is imported when the detector is built, so nothing else in this package needs it.

    >>> detector = InsightFaceDetector()                       # det_10g.onnx from the "insightface" weights pack
    >>> faces = detector.detect(image_bgr)
    """

    def __init__(self, model_path: str | Path | None = None, *, input_size: tuple[int, int] = DETECTOR_INPUT_SIZE,
                 threshold: float = DETECTION_THRESHOLD, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        if model_path is None:
            from helpers import weights

            model_path = weights.resolve("insightface", "detector")
        model_path = Path(model_path)
        if not model_path.is_file():
            raise MissingWeightsError(f"Face detector model not found at {model_path}: run notebooks/00_setup.ipynb "
                                      f"with the 'insightface' pack, or pass already_cropped=True with a face crop.")
        try:
            from insightface.model_zoo import get_model
        except ImportError:
            raise FaceError(f"insightface is not installed: {INSIGHTFACE_HINT}; or pass already_cropped=True "
                            f"with a face crop.") from None
        self.model = get_model(str(model_path), providers=list(providers))
        self.model.prepare(ctx_id=-1 if providers == ("CPUExecutionProvider",) else 0, input_size=input_size,
                           det_thresh=threshold)

    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        boxes, keypoints = self.model.detect(image_bgr, max_num=0, metric="default")
        if keypoints is None:
            raise FaceError("The face detector returned no keypoints: use buffalo_l's det_10g.onnx.")
        return [DetectedFace(tuple(float(v) for v in box[:4]), np.asarray(kps, dtype=np.float32), float(box[4]))
                for box, kps in zip(boxes, keypoints)]


_default_detector: InsightFaceDetector | None = None


def default_detector() -> InsightFaceDetector:
    """One shared insightface detector (built on first use)."""
    global _default_detector
    if _default_detector is None:
        _default_detector = InsightFaceDetector()
    return _default_detector


# -- the whole step ------------------------------------------------------------------------------------------------
def _to_rgb_array(image) -> tuple[np.ndarray, str]:
    from helpers import media

    source = f"'{Path(image).name}'" if isinstance(image, (str, Path)) else "the photo"
    return media.read_image(image), source


def prepare_face(
    image,
    *,
    detector: FaceDetector | None = None,
    already_cropped: bool = False,
    select: Literal["largest", "best_score"] = "best_score",
    min_face_size: float = MIN_FACE_SIZE,
    crop_size: int = CROP_SIZE,
    output_size: int = CLIP_SIZE,
) -> PreparedFace:
    """A photo (path, PIL image or RGB array) -> the 224x224 face image ID-Animator conditions on.

    ``already_cropped=True`` skips detection: the image is taken as a face crop, centre-cropped to a square and
    resized. Otherwise the face is detected (insightface unless ``detector`` is given), the one with the highest detector
    score chosen as the original does (``select="largest"``: the largest box; a warning when there are several) and
    aligned to the ArcFace template. A face under ``min_face_size`` px is used all the same (the original accepts any
    size), with a warning that its 112 px crop is upscaled and will look soft.
    """
    rgb, source = _to_rgb_array(image)
    if already_cropped:
        height, width = rgb.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = PIL.Image.fromarray(rgb[top:top + side, left:left + side])
        return PreparedFace(square.resize((output_size, output_size), PIL.Image.BICUBIC))
    image_bgr = np.ascontiguousarray(rgb[..., ::-1])
    faces = (detector or default_detector()).detect(image_bgr)
    chosen = choose_face(faces, select=select, source=source)
    if chosen.size < min_face_size:
        warnings.warn(f"The face in {source} is only {chosen.size:.0f} px across (under {min_face_size:.0f}): its crop "
                      f"is upscaled and the identity may come out soft; a closer or larger photo works better.",
                      UserWarning, stacklevel=2)
    crop, matrix = align_face(image_bgr, chosen.keypoints, crop_size)
    return PreparedFace(crop_to_clip_image(crop, output_size), crop, chosen, matrix)
