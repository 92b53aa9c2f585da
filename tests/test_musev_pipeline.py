"""MuseV pipeline behaviour on tiny random-weight packs loaded through the real registry layout and loaders:
shapes, progress, seeds, windows, serial shots, first-frame generation, chunked decoding and input errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from helpers.errors import InputError, MissingWeightsError
from helpers.pipelines.musev.loading import spatial_keys
from helpers.pipelines.musev.noise import add_condition_prior, initial_video_noise, video_fusion_noise
from helpers.pipelines.musev.pipeline import (
    MuseVPipeline,
    base_model_parts,
    check_video_request,
    load_musev_pipeline,
    video_size,
)
from helpers.pipelines.musev.prompts import NEGATIVE_PROMPT_V2
from helpers.testing.musev import write_tiny_base_model, write_tiny_musev_packs

SMALL = dict(height=64, width=64, num_inference_steps=2, context_frames=4, context_overlap=2)



@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    return write_tiny_musev_packs(tmp_path_factory.mktemp("hv_root"))


@pytest.fixture(scope="module")
def pipes(packs):
    return {variant: load_musev_pipeline(variant, root=packs, device="cpu", dtype=torch.float32)
            for variant in ("musev", "musev_referencenet")}


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (rng.random((72, 96, 3)) * 255).astype(np.uint8)


class UNetCalls:
    """Records every UNet call (sample shape, condition frame, keyword arguments) through a forward pre-hook."""

    def __init__(self, unet):
        self.calls: list[dict] = []
        self.handle = unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(dict(shape=tuple(args[0].shape), first_frame=args[0][:, :, 0].clone(), **kwargs))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_tiny_packs_load_through_the_registry(pipes):
    plain, reference = pipes["musev"], pipes["musev_referencenet"]
    assert not plain.uses_reference and plain.referencenet is None
    assert reference.uses_reference and reference.image_encoder is not None and reference.image_proj is not None
    for pipe in pipes.values():
        assert {"badhandv4", "ng_deepnegative_v1_75t"} <= set(pipe.tokenizer.get_vocab())  # negatives loaded
        assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"  # built from the base's PNDM config
        assert pipe.unet.dtype == pipe.vae.dtype == torch.float32


@pytest.mark.parametrize("variant", ["musev", "musev_referencenet"])
def test_image_to_video_frames_and_progress(pipes, image, variant):
    ticks = []
    out = pipes[variant]("a (lower:1.3) newer", image, time_size=5, progress=lambda *tick: ticks.append(tick),
                         **SMALL)
    assert out.frames.shape == (6, 64, 64, 3) and out.frames.dtype == np.uint8  # condition frame + 5
    assert out.latents.shape == (1, 4, 6, 8, 8) and out.latents.device.type == "cpu"
    assert torch.isfinite(out.latents).all() and 0 < out.frames.std()
    assert out.notes == []  # the textual-inversion negatives are there
    denoise = [t for t in ticks if t[0] == "denoise"]
    windows = 2  # 5 frames, windows of 4 overlapping by 2: [0..3], [2..4]
    assert [t[1] for t in denoise] == list(range(1, 2 * windows + 1))
    assert {t[2] for t in denoise} == {2 * windows}
    assert ticks[-1] == ("decode", 6, 6)


def test_seeds_reproduce_and_differ(pipes, image):
    pipe = pipes["musev"]

    def run(seed):
        return pipe("newer", image, time_size=3, generator=torch.Generator().manual_seed(seed),
                    output_type="latent", **SMALL).latents

    first = run(7)
    assert torch.equal(first, run(7))
    assert not torch.allclose(first[:, :, 1:], run(8)[:, :, 1:])


def test_the_condition_image_drives_every_window(pipes, image):
    pipe = pipes["musev_referencenet"]
    kwargs = dict(time_size=5, **SMALL)
    first = pipe("newer", image, generator=torch.Generator().manual_seed(1), output_type="latent", **kwargs)
    second = pipe("newer", 255 - image, generator=torch.Generator().manual_seed(1), output_type="latent", **kwargs)
    # the last window does not contain the first frames: the condition reaches it only through the prepended latent
    assert not torch.allclose(first.latents[:, :, -1], second.latents[:, :, -1])


def test_parallel_windows_share_the_prepended_condition_latent(pipes, image):
    pipe = pipes["musev"]
    with UNetCalls(pipe.unet) as record:
        out = pipe("lower", image, time_size=9, output_type="latent", **SMALL)
    # 9 frames, windows of 4 by 2: [0..3] [2..5] [4..7] [6..8] -> 4 calls per step, each 1 + window frames
    frames_per_call = [call["shape"][2] for call in record.calls]
    assert frames_per_call == [5, 5, 5, 4] * SMALL["num_inference_steps"]
    condition = out.latents[:, :, 0]
    for call in record.calls:
        assert call["shape"][0] == 2  # the guidance pair
        assert call["condition_frame_index"] == [0]
        torch.testing.assert_close(call["first_frame"], condition.repeat(2, 1, 1, 1))


def test_serial_shots_are_conditioned_on_the_previous_last_latent(pipes, image):
    pipe = pipes["musev"]
    with UNetCalls(pipe.unet) as record:
        out = pipe("lower", image, time_size=3, n_batch=3, generator=torch.Generator().manual_seed(3), **SMALL)
    assert out.frames.shape[0] == 1 + 3 * 3  # the condition frame once, then three shots of 3
    assert out.latents.shape[2] == 10
    calls_per_shot = SMALL["num_inference_steps"]  # one window of 3 frames per step
    for shot in range(3):
        condition = out.latents[:, :, 0] if shot == 0 else out.latents[:, :, 3 * shot]
        for call in record.calls[shot * calls_per_shot : (shot + 1) * calls_per_shot]:
            torch.testing.assert_close(call["first_frame"], condition.repeat(2, 1, 1, 1))


def test_without_an_image_the_first_frame_is_generated(pipes):
    pipe = pipes["musev_referencenet"]
    ticks = []
    with UNetCalls(pipe.unet) as record:
        out = pipe("newer", None, time_size=4, first_frame_steps=3, progress=lambda *t: ticks.append(t), **SMALL)
    assert out.frames.shape == (4, 64, 64, 3)  # the generated first frame counts toward time_size
    first, video = record.calls[:3], record.calls[3:]
    assert all(c["skip_temporal_layers"] and c["shape"][2] == 1 and c["condition_frame_index"] is None for c in first)
    assert all(not c["skip_temporal_layers"] and c["condition_frame_index"] == [0] for c in video)
    assert "down_block_refer_embs" not in first[0] and "down_block_refer_embs" in video[0]
    assert [t for t in ticks if t[0] == "first frame"][-1] == ("first frame", 3, 3)


def test_frames_are_decoded_a_few_at_a_time(pipes, image):
    pipe = pipes["musev"]
    sizes = []
    handle = pipe.vae.decoder.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        out = pipe("lower", image, time_size=6, decode_chunk_size=3, **SMALL)
    finally:
        handle.remove()
    assert sizes == [3, 3, 1] and out.frames.shape[0] == 7


def test_missing_textual_inversion_files_are_reported(pipes, tmp_path):
    from helpers.testing import common

    pipe = pipes["musev"]
    plain_tokenizer = common.load_clip_tokenizer(common.write_clip_tokenizer(tmp_path / "tokenizer"))
    bare = MuseVPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=plain_tokenizer, unet=pipe.unet,
                         scheduler=pipe.scheduler)
    positive, negative, notes = bare.encode_prompt("lower", NEGATIVE_PROMPT_V2)
    assert positive.shape == negative.shape
    assert notes and "badhandv4, ng_deepnegative_v1_75t" in notes[0]


# ------------------------------------------------------------------------------------------------ input errors


class _Untouchable(torch.nn.Module):
    """A component that fails the test if the pipeline uses it."""

    dtype, device = torch.float32, torch.device("cpu")
    config = type("Config", (), {"block_out_channels": (32,) * 4, "scaling_factor": 0.18215})()

    def forward(self, *args, **kwargs):
        raise AssertionError("the input error must be raised before any model runs")

    def encode(self, *args, **kwargs):
        raise AssertionError("the input error must be raised before any model runs")


@pytest.fixture
def untouchable_pipe():
    return MuseVPipeline(vae=_Untouchable(), text_encoder=_Untouchable(), tokenizer=None, unet=_Untouchable(),
                         scheduler=None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(context_frames=4, context_overlap=4), "smaller than context_frames"),
        (dict(context_frames=12, context_overlap=20), "smaller than context_frames"),
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="   "), "prompt is empty"),
        (dict(height=50), "below 64"),
        (dict(width=0), "below 64"),
        (dict(img_length_ratio=0), "positive scale"),
        (dict(time_size=0), "at least 1 frame"),
        (dict(n_batch=0), "n_batch"),
        (dict(num_inference_steps=0), "at least 1"),
        (dict(guidance_scale=-1), "guidance_scale"),
        (dict(motion_speed=0), "motion_speed"),
        (dict(output_type="gif"), "output_type"),
        (dict(decode_chunk_size=0), "decode"),
        (dict(context_schedule="zigzag"), "unknown context schedule"),
    ],
)
def test_bad_inputs_are_input_errors_before_any_model_runs(untouchable_pipe, image, kwargs, message):
    call = dict(prompt="a girl", image=image, height=64, width=64, time_size=4)
    call.update(kwargs)
    with pytest.raises(InputError, match=message):
        untouchable_pipe(**call)


def test_no_image_and_no_size_is_an_input_error(untouchable_pipe):
    with pytest.raises(InputError, match="no video size"):
        untouchable_pipe("a girl", None)


def test_checks_run_without_a_pipeline():
    check_video_request(time_size=120, context_frames=12, context_overlap=4)
    with pytest.raises(InputError, match="smaller than context_frames"):
        check_video_request(time_size=12, context_frames=8, context_overlap=8)


def test_own_base_model_is_loaded_directly_and_needs_no_majicmix(packs, pipes, tmp_path):
    """A diffusers folder gives the UNet's spatial weights, the text encoder, tokenizer and scheduler config; the
    pack's majicmix is then never read (here: not on disk). The ReferenceNet stays MuseV's own."""
    from safetensors.torch import load_file

    root = tmp_path / "root"
    shutil.copytree(packs, root, ignore=lambda folder, _names: ["base_model"] if folder.endswith("musev") else [])
    own = write_tiny_base_model(tmp_path / "own", seed=31)
    assert base_model_parts(own) == ("unet", "text_encoder", "scheduler", "vae")
    pipe = load_musev_pipeline("musev_referencenet", root=root, base_model=own, device="cpu", dtype=torch.float32)
    unet, own_unet = pipe.unet.state_dict(), load_file(str(own / "unet" / "diffusion_pytorch_model.safetensors"))
    spatial = spatial_keys(pipe.unet.config)
    assert set(own_unet) == set(spatial)
    for key in spatial:
        torch.testing.assert_close(unet[key], own_unet[key], rtol=0, atol=0)
    pack_unet = pipes["musev_referencenet"].unet.state_dict()
    for key in set(unet) - set(spatial):  # the temporal, fusion and IP layers are MuseV's
        torch.testing.assert_close(unet[key], pack_unet[key], rtol=0, atol=0)
    assert not torch.equal(unet["conv_in.weight"], pack_unet["conv_in.weight"])
    own_text = load_file(str(own / "text_encoder" / "model.safetensors"))
    for key, value in pipe.text_encoder.state_dict().items():
        if key in own_text:  # the token table also holds the textual inversions, after the tokenizer's own rows
            rows = pipe.tokenizer.convert_tokens_to_ids("badhandv4") if "token_embedding" in key else len(value)
            torch.testing.assert_close(value[:rows], own_text[key][:rows], rtol=0, atol=0)
    for key, value in pipes["musev_referencenet"].referencenet.state_dict().items():
        torch.testing.assert_close(pipe.referencenet.state_dict()[key], value, rtol=0, atol=0)
    assert {"badhandv4", "ng_deepnegative_v1_75t"} <= set(pipe.tokenizer.get_vocab())  # negatives on its tokenizer

    # One file gives the UNet only: the text encoder and scheduler come from majicmix, which must then be there.
    single_file = own / "unet" / "diffusion_pytorch_model.safetensors"
    assert base_model_parts(single_file) == ("unet",)
    with pytest.raises(MissingWeightsError, match="base_model"):
        load_musev_pipeline("musev", root=root, base_model=single_file, device="cpu", dtype=torch.float32)
    pipe = load_musev_pipeline("musev", root=packs, base_model=single_file, device="cpu", dtype=torch.float32)
    torch.testing.assert_close(pipe.unet.state_dict()["conv_in.weight"], own_unet["conv_in.weight"], rtol=0, atol=0)
    for key, value in pipes["musev"].text_encoder.state_dict().items():
        torch.testing.assert_close(pipe.text_encoder.state_dict()[key], value, rtol=0, atol=0)


def test_loading_errors(tmp_path):
    with pytest.raises(InputError, match="unknown MuseV model"):
        load_musev_pipeline("musev_xl", root=tmp_path)
    with pytest.raises(MissingWeightsError):
        load_musev_pipeline("musev", root=tmp_path, device="cpu")
    with pytest.raises(InputError, match="base model not found"):
        load_musev_pipeline("musev", root=tmp_path, base_model=tmp_path / "gone.safetensors", device="cpu")


@pytest.mark.parametrize(
    ("image_hw", "size", "ratio", "expected"),
    [((720, 1280), (None, None), 1.0, (704, 1280)), ((512, 512), (None, None), 1.0, (512, 512)),
     (None, (832, 640), 1.0, (832, 640)), ((1216, 704), (None, None), 0.5, (576, 320)),
     ((100, 100), (130, None), 1.0, (128, 64))],
)
def test_video_size_is_floored_to_multiples_of_64(image_hw, size, ratio, expected):
    assert video_size(image_hw, *size, img_length_ratio=ratio) == expected


# ------------------------------------------------------------------------------------------------ noise


def test_video_fusion_noise_draws_common_then_individual():
    shape = (1, 4, 6, 8, 8)
    noise = video_fusion_noise(shape, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    common, individual = torch.randn((1, 4, 1, 8, 8), generator=g), torch.randn(shape, generator=g)
    torch.testing.assert_close(noise, 0.5**0.5 * common + 0.5**0.5 * individual)
    per_item = video_fusion_noise((2, 4, 6, 8, 8), generator=[torch.Generator().manual_seed(5),
                                                             torch.Generator().manual_seed(6)])
    torch.testing.assert_close(per_item[:1], noise)


def test_condition_prior_and_its_switch():
    shape, condition = (1, 4, 3, 8, 8), torch.full((1, 4, 1, 8, 8), 2.0)
    with_prior = initial_video_noise(shape, condition, generator=torch.Generator().manual_seed(0))
    without = initial_video_noise(shape, condition, img_weight=0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(with_prior, add_condition_prior(without, condition, 1e-3))
    torch.testing.assert_close(with_prior - (1 - 1e-3) ** 0.5 * without, torch.full(shape, 2.0 * 1e-3**0.5))


def test_unreadable_reference_image_fails_before_any_model_runs(untouchable_pipe, image, tmp_path):
    with pytest.raises(InputError, match="not found"):
        untouchable_pipe("a girl", image, refer_image=tmp_path / "missing.png", height=64, width=64)
    with pytest.raises(InputError, match="latents must have shape"):
        untouchable_pipe("a girl", image, height=64, width=64, time_size=4, latents=torch.zeros(1, 4, 3, 8, 8))
    with pytest.raises(InputError, match="negative_prompt_embeds"):
        untouchable_pipe(image=image, height=64, width=64, prompt_embeds=torch.zeros(1, 77, 32))
    with pytest.raises(InputError, match="at least 2"):
        untouchable_pipe("a girl", None, height=64, width=64, time_size=1)
