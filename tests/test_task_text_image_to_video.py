"""Text/image to video task (MuseV): every bad input before any model (SMOKE and real), sizes, presets pinned to the
original's examples, the input preview and window chart, SMOKE runs end to end for both variants (real loaders on
tiny packs), serial shots, a generated first frame, an own base model, the non-SMOKE path, form and CLI."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import media
from helpers.errors import InputError, MissingWeightsError
from helpers.pipelines.musev import pipeline as musev_pipeline
from helpers.tasks import base, inputs
from helpers.tasks import text_image_to_video as task
from helpers.tasks.base import params_from_dict
from helpers.testing import musev as tiny

README_RUN = "people · yongen (the README run)"


@pytest.fixture(scope="module")
def shared_smoke(tmp_path_factory):
    """One SMOKE folder for the module: the tiny packs are written once and the pipelines stay cached."""
    yield tmp_path_factory.mktemp("smoke")
    base.clear_cache()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, shared_smoke):
    monkeypatch.setenv("HV_SMOKE_ROOT", str(shared_smoke))
    monkeypatch.delenv("HV_SMOKE", raising=False)
    monkeypatch.delenv("HV_PLAN", raising=False)


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if tiny packs are written or a pipeline starts loading."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded (or tiny packs written) before the input was checked")

    monkeypatch.setattr(task, "_load", refuse)
    monkeypatch.setattr(task, "_packs_root", refuse)
    monkeypatch.setattr(musev_pipeline, "load_musev_pipeline", refuse)


def _picture(tmp_path, name="picture.png", size=(96, 72)):
    rng = np.random.default_rng(0)
    return str(media.write_image(tmp_path / name, (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)))


def _safetensors(path: Path, tensors: dict) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


DIFFUSERS_KEY = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
LDM_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


# -- input checks ---------------------------------------------------------------------------------------------------
def _bad_inputs(tmp_path, case: str) -> dict:
    if case == "empty prompt":
        return {"prompt": "  "}
    if case == "missing picture":
        return {"condition_image": str(tmp_path / "nobody.png")}
    if case == "not a picture":
        (tmp_path / "notes.png").write_text("these are notes, not a picture\n" * 20)
        return {"condition_image": str(tmp_path / "notes.png")}
    if case == "corrupt jpeg":
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
        return {"condition_image": str(tmp_path / "broken.jpg")}
    if case == "video as picture":
        media.write_video(tmp_path / "clip.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8)
        return {"condition_image": str(tmp_path / "clip.mp4")}
    if case == "overlap not below window":
        return {"window": 8, "overlap": 8}
    if case == "size below 64":
        return {"width": 48, "height": 48}
    if case == "size above the range":
        return {"width": 4096}
    if case == "picture too thin for its width":
        return {"condition_image": _picture(tmp_path, size=(400, 40)), "width": 320}
    if case == "no frames":
        return {"frames": 0}
    if case == "one frame without a picture":
        return {"condition_image": "", "frames": 1}
    if case == "unknown model":
        return {"model": "musev_referencenet_pose"}
    if case == "missing base model":
        return {"base_model": str(tmp_path / "gone.safetensors")}
    if case == "garbage base model":
        (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
        return {"base_model": str(tmp_path / "model.safetensors")}
    if case == "base model of unknown format":
        (tmp_path / "model.onnx").write_bytes(b"\x00" * 64)
        return {"base_model": str(tmp_path / "model.onnx")}
    if case == "LoRA as base model":
        return {"base_model": _safetensors(tmp_path / "lora.safetensors", {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320)})}
    if case == "SDXL as base model":
        return {"base_model": _safetensors(tmp_path / "sdxl.safetensors", {DIFFUSERS_KEY: torch.zeros(320, 2048)})}
    if case == "folder that is no model":
        (tmp_path / "photos").mkdir()
        return {"base_model": str(tmp_path / "photos")}
    raise ValueError(case)


BAD_INPUTS = {
    "empty prompt": "prompt is empty",
    "missing picture": "condition image not found",
    "not a picture": "cannot read notes.png as an image",
    "corrupt jpeg": "cannot read broken.jpg as an image",
    "video as picture": "clip.mp4 is a video",
    "overlap not below window": r"overlap \(8\) must be smaller than window \(8\)",
    "size below 64": "would be 0x0 px: width and height must be at least 64",
    "size above the range": "width must be at most 2048",
    "picture too thin for its width": "would be 320x0 px",
    "no frames": "frames must be at least 1",
    "one frame without a picture": "ask for at least 2 frames",
    "unknown model": "model must be one of musev_referencenet, musev",
    "missing base model": "base model not found",
    "garbage base model": "cannot read base model model.safetensors",
    "base model of unknown format": "unknown format .onnx",
    "LoRA as base model": "holds no SD1.5 UNet",
    "SDXL as base model": "is an SDXL model: MuseV needs an SD1.5 model",
    "folder that is no model": "is not a diffusers SD1.5 folder",
}


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "real"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_error_before_any_model(case, smoke, tmp_path, no_models):
    params = task.Params(smoke=smoke, **_bad_inputs(tmp_path, case))
    with pytest.raises(InputError, match=BAD_INPUTS[case]) as error:
        task.run(params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind", ["rgba", "palette", "grey16", "cmyk", "exif-rotated"])
def test_odd_picture_formats_are_read_as_rgb(kind, tmp_path, no_models):
    rng = np.random.default_rng(1)
    rgb = Image.fromarray((rng.random((140, 200, 3)) * 255).astype(np.uint8))
    path = tmp_path / ("picture.jpg" if kind in ("cmyk", "exif-rotated") else "picture.png")
    if kind == "rgba":
        rgb.convert("RGBA").save(path)
    elif kind == "palette":
        rgb.convert("P").save(path)
    elif kind == "grey16":
        Image.fromarray((rng.random((140, 200)) * 65535).astype(np.uint16)).save(path)
    elif kind == "cmyk":
        rgb.convert("CMYK").save(path)
    else:
        exif = Image.Exif()
        exif[274] = 6  # stored sideways: the picture is 140 wide and 200 high once rotated
        rgb.save(path, exif=exif)
    preview = task.preview_inputs(task.Params(condition_image=str(path)))
    expected_hw = (192, 128) if kind == "exif-rotated" else (128, 192)  # its own size, floored to 64
    assert preview.condition.shape == (*expected_hw, 3) and preview.condition.dtype == np.uint8
    assert (preview.plan.height, preview.plan.width) == expected_hw


# -- sizes, presets, preview ---------------------------------------------------------------------------------------
def test_output_size_follows_the_original_rules():
    assert task.output_size(0, 0, (288, 192)) == (192, 256)  # the picture's own size, floored to 64
    assert task.output_size(0, 0, (1308, 736)) == (704, 1280)  # yongen.jpeg: x 1280/1308 (longer side <= 1280)
    assert task.output_size(0, 0, (1000, 2000)) == (1280, 640)  # x 0.64
    with pytest.raises(InputError, match="too small for a video of its own size"):
        task.output_size(0, 0, (60, 90))
    assert task.output_size(512, 0, (300, 400)) == (512, 384)  # the missing side from the picture's shape
    assert task.output_size(0, 0, None) == (512, 512)
    assert task.output_size(700, 500, (10, 10)) == (640, 448)  # floored, as the original's `// 64 * 64`
    # the yaml sizes x img_length_ratio of the original's examples, as its text2video.py computes them
    for name, size in {README_RUN: (704, 1216), "people · jinkesi2": (640, 832), "scene · seaside 4": (1216, 704),
                       "painting · Self-Portrait with Cropped Hair": (1024, 640)}.items():
        assert (task.PRESETS[name]["width"], task.PRESETS[name]["height"]) == size, name


def test_presets_are_valid_params_pinned_to_the_original_examples():
    assert len(task.PRESETS) >= 19 and "/43370a6215afdfcd6d6af404350c132cd3b6eef8/data/images" in task.EXAMPLES
    assert {name.split(" · ")[0] for name in task.PRESETS} == {"people", "painting", "scene", "long video"}
    for name, values in task.PRESETS.items():
        params = params_from_dict(task.Params, values)
        base.check_params(params)
        assert params.condition_image.startswith(task.EXAMPLES + "/"), name
        assert params.prompt.startswith("(masterpiece, best quality, highres:1)"), name
        assert params.width % 64 == 0 and params.height % 64 == 0 and min(params.width, params.height) >= 640
    defaults = task.Params()
    assert (defaults.steps, defaults.guidance_scale, defaults.frames, defaults.window, defaults.overlap,
            defaults.motion_speed, defaults.fps, defaults.model) == (10, 3.5, 12, 12, 4, 8.0, 12.0, "musev_referencenet")
    assert defaults.negative_prompt.startswith("badhandv4, ng_deepnegative_v1_75t, (((multiple heads)))")
    serial = params_from_dict(task.Params, task.PRESETS["long video · yongen, 8 serial shots of 12"])
    assert task.plan(replace_image(serial)).shots == 8


def replace_image(params):
    """The same params on the bundled picture (no download)."""
    from dataclasses import replace

    return replace(params, condition_image=task.DEFAULT_IMAGE)


def test_smoke_mode_never_downloads(monkeypatch, no_models):
    def refuse(*_args, **_kwargs):
        raise AssertionError("SMOKE mode tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    p = task.plan(params_from_dict(task.Params, {**task.PRESETS[README_RUN], "smoke": True}))
    assert p.image.name == "reference.png"
    assert "SMOKE: replaced by the synthetic reference.png" in p.sources["condition image"]


def test_presets_download_once_and_say_what_to_do_offline(monkeypatch, no_models):
    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    params = params_from_dict(task.Params, task.PRESETS[README_RUN])
    with pytest.raises(InputError, match="could not download images_yongen.jpeg .*check the internet connection"):
        task.validate(params)
    cache = inputs.cached_input(params.condition_image)
    assert cache.parent == Path(os.environ["HV_ROOT"]) / "inputs" / "examples"
    media.write_image(cache, np.full((1308, 736, 3), 128, np.uint8))  # as if downloaded before
    p = task.plan(params)
    assert p.image == cache and (p.width, p.height) == (704, 1216) and p.sources["condition image"].endswith(
        "/data/images/yongen.jpeg")


def test_preview_shows_frame_zero_and_the_window_schedule(tmp_path, capsys):
    preview = task.preview_inputs(task.Params(condition_image=_picture(tmp_path, size=(200, 150)), frames=24))
    assert preview.condition.shape == (128, 192, 3)  # 150x200: its own size, floored to 64
    assert preview.plan.windows == (((0, 11), (8, 19), (16, 23)),)
    summary = preview.summary()
    assert "25 frames at 192x128 (frame 0 = the picture); 3 window(s) of 12 overlapping by 4" in summary
    assert "10 steps = 30 UNet calls" in summary
    preview.show()
    assert "30 UNet calls" in capsys.readouterr().out
    cell = (preview.chart.shape[1] - 2) // 25
    orange, rows = np.array([240, 150, 40]), [2 + r * (cell + 2) for r in range(3)]
    assert preview.chart.shape[0] == 3 * (cell + 2) + 2
    assert all((preview.chart[y, 1] == orange).all() for y in rows)  # frame 0 in every window
    assert (preview.chart[rows[1], 1 + 9 * cell] != 255).all() and (preview.chart[rows[1], 1 + 8 * cell] == 255).all()


def test_frame_zero_is_the_originals_lanczos_crop(tmp_path, no_models):
    """The picture goes through the original's crop box and PIL LANCZOS, not a plain centre crop."""
    from helpers.pipelines.musev.preprocess import crop_resize_condition_image

    path = _picture(tmp_path, size=(300, 170))
    preview = task.preview_inputs(task.Params(condition_image=path, width=256, height=128))
    picture = media.read_image(path)
    expected = crop_resize_condition_image(picture, 128, 256)
    np.testing.assert_array_equal(preview.condition, expected)
    plain = media.center_crop_resize(picture, (256, 128))  # what a plain centre crop + resize gives instead
    assert np.abs(plain.astype(int) - expected).max() > 2


def test_pipeline_fits_other_sizes_as_the_original_and_keeps_the_video_size():
    from helpers.pipelines.musev.preprocess import crop_resize_condition_image

    rng = np.random.default_rng(2)
    picture = (rng.random((90, 160, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(musev_pipeline._fit(picture, 64, 64), crop_resize_condition_image(picture, 64, 64))
    fitted = crop_resize_condition_image(picture, 64, 128)
    assert musev_pipeline._fit(fitted, 64, 128) is fitted  # already at the video size: as the task hands it over


def test_big_pictures_are_kept_within_the_longer_side_rule(tmp_path, no_models):
    p = task.plan(task.Params(condition_image=_picture(tmp_path, size=(1400, 700))))
    assert (p.width, p.height) == (1280, 640)
    assert any("longer side is at most 1280" in note for note in p.notes)
    one_side = task.plan(task.Params(condition_image=_picture(tmp_path, size=(1400, 700)), width=512))
    assert (one_side.width, one_side.height) == (512, 256)
    assert any("height 256 follows the picture's shape" in note for note in one_side.notes)


def test_referencenet_with_condition_latents_and_no_picture_is_a_one_line_error():
    class Untouchable(torch.nn.Module):
        dtype, device, is_referencenet_variant = torch.float32, torch.device("cpu"), True
        config = type("Config", (), {"block_out_channels": (32,) * 4, "scaling_factor": 0.18215})()

        def forward(self, *args, **kwargs):
            raise AssertionError("the input error must be raised before any model runs")

    from transformers import CLIPImageProcessor

    pipe = musev_pipeline.MuseVPipeline(vae=Untouchable(), text_encoder=Untouchable(), tokenizer=None,
                                        unet=Untouchable(), scheduler=None, referencenet=Untouchable(),
                                        image_encoder=Untouchable(), feature_extractor=CLIPImageProcessor(),
                                        image_proj=Untouchable())
    embeds = torch.zeros(1, 7, 32)
    with pytest.raises(InputError, match="needs the picture behind condition_latents") as info:
        pipe(None, None, prompt_embeds=embeds, negative_prompt_embeds=embeds, time_size=4,
             condition_latents=torch.zeros(1, 4, 1, 8, 8))
    assert "\n" not in str(info.value)


def test_serial_windows_and_floored_sizes_are_planned(tmp_path):
    p = task.plan(task.Params(condition_image=_picture(tmp_path), long_video="serial", frames=30, width=700,
                              height=500))
    assert (p.shots, p.time_size, p.overlap) == (3, 12, 0) and p.output_frames == 37 and p.unet_calls == 30
    assert p.windows == (((0, 11),), ((12, 23),), ((24, 35),))
    assert (p.width, p.height) == (640, 448) and any("width 700 floored to 640" in n for n in p.notes)
    chart = task.window_chart(p.windows)
    cell = (chart.shape[1] - 2) // 37
    row3 = 2 + 2 * (cell + 2)
    assert (chart[row3, 1 + 24 * cell] == [240, 150, 40]).all()  # shot 3 starts from the last frame of shot 2
    text_only = task.plan(task.Params(condition_image="", frames=12))
    assert text_only.image is None and text_only.windows == (((0, 10),),) and text_only.output_frames == 12


# -- SMOKE runs -----------------------------------------------------------------------------------------------------
ROLES = {"musev": {"unet_musev", "base_model", "vae", "negative_embeddings"},
         "musev_referencenet": {"unet_referencenet", "referencenet", "image_encoder", "ip_adapter_image_proj",
                                "base_model", "vae", "negative_embeddings"}}


@pytest.mark.parametrize("variant", ["musev_referencenet", "musev"])
def test_smoke_run_end_to_end(variant, monkeypatch):
    base.clear_cache()
    loads, ticks = [], []
    original_load = task._load

    def load(*args, **kwargs):
        loads.append(args[0])
        return original_load(*args, **kwargs)

    monkeypatch.setattr(task, "_load", load)
    result = task.run(task.Params(smoke=True, seed=3, model=variant), progress=lambda *tick: ticks.append(tick))
    denoise = [t for t in ticks if t[0] == "denoise"]
    assert len(denoise) == 4 and denoise[-1] == ("denoise", 4, 4)  # 2 windows x 2 steps, one tick per UNet call
    assert {"weights", "load", "denoise", "decode", "save"} <= {t[0] for t in ticks}
    assert ("weights", len(ROLES[variant]) - 2, len(ROLES[variant]) - 2) in ticks  # vae and embeddings are optional

    assert result.frames.shape == (7, 128, 64, 3) and result.fps == 12.0  # frame 0 + 6 generated, portrait
    assert media.read_video(result.video_path).frames.shape == (7, 128, 64, 3)
    assert media.read_video(result.preview_path).frames.shape[2] > 64 * 2  # picture | video
    assert result.control.shape == (1, 128, 64, 3)

    meta = json.loads(result.sidecar_path.read_text())
    assert meta["seed"] == 3 and meta["smoke"] is True and meta["method"].startswith(f"MuseV {variant} on SD1.5")
    assert meta["windows"]["shots"] == [[[0, 3], [2, 5]]] and meta["windows"]["unet_calls"] == 4
    assert (meta["windows"]["mode"], meta["windows"]["context_frames"], meta["windows"]["context_overlap"]) == (
        "parallel", 4, 2)
    assert {w["role"] for w in meta["weights"]} == ROLES[variant] and all(w["pack"] == "musev" for w in meta["weights"])
    assert meta["params"]["width"] == 64 and meta["params"]["height"] == 128 and meta["params"]["steps"] == 2
    assert meta["requested_params"]["width"] == 0 and meta["requested_params"]["steps"] == 10
    assert meta["generation"]["time_size"] == 6 and meta["generation"]["n_batch"] == 1
    assert meta["generation"]["frames_out"] == 7 and meta["generation"]["decode_chunk"] == 2
    assert meta["memory_plan"]["tier"] == "cpu" and meta["peak_gpu_memory_gb"] == 0.0
    assert {"inputs", "weights", "load", "generate", "total"} <= set(meta["timings_s"])
    assert meta["inputs"]["first_frame"] == "the condition image" and meta["notes"] == []

    # Same seed: the same video, from the cached pipeline; another seed: another video.
    again = task.run(task.Params(smoke=True, seed=3, model=variant))
    assert loads == [variant] and again.video_path != result.video_path
    np.testing.assert_array_equal(again.frames, result.frames)
    assert not np.array_equal(task.run(task.Params(smoke=True, seed=4, model=variant)).frames, result.frames)


def test_serial_shots_start_from_the_last_frame_of_the_shot_before():
    parallel = task.run(task.Params(smoke=True, seed=5, model="musev"))
    serial = task.run(task.Params(smoke=True, seed=5, model="musev", long_video="serial"))
    assert serial.frames.shape == (9, 128, 64, 3)  # frame 0 + 2 shots of 4
    meta = json.loads(serial.sidecar_path.read_text())
    assert meta["windows"]["shots"] == [[[0, 3]], [[4, 7]]] and meta["windows"]["mode"] == "serial"
    assert meta["generation"]["n_batch"] == 2 and meta["generation"]["time_size"] == 4
    assert "serial shots" in meta["method"] and meta["params"]["frames"] == 8
    assert not np.array_equal(serial.frames[:7], parallel.frames)


def test_without_a_picture_the_first_frame_is_generated():
    ticks = []
    result = task.run(task.Params(smoke=True, model="musev", condition_image=""),
                      progress=lambda *tick: ticks.append(tick))
    assert result.frames.shape == (6, 64, 64, 3) and result.control is None
    assert ("first frame", 2, 2) in ticks
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["inputs"]["first_frame"] == task.FIRST_FRAME and meta["inputs"]["condition_image"] is None
    assert meta["windows"]["shots"] == [[[0, 3], [2, 4]]]


def test_decoding_one_frame_at_a_time_gives_the_same_video(monkeypatch):
    from helpers import runtime

    reference = task.run(task.Params(smoke=True, seed=6, model="musev"))
    one_frame = runtime.MemoryPlan(device="cpu", dtype_name="float32", tier="cpu", gpu_name="CPU", gpu_total_gb=0.0,
                                   vae_decode_chunk=1)
    monkeypatch.setattr(task, "run_memory_plan", lambda smoke, precision="auto": one_frame)
    ticks = []
    result = task.run(task.Params(smoke=True, seed=6, model="musev"), progress=lambda *tick: ticks.append(tick))
    assert [t for t in ticks if t[0] == "decode"] == [("decode", i, 7) for i in range(1, 8)]
    np.testing.assert_allclose(result.frames.astype(int), reference.frames.astype(int), atol=1)
    assert json.loads(result.sidecar_path.read_text())["generation"]["decode_chunk"] == 1


# -- own base models ------------------------------------------------------------------------------------------------
def _pack_base(smoke_root: Path) -> Path:
    return smoke_root / "models" / "musev" / "base_model" / "t2i" / "sd1.5" / "majicmixRealv6Fp16"


def test_own_base_model_folder_and_file(shared_smoke, tmp_path):
    reference = task.run(task.Params(smoke=True, seed=7, model="musev"))
    # The pack's own base model given as a path: everything is swapped in again, so the same video.
    same = task.run(task.Params(smoke=True, seed=7, model="musev", base_model=str(_pack_base(shared_smoke))))
    np.testing.assert_allclose(same.frames.astype(int), reference.frames.astype(int), atol=1)
    meta = json.loads(same.sidecar_path.read_text())
    user = [w for w in meta["weights"] if w["pack"] is None]
    assert user[0]["source"] == f"chosen by the user: {_pack_base(shared_smoke)}" and user[0]["size_bytes"] > 0
    assert "base_model" not in {w["role"] for w in meta["weights"] if w["pack"] == "musev"}

    # Another SD1.5 model as one file (UNet only): its spatial weights are in the UNet, the text encoder stays.
    other = tiny.write_tiny_base_model(tmp_path / "other", seed=21)
    from safetensors.torch import load_file

    unet_weights = load_file(str(other / "unet" / "diffusion_pytorch_model.safetensors"))
    file = _safetensors(tmp_path / "other.safetensors", unet_weights)
    result = task.run(task.Params(smoke=True, seed=7, model="musev", base_model=file))
    assert not np.array_equal(result.frames, reference.frames)
    pipe, _ = next(iter(base._MODEL_CACHE.values()))
    torch.testing.assert_close(pipe.unet.state_dict()[DIFFUSERS_KEY], unet_weights[DIFFUSERS_KEY])
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["base_model"] == file and any("text encoder and scheduler: the MuseV pack's" in n for n in meta["notes"])


def test_t4_plan_with_an_own_base_model_gives_the_same_video(shared_smoke, monkeypatch):
    """Model CPU offload (the T4 plan's knob, rehearsed on the CPU) on a pipeline loaded with an own base model
    changes nothing but where the models wait."""
    from helpers import runtime

    reference = task.run(task.Params(smoke=True, seed=8, model="musev"))
    rehearsal = runtime.MemoryPlan(device="cpu", dtype_name="float32", tier="t4-rehearsal", gpu_name="CPU",
                                   gpu_total_gb=0.0, offload="model", vae_decode_chunk=2)
    monkeypatch.setattr(task, "run_memory_plan", lambda smoke, precision="auto": rehearsal)
    result = task.run(task.Params(smoke=True, seed=8, model="musev", base_model=str(_pack_base(shared_smoke))))
    np.testing.assert_array_equal(result.frames, reference.frames)
    pipe, _ = next(iter(base._MODEL_CACHE.values()))
    assert hasattr(pipe.unet, "_hf_hook") and hasattr(pipe.text_encoder, "_hf_hook")  # offload hooks in place
    assert json.loads(result.sidecar_path.read_text())["memory_plan"]["offload"] == "model"


def test_smoke_runs_the_tiny_base_model_for_a_real_sd15_file(tmp_path):
    file = _safetensors(tmp_path / "community.safetensors", {DIFFUSERS_KEY: torch.zeros(320, 768)})
    p = task.plan(task.Params(smoke=True, base_model=file))
    assert p.base_model is None and p.notes == (f"SMOKE: the tiny base model ran instead of {file}",)
    with pytest.raises(InputError, match="an SD2.x model"):
        task.plan(task.Params(smoke=True, base_model=_safetensors(tmp_path / "sd2.safetensors",
                                                                  {LDM_KEY: torch.zeros(320, 1024)})))
    assert task.plan(task.Params(base_model=file)).base_model == Path(file)  # a real run takes it
    # an original .ckpt keeps its weights under "state_dict": accepted like any SD1.5 file
    torch.save({"state_dict": {LDM_KEY: torch.zeros(320, 768)}, "global_step": 1}, tmp_path / "old.ckpt")
    assert task.plan(task.Params(base_model=str(tmp_path / "old.ckpt"))).base_model == tmp_path / "old.ckpt"


def test_original_ckpt_base_model_runs(tmp_path):
    """A tiny SD1.5 model saved as an original (LDM) .ckpt, weights under "state_dict": its spatial weights end up in
    the video UNet; text encoder and scheduler come from the pack."""
    from safetensors.torch import load_file
    from test_musev_models import _ldm_unet_name

    other = tiny.write_tiny_base_model(tmp_path / "other", seed=22)
    unet_weights = load_file(str(other / "unet" / "diffusion_pytorch_model.safetensors"))
    config = json.loads((other / "unet" / "config.json").read_text())
    up_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    ldm = {_ldm_unet_name(k, config["layers_per_block"], up_attention): v for k, v in unet_weights.items()}
    checkpoint = tmp_path / "other.ckpt"
    torch.save({"state_dict": ldm, "global_step": 1}, checkpoint)
    result = task.run(task.Params(smoke=True, seed=7, model="musev", base_model=str(checkpoint)))
    pipe, _ = base._MODEL_CACHE[next(k for k in base._MODEL_CACHE if str(checkpoint.resolve()) in k)]
    unet = pipe.unet.state_dict()
    for key, value in unet_weights.items():
        torch.testing.assert_close(unet[key], value, rtol=0, atol=0)
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["base_model"] == str(checkpoint)
    assert meta["notes"] == ["text encoder and scheduler: the MuseV pack's majicmix (the base model has none of its own)"]
    assert "base_model" in {w["role"] for w in meta["weights"] if w["pack"] == "musev"}  # the pack's text encoder


# -- the non-SMOKE path ---------------------------------------------------------------------------------------------
def test_missing_weights_are_named_before_anything_loads(tmp_path, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the weights were found")

    monkeypatch.setattr(task, "_load", refuse)
    with pytest.raises(MissingWeightsError, match="musev/unet_referencenet"):
        task.run(task.Params(condition_image=_picture(tmp_path)))


def test_real_path_on_packs_in_the_drive_layout(tmp_path):
    """Without SMOKE: weights come from $HV_ROOT (the Drive root), sizes and windows are as asked."""
    tiny.write_tiny_musev_packs(Path(os.environ["HV_ROOT"]))
    params = task.Params(condition_image=_picture(tmp_path), model="musev", width=128, height=64, frames=5, steps=1,
                         window=3, overlap=1, output_dir=str(tmp_path / "out"))
    result = task.run(params)
    assert result.frames.shape == (6, 64, 128, 3) and result.video_path.parent == tmp_path / "out"
    meta = json.loads(result.sidecar_path.read_text())
    assert meta["smoke"] is False and "requested_params" not in meta and meta["params"]["width"] == 128
    assert meta["windows"]["shots"] == [[[0, 2], [2, 4]]] and meta["windows"]["unet_calls"] == 2
    assert {w["role"] for w in meta["weights"]} == ROLES["musev"]
    assert all(w["source"] == "unrecorded (placed by hand)" for w in meta["weights"])  # tiny packs have no manifest


# -- form and command line ------------------------------------------------------------------------------------------
def test_form_builds_and_presets_fill_it():
    from helpers import ui

    form = ui.TaskForm(task, smoke=True)
    assert isinstance(form.controls["condition_image"], ui.FileField)
    assert {"prompt", "model", "width", "height", "frames", "long_video", "window", "overlap", "base_model"} <= set(
        form.controls)
    form.preset.value = "scene · seaside 4"
    params = form.params()
    assert params.condition_image.endswith("seaside4.jpeg") and (params.width, params.height) == (1216, 704)
    assert params.smoke and params.prompt.endswith("peaceful beautiful sea scene")
    form.preset.value = "(defaults)"
    assert form.params().condition_image == task.DEFAULT_IMAGE and form.params().width == 0


def test_task_module_and_its_help_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, helpers.tasks.text_image_to_video as task; from helpers import __main__ as cli\n"
            "try:\n    cli.main(['text_image_to_video', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(task.__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_cli_help_lists_every_parameter(capsys):
    from helpers import __main__ as cli

    with pytest.raises(SystemExit) as done:
        cli.main(["text_image_to_video", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for spec in base.field_specs(task.Params):
        assert f"--{spec.name}" in text, spec.name
    assert "--preset" in text and "musev_referencenet" in text and "serial" in text
