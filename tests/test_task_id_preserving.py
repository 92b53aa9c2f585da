"""ID-preserving video task: input and face checks before any model, presets, the face preview, SMOKE runs end to
end (real loaders on tiny packs), identity mixing, sketches, the non-SMOKE path on Drive-layout packs, form and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import face, media
from helpers.errors import InputError, MissingWeightsError
from helpers.pipelines import id_animator
from helpers.tasks import base, inputs
from helpers.tasks import id_preserving_video as task
from helpers.tasks.base import params_from_dict
from helpers.testing import id_animator as tiny


@pytest.fixture(scope="module")
def shared_smoke(tmp_path_factory):
    """One SMOKE folder for the module: the tiny packs are written and the pipelines loaded once."""
    yield tmp_path_factory.mktemp("smoke")
    base.clear_cache()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, shared_smoke):
    monkeypatch.setenv("HV_SMOKE_ROOT", str(shared_smoke))
    monkeypatch.delenv("HV_SMOKE", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a busy machine
    inputs._FACES.clear()
    yield
    inputs._FACES.clear()
    torch.set_num_threads(threads)


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if the video model starts loading."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(task, "_load", refuse)
    monkeypatch.setattr(id_animator, "load_id_animator_pipeline", refuse)


def _detector(monkeypatch, detector) -> None:
    monkeypatch.setattr(inputs, "face_detector", lambda smoke: detector)


def _photo(tmp_path, name="face.png", seed=0, **kwargs):
    return str(media.write_image(tmp_path / name, tiny.synthetic_face_photo(seed=seed, **kwargs)))


def _other_person(tmp_path):
    """A second synthetic 'person': the same layout in other colours."""
    image = tiny.synthetic_face_photo(seed=7)
    return str(media.write_image(tmp_path / "other.png", 255 - image))


# -- input checks ---------------------------------------------------------------------------------------------------
def _bad_inputs(tmp_path, monkeypatch, case: str) -> dict:
    photo = _photo(tmp_path)
    if case == "no face found":
        _detector(monkeypatch, tiny.FakeFaceDetector(faces=[]))
        return {"face_image": photo}
    if case == "no face photo":
        return {"face_image": "  "}
    if case == "missing photo":
        return {"face_image": str(tmp_path / "nobody.png")}
    if case == "not an image":
        (tmp_path / "notes.png").write_text("these are notes, not a picture\n" * 20)
        return {"face_image": str(tmp_path / "notes.png")}
    if case == "video as photo":
        media.write_video(tmp_path / "clip.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8)
        return {"face_image": str(tmp_path / "clip.mp4")}
    if case == "corrupt second face":
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
        return {"face_image": photo, "second_face_image": str(tmp_path / "broken.jpg")}
    if case == "too many frames":
        return {"face_image": photo, "frames": 40}
    if case == "empty prompt":
        return {"face_image": photo, "prompt": "   "}
    if case == "unknown base model file":
        (tmp_path / "model.bin").write_bytes(b"\x00" * 64)
        return {"face_image": photo, "base_model": "file", "base_model_file": str(tmp_path / "model.bin")}
    if case == "missing base model file":
        return {"face_image": photo, "base_model": "file", "base_model_file": str(tmp_path / "gone.safetensors")}
    if case == "file mode without a file":
        return {"face_image": photo, "base_model": "file"}
    if case == "width not a multiple of 8":
        return {"face_image": photo, "width": 300}
    if case == "mix weight with concat":
        return {"face_image": photo, "second_face_image": _other_person(tmp_path), "mix_weight": 0.8,
                "identity_mixing": "concat"}
    sketch = str(media.write_image(tmp_path / "sketch.png", np.asarray(tiny.synthetic_sketch(96, 96))))
    if case == "sketch mode without a sketch":
        return {"face_image": photo, "sketch_mode": "one sketch"}
    if case == "sketch frames not numbers":
        return {"face_image": photo, "sketch_mode": "one sketch", "sketch_image": sketch, "sketch_frames": "first"}
    if case == "sketch frame outside the video":
        return {"face_image": photo, "sketch_mode": "one sketch", "sketch_image": sketch, "sketch_frames": "16"}
    if case == "fewer frame indices than sketches":
        return {"face_image": photo, "sketch_mode": "sequence", "sketch_image": sketch, "sketch_grid": "2x2",
                "sketch_frames": "0, 5"}
    raise ValueError(case)


BAD_INPUTS = {
    "no face found": "No face found in 'face.png'",
    "no face photo": "no face photo given",
    "missing photo": "face image not found",
    "not an image": "cannot read notes.png as an image",
    "video as photo": "clip.mp4 is a video",
    "corrupt second face": "cannot read broken.jpg",
    "too many frames": "frames is 40: .* at most 32",
    "empty prompt": "prompt is empty",
    "unknown base model file": "Unknown base model file 'model.bin'",
    "missing base model file": "Base model file not found",
    "file mode without a file": "no base model file is given",
    "width not a multiple of 8": "width must be a multiple of 8",
    "mix weight with concat": "mix weight only applies to identity mixing 'mean'",
    "sketch mode without a sketch": "no sketch image is given",
    "sketch frames not numbers": "sketch frames must be whole numbers",
    "sketch frame outside the video": r"\[16\] are outside the video \(0..15\)",
    "fewer frame indices than sketches": "4 sketches but 2 frame indices",
}


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "real"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error_before_any_model(case, smoke, tmp_path, monkeypatch, no_models):
    params = task.Params(smoke=smoke, **_bad_inputs(tmp_path, monkeypatch, case))
    with pytest.raises(InputError, match=BAD_INPUTS[case]) as error:
        task.run(params)
    assert "\n" not in str(error.value)


def test_several_faces_use_the_most_confident_and_warn(tmp_path, monkeypatch):
    small = tiny.centred_face(320, 240, face_fraction=0.3, score=0.99)
    large = tiny.centred_face(320, 240, face_fraction=0.7, score=0.6)
    _detector(monkeypatch, tiny.FakeFaceDetector(faces=[large, small]))
    photo = _photo(tmp_path)
    assert task.Params().face_select == "best_score"  # the original's choice
    with pytest.warns(UserWarning, match="2 faces found in 'face.png'; using the most confident one"):
        preview = task.preview_inputs(task.Params(smoke=True, face_image=photo))
    expected = face.prepare_face(photo, detector=tiny.FakeFaceDetector(faces=[small])).image
    np.testing.assert_array_equal(preview.crops[0], np.asarray(expected))
    assert "2 faces found" in preview.summary()

    inputs._FACES.clear()
    with pytest.warns(UserWarning, match="using the largest one"):
        preview = task.preview_inputs(task.Params(smoke=True, face_image=photo, face_select="largest"))
    expected = face.prepare_face(photo, detector=tiny.FakeFaceDetector(faces=[large])).image
    np.testing.assert_array_equal(preview.crops[0], np.asarray(expected))


def test_tiny_face_is_used_with_a_warning(tmp_path, monkeypatch):
    # The original accepts any face size: a small face is used, the warning goes to the summary and the sidecar.
    _detector(monkeypatch, tiny.FakeFaceDetector(face_fraction=0.1))
    with pytest.warns(UserWarning, match="only 24 px across"):
        p = task.plan(task.Params(smoke=True, face_image=_photo(tmp_path)))
    assert any("only 24 px across" in note for note in p.notes)


def test_long_prompt_warns_that_it_is_truncated(tmp_path):
    params = task.Params(smoke=True, face_image=_photo(tmp_path), prompt=" ".join(["low"] * 100))
    with pytest.warns(UserWarning, match="prompt is 102 tokens long; CLIP reads only the first 77"):
        p = task.plan(params)
    assert any("102 tokens" in note for note in p.notes)


def test_space_suffixes_are_appended_as_the_demo_app_does(tmp_path):
    p = task.plan(task.Params(smoke=True, face_image=_photo(tmp_path), prompt="a low", negative_prompt="blurry",
                              space_suffixes=True))
    assert p.prompt == "a low 8k uhd, high quality, medium shot"
    assert p.negative_prompt == "blurry long shots, full body"


# -- presets --------------------------------------------------------------------------------------------------------
def test_presets_are_valid_params_pinned_to_the_original_examples():
    assert len(task.PRESETS) >= 4
    kinds = {"recontextualization", "community model", "identity mixing", "sketch image", "sketch sequence"}
    assert all(any(name.startswith(k) for name in task.PRESETS) for k in kinds)
    for name, values in task.PRESETS.items():
        params = params_from_dict(task.Params, values)
        base.check_params(params)
        for key in ("face_image", "second_face_image", "sketch_image"):
            value = getattr(params, key)
            assert not value or value.startswith(task.EXAMPLES), (name, key, value)
    published = params_from_dict(task.Params, task.PRESETS["community model · Iron Man (infer.py, the published run)"])
    defaults = task.Params()
    assert (published.prompt, published.seed, published.face_scale) == (defaults.prompt, 4993, 0.8)
    assert (defaults.steps, defaults.guidance_scale, defaults.frames, defaults.width, defaults.fps) == (30, 8.0, 16,
                                                                                                       512, 9.0)
    mixing = params_from_dict(task.Params, task.PRESETS["identity mixing · two faces, guitarist (demo app)"])
    assert mixing.second_face_image and mixing.mix_weight == 0.5 and mixing.space_suffixes


def test_smoke_mode_never_downloads(monkeypatch, no_models):
    def refuse(*_args, **_kwargs):
        raise AssertionError("SMOKE mode downloaded an example")

    monkeypatch.setattr(inputs, "fetch_input", refuse)
    values = dict(task.PRESETS["sketch sequence · README demo"], smoke=True)
    p = task.plan(params_from_dict(task.Params, values))
    assert all("SMOKE: replaced" in source for source in p.sources.values()) and len(p.sources) == 2
    assert len(p.sketches) == 4 and p.sketch_indices == [0, 1, 2, 3]  # 0, 5, 10, 15 of 16 frames → 4 SMOKE frames


# -- preview --------------------------------------------------------------------------------------------------------
def test_preview_shows_aligned_faces_and_sketches(tmp_path, capsys, monkeypatch):
    _detector(monkeypatch, tiny.FakeFaceDetector())  # full sizes (not SMOKE), insightface replaced
    grid = np.concatenate([np.concatenate([np.asarray(tiny.synthetic_sketch(48, 48, phase=k + 2 * r)) for k in (0, 1)],
                                          axis=1) for r in (0, 1)], axis=0)
    grid_path = media.write_image(tmp_path / "grid.png", 255 - grid)  # black lines on white: inverted for SparseCtrl
    params = task.Params(face_image=_photo(tmp_path), second_face_image=_other_person(tmp_path), mix_weight=0.25,
                         sketch_mode="sequence", sketch_image=str(grid_path), sketch_frames="0, 4, 9, 15")
    preview = task.preview_inputs(params)
    assert len(preview.crops) == 2 and all(c.shape == (224, 224, 3) for c in preview.crops)
    photo = media.read_image(params.face_image)
    assert preview.photos[0].shape == photo.shape and not np.array_equal(preview.photos[0], photo)  # face marked
    expected = face.prepare_face(params.face_image, detector=tiny.FakeFaceDetector()).image
    np.testing.assert_array_equal(preview.crops[0], np.asarray(expected))
    p = preview.plan
    assert p.reference_weights == [0.75, 0.25] and p.sketch_indices == [0, 4, 9, 15] and p.sketch_inverted
    assert all(s.shape == (512, 512, 3) for s in p.sketches)
    assert p.sketches[0][..., 0].mean() < 64  # white lines on black after inversion
    preview.show()
    text = capsys.readouterr().out
    assert "0.75 first face + 0.25 second face" in text and "frame(s) 0, 4, 9, 15" in text and "inverted" in text


def test_already_cropped_face_is_taken_as_it_is(tmp_path, monkeypatch):
    def refuse(_smoke):
        raise AssertionError("a detector ran on an already cropped face")

    monkeypatch.setattr(inputs, "face_detector", refuse)
    crop = tiny.synthetic_face_photo(width=180, height=150)
    path = media.write_image(tmp_path / "crop.png", crop)
    preview = task.preview_inputs(task.Params(smoke=True, face_image=str(path), already_cropped=True))
    centre_square = crop[:, 15:165]  # 180x150 → the centred 150x150 square, resized to 224
    expected = np.asarray(face.PIL.Image.fromarray(centre_square).resize((224, 224), face.PIL.Image.BICUBIC))
    np.testing.assert_array_equal(preview.crops[0], expected)
    assert "taken as a face crop" in preview.summary()


# -- SMOKE runs -----------------------------------------------------------------------------------------------------
def test_smoke_run_end_to_end(monkeypatch):
    loads, stages = [], []
    original_load = task._load

    def load(*args, **kwargs):
        loads.append(args[0])
        return original_load(*args, **kwargs)

    monkeypatch.setattr(task, "_load", load)
    result = task.run(task.Params(smoke=True, seed=3), progress=lambda stage, done, total: stages.append(stage))
    assert {"faces", "load", "denoise", "save"} <= set(stages) and stages.count("denoise") == task.SMOKE_STEPS

    assert result.frames.shape == (4, 64, 64, 3) and result.fps == 9.0
    assert media.read_video(result.video_path).frames.shape == (4, 64, 64, 3)
    assert media.read_video(result.preview_path).frames.shape[2] > 64 * 2  # face | video side by side
    assert result.face_crops[0].size == (224, 224)

    meta = json.loads(result.sidecar_path.read_text())
    assert meta["seed"] == 3 and meta["smoke"] is True and meta["method"].startswith("ID-Animator")
    assert meta["params"]["width"] == 64 and meta["params"]["steps"] == 2 and meta["params"]["frames"] == 4
    assert meta["requested_params"]["width"] == 512 and meta["requested_params"]["steps"] == 30
    assert {(w["pack"], w["role"]) for w in meta["weights"]} == {
        ("sd15", "base"), ("animatediff_v2", "motion_adapter"), ("id_animator", "animator"),
        ("id_animator", "image_encoder"), ("id_animator", "community_model")}
    assert meta["memory_plan"]["tier"] == "cpu" and meta["peak_gpu_memory_gb"] == 0.0
    assert {"inputs", "load", "generate", "total"} <= set(meta["timings_s"])
    assert meta["inputs"]["faces"][0]["mode"] == "detected and aligned"
    assert "SMOKE: replaced" in meta["inputs"]["downloaded_from"]["face image"]
    assert meta["generation"]["prompt"] == task.DEFAULT_PROMPT and meta["generation"]["reference_weights"] == [1.0]
    assert meta["generation"]["decode_chunk"] == 2 and meta["inputs"]["sketch"] is None

    # Same seed: the same video, from the cached pipeline; another seed: another video.
    again = task.run(task.Params(smoke=True, seed=3))
    assert len(loads) <= 1 and again.video_path != result.video_path
    np.testing.assert_array_equal(again.frames, result.frames)
    assert not np.array_equal(task.run(task.Params(smoke=True, seed=4)).frames, result.frames)


def test_identity_mixing_with_two_faces(tmp_path):
    first, second = _photo(tmp_path), _other_person(tmp_path)
    common = dict(smoke=True, seed=5, prompt="a low newer wider")
    alone = task.run(task.Params(face_image=first, **common))
    mixed = task.run(task.Params(face_image=first, second_face_image=second, **common))
    meta = json.loads(mixed.sidecar_path.read_text())
    assert meta["generation"]["reference_weights"] == [0.5, 0.5] and len(meta["inputs"]["faces"]) == 2
    assert len(mixed.face_crops) == 2 and not np.array_equal(mixed.frames, alone.frames)
    # both crops are stacked beside the video in the preview
    assert media.read_video(mixed.preview_path).frames.shape[1] > media.read_video(alone.preview_path).frames.shape[1]

    # All the weight on the second face gives exactly the video of the second face alone.
    only_second = task.run(task.Params(face_image=first, second_face_image=second, mix_weight=1.0, **common))
    second_alone = task.run(task.Params(face_image=second, **common))
    np.testing.assert_array_equal(only_second.frames, second_alone.frames)
    assert json.loads(only_second.sidecar_path.read_text())["generation"]["reference_weights"] == [0.0, 1.0]


def test_smoke_sketch_sequence_with_a_gif():
    values = dict(task.PRESETS["sketch sequence · README demo"], smoke=True, output_format="gif")
    result = task.run(params_from_dict(task.Params, values))
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["method"].endswith("SparseCtrl scribble")
    assert meta["inputs"]["sketch"]["frame_indices"] == [0, 1, 2, 3] and meta["inputs"]["sketch"]["count"] == 4
    assert ("sparsectrl_scribble", "controlnet") in {(w["pack"], w["role"]) for w in meta["weights"]}
    assert meta["params"]["sketch_frames"] == "0, 1, 2, 3"
    assert result.gif_path.is_file() and meta["outputs"]["gif"] == str(result.gif_path)
    assert result.frames.shape == (4, 64, 64, 3)


def test_t4_knobs_and_an_own_base_model_file(tmp_path, monkeypatch):
    """Feed-forward chunking and one-frame VAE decoding (the T4 plan's knobs, rehearsed on the CPU) change nothing but
    memory; a base model file of one's own runs (SMOKE: the tiny single-file model stands in for it)."""
    from helpers import runtime

    reference = task.run(task.Params(smoke=True, seed=6))
    rehearsal = runtime.MemoryPlan(device="cpu", dtype_name="float32", tier="t4-rehearsal", gpu_name="CPU",
                                   gpu_total_gb=0.0, offload="model", vae_decode_chunk=1, ff_chunk=1)
    monkeypatch.setattr(task, "run_memory_plan", lambda smoke, precision="auto": rehearsal)
    own = tmp_path / "my_model.safetensors"
    own.write_bytes(b"\x00" * 128)
    result = task.run(task.Params(smoke=True, seed=6, base_model="file", base_model_file=str(own)))
    np.testing.assert_allclose(result.frames.astype(int), reference.frames.astype(int), atol=2)
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["memory_plan"]["ff_chunk"] == 1 and meta["generation"]["decode_chunk"] == 1
    roles = {(w["pack"], w["role"]): w for w in meta["weights"]}
    assert ("id_animator", "community_model") not in roles
    assert roles[(None, "base_model")]["source"].startswith(f"file chosen by the user: {own}")
    assert roles[(None, "base_model")]["size_bytes"] == 128


# -- the non-SMOKE path ---------------------------------------------------------------------------------------------
def test_missing_weights_are_named_before_anything_loads(tmp_path, no_models):
    params = task.Params(face_image=_photo(tmp_path), already_cropped=True)
    with pytest.raises(MissingWeightsError, match="sd15/base"):
        task.run(params)


def test_real_path_on_packs_in_the_drive_layout(tmp_path, monkeypatch):
    """Without SMOKE: weights come from $HV_ROOT (the Drive root), sizes are as asked, the sidecar names the files."""
    import os
    from pathlib import Path

    root = Path(os.environ["HV_ROOT"])
    tiny.write_tiny_id_animator_packs(root, sketch=False)
    _detector(monkeypatch, tiny.FakeFaceDetector())  # stands in for insightface
    params = task.Params(face_image=_photo(tmp_path), prompt="a low newer wider", base_model="sd15", width=256,
                         height=256, frames=2, steps=1, output_dir=str(tmp_path / "out"))
    result = task.run(params)
    assert result.frames.shape == (2, 256, 256, 3) and result.video_path.parent == tmp_path / "out"
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["smoke"] is False and "requested_params" not in meta
    assert meta["params"]["width"] == 256 and meta["inputs"]["faces"][0]["detector"] == "insightface SCRFD-10G"
    assert ("insightface", "detector") in {(w["pack"], w["role"]) for w in meta["weights"]}
    assert ("id_animator", "community_model") not in {(w["pack"], w["role"]) for w in meta["weights"]}


# -- form and command line ------------------------------------------------------------------------------------------
def test_form_builds_and_presets_fill_it():
    from helpers import ui

    form = ui.TaskForm(task, smoke=True)
    assert {"face_image", "second_face_image", "sketch_image", "base_model_file"} <= set(form.controls)
    assert all(isinstance(form.controls[n], ui.FileField) for n in ("face_image", "second_face_image", "sketch_image"))
    form.preset.value = "identity mixing · two faces, guitarist (demo app)"
    params = form.params()
    assert params.second_face_image.endswith("ann.png") and params.seed == 1897 and params.smoke
    form.preset.value = "(defaults)"
    assert form.params().second_face_image == "" and form.params().seed == 4993


def test_cli_help_lists_every_parameter(capsys):
    from helpers import __main__ as cli

    with pytest.raises(SystemExit) as done:
        cli.main(["id_preserving_video", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for spec in base.field_specs(task.Params):
        assert f"--{spec.name}" in text, spec.name
    assert "--preset" in text and "community" in text and "sequence" in text
