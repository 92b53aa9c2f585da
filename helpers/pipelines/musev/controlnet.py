"""MuseV video-to-video and pose-to-video: a stock SD1.5 ``ControlNetModel`` guiding the MuseV video UNet.

The denoising loop is ``MuseVPipeline``'s (windows, condition frame, guidance, serial shots); this module adds, per
window, one ControlNet call on exactly the UNet's input (the clean condition latent in front of the scaled noisy
window, frames flattened, the text context repeated per frame) with the control images of those frames (the
condition frame's own control first), and hands its 12 down and 1 mid residuals to the UNet, which adds them to its
skips and mid-block output. As in the original, the condition frame gets residuals too.

``which2video`` (the original's names):

- ``"video_middle"`` (``video=None``): control frames only; the initial latents are the image-to-video noise;
- ``"video"`` (``video`` = RGB frames): the frames are VAE-encoded (posterior mean) and noised to the first
  timestep with the scheduler (``latents = v + sigma_max * noise``, a weak RGB prior), as the original does.

``resume_from`` / ``on_state`` work as in ``MuseVPipeline`` (:mod:`.loops`): a shot continued from its state takes
its latents from there, so its source frames are not encoded again.

>>> pipe = load_musev_pipeline("musev_referencenet_pose", controlnet="controlnet_openpose")
>>> out = pipe("a girl dancing", image=first_frame, control_frames=poses, time_size=12, motion_speed=1)
>>> out.frames.shape                                                      # condition frame + 12, uint8
(13, 512, 512, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers.errors import InputError
from helpers.pipelines.musev.noise import W_IND_NOISE, video_fusion_noise
from helpers.pipelines.musev.pipeline import MuseVPipeline, MuseVPipelineOutput, video_size


def controlnet_keep(num_steps: int, start: float, end: float) -> list[float]:
    """Per step 1.0 while the ControlNet is active (``start <= i/n`` and ``(i+1)/n <= end``), else 0.0.

    >>> controlnet_keep(4, 0.0, 0.5)
    [1.0, 1.0, 0.0, 0.0]
    """
    return [1.0 - float(i / num_steps < start or (i + 1) / num_steps > end) for i in range(num_steps)]


def check_control_request(*, time_size: int, n_batch: int, control_shape: tuple, video_shape: tuple | None,
                          height: int, width: int, controlnet_conditioning_scale: float,
                          control_guidance_start: float, control_guidance_end: float) -> None:
    """Raise ``InputError`` for control inputs that do not fit the request (before any model runs)."""
    frames = 1 + n_batch * time_size
    if len(control_shape) != 4 or control_shape[-1] != 3:
        raise InputError(f"control frames of shape {tuple(control_shape)}: give RGB frames as (T, H, W, 3) uint8")
    if control_shape[0] != frames:
        raise InputError(f"{control_shape[0]} control frames for {frames} video frames (the condition frame's "
                         f"control first, then {n_batch * time_size}): render the condition video at that length")
    if tuple(control_shape[1:3]) != (height, width):
        raise InputError(f"control frames are {control_shape[2]}×{control_shape[1]}, the video is {width}×{height}: "
                         "resize the condition video to the video size")
    if video_shape is not None and (len(video_shape) != 4 or tuple(video_shape) != (frames - 1, height, width, 3)):
        raise InputError(f"source video of shape {tuple(video_shape)}: give frames 1.. as "
                         f"({frames - 1}, {height}, {width}, 3) uint8 (the condition image replaces frame 0)")
    if controlnet_conditioning_scale < 0:
        raise InputError(f"controlnet_conditioning_scale is {controlnet_conditioning_scale}: use 0 or more (1.0)")
    if not 0.0 <= control_guidance_start < control_guidance_end <= 1.0:
        raise InputError(f"control guidance from {control_guidance_start} to {control_guidance_end}: use "
                         "0 <= start < end <= 1 (the original: 0.0 to 1.0)")


def _frames_uint8(frames, what: str) -> np.ndarray:
    """uint8 or float 0..255 frames ``(T, H, W, 3)`` (array or tensor) -> uint8 array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.number) or frames.min() < 0 or frames.max() > 255:
            raise InputError(f"{what}: give uint8 frames (or floats in 0..255)")
        frames = np.round(frames).astype(np.uint8)
    return frames


@dataclass
class ShotHooks:
    """What the ControlNet path adds to ``MuseVPipeline.__call__``: per shot, its initial latents (video mode)
    and the ControlNet residuals of every window."""

    pipe: MuseVControlNetPipeline
    control: torch.Tensor  # uint8 (1 + n_batch*T, 3, H, W) on the execution device
    video: np.ndarray | None  # uint8 (n_batch*T, H, W, 3)
    time_size: int
    scale: float
    keep: tuple[float, float]
    w_ind_noise: float
    encode_chunk_size: int
    trace: Callable[[str, object], None] | None = None

    @property
    def initial_latents(self):
        return None if self.video is None else self._video_latents

    def _video_latents(self, shot: int, shape: tuple, noise: torch.Tensor | None, num_steps: int, generator):
        """``scheduler.add_noise(VAE mean of the shot's source frames, video-fusion noise, first timestep)``: no
        condition prior and no ``init_noise_sigma`` factor, as the original's video mode."""
        pipe = self.pipe
        device = pipe._execution_device
        frames = self.video[shot * self.time_size: (shot + 1) * self.time_size]
        encoded = torch.cat([pipe.encode_images(frames[i: i + self.encode_chunk_size])
                             for i in range(0, len(frames), self.encode_chunk_size)])
        video_latents = encoded.permute(1, 0, 2, 3)[None].to(device)  # (1, 4, T, h, w)
        if self.trace is not None and shot == 0:  # tests
            self.trace("video_latents", video_latents)
        if noise is None:
            noise = video_fusion_noise(shape, w_ind_noise=self.w_ind_noise, generator=generator, device=device)
        pipe.scheduler.set_timesteps(num_steps, device=device)
        return pipe.scheduler.add_noise(video_latents, noise.to(device), pipe.scheduler.timesteps[:1])

    def window_inputs(self, shot: int, trace=None):
        """The per-window ControlNet call of one shot (``denoise``'s ``window_inputs``); ``trace`` sees the
        control indices of step 0 and the residuals of its first call."""
        pipe, first = self.pipe, shot * self.time_size
        calls: list[int] = []
        shot_control = self.control[first: first + self.time_size + 1]  # condition frame's control first
        start, end = self.keep

        def residuals(step: int, t, sample: torch.Tensor, text: torch.Tensor, window: list[int]) -> dict:
            scale = self.scale * controlnet_keep(len(pipe.scheduler.timesteps), start, end)[step]
            index = [0] + [j + 1 for j in window]
            if trace is not None and step == 0:
                trace(f"step0.window{len(calls)}.control_frame_index", torch.tensor(index))
            calls.append(step)
            if scale == 0:  # the residuals would be zero: skip the call
                return {}
            rows, _, frames, h, w = sample.shape
            flat = sample.permute(0, 2, 1, 3, 4).reshape(rows * frames, -1, h, w)
            dtype = pipe.controlnet.dtype
            cond = shot_control[index].to(dtype) / 255.0
            down, mid = pipe.controlnet(
                flat.to(dtype), t, encoder_hidden_states=text.to(dtype).repeat_interleave(frames, dim=0),
                controlnet_cond=cond.repeat(rows, 1, 1, 1), conditioning_scale=scale, guess_mode=False,
                return_dict=False)
            if trace is not None and len(calls) == 1:
                for i, residual in enumerate(down):
                    trace(f"step0.window0.controlnet.down_block_res_samples.{i}", residual)
                trace("step0.window0.controlnet.mid_block_res_sample", mid)
            return dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)

        return residuals


class MuseVControlNetPipeline(MuseVPipeline):
    """``MuseVPipeline`` plus a ``controlnet`` (stock diffusers ``ControlNetModel``, SD1.5): video-to-video with
    any ControlNet condition, pose-to-video with ``musev_referencenet_pose`` + OpenPose ControlNet."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, controlnet, referencenet=None,
                 image_encoder=None, feature_extractor=None, image_proj=None):
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, referencenet=referencenet,
                         image_encoder=image_encoder, feature_extractor=feature_extractor, image_proj=image_proj)
        self.register_modules(controlnet=controlnet)

    @torch.no_grad()
    def __call__(self, prompt: str | None = None, image=None, *, control_frames, video=None, time_size: int = 12,
                 n_batch: int = 1, height: int | None = None, width: int | None = None,
                 controlnet_conditioning_scale: float = 1.0, control_guidance_start: float = 0.0,
                 control_guidance_end: float = 1.0, w_ind_noise: float = W_IND_NOISE, decode_chunk_size: int = 8,
                 **kwargs) -> MuseVPipelineOutput:
        """Generate a video that follows ``control_frames``; the condition image is its first frame.

        Args:
            image: condition image (required; with ``musev_referencenet_pose`` also the reference/IP image unless
                ``refer_image`` / ``ip_adapter_image`` are given), or ``condition_latents``.
            control_frames: uint8 ``(1 + n_batch * time_size, H, W, 3)`` ControlNet input images at the video size,
                the condition frame's control first (the original: ``controlnet_condition_images`` +
                ``control_image``). Serial shot k (``n_batch`` > 1) uses frames ``k*T .. (k+1)*T``: its condition
                control is the previous shot's last control frame, as in the original.
            video: ``which2video="video"``: uint8 ``(n_batch * time_size, H, W, 3)``, the source RGB frames 1..
                (the condition image takes frame 0's place), VAE-encoded and noised; ``None``: ``"video_middle"``.
            controlnet_conditioning_scale, control_guidance_start, control_guidance_end: residual scale and the
                fraction of the steps during which the ControlNet runs (original: 1.0, 0.0, 1.0).
            latents: the initial noise ``(1, 4, time_size, h, w)`` (video mode: the noise added to the video
                latents at the first timestep).
            Everything else as ``MuseVPipeline.__call__``; ``motion_speed`` as given (the original's video-to-video
            passes the reader's frame step, 1, not 8).
        """
        if image is None and kwargs.get("condition_latents") is None:
            raise InputError("video-to-video needs a condition image (the first frame, whose appearance the video "
                             "keeps): pass image=")
        control = _frames_uint8(control_frames, "control_frames")
        source = None if video is None else _frames_uint8(video, "video")
        ratio = kwargs.pop("img_length_ratio", 1.0)  # the control frames set the size unless it is given
        height, width = video_size(control.shape[1:3] if control.ndim == 4 else None, height, width, ratio)
        check_control_request(time_size=time_size, n_batch=n_batch, control_shape=control.shape,
                              video_shape=None if source is None else source.shape, height=height, width=width,
                              controlnet_conditioning_scale=controlnet_conditioning_scale,
                              control_guidance_start=control_guidance_start, control_guidance_end=control_guidance_end)
        control_tensor = torch.from_numpy(np.ascontiguousarray(control)).permute(0, 3, 1, 2)
        hooks = ShotHooks(pipe=self, control=control_tensor.to(self._execution_device), video=source,
                          time_size=time_size, scale=controlnet_conditioning_scale,
                          keep=(control_guidance_start, control_guidance_end), w_ind_noise=w_ind_noise,
                          encode_chunk_size=decode_chunk_size, trace=kwargs.get("trace"))
        return super().__call__(prompt, image, time_size=time_size, n_batch=n_batch, height=height, width=width,
                                w_ind_noise=w_ind_noise, decode_chunk_size=decode_chunk_size, shot_hooks=hooks,
                                **kwargs)


def load_controlnet(controlnet, *, root=None, device=None, dtype: torch.dtype | None = None):
    """A ``ControlNetModel`` from a ``musev`` pack role (``"controlnet_openpose"``), a diffusers folder, or as
    given (an already loaded model)."""
    from diffusers import ControlNetModel

    from helpers import registry, weights

    if isinstance(controlnet, torch.nn.Module):
        return controlnet.to(device=device, dtype=dtype).eval()
    if isinstance(controlnet, str) and controlnet in registry.PACKS["musev"].roles:
        folder = weights.resolve("musev", controlnet, root)
    else:
        folder = Path(controlnet).expanduser()
        if not (folder / "config.json").is_file():
            roles = [r for r in registry.PACKS["musev"].roles if r.startswith("controlnet")]
            raise InputError(f"ControlNet not found: {controlnet} — give a diffusers ControlNetModel folder or a "
                             f"role of the musev pack ({', '.join(roles)})")
    model = ControlNetModel.from_pretrained(str(folder), torch_dtype=dtype)
    return model.to(device=device).eval()
