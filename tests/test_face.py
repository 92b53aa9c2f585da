"""Face preprocessing: alignment maths on synthetic keypoints, face choice, errors, the lazily imported detector."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from helpers import face
from helpers.errors import InputError, MissingWeightsError
from helpers.face import ARCFACE_TEMPLATE_112, DetectedFace
from helpers.testing.id_animator import FakeFaceDetector, centred_face, synthetic_face_photo


def _similarity(scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


# -- alignment maths -----------------------------------------------------------------------------------------------
def test_template_maps_to_itself():
    np.testing.assert_allclose(face.similarity_transform(ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("scale,angle,shift", [(2.5, 0.0, (30.0, 12.0)), (0.7, 23.0, (-5.0, 40.0)), (1.9, -140.0, (200, 80))])
def test_a_known_similarity_is_recovered(scale, angle, shift):
    photo_to_template = _similarity(1 / scale, angle, (0.0, 0.0))
    # keypoints in a photo = the template moved by the inverse transform; aligning must undo it exactly
    inverse = np.linalg.inv(np.vstack([photo_to_template, [0, 0, 1]]))[:2]
    inverse[:, 2] += shift
    keypoints = _apply(inverse, ARCFACE_TEMPLATE_112)
    matrix = face.arcface_matrix(keypoints)
    np.testing.assert_allclose(_apply(matrix, keypoints), ARCFACE_TEMPLATE_112, atol=1e-9)
    assert np.isclose(np.linalg.det(matrix[:, :2]), (1 / scale) ** 2)


def test_mirrored_points_give_a_rotation_not_a_reflection():
    mirrored = ARCFACE_TEMPLATE_112 * [-1, 1] + [112, 0]
    matrix = face.similarity_transform(mirrored, ARCFACE_TEMPLATE_112)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_least_squares_fit_with_noise():
    rng = np.random.default_rng(0)
    truth = _similarity(0.5, 10.0, (4.0, -3.0))
    source = rng.uniform(0, 300, (5, 2))
    target = _apply(truth, source) + rng.normal(0, 1e-4, (5, 2))
    np.testing.assert_allclose(face.similarity_transform(source, target), truth, atol=1e-3)


def test_crop_of_a_template_placed_face_is_a_plain_resample():
    # a photo whose keypoints sit on the template scaled x2 and shifted: the crop is that region, halved
    photo = np.zeros((300, 300, 3), np.uint8)
    photo[50:274, 40:264] = np.arange(224, dtype=np.uint8)[None, :, None]  # horizontal ramp
    keypoints = ARCFACE_TEMPLATE_112 * 2 + [40, 50]
    crop, matrix = face.align_face(photo, keypoints)
    np.testing.assert_allclose(matrix, [[0.5, 0, -20], [0, 0.5, -25]], atol=1e-9)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    # x in the crop <-> 2x+0.5 in the ramp (pixel-centre convention of warpAffine's inverse map: x_src = 2 x_dst)
    assert abs(int(crop[56, 50, 0]) - 100) <= 1


def test_outside_the_photo_is_black():
    photo = np.full((100, 100, 3), 200, np.uint8)
    keypoints = ARCFACE_TEMPLATE_112 + [60, 0]  # crop column x shows photo column x + 60: past 40 is outside
    crop, _ = face.align_face(photo, keypoints)
    assert crop[:, 41:].max() == 0 and crop[100:].max() == 0
    assert crop[:99, :39].min() == 200


def test_clip_image_is_rgb_224_bicubic():
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[..., 0] = 255  # blue in BGR
    image = face.crop_to_clip_image(crop)
    assert image.size == (224, 224) and image.mode == "RGB"
    assert np.asarray(image)[100, 100].tolist() == [0, 0, 255]


# -- choosing the face ---------------------------------------------------------------------------------------------
def test_prepare_face_with_a_detector():
    prepared = face.prepare_face(synthetic_face_photo(), detector=FakeFaceDetector())
    assert prepared.image.size == (224, 224)
    assert prepared.crop_bgr.shape == (112, 112, 3)
    np.testing.assert_allclose(_apply(prepared.matrix, prepared.face.keypoints), ARCFACE_TEMPLATE_112, atol=1e-3)


def test_most_confident_of_several_faces_is_used_by_default_with_a_warning():
    # The original takes the detector's first face, the highest score; the largest box is an option.
    small, large = centred_face(320, 240, 0.3, score=0.99), centred_face(320, 240, 0.8, score=0.6)
    with pytest.warns(UserWarning, match="2 faces found.*most confident"):
        prepared = face.prepare_face(synthetic_face_photo(), detector=FakeFaceDetector([large, small]))
    assert prepared.face is small
    with pytest.warns(UserWarning, match="2 faces found.*largest"):
        prepared = face.prepare_face(synthetic_face_photo(), detector=FakeFaceDetector([small, large]),
                                     select="largest")
    assert prepared.face is large


def test_no_face_says_what_to_do(tmp_path):
    from helpers import media

    path = media.write_image(tmp_path / "empty_room.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="No face found in 'empty_room.png'.*already_cropped=True"):
        face.prepare_face(path, detector=FakeFaceDetector([]))


def test_tiny_face_is_used_with_a_warning():
    # The original accepts a face of any size: a small one is used, and the user is told why it may look soft.
    tiny = centred_face(320, 240, 0.1)  # 24 px
    with pytest.warns(UserWarning, match="only 24 px across.*closer or larger photo"):
        prepared = face.prepare_face(synthetic_face_photo(), detector=FakeFaceDetector([tiny]))
    assert prepared.face is tiny and prepared.image.size == (224, 224)


def test_already_cropped_mode_skips_detection():
    class Refuses:
        def detect(self, image):
            raise AssertionError("detection must not run")

    photo = np.zeros((100, 160, 3), np.uint8)
    photo[:, 30:130] = 255  # the centred square
    prepared = face.prepare_face(photo, already_cropped=True, detector=Refuses())
    assert prepared.image.size == (224, 224) and prepared.face is None
    assert np.asarray(prepared.image).min() == 255


# -- the insightface backend ---------------------------------------------------------------------------------------
def test_missing_detector_model_says_how_to_fetch_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="det_10g.onnx.*00_setup"):
        face.InsightFaceDetector(tmp_path / "det_10g.onnx")


def test_default_detector_without_the_pack_says_how_to_fetch_it():
    with pytest.raises(MissingWeightsError, match="insightface"):
        face.InsightFaceDetector()


def test_missing_insightface_says_how_to_install_it(tmp_path, monkeypatch):
    model = tmp_path / "det_10g.onnx"
    model.write_bytes(b"onnx")
    monkeypatch.setitem(sys.modules, "insightface", None)  # import fails even where it is installed
    with pytest.raises(face.FaceError, match="pip install insightface.*non-commercial"):
        face.InsightFaceDetector(model)


def test_insightface_backend_maps_detections(tmp_path, monkeypatch):
    calls = {}

    class FakeScrfd:
        def prepare(self, ctx_id, input_size, det_thresh):
            calls["prepare"] = (ctx_id, input_size, det_thresh)

        def detect(self, image, max_num, metric):
            boxes = np.array([[10, 20, 110, 140, 0.9], [0, 0, 30, 30, 0.4]], np.float32)
            keypoints = np.stack([ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112 / 4]).astype(np.float32)
            return boxes, keypoints

    def get_model(path, providers):
        calls["model"] = (path, providers)
        return FakeScrfd()

    model_zoo = types.ModuleType("insightface.model_zoo")
    model_zoo.get_model = get_model
    package = types.ModuleType("insightface")
    package.model_zoo = model_zoo
    monkeypatch.setitem(sys.modules, "insightface", package)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", model_zoo)
    model = tmp_path / "det_10g.onnx"
    model.write_bytes(b"onnx")

    detector = face.InsightFaceDetector(model)
    faces = detector.detect(np.zeros((200, 200, 3), np.uint8))
    assert calls["prepare"] == (-1, face.DETECTOR_INPUT_SIZE, face.DETECTION_THRESHOLD)
    assert calls["model"] == (str(model), ["CPUExecutionProvider"])
    assert [f.box for f in faces] == [(10, 20, 110, 140), (0, 0, 30, 30)]
    assert isinstance(faces[0], DetectedFace) and faces[0].score == pytest.approx(0.9)
    with pytest.warns(UserWarning, match="2 faces"):
        assert face.choose_face(faces) is faces[0]
