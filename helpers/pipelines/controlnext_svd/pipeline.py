"""ControlNeXt-SVD pipeline: a reference photo and a pose sequence in, the person moving along the poses out.

Stock Stable Video Diffusion parts (temporal VAE, CLIP vision encoder, Euler scheduler, SVD UNet) plus the
ControlNeXt pose encoder, driven by one explicit sliding-window loop written out below:

1. CLIP embedding of the reference image (zeros for the unconditional half) and its VAE latent (mode, unscaled;
   zeros for the unconditional half), repeated over all frames.
2. For every denoising step and every window (``windows.py``): the window's latents, its pose frames with slot 0
   replaced by the reference pose (v2), the pose encoder on the conditional pose window, the UNet with the pose
   features injected (``injection.py``; the unconditional half gets scale 0), classifier-free guidance.
3. The guided predictions of all windows are averaged frame by frame (anchor slots of later windows discarded), then
   one Euler step moves the whole sequence. Because the Euler step is linear in the model output, this equals the
   original's "step every window, then average" without resetting the scheduler between windows.
4. Decode in chunks of ``decode_chunk_size`` frames; each chunk is its own clip for the temporal decoder.

Resuming (``resume_from`` / ``on_state``, :mod:`helpers.pipelines.loop_state`): the state after a step is the
sequence's latents (the per-window prediction sums start from zero every step, so nothing else crosses a step); while
decoding, the raw decoder output of every finished chunk. A resumed call redoes the preparation (drawing the image
noise again from the freshly seeded generator), then continues after the saved step or decodes only the missing
chunks.

Pose frames stay on the CPU and travel to the device one window at a time.

>>> pipe = load_pipeline(version="v2")                               # see loading.py
>>> out = pipe(ref_image, pose_frames, num_inference_steps=25, generator=torch.Generator().manual_seed(0))
>>> out.frames.shape                                                   # [N, 3, H, W] floats in [0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from helpers import runtime
from helpers.errors import InputError

from ..loop_state import LoopState, StateCallback, resume_loop
from ..sizes import size_multiple
from .encoder import ControlNeXtEncoder
from .injection import inject_control
from .windows import frame_counts, validate_window_args, window_schedule

# (fps − 1, motion bucket id, noise augmentation) as the UNet sees them. The released pipelines ignore their fps /
# motion_bucket_id / noise_aug_strength arguments here and always use these values.
ORIGINAL_TIME_IDS = (6.0, 128.0, 0.02)

# The published settings of each release (v2: the README's script; v1: its run script).
DEFAULTS = {
    "v2": dict(height=1024, width=576, frames_per_window=24, overlap=6, guidance_scale=3.0, decode_chunk_size=2),
    "v1": dict(height=768, width=512, frames_per_window=14, overlap=4, guidance_scale=3.5, decode_chunk_size=4),
}
OUTPUT_TYPES = ("pt", "np", "pil", "latent")

ProgressFn = Callable[[str, int, int], None]


@dataclass
class ControlNeXtSVDOutput(BaseOutput):
    """``frames``: [N, 3, H, W] floats in [0, 1] ("pt"), [N, H, W, 3] ("np"), PIL images ("pil") or None ("latent").
    ``latents``: the final latents [1, N, 4, H/8, W/8], the decoder's input."""

    frames: torch.Tensor | np.ndarray | list[PIL.Image.Image] | None
    latents: torch.Tensor


def validate_call_args(
    num_frames: int,
    *,
    height: int,
    width: int,
    frames_per_window: int,
    overlap: int,
    num_inference_steps: int,
    guidance_scale: float,
    decode_chunk_size: int,
    output_type: str = "pt",
    min_guidance_scale: float | None = None,
    size_multiple: int = 64,
) -> None:
    """Check generation settings without touching a model; raises ``InputError`` with what to change.

    ``size_multiple``: what height and width must divide by; the pipeline passes the one of its loaded models
    (:func:`helpers.pipelines.sizes.size_multiple`; 64 for SVD-XT).

    >>> validate_call_args(49, height=1024, width=576, frames_per_window=24, overlap=6, num_inference_steps=25,
    ...                    guidance_scale=3.0, decode_chunk_size=2)
    """
    m = size_multiple
    if height < m or width < m or height % m or width % m:
        raise InputError(f"height and width must be multiples of {m} (at least {m}) for this model, got "
                         f"{height}×{width}: try {max(m, height - height % m)}×{max(m, width - width % m)}")
    validate_window_args(num_frames, frames_per_window, overlap)
    if num_inference_steps < 1:
        raise InputError(f"the number of denoising steps must be at least 1, got {num_inference_steps}")
    if guidance_scale < 0 or (min_guidance_scale is not None and min_guidance_scale < 0):
        raise InputError(f"guidance scale must be ≥ 0, got {guidance_scale} (minimum {min_guidance_scale})")
    if decode_chunk_size < 1:
        raise InputError(f"decode chunk size must be at least 1 frame, got {decode_chunk_size}")
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")


def pose_frames_to_tensor(
    frames, height: int, width: int, dtype: torch.dtype = torch.float32, limit: int | None = None
) -> torch.Tensor:
    """Pose frames as a CPU tensor [N, 3, H, W] in [0, 1] (the first ``limit`` frames, in ``dtype``).

    Accepts a sequence of PIL images or H×W×3 uint8 arrays, a uint8 array [N, H, W, 3], or a float tensor
    [N, 3, H, W] already in [0, 1]. The frames must already have the output size (render the poses at it). Frames
    are converted one at a time, so a long fp16 sequence never exists in float32 as a whole.
    """
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise InputError(f"pose frames tensor must be [N, 3, H, W] in [0, 1], got shape {tuple(frames.shape)}")
        frames = frames[:limit]
        size = tuple(frames.shape[-2:])
    else:
        frames = list(frames)[:limit]
        if not frames:
            raise InputError("no pose frames given: render at least the reference pose")
        first = np.asarray(frames[0])
        size = first.shape[:2]
    if size != (height, width):
        raise InputError(
            f"pose frames are {size[0]}×{size[1]} but the video is {height}×{width}: render the poses at the output size"
        )
    out = torch.empty(len(frames), 3, height, width, dtype=dtype)
    for index, frame in enumerate(frames):
        if isinstance(frame, torch.Tensor):
            out[index] = frame.detach().to("cpu", torch.float32)
            continue
        array = np.asarray(frame.convert("RGB") if isinstance(frame, PIL.Image.Image) else frame)
        if array.shape != (height, width, 3) or array.dtype != np.uint8:
            raise InputError(
                f"pose frame {index} must be a {height}×{width} RGB uint8 image, got {array.shape} {array.dtype}"
            )
        out[index] = torch.tensor(array).permute(2, 0, 1).float() / 255.0  # copies: PIL arrays are read-only
    return out


def as_pil_image(image) -> PIL.Image.Image:
    """The reference image as an RGB PIL image (the CLIP branch resizes PIL inputs to 224×224, as the original)."""
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError(f"the reference image must be an RGB PIL image or H×W×3 uint8 array, got {array.shape}")
    return PIL.Image.fromarray(array)


class ControlNeXtSVDPipeline(StableVideoDiffusionPipeline):
    """Stable Video Diffusion with a ControlNeXt pose encoder (v1 or v2, taken from the encoder's config).

    Reuses the stock SVD pipeline's image encoding (``_encode_image``, ``_encode_vae_image``) and replaces
    ``__call__`` with the ControlNeXt sliding-window loop. The pose encoder is small and stays on the execution
    device under model CPU offload.
    """

    _exclude_from_cpu_offload = ["controlnext"]

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        unet: UNetSpatioTemporalConditionModel,
        scheduler: EulerDiscreteScheduler,
        feature_extractor: CLIPImageProcessor,
        controlnext: ControlNeXtEncoder,
    ):
        super().__init__(vae, image_encoder, unet, scheduler, feature_extractor)
        self.register_modules(controlnext=controlnext)
        # Upper bound on frames decoded at once, set from a memory plan (None: the release's setting).
        self.max_decode_chunk: int | None = None

    @property
    def version(self) -> str:
        """'v1' or 'v2': decides the injection site, the strength rule and the window anchor."""
        return self.controlnext.config.variant

    def _encode_pose_window(
        self, poses: torch.Tensor, timestep: torch.Tensor, guided: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose features for one UNet call and the raw per-sample scale (unconditional half first, scale 0).

        The encoder normalises per sample, so running it on the conditional poses once and reusing the result for
        the unconditional half is exact (both halves see the same poses).
        """
        features = self.controlnext(poses[None], timestep)
        frames = features.shape[0]
        scale = self.controlnext.scale.detach().float().reshape(1).expand(frames).to(features.device)
        if guided:
            features = torch.cat([features, features])
            scale = torch.cat([torch.zeros_like(scale), scale])
        return features, scale

    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray,
        control_frames: Sequence[PIL.Image.Image] | np.ndarray | torch.Tensor,
        *,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        frames_per_window: int | None = None,
        overlap: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        min_guidance_scale: float | None = None,
        noise_aug_strength: float = 0.02,
        added_time_ids: Sequence[float] = ORIGINAL_TIME_IDS,
        decode_chunk_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pt",
        progress: ProgressFn | None = None,
        callback_on_step_end: Callable | None = None,
        resume_from: LoopState | None = None,
        on_state: StateCallback | None = None,
    ) -> ControlNeXtSVDOutput:
        """Generate ``num_frames`` frames (default: one per control frame) that follow ``control_frames``.

        ``control_frames[0]`` is the reference pose (the pose of ``image``), as in the originals. Settings left at
        None take the release's published values (``DEFAULTS[version]``; the decode chunk is also capped by
        ``max_decode_chunk``, which a memory plan sets). ``added_time_ids`` is (fps − 1, motion
        bucket, noise augmentation) as fed to the UNet; the originals always use ``ORIGINAL_TIME_IDS``.
        ``guidance_scale`` is constant over frames (the originals' runs) unless ``min_guidance_scale`` is given: then
        window slot k gets the k-th value of linspace(min, guidance_scale, window length), as the originals'
        pipelines do. Guidance runs when ``guidance_scale`` is ≥ 1 (as in the originals).
        ``latents`` are standard-normal [1, N, 4, H/8, W/8], scaled by the scheduler's initial sigma here.
        ``progress(stage, done, total)`` is called after every window of every step ("denoise", total = steps ×
        windows) and every decoded chunk ("decode"). ``callback_on_step_end(pipe, step, t, {"latents": ...})`` may
        return a dict with new "latents".
        ``resume_from``: continue an interrupted call with the same arguments from its last state (after a step, or
        part way through decoding); ``on_state(state)`` is called after every step and every decoded chunk with the
        live state (see :mod:`helpers.pipelines.loop_state`). The result equals the uninterrupted call's.
        """
        version = self.version
        settings = DEFAULTS[version]
        height = height or settings["height"]
        width = width or settings["width"]
        frames_per_window = frames_per_window or settings["frames_per_window"]
        overlap = overlap if overlap is not None else settings["overlap"]
        guidance_scale = settings["guidance_scale"] if guidance_scale is None else guidance_scale
        if decode_chunk_size is None:
            decode_chunk_size = min(settings["decode_chunk_size"], self.max_decode_chunk or settings["decode_chunk_size"])

        available = len(control_frames)
        num_frames = num_frames or available
        if num_frames > available:
            raise InputError(f"asked for {num_frames} frames but only {available} pose frames were given")
        validate_call_args(
            num_frames, height=height, width=width, frames_per_window=frames_per_window, overlap=overlap,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            decode_chunk_size=decode_chunk_size, output_type=output_type, min_guidance_scale=min_guidance_scale,
            size_multiple=size_multiple(self.vae, self.unet),
        )
        # Kept on the CPU in the encoder's dtype; one window at a time travels to the device.
        poses = pose_frames_to_tensor(control_frames, height, width, self.controlnext.dtype, limit=num_frames)
        if len(added_time_ids) != 3:
            raise InputError("added_time_ids needs 3 numbers: (fps − 1, motion bucket id, noise augmentation)")
        latent_shape = (1, num_frames, 4, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != latent_shape:
            raise InputError(f"latents must have shape {list(latent_shape)}, got {list(latents.shape)}")
        reference = as_pil_image(image)

        device = self._execution_device
        guided = guidance_scale >= 1.0
        windows = window_schedule(num_frames, frames_per_window, overlap)

        # 1. Reference image: CLIP embedding and VAE latent (the unconditional half of each is zeros).
        image_embeddings = self._encode_image(reference, device, 1, guided)
        dtype = self.unet.dtype
        pixels = self.video_processor.preprocess(reference, height=height, width=width).to(device)
        # Random numbers in the originals' order: the image noise first, then the initial latents.
        pixels = pixels + noise_aug_strength * randn_tensor(
            pixels.shape, generator=generator, device=device, dtype=pixels.dtype
        )
        vae_dtype = self.vae.dtype
        upcast_vae = runtime.vae_upcast(vae_dtype, self.vae.config.force_upcast)
        if upcast_vae:
            self.vae.to(dtype=torch.float32)
        image_latents = self._encode_vae_image(pixels, device, 1, guided).to(dtype)
        if upcast_vae:
            self.vae.to(dtype=vae_dtype)
        image_latents = image_latents.unsqueeze(1).expand(-1, num_frames, -1, -1, -1)
        image_embeddings = image_embeddings.to(dtype)
        time_ids = torch.tensor([list(added_time_ids)], dtype=dtype, device=device).repeat(2 if guided else 1, 1)

        # 2. Schedule and initial noise. The latents stay float32 between steps (they are small); the models run in
        # their own dtype.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if latents is None:
            latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma
        steps = len(self.scheduler.timesteps)
        start = 0
        if resume_from is not None:
            # Everything above ran again (the image noise drawn again identically); the loop continues from the
            # saved latents, which are already scaled.
            latents = resume_loop(resume_from, steps, latent_shape, scheduler=self.scheduler, generator=generator,
                                  device=device).to(device=device, dtype=torch.float32)
            start = steps if resume_from.phase == "decode" else resume_from.step
        counts = torch.tensor(frame_counts(windows, num_frames), device=device, dtype=torch.float32)
        counts = counts[None, :, None, None, None]
        slot_guidance = torch.linspace(
            guidance_scale if min_guidance_scale is None else min_guidance_scale, guidance_scale, windows[0].length
        ).to(device=device, dtype=dtype)[None, :, None, None, None]

        # 3. Denoising: every window of a step sees the same latents; average the guided predictions, step once.
        total = steps * len(windows)
        done = start * len(windows)
        for step_index, t in enumerate(self.scheduler.timesteps):
            if step_index < start:
                continue
            prediction_sum = torch.zeros(latents.shape, device=device, dtype=torch.float32)
            for window in windows:
                frames = slice(window.start, window.start + window.length)
                window_poses = poses[frames].clone()
                if version == "v2":
                    window_poses[0] = poses[0]  # the anchor slot always shows the reference pose
                window_poses = window_poses.to(device, non_blocking=True)
                features, scale = self._encode_pose_window(window_poses, t, guided)

                model_input = latents[:, frames]
                model_input = torch.cat([model_input, model_input]) if guided else model_input
                model_input = self.scheduler.scale_model_input(model_input, t).to(dtype)
                model_input = torch.cat([model_input, image_latents[:, frames]], dim=2)
                with inject_control(self.unet, version, features.to(dtype), scale):
                    noise_pred = self.unet(
                        model_input, t, encoder_hidden_states=image_embeddings, added_time_ids=time_ids,
                        return_dict=False,
                    )[0]
                if guided:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + slot_guidance * (cond - uncond)

                first_kept = window.accumulated.start - window.start
                kept = slice(window.accumulated.start, window.accumulated.stop)
                prediction_sum[:, kept] += noise_pred[:, first_kept:].float()
                done += 1
                if progress is not None:
                    progress("denoise", done, total)

            latents = self.scheduler.step(prediction_sum / counts, t, latents).prev_sample
            if callback_on_step_end is not None:
                returned = callback_on_step_end(self, step_index, t, {"latents": latents}) or {}
                latents = returned.get("latents", latents)
            if on_state is not None:
                on_state(LoopState.capture(step_index + 1, steps, latents, scheduler=self.scheduler,
                                           generator=generator))

        frames_out = None
        if output_type != "latent":
            report = None
            if on_state is not None:
                def report(chunks: list[torch.Tensor]) -> None:
                    on_state(LoopState.capture(steps, steps, latents, generator=generator, decoded=chunks))
            resumed_chunks = resume_from.decoded if resume_from is not None else ()
            frames_out = self._decode(latents, decode_chunk_size, progress, resumed_chunks, report)
            if output_type == "np":
                frames_out = frames_out.permute(0, 2, 3, 1).numpy()
            elif output_type == "pil":
                frames_out = [
                    PIL.Image.fromarray(f) for f in (frames_out.permute(0, 2, 3, 1) * 255).round().byte().numpy()
                ]
        self.maybe_free_model_hooks()
        return ControlNeXtSVDOutput(frames=frames_out, latents=latents)

    def _decode(
        self,
        latents: torch.Tensor,
        chunk_size: int,
        progress: ProgressFn | None,
        resumed: Sequence[torch.Tensor] = (),
        on_chunk: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> torch.Tensor:
        """Decode [1, N, 4, h, w] latents chunk by chunk into CPU float32 frames [N, 3, H, W] in [0, 1].

        ``resumed``: the raw decoder outputs of the first chunks (an interrupted call's), used instead of decoding
        them again. ``on_chunk(chunks)`` is called after every newly decoded chunk with the raw outputs of all chunks
        so far, on the CPU in the decoder's dtype (they are kept only when it is given).
        """
        scaled = latents[0] / self.vae.config.scaling_factor
        count = scaled.shape[0]
        starts = range(0, count, chunk_size)
        if len(resumed) > len(starts):
            raise ValueError(f"the saved state has {len(resumed)} decoded chunks, this call decodes {len(starts)}")
        size = (scaled.shape[-2] * self.vae_scale_factor, scaled.shape[-1] * self.vae_scale_factor)
        frames = torch.empty(count, 3, *size, dtype=torch.float32)  # filled chunk by chunk: no list to concatenate
        raw_chunks = list(resumed)
        for index, start in enumerate(starts):
            stop = min(start + chunk_size, count)
            if index < len(resumed):
                decoded = resumed[index]
                if tuple(decoded.shape) != (stop - start, 3, *size):
                    raise ValueError(f"saved decoded chunk {index} has shape {list(decoded.shape)}, this call "
                                     f"decodes {[stop - start, 3, *size]}")
            else:
                chunk = scaled[start:stop].to(self.vae.dtype)
                decoded = self.vae.decode(chunk, num_frames=chunk.shape[0]).sample
                if on_chunk is not None:
                    raw_chunks.append(decoded.cpu())
                    on_chunk(raw_chunks)
            # elementwise and exact up to the last rounding: the same bits from a saved CPU chunk as on the device
            frames[start:stop] = (decoded.float() / 2 + 0.5).clamp(0, 1).cpu()
            if progress is not None and index >= len(resumed):
                progress("decode", index + 1, len(starts))
        return frames
