"""ControlNeXt-SVD pipeline: window schedule rules, argument errors, and tiny packs loaded from the real layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import PIL.Image
import pytest
import torch

from helpers import runtime
from helpers.errors import InputError, MissingWeightsError
from helpers.pipelines.controlnext_svd import (
    ControlNeXtPaths,
    frame_counts,
    load_pipeline,
    validate_call_args,
    window_schedule,
)
from helpers.testing.controlnext import write_tiny_controlnext_packs

SIZE = 64  # pixels; latents are 8×8
CALL = dict(height=SIZE, width=SIZE, frames_per_window=4, overlap=2, num_inference_steps=2)



# -- window schedule -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames", [1, 2, 4, 5, 11, 24, 25, 49, 240])
@pytest.mark.parametrize(("window", "overlap"), [(24, 6), (14, 4), (4, 2), (4, 3), (2, 1)])
def test_windows_cover_every_frame_and_end_flush(num_frames, window, overlap):
    windows = window_schedule(num_frames, window, overlap)
    assert min(frame_counts(windows, num_frames)) >= 1
    assert windows[0].start == 0 and windows[-1].frames.stop == num_frames
    assert all(w.length == min(window, num_frames) for w in windows)
    starts = [w.start for w in windows]
    assert starts == sorted(set(starts))


def test_published_v2_schedule():
    assert [w.start for w in window_schedule(50, 24, 6)] == [0, 18, 26]
    assert len(window_schedule(240, 24, 6)) == 13
    later = window_schedule(50, 24, 6)[1]
    assert list(later.accumulated) == list(range(19, 42))  # the anchor slot (frame 18) is dropped


@pytest.mark.parametrize(
    ("window", "overlap", "message"),
    [(4, 4, "overlap must be between 1"), (4, 6, "overlap must be between 1"), (4, 0, "overlap must be between 1"),
     (1, 0, "at least 2")],
)
def test_bad_window_settings_are_input_errors(window, overlap, message):
    with pytest.raises(InputError, match=message):
        window_schedule(30, window, overlap)


@pytest.mark.parametrize(
    ("change", "message"),
    [(dict(height=1000), "multiples of 64"), (dict(width=32), "multiples of 64"), (dict(num_inference_steps=0), "steps"),
     (dict(guidance_scale=-1.0), "guidance"), (dict(decode_chunk_size=0), "decode chunk"),
     (dict(output_type="gif"), "output_type"), (dict(frames_per_window=6, overlap=6), "overlap")],
)
def test_bad_call_settings_are_input_errors_before_any_model(change, message):
    settings = dict(height=1024, width=576, frames_per_window=24, overlap=6, num_inference_steps=25,
                    guidance_scale=3.0, decode_chunk_size=2) | change
    with pytest.raises(InputError, match=message):
        validate_call_args(49, **settings)


# -- tiny packs, real loaders ----------------------------------------------------------------------------------------
def _inputs(num_frames: int = 5):
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (num_frames, SIZE, SIZE, 3), dtype=np.uint8)
    return reference, poses


@pytest.fixture(scope="module")
def packs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hv_root")
    write_tiny_controlnext_packs(root, "v2")
    write_tiny_controlnext_packs(root, "v1")
    return root


@pytest.fixture(scope="module")
def pipe_v2(packs_root):
    return load_pipeline(packs_root, version="v2", plan=runtime.memory_plan("cpu"))


def test_loads_from_the_pack_layout_through_the_weights_resolver(packs_root, pipe_v2):
    paths = ControlNeXtPaths.from_packs("v2", packs_root)
    assert paths.unet.name == "unet.fp16.safetensors" and paths.unet.is_file()  # converted from the tiny unet.bin
    assert paths.controlnext.name == "controlnet.fp16.safetensors"
    assert pipe_v2.version == "v2" and pipe_v2.unet.dtype == torch.float32  # fp32 on the CPU
    assert {p.device.type for p in pipe_v2.unet.parameters()} == {"cpu"}


def test_missing_packs_say_how_to_get_them(tmp_path):
    with pytest.raises(MissingWeightsError, match="controlnext_svd_v2"):
        load_pipeline(tmp_path, version="v2", plan=runtime.memory_plan("cpu"))


def test_generates_every_frame_reproducibly_with_progress(pipe_v2):
    reference, poses = _inputs(5)
    events = []
    first = pipe_v2(reference, poses, generator=torch.Generator().manual_seed(7), progress=lambda *e: events.append(e),
                    **CALL)
    again = pipe_v2(reference, poses, generator=torch.Generator().manual_seed(7), **CALL)
    assert first.frames.shape == (5, 3, SIZE, SIZE) and first.latents.shape == (1, 5, 4, 8, 8)
    assert torch.isfinite(first.frames).all() and 0 <= first.frames.min() and first.frames.max() <= 1
    assert torch.equal(first.frames, again.frames)
    windows = len(window_schedule(5, 4, 2))
    denoise = [e for e in events if e[0] == "denoise"]
    assert denoise == [("denoise", i + 1, 2 * windows) for i in range(2 * windows)]
    assert [e for e in events if e[0] == "decode"][-1] == ("decode", 3, 3)  # 5 frames in chunks of 2
    assert not pipe_v2.unet.down_blocks[0]._forward_hooks


def test_given_latents_make_the_result_independent_of_the_generator(pipe_v2):
    reference, poses = _inputs(3)
    latents = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    call = CALL | dict(noise_aug_strength=0.0, output_type="latent")
    a = pipe_v2(reference, poses, latents=latents, generator=torch.Generator().manual_seed(1), **call)
    b = pipe_v2(reference, poses, latents=latents, generator=torch.Generator().manual_seed(2), **call)
    assert a.frames is None and torch.equal(a.latents, b.latents)  # nothing else random once latents are given


def test_v2_window_anchor_shows_the_reference_pose(pipe_v2):
    reference, poses = _inputs(5)
    seen = []
    handle = pipe_v2.controlnext.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].clone()))
    try:
        pipe_v2(reference, poses, output_type="latent", **CALL | dict(num_inference_steps=1))
    finally:
        handle.remove()
    expected = torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255
    starts = [w.start for w in window_schedule(5, 4, 2)]
    assert len(seen) == len(starts)
    for window_poses, start in zip(seen, starts):
        assert torch.equal(window_poses[0], expected[0])  # slot 0: the reference pose, in every window
        assert torch.equal(window_poses[1:], expected[start + 1 : start + 4])


def test_memory_plan_knobs_are_applied(packs_root):
    plan = dataclasses.replace(runtime.memory_plan("cpu"), ff_chunk=1, vae_decode_chunk=1)
    pipe = load_pipeline(packs_root, version="v2", plan=plan)
    block = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    assert block._chunk_size == 1
    events = []
    reference, poses = _inputs(3)
    out = pipe(reference, poses, output_type="np", progress=lambda *e: events.append(e), **CALL)
    assert [e for e in events if e[0] == "decode"][-1] == ("decode", 3, 3)  # one frame per decode
    assert out.frames.shape == (3, SIZE, SIZE, 3)


def test_v1_pack_runs_without_the_anchor_replacement(packs_root):
    pipe = load_pipeline(packs_root, version="v1", plan=runtime.memory_plan("cpu"))
    assert pipe.version == "v1" and pipe.controlnext.scale.item() == pytest.approx(0.5)
    reference, poses = _inputs(5)
    seen = []
    pipe.controlnext.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].clone()))
    out = pipe(PIL.Image.fromarray(reference), [PIL.Image.fromarray(p) for p in poses], output_type="pil",
               **CALL | dict(num_inference_steps=1))
    assert len(out.frames) == 5 and out.frames[0].size == (SIZE, SIZE)
    expected = torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255
    later = window_schedule(5, 4, 2)[1]
    assert torch.equal(seen[1], expected[later.start : later.start + 4])  # v1 keeps the window's own first pose
    assert not pipe.unet.mid_block._forward_pre_hooks


@pytest.mark.parametrize(
    ("change", "message"),
    [(dict(num_frames=9), "only 5 pose frames"), (dict(frames_per_window=3, overlap=3), "overlap"),
     (dict(latents=torch.zeros(1, 4, 4, 8, 8)), "latents must have shape"), (dict(height=128), "render the poses")],
)
def test_bad_pipeline_arguments_are_input_errors(pipe_v2, change, message):
    reference, poses = _inputs(5)
    with pytest.raises(InputError, match=message):
        pipe_v2(reference, poses, **CALL | change)
