"""Zero-shot pose-controlled video: Stable Diffusion 2.1 + an OpenPose ControlNet, no training, all frames in one batch.

Temporal consistency comes only from how the frames are denoised together (see :mod:`.options`): shared initial
noise, cross-frame attention, and latent references (another frame's latents, the source video's latents, or the
source's latent differences) applied during the first denoising steps.

>>> from helpers.pipelines.zero_shot_pose import ConsistencyOptions, load_zero_shot_pipeline
>>> pipe = load_zero_shot_pipeline()                                    # sd21 + controlnet_sd21_openpose packs
>>> out = pipe("a golfer in a red shirt, best quality", pose_frames,    # [F, H, W, 3] uint8 OpenPose renders
...            negative_prompt="bad anatomy, blurry", num_inference_steps=50,
...            options=ConsistencyOptions(noise="shared", latent_reference="first_frame", reference_steps=9),
...            generator=torch.Generator().manual_seed(1887))
>>> out.frames.shape                                                    # [F, H, W, 3] uint8

Components are the stock ones of ``StableDiffusionControlNetPipeline`` (UNet2DConditionModel, ControlNetModel,
AutoencoderKL, CLIP text encoder and tokenizer) with a DDIM scheduler taken from the base model's own config, so
the prediction type (epsilon for SD2.1-base, v for SD2.1-768) follows the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from helpers.errors import InputError

from ..loop_state import LoopState, StateCallback, resume_loop
from ..sizes import size_multiple
from .attention import CrossFrameAttnProcessor, cross_frame_attention
from .inputs import as_frame_array, as_mask_array, check_call_inputs
from .latents import (
    initial_noise,
    masks_to_latent_grid,
    motion_reference,
    noised_to_level,
    pull_towards,
    pull_towards_previous,
    signal_weight,
    source_inside,
)
from .options import ConsistencyOptions

Progress = Callable[[str, int, int], None]
StepCallback = Callable[[Any, int, int, dict], "dict | None"]


@dataclass
class ZeroShotPoseOutput:
    """What a call returns.

    Attributes:
        frames: ``[F, H, W, 3]`` uint8 (``output_type="uint8"``), ``[F, H, W, 3]`` float32 in [0, 1] (``"float"``), or
            the final latents ``[F, C, h, w]`` (``"latent"``).
        frame_steps: UNet evaluations per frame summed over the clip (without guidance doubling). Lower than
            ``F × steps`` when frames whose work would be overwritten by a full copy were skipped.
    """

    frames: np.ndarray | torch.Tensor
    frame_steps: int


class ZeroShotPosePipeline(DiffusionPipeline):
    """Pose-conditioned text-to-video from an image model by latent manipulation only.

    One call denoises every frame of the clip in one batch (``[unconditional frames, conditional frames]`` with
    guidance), with its own readable loop: :meth:`__call__`.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"  # the ControlNet gets its own offload hook (it runs per step)

    def __init__(self, vae, text_encoder, tokenizer, unet, controlnet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              controlnet=controlnet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.vae_batch_size = 8  # frames per VAE encode/decode call (the memory plan may lower it)

    # ------------------------------------------------------------------------------------------------ memory plan

    def apply_memory_plan(self, plan=None, *, offload: str | None = None, vae_batch_size: int | None = None,
                          attention_slicing: bool | None = None, ff_chunk: int | None = None) -> ZeroShotPosePipeline:
        """Apply a :class:`helpers.runtime.MemoryPlan` (or its knobs one by one; explicit keywords win).

        - ``offload``: ``"none"``, ``"model"`` (one component on the GPU at a time) or ``"sequential"`` (layer by
          layer); offloading needs CUDA.
        - ``vae_batch_size``: frames per VAE call (VAE slicing).
        - ``attention_slicing``: slice the text cross-attention (cross-frame self-attention uses SDPA, whose
          memory-efficient kernels already avoid the full attention matrix).
        - ``ff_chunk``: run the transformer feed-forward layers this many batch entries at a time (None: all).

        >>> pipe.apply_memory_plan(runtime.memory_plan())
        """
        offload = offload or getattr(plan, "offload", "none")
        vae_batch_size = vae_batch_size or getattr(plan, "vae_decode_chunk", None)
        attention_slicing = attention_slicing if attention_slicing is not None else getattr(plan, "attention_slicing",
                                                                                             False)
        ff_chunk = ff_chunk if ff_chunk is not None else getattr(plan, "ff_chunk", None)
        if offload not in ("none", "model", "sequential"):
            raise InputError(f"offload must be none, model or sequential — not {offload!r}")
        if offload != "none" and not torch.cuda.is_available():
            raise InputError("CPU offload needs a CUDA GPU: use offload='none' on this machine")
        if vae_batch_size is not None:
            if vae_batch_size < 1:
                raise InputError(f"vae_batch_size must be at least 1, not {vae_batch_size}")
            self.vae_batch_size = int(vae_batch_size)
        if attention_slicing:
            self.unet.set_attention_slice("auto")
            self.controlnet.set_attention_slice("auto")
        for model in (self.unet, self.controlnet):
            for module in model.modules():
                if hasattr(module, "set_chunk_feed_forward"):
                    module.set_chunk_feed_forward(ff_chunk, dim=0)
        if offload == "model":
            self.enable_model_cpu_offload()
        elif offload == "sequential":
            self.enable_sequential_cpu_offload()
        return self

    # ------------------------------------------------------------------------------------------------ the loop

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        poses: np.ndarray | Sequence,
        *,
        negative_prompt: str | None = None,
        options: ConsistencyOptions | None = None,
        source_frames: np.ndarray | Sequence | None = None,
        masks: np.ndarray | Sequence | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float = 1.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "uint8",
        skip_overwritten_frames: bool = True,
        progress: Progress | None = None,
        callback_on_step_end: StepCallback | None = None,
        resume_from: LoopState | None = None,
        on_state: StateCallback | None = None,
    ) -> ZeroShotPoseOutput:
        """Generate one frame per pose, all frames denoised together.

        Args:
            prompt / negative_prompt: the text for every frame; the negative prompt is the unconditional half of
                classifier-free guidance (so it needs ``guidance_scale > 1``).
            poses: ``[F, H, W, 3]`` uint8 OpenPose-style renders (or a list of images), all of one size, a multiple
                of 8; it sets the output size.
            options: the consistency techniques (:class:`ConsistencyOptions`); default: the per-frame baseline.
            source_frames: ``[F, H', W', 3]`` uint8 frames of the source video, needed by the references
                ``"source"``, ``"source_motion"`` and ``"keyframe"``; centre-cropped and resized to the pose size.
            masks: optional ``[F, H, W]`` per-frame masks (white/1 = the person's silhouette), resized to the latent
                grid by area averaging. ``options.mask_mode="source_inside"`` (default, the original's): the source
                latents inside, the reference outside (needs ``source_frames``); ``"reference_inside"``: the
                reference inside only.
            generator / latents: the starting noise is drawn from ``generator`` per ``options.noise``, unless
                ``latents`` (unit-variance noise, ``[F, C, h, w]`` or ``[1, C, h, w]`` for all frames) is given. It is
                also the noise the source latents are noised with.
            output_type: ``"uint8"``, ``"float"`` or ``"latent"``.
            skip_overwritten_frames: when a reference copies fully (strength 1, no mask), frames whose work would be
                replaced are not computed during the reference steps (same result, fewer UNet evaluations).
            progress: ``progress(stage, done, total)`` with stages ``"encode source"``, ``"denoise"``, ``"decode"``.
            callback_on_step_end: diffusers-style ``callback(pipe, step_index, timestep, {"latents": ...})`` after
                each step and its latent reference; a returned ``{"latents": ...}`` replaces the latents.
            resume_from / on_state: continue an interrupted call, and report the state after every step and every
                decoded chunk (:mod:`helpers.pipelines.loop_state`). The starting noise, the source latents and the
                text are prepared again (the same for the same inputs and seed); the loop carries only its latents
                and its count of frame evaluations (``extra["frame_steps"]``) from one step to the next. Decoded
                chunks are kept as the output's frames (uint8 for ``"uint8"``: a quarter of float32).
        """
        options = options or ConsistencyOptions()
        check_call_inputs(prompt=prompt, negative_prompt=negative_prompt, poses=poses, options=options,
                          source_frames=source_frames, masks=masks, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, controlnet_conditioning_scale=controlnet_conditioning_scale,
                          output_type=output_type, size_multiple=size_multiple(self.vae))
        report = progress or (lambda stage, done, total: None)
        device = self._execution_device
        pose_array = as_frame_array(poses, "poses")
        num_frames, height, width = pose_array.shape[:3]
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        latent_shape = (self.unet.config.in_channels, *latent_size)
        noise = self._starting_noise(latents, num_frames, latent_shape, options, generator).to(device)

        source_latents = None
        if options.needs_source_frames(masked=masks is not None):
            source_latents = self.encode_frames(as_frame_array(source_frames, "source_frames", size=(width, height)),
                                                progress=report)
        frame_masks = None
        if masks is not None:
            frame_masks = masks_to_latent_grid(torch.from_numpy(as_mask_array(masks)), latent_size).to(device)

        text = self._encode_prompts(prompt, negative_prompt if guidance_scale > 1 else None, guidance_scale, device)
        pose_images = torch.from_numpy(pose_array).to(device).permute(0, 3, 1, 2).float() / 255.0
        control_scales = torch.full((num_frames,), float(controlnet_conditioning_scale), device=device)
        if options.pose_on_keyframe_only:
            control_scales[1:] = 0.0  # later frames follow the keyframe's latents and the source motion only

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        latents = noise * self.scheduler.init_noise_sigma
        skipped_steps, followers = self._skippable_work(options, frame_masks, num_frames, skip_overwritten_frames)
        everyone, followers = torch.arange(num_frames, device=device), followers.to(device)
        frame_steps, start, decoded = 0, 0, []
        if resume_from is not None:
            saved = resume_loop(resume_from, len(timesteps), tuple(latents.shape), scheduler=self.scheduler,
                                generator=generator, device=device)
            # the loop's own latents (not scaled again), copied: the loop writes into them
            latents = saved.to(device=device, dtype=latents.dtype, copy=True)
            frame_steps = int(resume_from.extra.get("frame_steps", 0))
            start = resume_from.step
            decoded = [chunk.numpy() for chunk in resume_from.decoded]

        def state(step: int, chunks: Sequence[np.ndarray] = ()) -> LoopState:
            return LoopState.capture(step, len(timesteps), latents, scheduler=self.scheduler, generator=generator,
                                     extra={"frame_steps": torch.tensor(frame_steps)},
                                     decoded=[torch.from_numpy(c) for c in chunks])

        if resume_from is None or resume_from.phase == "denoise":
            with cross_frame_attention([self.unet, self.controlnet], options.cross_frame_attention,
                                       num_frames) as attention:
                report("denoise", start, len(timesteps))
                for i, t in enumerate(timesteps):
                    if i < start:
                        continue
                    active = everyone[~followers] if i < skipped_steps else everyone
                    if len(active):
                        prediction = self._predict(latents[active], t, text, pose_images[active],
                                                   control_scales[active], guidance_scale, attention)
                        latents[active] = self.scheduler.step(prediction, t, latents[active]).prev_sample
                        frame_steps += len(active)
                    if options.reference_applies_after(i):
                        level = timesteps[i + 1] if i + 1 < len(timesteps) else None
                        latents = self._pull_towards_reference(latents, options, level, source_latents, noise,
                                                               frame_masks)
                    if callback_on_step_end is not None:
                        returned = callback_on_step_end(self, i, t, {"latents": latents})
                        if returned and "latents" in returned:
                            latents = returned["latents"]
                    if on_state is not None:
                        on_state(state(i + 1))
                    report("denoise", i + 1, len(timesteps))

        if output_type == "latent":
            frames = latents
        else:
            on_chunk = None if on_state is None else (lambda chunks: on_state(state(len(timesteps), chunks)))
            frames = self.decode_latents(latents, progress=report, decoded=decoded, on_chunk=on_chunk,
                                         uint8=output_type == "uint8")
        self.maybe_free_model_hooks()
        return ZeroShotPoseOutput(frames=frames, frame_steps=frame_steps)

    # ------------------------------------------------------------------------------------------------ the pieces

    def _starting_noise(self, latents: torch.Tensor | None, num_frames: int, latent_shape: tuple[int, int, int],
                        options: ConsistencyOptions, generator: torch.Generator | None) -> torch.Tensor:
        if latents is None:
            return initial_noise(num_frames, latent_shape, mode=options.noise,
                                 independence=options.noise_independence, generator=generator)
        if latents.ndim != 4 or tuple(latents.shape[1:]) != latent_shape or latents.shape[0] not in (1, num_frames):
            raise InputError(f"latents must have shape [{num_frames} or 1, {', '.join(map(str, latent_shape))}] for "
                             f"these poses, not {list(latents.shape)}: leave latents empty to draw them")
        return latents.float().expand(num_frames, *latent_shape).clone()

    @staticmethod
    def _skippable_work(options: ConsistencyOptions, masks: torch.Tensor | None, num_frames: int,
                        enabled: bool) -> tuple[int, torch.Tensor]:
        """How many leading steps some frames may skip, and which frames (a bool per frame).

        A full copy (strength 1, no mask) after step k−1 throws away everything the copied frames computed in steps
        0…k−1, whatever the schedule: those frames need not be computed before it. Frame 0 is still needed when the
        reference is built from it; the source reference needs no frame at all (it is SDEdit from step k).
        """
        followers = torch.zeros(num_frames, dtype=torch.bool)
        if not enabled or options.latent_reference == "off" or options.reference_strength != 1.0 or masks is not None:
            return 0, followers
        followers[1:] = True
        if options.latent_reference == "source":
            followers[0] = True
        return options.reference_steps, followers

    def _encode_prompts(self, prompt: str, negative_prompt: str | None, guidance_scale: float,
                        device: torch.device) -> torch.Tensor:
        """``[2, L, D]`` (negative, positive) with guidance, else ``[1, L, D]`` (positive)."""
        texts = [negative_prompt or "", prompt] if guidance_scale > 1 else [prompt]
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        full_length = len(self.tokenizer(prompt, verbose=False).input_ids)  # our own note, not the library log
        if full_length > self.tokenizer.model_max_length:
            warnings.warn(f"the prompt is {full_length} tokens long; only the first "
                          f"{self.tokenizer.model_max_length} reach the model (the rest is ignored)",
                          stacklevel=4)  # _encode_prompts ← __call__ ← torch's no_grad wrapper ← the caller
        mask = tokens.attention_mask.to(device) if getattr(self.text_encoder.config, "use_attention_mask",
                                                           False) else None
        embeddings = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
        return embeddings.to(self.unet.dtype)

    def _predict(self, latents: torch.Tensor, t: torch.Tensor, text: torch.Tensor, poses: torch.Tensor,
                 control_scales: torch.Tensor, guidance_scale: float,
                 attention: CrossFrameAttnProcessor | None) -> torch.Tensor:
        """The UNet's prediction (noise or v) for these frames, guided: ``u + g·(c − u)``."""
        frames = latents.shape[0]
        guided = guidance_scale > 1
        groups = 2 if guided else 1
        model_input = torch.cat([latents] * groups)
        model_input = self.scheduler.scale_model_input(model_input, t).to(self.unet.dtype)
        embeddings = text.repeat_interleave(frames, dim=0)  # [negative × F, positive × F] (or positive × F)
        down, mid = self._control_residuals(model_input, t, embeddings, poses, control_scales, groups, attention)
        if attention is not None:
            attention.num_frames = frames
        prediction = self.unet(model_input, t, encoder_hidden_states=embeddings,
                               down_block_additional_residuals=down, mid_block_additional_residual=mid).sample.float()
        if not guided:
            return prediction
        unconditional, conditional = prediction.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def _control_residuals(self, model_input: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
                           poses: torch.Tensor, scales: torch.Tensor, groups: int,
                           attention: CrossFrameAttnProcessor | None):
        """ControlNet residuals for the batch (``groups`` copies of the frames), each frame's scaled by its own
        conditioning scale. The ControlNet only runs on frames whose scale is not 0; the others get zeros."""
        conditioned_frames = scales != 0
        if not conditioned_frames.any():
            return None, None
        every_frame = bool(conditioned_frames.all())
        entries = conditioned_frames.repeat(groups)
        if attention is not None:
            attention.num_frames = int(conditioned_frames.sum())
        poses = poses.repeat(groups, 1, 1, 1)
        down, mid = self.controlnet(
            model_input if every_frame else model_input[entries], t,
            encoder_hidden_states=embeddings if every_frame else embeddings[entries],
            controlnet_cond=(poses if every_frame else poses[entries]).to(self.controlnet.dtype),
            conditioning_scale=1.0, return_dict=False)
        weights = scales.repeat(groups)[entries].view(-1, 1, 1, 1)

        def spread(residual: torch.Tensor) -> torch.Tensor:
            residual = residual * weights.to(residual.dtype)
            if every_frame:
                return residual
            full = residual.new_zeros((len(entries), *residual.shape[1:]))
            full[entries] = residual
            return full

        return [spread(r) for r in down], spread(mid)

    def _pull_towards_reference(self, latents: torch.Tensor, options: ConsistencyOptions, level: torch.Tensor | None,
                                source_latents: torch.Tensor | None, noise: torch.Tensor,
                                masks: torch.Tensor | None) -> torch.Tensor:
        """Apply the latent reference after a step; ``level`` is the noise level of ``latents`` (None = clean)."""
        strength = options.reference_strength
        reference = options.latent_reference
        source = None
        if source_latents is not None:  # at the level of the latents they join (clean, as the original, if not)
            source = noised_to_level(self.scheduler, source_latents, noise, level) if options.match_noise_level \
                else source_latents
        # the original's masks: the source inside, the technique's reference outside ("source": outside left free)
        masked_source = masks is not None and options.mask_mode == "source_inside" and reference != "source"
        if reference == "previous_frame":
            return pull_towards_previous(latents, strength, masks, source if masked_source else None)
        if reference == "first_frame":
            target = latents[:1].expand_as(latents)
        elif reference == "source":
            target = source
        else:  # "source_motion" and "keyframe": frame 0 moved by the source's latent differences
            weight = signal_weight(self.scheduler, level) if options.match_noise_level else 1.0
            target = motion_reference(latents[0], source_latents, weight)
        if masked_source:
            return pull_towards(latents, source_inside(target, source, masks), strength)
        return pull_towards(latents, target, strength, masks)

    # ------------------------------------------------------------------------------------------------ VAE

    def encode_frames(self, frames: np.ndarray, *, progress: Progress | None = None) -> torch.Tensor:
        """``[F, H, W, 3]`` uint8 → scaled VAE latents ``[F, C, h, w]`` float32 (the posterior mean: deterministic)."""
        device = self._execution_device
        images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        chunks = []
        for start in range(0, len(images), self.vae_batch_size):
            batch = images[start:start + self.vae_batch_size].to(device, self.vae.dtype)
            mean = self.vae.encode(batch).latent_dist.mean
            chunks.append((mean.float() - shift) * self.vae.config.scaling_factor)
            if progress:
                progress("encode source", min(start + self.vae_batch_size, len(images)), len(images))
        return torch.cat(chunks)

    def decode_latents(self, latents: torch.Tensor, *, progress: Progress | None = None,
                       decoded: Sequence[np.ndarray] = (),
                       on_chunk: Callable[[list[np.ndarray]], None] | None = None, uint8: bool = False) -> np.ndarray:
        """Scaled latents ``[F, C, h, w]`` → ``[F, H, W, 3]`` float32 in [0, 1] (``uint8``: 0-255, rounded),
        ``vae_batch_size`` frames at a time.

        ``decoded``: chunks already decoded (their frames are not decoded again, whatever their size);
        ``on_chunk(chunks)`` is called with every chunk so far after each new one."""
        dtype = np.uint8 if uint8 else np.float32
        if any(chunk.dtype != dtype for chunk in decoded):
            raise ValueError(f"the decoded frames given are not {np.dtype(dtype).name}, as this call decodes")
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        frames = list(decoded)
        for start in range(sum(len(chunk) for chunk in frames), len(latents), self.vae_batch_size):
            batch = latents[start:start + self.vae_batch_size] / self.vae.config.scaling_factor + shift
            images = self.vae.decode(batch.to(self.vae.dtype)).sample.float()
            images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            frames.append((images * 255.0).round().astype(np.uint8) if uint8 else images)
            if on_chunk is not None:
                on_chunk(frames)
            if progress:
                progress("decode", min(start + self.vae_batch_size, len(latents)), len(latents))
        return np.concatenate(frames)
