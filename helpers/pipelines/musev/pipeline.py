"""MuseV image/text-to-video pipeline: visual-conditioned parallel denoising with an explicit loop.

One clean *condition latent* (the condition image, VAE mean) is prepended to every window of noisy frames; the UNet
sees it through its temporal layers and reference-only attention, so all windows agree on the appearance while the
overlaps average the motion. All frames are denoised together in one diffusion run (10 Euler steps, guidance 3.5);
the ``musev_referencenet`` UNet also gets ReferenceNet features and IP-Adapter tokens of a reference image.

Long videos, two ways (as the original):

- parallel: ``time_size`` = all frames (e.g. 96) with windows of ``context_frames`` overlapping by ``context_overlap``;
- serial: ``n_batch`` shots of ``time_size`` frames, the last latent of a shot conditions the next one.

Memory does not grow with the length beyond the latents: one window is on the UNet at a time, frames are decoded a
few at a time straight to CPU uint8, and nothing is kept per step.

An interrupted call continues: ``resume_from`` / ``on_state`` per denoising loop (the first frame's, each shot's;
:mod:`.loops`), a finished shot is taken from its state without a UNet call, and decoding goes on after the last
decoded chunk.

>>> from helpers.pipelines.musev.pipeline import load_musev_pipeline
>>> pipe = load_musev_pipeline("musev_referencenet")                     # weights from helpers.weights
>>> out = pipe("(masterpiece, best quality), a girl, (eye blinks:1.8)", image="girl.png", time_size=12,
...            generator=torch.Generator("cuda").manual_seed(1234))
>>> out.frames.shape                                                      # 1 + 12 frames, uint8
(13, 512, 512, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.utils import BaseOutput

from helpers.errors import InputError
from helpers.pipelines.loop_state import LoopState, StateCallback, check_resume, restore_scheduler
from helpers.pipelines.musev.loading import (  # noqa: F401 (re-exported: the pipeline's public names)
    BASE_MODEL_PARTS,
    IMAGE_PROJ_ROLES,
    UNET_ROLES,
    base_model_parts,
    load_musev_pipeline,
)
from helpers.pipelines.musev.loops import chunk_frames, continue_loop, denoising_loops, per_loop
from helpers.pipelines.musev.noise import IMG_WEIGHT, W_IND_NOISE, initial_video_noise
from helpers.pipelines.musev.prompts import (
    NEGATIVE_PROMPT_V2,
    encode_weighted_prompt_pair,
    remove_unknown_embedding_tokens,
)
from helpers.pipelines.musev.schedule import check_window_settings, context_windows

Progress = Callable[[str, int, int], None]
SIZE_UNIT = 64  # the original floors video sizes to multiples of 64 ("to align with video2video")


def video_size(image_hw: tuple[int, int] | None, height: int | None = None, width: int | None = None,
               img_length_ratio: float = 1.0) -> tuple[int, int]:
    """The video ``(height, width)``: the requested size (else the image's) × ``img_length_ratio``, floored to 64.

    >>> video_size((720, 1280))
    (704, 1280)
    >>> video_size(None, 512, 512, img_length_ratio=0.5)
    (256, 256)
    """
    base_h = height if height is not None else (image_hw[0] if image_hw else None)
    base_w = width if width is not None else (image_hw[1] if image_hw else None)
    if base_h is None or base_w is None:
        raise InputError("no video size: give a condition image or both height and width (e.g. 512)")
    if img_length_ratio <= 0:
        raise InputError(f"img_length_ratio is {img_length_ratio}: use a positive scale such as 1.0")
    out_h = int(base_h * img_length_ratio // SIZE_UNIT * SIZE_UNIT)
    out_w = int(base_w * img_length_ratio // SIZE_UNIT * SIZE_UNIT)
    if out_h < SIZE_UNIT or out_w < SIZE_UNIT:
        raise InputError(f"video size {base_w}×{base_h} × {img_length_ratio} is below 64 pixels: use at least 64×64")
    return out_h, out_w


def check_video_request(*, time_size: int, n_batch: int = 1, num_inference_steps: int = 10,
                        guidance_scale: float = 3.5, context_frames: int = 12, context_overlap: int = 4,
                        context_schedule: str = "uniform_v2", motion_speed: float = 8.0,
                        decode_chunk_size: int = 8) -> None:
    """Raise ``InputError`` for settings that cannot run (call it before loading any model)."""
    if time_size < 1:
        raise InputError(f"time_size is {time_size}: generate at least 1 frame (12 is the default)")
    if n_batch < 1:
        raise InputError(f"n_batch is {n_batch}: use 1 shot, or more for a serial long video")
    if num_inference_steps < 1:
        raise InputError(f"num_inference_steps is {num_inference_steps}: use at least 1 (10 is the default)")
    if guidance_scale < 0:
        raise InputError(f"guidance_scale is {guidance_scale}: use 0 or more (3.5 is the default)")
    if motion_speed <= 0:
        raise InputError(f"motion_speed is {motion_speed}: use a positive value (8 for image-to-video)")
    if decode_chunk_size < 1:
        raise InputError(f"decode_chunk_size is {decode_chunk_size}: decode at least 1 frame at a time")
    check_window_settings(context_frames, context_overlap, context_schedule)


@dataclass
class MuseVPipelineOutput(BaseOutput):
    """``frames``: uint8 ``(T, H, W, 3)`` (``output_type="np"``) or float ``(1, 3, T, H, W)`` in [0, 1] (``"pt"``),
    condition frame first. ``latents``: ``(1, 4, T, h, w)`` on CPU, the condition latent first (same frames)."""

    frames: np.ndarray | torch.Tensor | None
    latents: torch.Tensor
    notes: list[str]


class MuseVPipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    """Text/image-to-video with a MuseV UNet (``musev`` or ``musev_referencenet``) on SD1.5 parts.

    Components: ``vae`` (``AutoencoderKL``), ``text_encoder``/``tokenizer`` (CLIP-L of the base model), ``unet``
    (``MuseVUNet3DConditionModel``), ``scheduler`` (Euler from the base model's config); for the referencenet
    variant also ``referencenet`` (``MuseVReferenceNet``), ``image_encoder`` (CLIP ViT-H with projection),
    ``feature_extractor`` (``CLIPImageProcessor``) and ``image_proj`` (IP-Adapter projection).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->referencenet->unet->vae"
    _optional_components = ["referencenet", "image_encoder", "feature_extractor"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, referencenet=None, image_encoder=None,
                 feature_extractor=None, image_proj=None):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              referencenet=referencenet, image_encoder=image_encoder,
                              feature_extractor=feature_extractor)
        # A plain attribute, not a registered component: the stock projection module has no ``device``/``dtype``
        # (which diffusers asks every component for), and at 12 MB it simply follows the execution device.
        self.image_proj = image_proj

    @property
    def uses_reference(self) -> bool:
        """True for the referencenet variant: ReferenceNet features and IP-Adapter tokens are fed to the UNet."""
        return bool(getattr(self.unet, "is_referencenet_variant", False)) and self.referencenet is not None

    # ------------------------------------------------------------------------------------------------ conditioning

    def encode_prompt(self, prompt: str, negative_prompt: str | None) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Weighted embeddings of the prompt pair; missing textual-inversion names leave the negative prompt."""
        negative, removed = remove_unknown_embedding_tokens(negative_prompt or "", self.tokenizer)
        notes = [f"textual-inversion embeddings not available, removed from the negative prompt: {', '.join(removed)}"
                 ] if removed else []
        positive, negative = encode_weighted_prompt_pair(self.tokenizer, self.text_encoder, prompt, negative)
        return positive, negative, notes

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images ``(N, H, W, 3)`` -> latents ``(N, 4, h, w)``: VAE posterior mean × scaling factor (no sample)."""
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        pixels = (pixels / 255.0 * 2 - 1).to(device=self._execution_device, dtype=self.vae.dtype)
        mean = self.vae.encode(pixels).latent_dist.mean
        return (mean * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def clip_image_embeds(self, image: np.ndarray) -> torch.Tensor:
        """CLIP ``image_embeds`` ``(1, E)`` of a uint8 image (already at the video size; the processor crops 224)."""
        if self.image_encoder is None or self.feature_extractor is None:
            raise InputError("this pipeline has no CLIP image encoder: load the musev_referencenet variant")
        pixels = self.feature_extractor(images=image, return_tensors="pt").pixel_values
        pixels = pixels.to(device=self._execution_device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixels).image_embeds.float()

    @torch.no_grad()
    def ip_tokens(self, clip_image_embeds: torch.Tensor, do_cfg: bool) -> torch.Tensor:
        """IP-Adapter tokens ``[uncond, cond]`` (``proj(0)`` first) or ``[cond]`` without guidance."""
        from helpers.pipelines.musev.ip_adapter import image_prompt_tokens

        if self.image_proj is None:
            raise InputError("this pipeline has no IP-Adapter projection: load the musev_referencenet variant")
        self.image_proj.to(self._execution_device)
        uncond, cond = image_prompt_tokens(self.image_proj, clip_image_embeds)
        return torch.cat([uncond, cond]) if do_cfg else cond

    @torch.no_grad()
    def reference_features(self, refer_latent: torch.Tensor, ip_tokens: torch.Tensor):
        """ReferenceNet features at timestep 0, the same reference latent for each guidance row, IP tokens as
        context. Computed once per video and reused for every step and window."""
        latent = refer_latent.to(self._execution_device).repeat(ip_tokens.shape[0], 1, 1, 1)
        return self.referencenet(latent, 0, encoder_hidden_states=ip_tokens)

    # ------------------------------------------------------------------------------------------------- the loop

    @torch.no_grad()
    def denoise(
        self,
        latents: torch.Tensor,
        condition_latent: torch.Tensor | None,
        text_embeds: torch.Tensor,
        *,
        num_inference_steps: int,
        guidance_scale: float,
        windows: list[list[int]],
        motion_speed: float = 8.0,
        skip_temporal_layers: bool = False,
        reference=None,
        ip_tokens: torch.Tensor | None = None,
        ip_adapter_scale: float = 1.0,
        progress: Progress | None = None,
        progress_state: list[int] | None = None,
        stage: str = "denoise",
        callback_on_step_end: Callable | None = None,
        trace: Callable[[str, object], None] | None = None,
        window_inputs: Callable | None = None,
        resume_from: LoopState | None = None,
        on_state: StateCallback | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Denoise ``latents`` ``(1, 4, T, h, w)`` (already scaled by ``init_noise_sigma``) and return them.

        Per step: every window's frames, duplicated for the guidance pair and scaled by the scheduler, go to the
        UNet behind the clean ``condition_latent`` ``(1, 4, 1, h, w)`` (never scaled or noised, same timestep); the
        predictions of the window frames are summed per frame and divided by how many windows covered each frame;
        then classifier-free guidance and one scheduler step on all frames. ``text_embeds`` is ``[negative,
        positive]`` with guidance (``guidance_scale > 1``), else ``[positive]``. ``progress_state`` = [done, total]
        of the whole run, advanced once per UNet call. ``trace(name, value)`` sees intermediate values (tests).
        ``window_inputs(step, t, sample, text, window)`` returns extra UNet arguments for one window (ControlNet
        residuals of the same input).

        ``resume_from``: continue after its ``step`` finished steps from its latents (they replace ``latents``); the
        scheduler is put back to its snapshot and the skipped UNet calls count as done in ``progress_state``.
        ``on_state`` gets the loop's state after every step (latents, scheduler, the positions of ``generator``).
        """
        do_cfg = guidance_scale > 1.0
        rows = 2 if do_cfg else 1
        device = self._execution_device
        model_dtype = self.unet.dtype
        if resume_from is not None:
            check_resume(resume_from, num_inference_steps, tuple(latents.shape))
            latents = resume_from.latents
        latents = latents.to(device=device, dtype=torch.float32)  # loop state in fp32; the UNet runs in its dtype
        condition = None
        if condition_latent is not None:
            condition = condition_latent.to(device=device, dtype=model_dtype).repeat(rows, 1, 1, 1, 1)
        text = text_embeds.to(device=device, dtype=model_dtype)
        unet_kwargs = dict(motion_speed=motion_speed, skip_temporal_layers=skip_temporal_layers)
        if reference is not None:
            unet_kwargs.update(down_block_refer_embs=reference.down_block_refer_embs,
                               mid_block_refer_emb=reference.mid_block_refer_emb)
        if ip_tokens is not None:
            unet_kwargs.update(ip_hidden_states=ip_tokens.to(device=device, dtype=model_dtype),
                               ip_adapter_scale=ip_adapter_scale)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if trace:
            trace("sigmas", self.scheduler.sigmas)
        start = 0
        if resume_from is not None:
            restore_scheduler(self.scheduler, resume_from.scheduler, device)
            start = resume_from.step
            if progress_state is not None and start:
                progress_state[0] += start * len(windows)
                if progress:
                    progress(stage, progress_state[0], progress_state[1])
        for step, t in enumerate(self.scheduler.timesteps):
            if step < start:
                continue
            if trace:
                trace(f"step{step}.timestep", t)
                trace(f"step{step}.latents_in", latents)
            noise_sum = torch.zeros((rows, *latents.shape[1:]), device=device, dtype=torch.float32)
            counts = torch.zeros((1, 1, latents.shape[2], 1, 1), device=device, dtype=torch.float32)
            for k, window in enumerate(windows):
                frames = latents[:, :, window].repeat(rows, 1, 1, 1, 1)
                frames = self.scheduler.scale_model_input(frames, t).to(model_dtype)
                if condition is not None:
                    sample, frame_offset, condition_index = torch.cat([condition, frames], dim=2), 1, [0]
                else:
                    sample, frame_offset, condition_index = frames, 0, None
                if trace and step == 0:
                    trace(f"step0.window{k}.unet_sample", sample)
                extra = window_inputs(step, t, sample, text, window) if window_inputs is not None else {}
                prediction = self.unet(sample, t, text, condition_frame_index=condition_index, **unet_kwargs,
                                       **extra).sample
                if trace and step == 0:
                    trace(f"step0.window{k}.unet_out", prediction)
                noise_sum[:, :, window] += prediction[:, :, frame_offset:].float()
                counts[:, :, window] += 1
                if progress_state is not None:
                    progress_state[0] += 1
                    if progress:
                        progress(stage, progress_state[0], progress_state[1])
            noise_pred = noise_sum / counts
            if do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            if trace:
                trace(f"step{step}.guided_noise_pred", noise_pred)
            latents = self.scheduler.step(noise_pred, t, latents).prev_sample
            if trace:
                trace(f"step{step}.latents_out", latents)
            if callback_on_step_end is not None:
                result = callback_on_step_end(self, step, t, {"latents": latents}) or {}
                latents = result.get("latents", latents)
            if on_state is not None:
                on_state(LoopState.capture(step + 1, num_inference_steps, latents, scheduler=self.scheduler,
                                           generator=generator))
        return latents

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8, progress: Progress | None = None,
                       first: int = 0):
        """Yield decoded frames ``(1, 3, n, H, W)`` in [0, 1] (float32, on CPU), ``chunk_size`` frames at a time,
        from frame ``first`` on (the frames before it are decoded already)."""
        total = latents.shape[2]
        scale = self.vae.config.scaling_factor
        for start in range(first, total, chunk_size):
            chunk = latents[0, :, start : start + chunk_size].permute(1, 0, 2, 3)
            chunk = (chunk / scale).to(device=self._execution_device, dtype=self.vae.dtype)
            pixels = self.vae.decode(chunk).sample
            pixels = (pixels.float() / 2 + 0.5).clamp(0, 1).cpu()
            if progress:
                progress("decode", min(start + chunk_size, total), total)
            yield pixels.permute(1, 0, 2, 3)[None]

    # ------------------------------------------------------------------------------------------------- __call__

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | None = None,
        image=None,
        *,
        negative_prompt: str | None = NEGATIVE_PROMPT_V2,
        height: int | None = None,
        width: int | None = None,
        img_length_ratio: float = 1.0,
        time_size: int = 12,
        n_batch: int = 1,
        num_inference_steps: int = 10,
        guidance_scale: float = 3.5,
        motion_speed: float = 8.0,
        context_frames: int = 12,
        context_overlap: int = 4,
        context_schedule: str = "uniform_v2",
        w_ind_noise: float = W_IND_NOISE,
        img_weight: float = IMG_WEIGHT,
        refer_image=None,
        ip_adapter_image=None,
        ip_adapter_scale: float = 1.0,
        first_frame_steps: int = 30,
        first_frame_guidance_scale: float = 7.5,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        condition_latents: torch.Tensor | None = None,
        clip_image_embeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        decode_chunk_size: int = 8,
        progress: Progress | None = None,
        callback_on_step_end: Callable | None = None,
        trace: Callable[[str, object], None] | None = None,
        shot_hooks=None,
        resume_from: LoopState | Sequence[LoopState | None] | None = None,
        on_state: StateCallback | Sequence[StateCallback | None] | None = None,
    ) -> MuseVPipelineOutput:
        """Generate a video; the condition image is its first frame.

        Args:
            prompt: A1111-style weighted prompt, e.g. ``"(masterpiece, best quality), a girl, (eye blinks:1.8)"``.
            image: condition image (path, PIL, uint8 array); at another size than the video's, centre-cropped and
                resized to it as the original's predictor does (:mod:`.preprocess`). Without
                it the first frame is generated by the same UNet with its temporal layers off (``first_frame_*``).
            height, width, img_length_ratio: video size, default the image's; × ratio, floored to multiples of 64.
            time_size: frames generated per shot after the condition frame (all frames of a parallel long video).
            n_batch: serial shots; shot i+1 is conditioned on the last latent of shot i (its first frame dropped).
            context_frames, context_overlap, context_schedule: windows of the parallel denoising.
            refer_image, ip_adapter_image: ReferenceNet / IP-Adapter images (default: the condition image).
            prompt_embeds, negative_prompt_embeds, condition_latents ``(1, 4, 1, h, w)``, clip_image_embeds
                ``(1, E)``: precomputed inputs replacing the text encoder, the VAE encoding of ``image`` and the
                CLIP image encoder.
            latents: initial noise ``(1, 4, time_size, h, w)`` of the first shot (scaled by the scheduler's
                ``init_noise_sigma``, no image prior added); default: video-fusion noise + image prior.
            output_type: ``"np"`` (uint8 frames), ``"pt"`` (float tensor) or ``"latent"`` (no decoding).
            progress: ``progress(stage, done, total)``; stages ``"first frame"``, ``"denoise"`` (one tick per UNet
                call: steps × windows × shots) and ``"decode"``.
            shot_hooks: extension point of the ControlNet pipeline (``controlnet.ShotHooks``): per shot, its own
                initial latents and extra UNet inputs per window.
            resume_from, on_state: continue an interrupted call (:mod:`helpers.pipelines.loop_state`), one entry per
                denoising loop in the order of :func:`denoising_loops` (a single value when the call has one loop).
                ``on_state`` gets each loop's state after every step; the last loop's also after every decoded
                chunk (``phase="decode"``, the chunks in the output's form). A loop whose state is complete is not
                run again (a finished shot costs no UNet call); a partly done one continues at its step; a state in
                ``"decode"`` decodes only the frames after its chunks. The result equals the uninterrupted call's.
        """
        check_video_request(time_size=time_size, n_batch=n_batch, num_inference_steps=num_inference_steps,
                            guidance_scale=guidance_scale, context_frames=context_frames,
                            context_overlap=context_overlap, context_schedule=context_schedule,
                            motion_speed=motion_speed, decode_chunk_size=decode_chunk_size)
        if output_type not in ("np", "pt", "latent"):
            raise InputError(f"output_type {output_type!r}: use 'np', 'pt' or 'latent'")
        if prompt_embeds is None and (not isinstance(prompt, str) or not prompt.strip()):
            raise InputError("the prompt is empty: describe the video, e.g. 'a girl smiling, (eye blinks:1.8)'")
        # Every input is read and checked before a model runs.
        condition_image, refer, ip_image = (_read_rgb(x) for x in (image, refer_image, ip_adapter_image))
        if condition_latents is not None:
            height = height or condition_latents.shape[-2] * self.vae_scale_factor
            width = width or condition_latents.shape[-1] * self.vae_scale_factor
        height, width = video_size(condition_image.shape[:2] if condition_image is not None else None,
                                   height, width, img_length_ratio)
        h, w = self._latent_hw(height, width)
        if condition_latents is not None and tuple(condition_latents.shape[-2:]) != (h, w):
            raise InputError("condition_latents do not match the video size: pass matching height and width")
        generate_first_frame = condition_latents is None and condition_image is None
        # A generated first frame counts toward time_size, as in the original.
        shot0_frames = time_size - 1 if generate_first_frame else time_size
        if shot0_frames < 1:
            raise InputError("time_size must be at least 2 when the first frame is generated (no image given)")
        if latents is not None and tuple(latents.shape) != (1, 4, shot0_frames, h, w):
            raise InputError(f"latents must have shape (1, 4, {shot0_frames}, {h}, {w})")
        if self.uses_reference and condition_latents is not None and condition_image is None and refer is None:
            raise InputError("the ReferenceNet variant needs the picture behind condition_latents: pass it as image "
                             "(or refer_image), or use the 'musev' variant")
        needs_negative = guidance_scale > 1.0 or (generate_first_frame and first_frame_guidance_scale > 1.0)
        if prompt_embeds is not None and negative_prompt_embeds is None and needs_negative:
            raise InputError("negative_prompt_embeds are needed with prompt_embeds when guidance_scale > 1")
        condition_image, refer, ip_image = (None if x is None else _fit(x, height, width)
                                            for x in (condition_image, refer, ip_image))

        do_cfg = guidance_scale > 1.0
        notes: list[str] = []
        if prompt_embeds is None:
            prompt_embeds, encoded_negative, notes = self.encode_prompt(prompt, negative_prompt)
            negative_prompt_embeds = encoded_negative if negative_prompt_embeds is None else negative_prompt_embeds

        def guidance_batch(scale: float) -> torch.Tensor:  # unconditional row first, as the original
            return torch.cat([negative_prompt_embeds, prompt_embeds]) if scale > 1.0 else prompt_embeds

        text = guidance_batch(guidance_scale)
        loops = len(denoising_loops(n_batch, generate_first_frame))
        states, callbacks = per_loop(resume_from, loops, "resume_from"), per_loop(on_state, loops, "on_state")
        if generate_first_frame:
            # Like the original: the same UNet with its temporal layers off makes the first frame, which then also
            # serves as the reference and IP-Adapter image.
            resumed, state_callback = states.pop(0), callbacks.pop(0)
            if resumed is not None:
                noise = continue_loop(resumed, (1, 4, 1, h, w), first_frame_steps, generator)
            else:
                noise = initial_video_noise((1, 4, 1, h, w), None, w_ind_noise=w_ind_noise, generator=generator,
                                            device=self._execution_device) * self._init_noise_sigma(first_frame_steps)
            condition_latents = self.denoise(
                noise, None, guidance_batch(first_frame_guidance_scale),
                num_inference_steps=first_frame_steps, guidance_scale=first_frame_guidance_scale, windows=[[0]],
                skip_temporal_layers=True, progress=progress, progress_state=[0, first_frame_steps],
                stage="first frame", resume_from=resumed, on_state=state_callback, generator=generator)
            condition_image = _to_uint8(next(self.decode_latents(condition_latents, 1)))[0]
        elif condition_latents is None:
            condition_latents = self.encode_images(condition_image[None])[:, :, None]
        condition_latents = condition_latents.float().to(self._execution_device)

        reference, ip_tokens = None, None
        if self.uses_reference:
            refer = condition_image if refer is None else refer
            ip_image = refer if ip_image is None else ip_image
            if clip_image_embeds is None:
                clip_image_embeds = self.clip_image_embeds(ip_image)
            ip_tokens = self.ip_tokens(clip_image_embeds, do_cfg)
            refer_latent = self.encode_images(refer[None])
            reference = self.reference_features(refer_latent, ip_tokens)
            if trace:
                trace("cond_latent", condition_latents)
                trace("ip_tokens", ip_tokens)
                trace("refer_latent", refer_latent.repeat(ip_tokens.shape[0], 1, 1, 1))
                trace("referencenet", reference)

        shot_windows = [context_windows(shot0_frames if shot == 0 else time_size, context_frames, context_overlap,
                                        context_schedule) for shot in range(n_batch)]
        state = [0, num_inference_steps * sum(len(windows) for windows in shot_windows)]
        shot_latents = []
        for shot, windows in enumerate(shot_windows):
            frames = shot0_frames if shot == 0 else time_size
            given = latents.float().to(self._execution_device) if shot == 0 and latents is not None else None
            start = shot_hooks.initial_latents if shot_hooks is not None else None
            if states[shot] is not None:  # a saved shot continues from its state (a finished one: no UNet call)
                noise = continue_loop(states[shot], (1, 4, frames, h, w), num_inference_steps, generator)
            elif start is not None:  # already scaled for the first step
                noise = start(shot, (1, 4, frames, h, w), given, num_inference_steps, generator)
            else:
                if given is None:
                    given = initial_video_noise((1, 4, frames, h, w), condition_latents, w_ind_noise=w_ind_noise,
                                                img_weight=img_weight, generator=generator,
                                                device=self._execution_device)
                noise = given * self._init_noise_sigma(num_inference_steps)
            if trace and shot == 0 and states[shot] is None:
                trace("latents_init", noise)
            denoised = self.denoise(
                noise, condition_latents, text, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, windows=windows, motion_speed=motion_speed, reference=reference,
                ip_tokens=ip_tokens, ip_adapter_scale=ip_adapter_scale, progress=progress, progress_state=state,
                callback_on_step_end=callback_on_step_end, trace=trace if shot == 0 else None,
                window_inputs=shot_hooks.window_inputs(shot, trace if shot == 0 else None) if shot_hooks else None,
                resume_from=states[shot], on_state=callbacks[shot], generator=generator)
            # The first shot keeps its condition frame; a later shot's condition is the previous shot's last frame,
            # already in the output, so it is not repeated.
            shot_latents.append(torch.cat([condition_latents, denoised], dim=2).cpu() if shot == 0 else denoised.cpu())
            condition_latents = denoised[:, :, -1:]
        all_latents = torch.cat(shot_latents, dim=2)
        if output_type == "latent":
            return MuseVPipelineOutput(frames=None, latents=all_latents, notes=notes)
        # Decoded chunks in the output's form (uint8 frames for "np"); a resumed decode continues after the last one.
        done = list(states[-1].decoded) if states[-1] is not None and states[-1].phase == "decode" else []
        as_frames = (lambda c: torch.from_numpy(_to_uint8(c))) if output_type == "np" else (lambda c: c)
        first = sum(chunk_frames(chunk, output_type) for chunk in done)
        for chunk in self.decode_latents(all_latents, decode_chunk_size, progress, first=first):
            done.append(as_frames(chunk))
            if callbacks[-1] is not None:
                callbacks[-1](LoopState.capture(num_inference_steps, num_inference_steps, denoised, decoded=done))
        frames = torch.cat(done, dim=2) if output_type == "pt" else np.concatenate([c.numpy() for c in done])
        return MuseVPipelineOutput(frames=frames, latents=all_latents, notes=notes)

    def _init_noise_sigma(self, num_inference_steps: int) -> float:
        """The scheduler's initial sigma for this number of steps (it depends on the step count for some spacings)."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        return float(self.scheduler.init_noise_sigma)

    def _latent_hw(self, height: int, width: int) -> tuple[int, int]:
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _read_rgb(image) -> np.ndarray | None:
    """Any image input (path, PIL, uint8 array, channel-first tensor in 0..255) -> uint8 (H, W, 3), or None."""
    if image is None:
        return None
    from helpers import media

    if isinstance(image, torch.Tensor):
        pixels = image.detach().float().cpu().squeeze()  # (3, H, W) from (3, H, W), (1, 3, H, W) or (1, 3, 1, H, W)
        if pixels.ndim != 3 or pixels.shape[0] != 3:
            raise InputError(f"image tensor of shape {tuple(image.shape)}: give one RGB image as (3, H, W), 0..255")
        image = pixels.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return media.read_image(image)


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An image at the video size as is (the original's pipeline takes it so); any other size through the original's
    predictor crop-and-resize (its centre box, PIL LANCZOS)."""
    from helpers.pipelines.musev.preprocess import crop_resize_condition_image

    if image.shape[:2] == (height, width):
        return image
    return crop_resize_condition_image(image, height, width)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(1, 3, n, H, W) in [0, 1] -> uint8 (n, H, W, 3)."""
    return (frames[0].permute(1, 2, 3, 0).numpy() * 255).round().astype(np.uint8)
