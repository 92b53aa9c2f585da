"""The zero-shot pose-video techniques, each checked for what it claims, on tiny SD2-style random-weight models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.errors import InputError
from helpers.pipelines.zero_shot_pose import ConsistencyOptions, load_zero_shot_pipeline
from helpers.pipelines.zero_shot_pose.attention import CrossFrameAttnProcessor
from helpers.testing.zero_shot import stick_figure_poses, write_tiny_zero_shot_packs

STEPS = 3
FRAMES = 3
SIZE = 32  # pixels; the tiny VAE halves it


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: several tests compare frames of one batch bit for bit, and with several threads the CPU
    kernels may split the batch so that its elements take different (equally valid) rounding paths."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    paths = write_tiny_zero_shot_packs(tmp_path_factory.mktemp("zero_shot_packs"))
    return load_zero_shot_pipeline(base_dir=paths["base"], controlnet_path=paths["controlnet"])


@pytest.fixture(scope="module")
def poses():
    return stick_figure_poses(FRAMES, SIZE)


@pytest.fixture(scope="module")
def noise():
    return torch.randn((FRAMES, 4, SIZE // 2, SIZE // 2), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def source():
    return np.random.default_rng(3).integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)


def generate(pipe, poses, noise=None, **kwargs) -> torch.Tensor:
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "latent")
    if noise is None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return pipe("lower newer", poses, latents=noise, **kwargs).frames


def record_latents(store: dict):
    def callback(pipe, step, timestep, tensors):
        store[step] = tensors["latents"].clone()
    return callback


def assert_differ(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------------- (a), (b) noise


def test_shared_noise_starts_every_frame_from_the_same_latents(pipe):
    same_pose = np.repeat(stick_figure_poses(1, SIZE), FRAMES, axis=0)
    shared, independent = {}, {}
    generate(pipe, same_pose, options=ConsistencyOptions(noise="shared"), callback_on_step_end=record_latents(shared))
    generate(pipe, same_pose, options=ConsistencyOptions(noise="independent"),
             callback_on_step_end=record_latents(independent))
    # same pose + same start ⇒ the same deterministic DDIM trajectory for every frame
    for k in range(1, FRAMES):
        assert torch.equal(shared[0][k], shared[0][0])
        assert_differ(independent[0][k], independent[0][0])


def test_uint8_output_is_one_image_per_pose(pipe, poses):
    frames = generate(pipe, poses, output_type="uint8")
    assert frames.shape == (FRAMES, SIZE, SIZE, 3) and frames.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------- (c) attention


def test_cross_frame_attention_carries_frame_0_into_later_frames(pipe, poses, noise):
    changed = poses.copy()
    changed[0] = np.roll(poses[0], 9, axis=1)[:, :, ::-1]  # another pose for frame 0 only
    plain = {p: generate(pipe, p_, noise) for p, p_ in (("a", poses), ("b", changed))}
    # without cross-frame attention the frames of a batch are independent
    torch.testing.assert_close(plain["a"][2], plain["b"][2], atol=1e-6, rtol=0)
    for mode in ("first_frame", "first_and_previous", "self_and_first"):
        options = ConsistencyOptions(cross_frame_attention=mode)
        a, b = generate(pipe, poses, noise, options=options), generate(pipe, changed, noise, options=options)
        assert_differ(a[2], b[2])
        torch.testing.assert_close(a[0], plain["a"][0], atol=1e-5, rtol=1e-5)  # frame 0 still sees only itself
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert "CrossFrameAttnProcessor" not in processors  # put back after the call


def test_cross_frame_processor_refuses_a_batch_that_is_not_whole_clips():
    from diffusers.models.attention_processor import Attention

    attention = Attention(query_dim=8, heads=2, dim_head=4, processor=CrossFrameAttnProcessor("first_frame", 3))
    assert attention(torch.randn(6, 5, 8)).shape == (6, 5, 8)  # two groups (guidance halves) of 3 frames
    with pytest.raises(ValueError, match="groups of 3 frames"):
        attention(torch.randn(4, 5, 8))


# ---------------------------------------------------------------------------------------------------- (d) copying


def test_full_copy_after_every_step_makes_every_frame_the_reference(pipe, poses, noise):
    baseline = generate(pipe, poses, noise)
    results = {}
    for reference in ("first_frame", "previous_frame"):
        options = ConsistencyOptions(latent_reference=reference, reference_steps=STEPS, reference_strength=1.0)
        results[reference] = generate(pipe, poses, noise, options=options)
        for k in range(1, FRAMES):
            assert torch.equal(results[reference][k], results[reference][0])
    assert torch.equal(results["first_frame"], results["previous_frame"])  # identical at strength 1
    torch.testing.assert_close(results["first_frame"][0], baseline[0], atol=1e-5, rtol=1e-5)


def test_skipping_overwritten_work_changes_nothing_but_the_cost(pipe, poses, noise, source):
    for reference, needs_source in (("first_frame", False), ("source", True), ("keyframe", True)):
        options = ConsistencyOptions(noise="shared", latent_reference=reference, reference_steps=2)
        extra = {"source_frames": source} if needs_source else {}
        fast = pipe("lower", poses, latents=noise, num_inference_steps=STEPS, options=options,
                    output_type="latent", **extra)
        full = pipe("lower", poses, latents=noise, num_inference_steps=STEPS, options=options,
                    output_type="latent", skip_overwritten_frames=False, **extra)
        torch.testing.assert_close(fast.frames, full.frames, atol=1e-5, rtol=1e-5)
        assert full.frame_steps == FRAMES * STEPS
        expected = FRAMES * (STEPS - 2) + (0 if reference == "source" else 2)  # frame 0 alone, or nobody (SDEdit)
        assert fast.frame_steps == expected


def test_previous_frame_blend_is_a_scan_along_the_clip(pipe, poses, noise):
    options = {r: ConsistencyOptions(latent_reference=r, reference_steps=2, reference_strength=0.5)
               for r in ("first_frame", "previous_frame")}
    first, previous = (generate(pipe, poses, noise, options=options[r]) for r in options)
    assert_differ(first[2], previous[2])
    torch.testing.assert_close(first[1], previous[1], atol=1e-6, rtol=0)  # frame 1's previous frame is frame 0


def test_last_step_schedule_pulls_only_once(pipe, poses, noise):
    seen = {}
    options = ConsistencyOptions(latent_reference="first_frame", reference_steps=2, reference_schedule="last_step")
    generate(pipe, poses, noise, options=options, callback_on_step_end=record_latents(seen),
             skip_overwritten_frames=False)
    assert_differ(seen[0][1], seen[0][0])  # after step 0: untouched
    assert torch.equal(seen[1][1], seen[1][0])  # after step 1: copied


# ---------------------------------------------------------------------------------------------------- (e) source


def test_source_latents_are_noised_to_the_level_of_the_next_step(pipe, poses, noise, source):
    seen, clean = {}, {}
    options = ConsistencyOptions(latent_reference="source", reference_steps=2)
    generate(pipe, poses, noise, options=options, source_frames=source, callback_on_step_end=record_latents(seen))
    generate(pipe, poses, noise, options=ConsistencyOptions(latent_reference="source", reference_steps=2,
                                                             match_noise_level=False),
             source_frames=source, callback_on_step_end=record_latents(clean))
    encoded = pipe.encode_frames(source)
    timesteps = pipe.scheduler.timesteps
    for step in (0, 1):
        level = int(timesteps[step + 1])
        by_scheduler = pipe.scheduler.add_noise(encoded, noise, torch.full((FRAMES,), level))
        alpha_bar = pipe.scheduler.alphas_cumprod[level]
        by_formula = alpha_bar.sqrt() * encoded + (1 - alpha_bar).sqrt() * noise
        torch.testing.assert_close(seen[step], by_scheduler, atol=1e-6, rtol=0)
        torch.testing.assert_close(seen[step], by_formula, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clean[step], encoded)  # the original's way: clean latents, no noise


def test_full_source_reference_is_stock_controlnet_img2img(pipe, poses, source):
    """At strength 1 the source reference is SDEdit: stock ControlNet image-to-image started from the same encoded
    latents with the same noise, at strength = (steps left) / steps."""
    from diffusers import DDIMScheduler, StableDiffusionControlNetImg2ImgPipeline

    steps, copied = 4, 2
    noise = torch.randn((FRAMES, 4, SIZE // 2, SIZE // 2), generator=torch.Generator().manual_seed(11))
    ours = generate(pipe, poses, noise, num_inference_steps=steps, source_frames=source,
                    options=ConsistencyOptions(latent_reference="source", reference_steps=copied))
    stock = StableDiffusionControlNetImg2ImgPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        controlnet=pipe.controlnet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    reference = stock(["lower newer"] * FRAMES, image=pipe.encode_frames(source),
                      control_image=torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255.0,
                      strength=(steps - copied) / steps, num_inference_steps=steps, guidance_scale=7.5,
                      controlnet_conditioning_scale=1.0,
                      generator=torch.Generator().manual_seed(11), output_type="latent").images
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_masks_limit_where_the_reference_acts(pipe, poses, noise, source):
    options = ConsistencyOptions(latent_reference="source", reference_steps=2)
    untouched = generate(pipe, poses, noise)
    unmasked = generate(pipe, poses, noise, options=options, source_frames=source)
    zeros, ones = np.zeros((FRAMES, SIZE, SIZE), np.uint8), np.full((FRAMES, SIZE, SIZE), 255, np.uint8)
    assert torch.equal(generate(pipe, poses, noise, options=options, source_frames=source, masks=zeros), untouched)
    torch.testing.assert_close(generate(pipe, poses, noise, options=options, source_frames=source, masks=ones),
                               unmasked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reference", ["first_frame", "previous_frame", "source_motion"])
def test_masks_take_the_source_inside_and_the_reference_outside_as_the_original(pipe, poses, noise, source,
                                                                                 reference):
    # The original's masks: the source frame's latents inside (the person), the technique's reference outside.
    masks = np.zeros((FRAMES, SIZE, SIZE), np.uint8)
    masks[:, :, : SIZE // 2] = 255  # the left half, on whole latent cells
    before, after = {}, {}
    generate(pipe, poses, noise, callback_on_step_end=record_latents(before))
    options = ConsistencyOptions(latent_reference=reference, reference_steps=1)
    generate(pipe, poses, noise, options=options, source_frames=source, masks=masks,
             callback_on_step_end=record_latents(after))
    level = pipe.scheduler.timesteps[1]
    encoded = pipe.encode_frames(source)
    inside = pipe.scheduler.add_noise(encoded, noise, torch.full((FRAMES,), int(level)))
    outside = before[0][:1].expand_as(before[0])  # frame 0 after step 0 (no latent difference with this mask)
    if reference == "source_motion":
        outside = outside + pipe.scheduler.alphas_cumprod[int(level)].sqrt() * (encoded - encoded[:1])
    left = torch.zeros_like(before[0])
    left[..., : SIZE // 4] = 1.0
    torch.testing.assert_close(after[0], left * inside + (1 - left) * outside, atol=1e-5, rtol=1e-5)


def test_reference_inside_mask_mode_leaves_the_outside_free(pipe, poses, noise):
    masks = np.zeros((FRAMES, SIZE, SIZE), np.uint8)
    masks[:, :, : SIZE // 2] = 255
    before, after = {}, {}
    generate(pipe, poses, noise, callback_on_step_end=record_latents(before))
    options = ConsistencyOptions(latent_reference="first_frame", reference_steps=1, mask_mode="reference_inside")
    generate(pipe, poses, noise, options=options, masks=masks, callback_on_step_end=record_latents(after))
    left = torch.zeros_like(before[0])
    left[..., : SIZE // 4] = 1.0
    expected = left * before[0][:1] + (1 - left) * before[0]
    torch.testing.assert_close(after[0], expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- (f), (g) motion


def test_zero_latent_difference_reproduces_the_keyframe(pipe, poses, noise):
    still = np.repeat(np.random.default_rng(5).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8), FRAMES, axis=0)
    copy = ConsistencyOptions(latent_reference="first_frame", reference_steps=2)
    motion = ConsistencyOptions(latent_reference="source_motion", reference_steps=2)
    torch.testing.assert_close(generate(pipe, poses, noise, options=motion, source_frames=still),
                               generate(pipe, poses, noise, options=copy), atol=1e-6, rtol=0)
    keyframe = generate(pipe, poses, noise, source_frames=still,
                        options=ConsistencyOptions(latent_reference="keyframe", reference_steps=STEPS))
    for k in range(1, FRAMES):
        assert torch.equal(keyframe[k], keyframe[0])


def test_latent_difference_joins_at_the_signal_weight_of_its_level(pipe, poses, noise, source):
    seen = {}
    options = ConsistencyOptions(latent_reference="source_motion", reference_steps=2, reference_schedule="last_step")
    generate(pipe, poses, noise, options=options, source_frames=source, callback_on_step_end=record_latents(seen))
    encoded = pipe.encode_frames(source)
    weight = pipe.scheduler.alphas_cumprod[int(pipe.scheduler.timesteps[2])].sqrt()
    torch.testing.assert_close(seen[1] - seen[1][:1], weight * (encoded - encoded[:1]), atol=1e-5, rtol=1e-5)


def test_keyframe_mode_conditions_only_the_keyframe_on_its_pose(pipe, poses, noise, source):
    other = poses.copy()
    other[2] = poses[0]
    for reference, pose_matters in (("keyframe", False), ("source_motion", True)):
        options = ConsistencyOptions(latent_reference=reference, reference_steps=1)
        a = generate(pipe, poses, noise, options=options, source_frames=source)
        b = generate(pipe, other, noise, options=options, source_frames=source)
        if pose_matters:
            assert_differ(a[2], b[2])
        else:
            torch.testing.assert_close(a[2], b[2], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------- prompts, knobs


def test_the_negative_prompt_reaches_the_model(pipe, poses, noise):
    without = generate(pipe, poses, noise)
    with_negative = generate(pipe, poses, noise, negative_prompt="wider")
    assert_differ(without, with_negative)
    with pytest.raises(InputError, match="guidance_scale"):
        generate(pipe, poses, noise, negative_prompt="wider", guidance_scale=1.0)


def test_latents_of_the_wrong_shape_are_refused(pipe, poses):
    with pytest.raises(InputError, match="latents must have shape"):
        generate(pipe, poses, torch.zeros(2, 4, 8, 8))


def test_progress_reports_each_stage(pipe, poses, source):
    calls = []
    pipe("lower", poses, num_inference_steps=STEPS, source_frames=source,
         options=ConsistencyOptions(latent_reference="source", reference_steps=1),
         progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert ("encode source", FRAMES, FRAMES) in calls
    assert [c for c in calls if c[0] == "denoise"] == [("denoise", i, STEPS) for i in range(STEPS + 1)]
    assert calls[-1] == ("decode", FRAMES, FRAMES)


def test_memory_plan_knobs_keep_the_result(pipe, poses, noise):
    from helpers import runtime

    reference = generate(pipe, poses, noise, output_type="float",
                         options=ConsistencyOptions(cross_frame_attention="first_frame"))
    saved = {"unet": dict(pipe.unet.attn_processors), "controlnet": dict(pipe.controlnet.attn_processors)}
    try:
        pipe.apply_memory_plan(runtime.memory_plan("cpu"), attention_slicing=True, ff_chunk=1)
        assert pipe.vae_batch_size == 2
        sliced = generate(pipe, poses, noise, output_type="float",
                          options=ConsistencyOptions(cross_frame_attention="first_frame"))
        np.testing.assert_allclose(sliced, reference, atol=1e-5)
        with pytest.raises(InputError, match="CUDA"):
            pipe.apply_memory_plan(offload="model")
    finally:
        pipe.vae_batch_size = 8
        pipe.unet.set_attn_processor(saved["unet"])
        pipe.controlnet.set_attn_processor(saved["controlnet"])
        pipe.apply_memory_plan(ff_chunk=None)


def test_an_overlong_prompt_is_reported_once_at_the_callers_line(pipe, poses, noise, caplog):
    with pytest.warns(UserWarning, match="tokens long; only the first 77 reach the model") as caught:
        pipe(" ".join(["dancer"] * 100), poses, num_inference_steps=1, latents=noise, output_type="float")
    assert [w.filename for w in caught] == [__file__]
    assert "Token indices sequence length" not in caplog.text  # not the tokenizer's log line as well
