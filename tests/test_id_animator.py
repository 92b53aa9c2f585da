"""ID-Animator from tiny random-weight packs in the real layout: loading, generation, switches, errors, sketches."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from helpers import face
from helpers.errors import InputError, StrictLoadError
from helpers.pipelines.id_animator import (
    IDAnimatorPipeline,
    IDAnimatorSketchPipeline,
    PerFrameGroupNorm,
    install_face_token_mixer,
    load_id_animator_pipeline,
    load_single_file_components,
    set_motion_groupnorm,
)
from helpers.pipelines.id_animator.convert import LORA_ADAPTER_NAME, NUM_FACE_TOKENS
from helpers.pipelines.id_animator.loading import converted_face_adapter, verify_face_adapter
from helpers.testing import id_animator as tiny

SMALL = {"num_frames": 4, "height": 64, "width": 64, "num_inference_steps": 2}
PROMPT = "a low newer wider"


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hv_root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        paths = tiny.write_tiny_id_animator_packs(root)
    return root, paths


@pytest.fixture(scope="module")
def pipe(packs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster on a busy machine
    pipe = load_id_animator_pipeline(root=packs[0])
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces():
    detector = tiny.FakeFaceDetector()
    return [face.prepare_face(tiny.synthetic_face_photo(seed=s), detector=detector).image for s in (0, 1)]


def _generate(pipe, references, seed=0, **kwargs):
    args = {**SMALL, "output_type": "np", **kwargs}
    return pipe(references, PROMPT, generator=torch.Generator().manual_seed(seed), **args).frames


# -- loading -------------------------------------------------------------------------------------------------------
def test_pipeline_is_stock_animatediff_with_the_face_adapter(pipe):
    from diffusers import AnimateDiffPipeline, DDIMScheduler, UNetMotionModel

    assert isinstance(pipe, IDAnimatorPipeline) and isinstance(pipe, AnimateDiffPipeline)
    assert isinstance(pipe.unet, UNetMotionModel) and isinstance(pipe.scheduler, DDIMScheduler)
    config = pipe.scheduler.config
    assert (config.beta_schedule, config.timestep_spacing, config.steps_offset, config.clip_sample) == (
        "linear", "leading", 1, False)
    pipe.scheduler.set_timesteps(30)
    assert pipe.scheduler.timesteps[:3].tolist() == [958, 925, 892] and pipe.scheduler.timesteps[-1] == 1
    norms = [m.norm for m in pipe.unet.modules() if type(m).__name__ == "AnimateDiffTransformer3D"]
    assert norms and all(isinstance(n, PerFrameGroupNorm) for n in norms)
    assert LORA_ADAPTER_NAME in pipe.unet.peft_config


def test_community_model_loads_the_single_file_exactly(packs):
    root, paths = packs
    unet, vae, text_encoder = load_single_file_components(paths["id_animator/community_model"], paths["sd15/base"],
                                                          torch.float32)
    reference = tiny.tiny_sd15_parts(seed=5)  # the parts the file was written from
    for loaded, original in zip((unet, vae, text_encoder), reference):
        expected = original.state_dict()
        assert loaded.state_dict().keys() == expected.keys()
        assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def test_plain_sd15_base_loads(packs):
    pipe = load_id_animator_pipeline(base_model="sd15", root=packs[0])
    unet = tiny.tiny_sd15_parts(seed=0)[0].state_dict()
    loaded = pipe.unet.state_dict()
    assert torch.equal(loaded["conv_in.weight"], unet["conv_in.weight"])
    assert torch.equal(loaded["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.base_layer.weight"],
                       unet["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.weight"])


def test_extra_tensor_in_a_community_file_is_loaded_past_and_recorded(packs, tmp_path):
    """The original converts the community file and loads it with strict=False: an extra UNet tensor is left out,
    with a warning and a note for the sidecar."""
    from safetensors.torch import load_file, save_file

    from helpers import load_policy

    root, paths = packs
    checkpoint = load_file(str(paths["id_animator/community_model"]))
    checkpoint["model.diffusion_model.input_blocks.1.1.extra.weight"] = torch.zeros(2)
    bad = tmp_path / "extra.safetensors"
    save_file(checkpoint, str(bad))
    load_policy.clear()
    with pytest.warns(load_policy.IgnoredKeysWarning, match="extra.weight"):
        load_single_file_components(bad, paths["sd15/base"], torch.float32)
    assert load_policy.notes()["UNet of extra.safetensors"]["ignored_keys"] == [
        "down_blocks.0.attentions.0.extra.weight"]  # the stock conversion's name for it


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_motion_adapter_with_a_wrong_tensor_set_is_refused(packs, tmp_path, change):
    from safetensors.torch import load_file, save_file

    from helpers.pipelines.id_animator.loading import load_motion_adapter

    folder = shutil.copytree(packs[1]["animatediff_v2/motion_adapter"], tmp_path / "motion_adapter")
    file = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(file))
    if change == "extra":
        tensors["down_blocks.0.motion_modules.0.extra.weight"] = torch.zeros(3)
    else:
        del tensors["mid_block.motion_modules.0.proj_out.weight"]
    save_file(tensors, str(file))
    expected = "unexpected.*extra.weight" if change == "extra" else "missing.*mid_block.motion_modules.0.proj_out"
    with pytest.raises(StrictLoadError, match=f"(?s){expected}"):
        load_motion_adapter(folder, torch.float32)


def test_fp16_variant_folders_load(packs, tmp_path):
    """The weights manager keeps only ``*.fp16.safetensors`` where a repo publishes that variant."""
    from helpers.pipelines.id_animator.loading import load_motion_adapter

    folder = shutil.copytree(packs[1]["animatediff_v2/motion_adapter"], tmp_path / "motion_adapter")
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.fp16.safetensors")
    adapter = load_motion_adapter(folder, torch.float32)
    reference = load_motion_adapter(packs[1]["animatediff_v2/motion_adapter"], torch.float32)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in adapter.state_dict().items())


def test_face_adapter_cache_is_reused_and_repaired(packs, pipe):
    from helpers import weights

    animator = weights.resolve("id_animator", "animator", packs[0])
    assert animator.name == "animator.fp16.safetensors"  # the weights manager's conversion of animator.ckpt
    cache = animator.parent / "animator_diffusers"
    assert (cache / "ip_adapter.safetensors").is_file() and (cache / "lora.safetensors").is_file()
    from safetensors.torch import load_file, save_file

    lora = load_file(str(cache / "lora.safetensors"))
    dropped = sorted(lora)[0]
    del lora[dropped]
    save_file(lora, str(cache / "lora.safetensors"))
    repaired = converted_face_adapter(animator, pipe.unet, pipe.image_encoder.config.hidden_size)
    assert dropped in repaired.lora and dropped in load_file(str(cache / "lora.safetensors"))


def test_a_changed_face_adapter_tensor_is_detected(packs, pipe):
    from helpers import weights

    animator = weights.resolve("id_animator", "animator", packs[0])
    loaded = converted_face_adapter(animator, pipe.unet, pipe.image_encoder.config.hidden_size)
    verify_face_adapter(pipe.unet, loaded)
    key = sorted(loaded.lora)[0]
    loaded.lora[key] = loaded.lora[key] + 1
    with pytest.raises(StrictLoadError, match=f"{key} \\(values differ from the file\\)"):
        verify_face_adapter(pipe.unet, loaded)


# -- generation ----------------------------------------------------------------------------------------------------
def test_generates_a_reproducible_video_with_progress(pipe, faces):
    steps = []
    frames = _generate(pipe, faces[:1], callback_on_step_end=lambda p, i, t, tensors: steps.append(i) or {})
    assert frames.shape == (1, SMALL["num_frames"], SMALL["height"], SMALL["width"], 3)
    assert np.isfinite(frames).all() and steps == list(range(SMALL["num_inference_steps"]))
    np.testing.assert_array_equal(frames, _generate(pipe, faces[:1]))
    assert not np.array_equal(frames, _generate(pipe, faces[:1], seed=1))


def test_identity_mixing_averages_face_tokens(pipe, faces):
    with torch.no_grad():
        a, uncond = pipe.face_tokens(faces[:1])
        b, _ = pipe.face_tokens(faces[1:])
        mixed, uncond_mixed = pipe.face_tokens(faces)
        only_a, _ = pipe.face_tokens(faces, reference_weights=[1.0, 0.0])
        weighted, _ = pipe.face_tokens(faces, reference_weights=[3.0, 1.0])
    assert a.shape == (1, NUM_FACE_TOKENS, pipe.unet.config.cross_attention_dim)
    torch.testing.assert_close(mixed, (a + b) / 2)
    torch.testing.assert_close(only_a, a)
    torch.testing.assert_close(weighted, 0.75 * a + 0.25 * b)
    torch.testing.assert_close(uncond_mixed, uncond)
    install_face_token_mixer(pipe.unet, mode="concat")
    try:
        with torch.no_grad():
            assert pipe.face_tokens(faces)[0].shape[1] == 2 * NUM_FACE_TOKENS
        concat_video = _generate(pipe, faces)
    finally:
        install_face_token_mixer(pipe.unet, mode="mean")
    assert not np.allclose(concat_video, _generate(pipe, faces))


def test_faithfulness_switches_change_the_video(pipe, faces):
    reference = _generate(pipe, faces[:1], output_type="latent")
    set_motion_groupnorm(pipe.unet, per_frame=False)
    try:
        stock_groupnorm = _generate(pipe, faces[:1], output_type="latent")
    finally:
        set_motion_groupnorm(pipe.unet, per_frame=True)
    without_face = _generate(pipe, faces[:1], output_type="latent", face_scale=0.0)
    pipe.disable_lora()
    try:
        without_lora = _generate(pipe, faces[:1], output_type="latent")
    finally:
        pipe.enable_lora()
    torch.testing.assert_close(_generate(pipe, faces[:1], output_type="latent"), reference)
    for other in (stock_groupnorm, without_face, without_lora):
        assert (other - reference).abs().max() > 1e-4


def test_face_scale_zero_keeps_the_lora_unless_face_lora_is_off(pipe, faces):
    # As the original, face_scale 0 only silences the face attention; face_lora=False makes it plain AnimateDiff.
    without_face = _generate(pipe, faces[:1], output_type="latent", face_scale=0.0)
    plain = _generate(pipe, faces[:1], output_type="latent", face_scale=0.0, face_lora=False)
    pipe.disable_lora()
    try:
        by_hand = _generate(pipe, faces[:1], output_type="latent", face_scale=0.0)
    finally:
        pipe.enable_lora()
    torch.testing.assert_close(plain, by_hand)
    assert (without_face - plain).abs().max() > 1e-4
    torch.testing.assert_close(_generate(pipe, faces[:1], output_type="latent", face_scale=0.0), without_face)


@pytest.mark.parametrize("change,message", [
    ({"num_frames": 33}, "num_frames is 33.*1 to 32"),
    ({"prompt": "  "}, "prompt is empty"),
    ({"height": 60}, "height is 60.*multiple of 8"),
    ({"reference_weights": [1.0]}, "1 reference weights for 2 faces"),
    ({"reference_weights": [0.0, 0.0]}, "positive sum"),
    ({"face_scale": -1.0}, "face_scale is -1.0"),
])
def test_bad_arguments_say_what_to_do(pipe, faces, change, message):
    args = {"prompt": PROMPT, **SMALL, **change}
    with pytest.raises(InputError, match=message):
        pipe(faces, **args)


def test_no_face_is_refused(pipe):
    with pytest.raises(InputError, match="No reference face"):
        pipe([], PROMPT, **SMALL)


def test_long_prompt_warns_that_it_is_truncated(pipe, faces):
    long_prompt = " ".join(["low"] * 100)
    with pytest.warns(UserWarning, match="prompt is 102 tokens long; CLIP reads only the first 77"):
        frames = pipe(faces[:1], long_prompt, **{**SMALL, "num_inference_steps": 1}, output_type="latent").frames
    assert frames.shape[2] == SMALL["num_frames"]


def test_unknown_base_model_file_is_refused_before_loading(tmp_path):
    empty_root = tmp_path / "no_weights_here"
    for base_model, message in (("model.bin", "Unknown base model file 'model.bin'"),
                                (str(tmp_path / "missing.safetensors"), "Base model file not found"),
                                ("sdxl", "Unknown base model file 'sdxl'")):
        with pytest.raises(InputError, match=message):
            load_id_animator_pipeline(base_model=base_model, root=empty_root)


def test_a_non_sd15_single_file_is_refused(packs, tmp_path):
    from safetensors.torch import save_file

    not_sd = tmp_path / "lora_not_a_model.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(not_sd))
    with pytest.raises(InputError, match="not a Stable Diffusion 1.x checkpoint"):
        load_single_file_components(not_sd, packs[1]["sd15/base"], torch.float32)


# -- sketches ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sketch_load(packs, pipe):
    """The sketch pipeline on the community single-file model, and what diffusers logged while it loaded."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    library = logging.getLogger("diffusers")
    library.addHandler(handler)
    try:
        sketch_pipe = load_id_animator_pipeline(sketch=True, root=packs[0])
    finally:
        library.removeHandler(handler)
    sketch_pipe.set_progress_bar_config(disable=True)
    return sketch_pipe, [r.getMessage() for r in records]


@pytest.fixture(scope="module")
def sketch_pipe(sketch_load):
    return sketch_load[0]


def test_loading_logs_no_empty_float32_list(sketch_load):
    """diffusers' "modules that should be kept in float32: []" on internal casts says nothing: it is not shown."""
    assert not [m for m in sketch_load[1] if "kept in float32: []" in m]


def test_sketch_image_and_sequence(sketch_pipe, faces):
    assert isinstance(sketch_pipe, IDAnimatorSketchPipeline)
    assert all(isinstance(m.norm, PerFrameGroupNorm) for m in sketch_pipe.controlnet.modules()
               if type(m).__name__ == "AnimateDiffTransformer3D")
    sketches = [tiny.synthetic_sketch(phase=p) for p in (0.0, 1.5)]
    args = {**SMALL, "output_type": "latent"}
    one = sketch_pipe(faces[:1], PROMPT, sketches=sketches[0], generator=torch.Generator().manual_seed(0), **args)
    sequence = sketch_pipe(faces, PROMPT, sketches=sketches, sketch_frame_indices=[0, 3],
                           generator=torch.Generator().manual_seed(0), **args)
    none = sketch_pipe(faces[:1], PROMPT, sketches=sketches[0], sketch_scale=0.0,
                       generator=torch.Generator().manual_seed(0), **args)
    assert one.frames.shape == sequence.frames.shape == (1, 4, SMALL["num_frames"], 8, 8)
    assert (one.frames - none.frames).abs().max() > 1e-4


@pytest.mark.parametrize("indices,message", [([0, 1], "1 sketches but 2 frame indices"), ([4], r"\[4\] are outside")])
def test_bad_sketch_indices(sketch_pipe, faces, indices, message):
    with pytest.raises(InputError, match=message):
        sketch_pipe(faces[:1], PROMPT, sketches=[tiny.synthetic_sketch()], sketch_frame_indices=indices, **SMALL)


def test_sketch_video_decodes_in_chunks(sketch_pipe, faces, monkeypatch):
    """``decode_chunk_size`` (the memory plan's VAE chunk) reaches the stock loop's decode; the video is the same."""
    calls = []
    decode = sketch_pipe.vae.decode

    def counted(latents, *args, **kwargs):
        calls.append(len(latents))
        return decode(latents, *args, **kwargs)

    monkeypatch.setattr(sketch_pipe.vae, "decode", counted)
    args = {**SMALL, "output_type": "np", "sketches": tiny.synthetic_sketch()}
    whole = sketch_pipe(faces[:1], PROMPT, generator=torch.Generator().manual_seed(0), **args).frames
    assert calls == [SMALL["num_frames"]]
    chunked = sketch_pipe(faces[:1], PROMPT, generator=torch.Generator().manual_seed(0), decode_chunk_size=3,
                          **args).frames
    assert calls[1:] == [3, SMALL["num_frames"] - 3]
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
