"""MuseV video-to-video / pose-to-video on tiny random-weight packs loaded through the real registry layout and
loaders: the ControlNet loader path, the control of the output, both ``which2video`` modes, guidance start/end,
parallel windows and serial shots, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.errors import InputError
from helpers.pipelines.musev.controlnet import MuseVControlNetPipeline, controlnet_keep
from helpers.pipelines.musev.pipeline import load_musev_pipeline
from helpers.testing.musev import write_tiny_musev_packs

SIZE = 64
SMALL = dict(num_inference_steps=2, context_frames=4, context_overlap=2, motion_speed=1, decode_chunk_size=4)


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    return write_tiny_musev_packs(tmp_path_factory.mktemp("hv_root"), pose=True, controlnets=("controlnet_openpose",))


@pytest.fixture(scope="module")
def pose_pipe(packs):
    return load_musev_pipeline("musev_referencenet_pose", controlnet="controlnet_openpose", root=packs, device="cpu",
                               dtype=torch.float32)


@pytest.fixture(scope="module")
def video_pipe(packs):
    return load_musev_pipeline("musev", controlnet="controlnet_openpose", root=packs, device="cpu",
                               dtype=torch.float32)


def _frames(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, SIZE, SIZE, 3)) * 255).astype(np.uint8)


class ControlNetCalls:
    """Records the ControlNet's conditioning images and scale, call by call."""

    def __init__(self, controlnet):
        self.calls: list[dict] = []
        self.handle = controlnet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append(dict(sample_rows=args[0].shape[0], cond=kwargs["controlnet_cond"].clone(),
                               scale=kwargs["conditioning_scale"]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _run(pipe, control, seed=0, **kwargs):
    kwargs = {**SMALL, **kwargs}
    kwargs.setdefault("time_size", len(control) - 1)
    return pipe("a person dancing", _frames(1, 99)[0], control_frames=control,
                generator=torch.Generator().manual_seed(seed), **kwargs)


def test_the_loader_builds_the_pose_to_video_pipeline_with_a_stock_sd15_controlnet(pose_pipe, packs):
    from diffusers import ControlNetModel

    assert isinstance(pose_pipe, MuseVControlNetPipeline) and isinstance(pose_pipe.controlnet, ControlNetModel)
    assert pose_pipe.uses_reference and pose_pipe.image_proj is not None
    with torch.device("meta"):  # the full-size SD1.5 ControlNet (control_v11p_sd15_openpose's config)
        full = ControlNetModel(cross_attention_dim=768)
    assert set(pose_pipe.controlnet.state_dict()) == set(full.state_dict())
    # the same weights through a folder path instead of the role name
    from helpers import weights

    by_path = load_musev_pipeline("musev", controlnet=weights.resolve("musev", "controlnet_openpose", packs),
                                  root=packs, device="cpu", dtype=torch.float32)
    assert torch.equal(by_path.controlnet.conv_in.weight, pose_pipe.controlnet.conv_in.weight)


def test_the_pose_model_refuses_to_run_without_a_controlnet(tmp_path):
    with pytest.raises(InputError, match="ControlNet") as info:
        load_musev_pipeline("musev_referencenet_pose", root=tmp_path, device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="ControlNet not found"):
        load_musev_pipeline("musev", controlnet=tmp_path / "nothing", root=write_tiny_musev_packs(tmp_path / "r"),
                            device="cpu", dtype=torch.float32)


def test_the_control_frames_steer_the_video_and_every_window_gets_them(pose_pipe):
    control = _frames(7, 1)
    with ControlNetCalls(pose_pipe.controlnet) as recorded:
        out = _run(pose_pipe, control)
    assert out.frames.shape == (7, SIZE, SIZE, 3) and out.frames.dtype == np.uint8
    # windows [0..3], [2..5] of the 6 generated frames, per step; condition frame's control first
    assert len(recorded.calls) == 2 * SMALL["num_inference_steps"]
    expected = torch.from_numpy(control).permute(0, 3, 1, 2).float() / 255
    for call, window in zip(recorded.calls, [[0, 1, 2, 3], [2, 3, 4, 5]] * 2):
        index = [0] + [j + 1 for j in window]
        assert call["sample_rows"] == 2 * len(index)  # both guidance halves
        assert torch.equal(call["cond"], torch.cat([expected[index]] * 2))
    other = _run(pose_pipe, _frames(7, 2), output_type="latent")
    assert not torch.allclose(other.latents, out.latents)
    # no residuals: the control frames do not matter
    off = [_run(pose_pipe, _frames(7, seed), controlnet_conditioning_scale=0.0, output_type="latent")
           for seed in (1, 2)]
    assert torch.equal(off[0].latents, off[1].latents)
    assert not torch.allclose(off[0].latents, out.latents)


def test_guidance_start_and_end_choose_the_steps_with_a_controlnet(pose_pipe):
    assert controlnet_keep(10, 0.0, 1.0) == [1.0] * 10
    assert controlnet_keep(4, 0.25, 0.75) == [0.0, 1.0, 1.0, 0.0]
    with ControlNetCalls(pose_pipe.controlnet) as recorded:
        _run(pose_pipe, _frames(5, 1), num_inference_steps=2, control_guidance_start=0.5,
             controlnet_conditioning_scale=0.7, output_type="latent")
    assert [call["scale"] for call in recorded.calls] == [0.7]  # step 1 of 2, one window


def test_video_mode_starts_from_the_noised_source_video(video_pipe):
    control = _frames(5, 1)
    seen: dict = {}
    base = _run(video_pipe, control, video=_frames(4, 5), output_type="latent", num_inference_steps=1,
                trace=lambda name, value: seen.__setitem__(name, value))
    other = _run(video_pipe, control, video=_frames(4, 6), output_type="latent", num_inference_steps=1)
    middle = _run(video_pipe, control, output_type="latent", num_inference_steps=1)
    # the VAE mean of the source frames, noised to the first sigma with the seeded video-fusion noise
    from helpers.pipelines.musev.noise import video_fusion_noise

    source = torch.from_numpy(_frames(4, 5)).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    expected = video_pipe.vae.encode(source).latent_dist.mean.permute(1, 0, 2, 3)[None] * 0.18215
    assert torch.allclose(seen["video_latents"], expected, atol=1e-5)
    noise = video_fusion_noise(tuple(expected.shape), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen["latents_init"], expected + seen["sigmas"][0] * noise, atol=1e-4)
    assert not torch.allclose(base.latents, other.latents)
    assert not torch.allclose(base.latents, middle.latents)
    assert torch.equal(base.latents[:, :, :1], middle.latents[:, :, :1])  # the same condition frame


def test_long_videos_parallel_windows_and_serial_shots(video_pipe):
    control = _frames(1 + 2 * 3, 3)
    with ControlNetCalls(video_pipe.controlnet) as recorded:
        serial = _run(video_pipe, control, time_size=3, n_batch=2, video=_frames(6, 4), context_frames=3,
                      context_overlap=0, num_inference_steps=1, output_type="latent")
    assert serial.latents.shape[2] == 7
    expected = torch.from_numpy(control).permute(0, 3, 1, 2).float() / 255
    assert len(recorded.calls) == 2  # one window per shot, one step
    # shot 1: its condition frame's control is shot 0's last control frame, then its own frames
    assert torch.equal(recorded.calls[1]["cond"][:4], expected[3:7])
    parallel = _run(video_pipe, _frames(10, 3), output_type="latent", num_inference_steps=1)
    assert parallel.latents.shape[2] == 10


@pytest.mark.parametrize("change, message", [
    (dict(control_frames=_frames(4, 0)), "control frames for"),
    (dict(control_frames=_frames(5, 0)[:, :32]), "the video is"),
    (dict(video=_frames(5, 0)), "source video"),
    (dict(controlnet_conditioning_scale=-1.0), "controlnet_conditioning_scale"),
    (dict(control_guidance_start=0.8, control_guidance_end=0.2), "control guidance"),
    (dict(image=None), "condition image"),
])
def test_bad_control_inputs_are_one_line_errors(video_pipe, change, message):
    kwargs = dict(image=_frames(1, 0)[0], control_frames=_frames(5, 0), time_size=4, height=SIZE, width=SIZE, **SMALL)
    kwargs.update(change)
    with pytest.raises(InputError, match=message) as info:
        video_pipe("a person dancing", **kwargs)
    assert "\n" not in str(info.value)
