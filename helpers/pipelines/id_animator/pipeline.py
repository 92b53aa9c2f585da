"""ID-Animator generation on stock AnimateDiff: face crop(s) + prompt -> video, with an explicit denoising loop.

The loop is the one ID-Animator runs (classifier-free guidance over ``[uncond, cond]``, DDIM with eta 0, per-frame
VAE decode); the model is stock ``UNetMotionModel`` with the face adapter loaded as IP-Adapter-Plus + LoRA. Context per
row: 77 text tokens, and 16 face tokens that the IP-Adapter processors attend to with the same (LoRA) query.
``on_state`` receives the loop's state after every step and every decoded chunk; ``resume_from`` continues from one
(:mod:`helpers.pipelines.loop_state`): the same seed gives the same video as an uninterrupted call.

>>> from helpers.pipelines.id_animator import load_id_animator_pipeline
>>> pipe = load_id_animator_pipeline()                           # official weights from the Drive root
>>> video = pipe([face_224], "a man playing guitar in a park", generator=torch.Generator("cuda").manual_seed(4993))
>>> video.frames[0]                                              # 16 PIL images, 512x512
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AnimateDiffPipeline
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput

from helpers.errors import InputError

from ..loop_state import LoopState, StateCallback, resume_loop
from ..sizes import size_multiple
from .modules import FaceTokenMixer, IdentityMixing, normalized_reference_weights

FaceImage = PIL.Image.Image | np.ndarray | torch.Tensor

# Defaults of the original's published inference script (infer.py) and its generate() signature.
DEFAULT_NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 8.0
DEFAULT_FACE_SCALE = 0.8
DEFAULT_FRAMES = 16
DEFAULT_SIZE = 512
MAX_FRAMES = 32  # length of the motion modules' positional table
OUTPUT_FPS = 9  # the original writes its videos at 9 fps


def validate_generation_args(
    *,
    prompt: str | None,
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int,
    guidance_scale: float,
    face_scale: float,
    num_references: int,
    reference_weights: Sequence[float] | None = None,
    identity_mixing: IdentityMixing = "mean",
    max_frames: int = MAX_FRAMES,
    have_prompt_embeds: bool = False,
    size_multiple: int = 8,
) -> None:
    """Check generation arguments before any model runs; raise ``InputError`` with the fix. ``size_multiple``: what
    height and width must divide by; the pipeline passes its loaded VAE's scale factor (the stock motion UNet
    resizes its skip connections, so it adds no factor of its own).

    >>> validate_generation_args(prompt="a woman smiling", num_frames=16, height=512, width=512,
    ...                          num_inference_steps=30, guidance_scale=8.0, face_scale=0.8, num_references=1)
    """
    if not have_prompt_embeds and (prompt is None or not prompt.strip()):
        raise InputError("The prompt is empty: describe the video, e.g. 'a woman smiling, in a garden'.")
    if not 1 <= num_frames <= max_frames:
        raise InputError(f"num_frames is {num_frames}: the motion module handles 1 to {max_frames} frames; "
                         f"choose a value in that range (the original uses 16).")
    for name, value in (("height", height), ("width", width)):
        if value < size_multiple or value % size_multiple:
            raise InputError(f"{name} is {value}: use a positive multiple of {size_multiple} (512 is the original's "
                             "size).")
    if num_inference_steps < 1:
        raise InputError(f"num_inference_steps is {num_inference_steps}: use at least 1 (the original uses 30).")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise InputError(f"guidance_scale is {guidance_scale}: use a value >= 0 (the original uses 8).")
    if not math.isfinite(face_scale) or face_scale < 0:
        raise InputError(f"face_scale is {face_scale}: use a value >= 0 (0 switches the face attention off; the "
                         f"original uses 0.8).")
    if num_references < 1:
        raise InputError("No reference face given: pass at least one face image.")
    if reference_weights is not None:
        if identity_mixing != "mean":
            raise InputError("reference_weights only apply to identity_mixing='mean': drop them or switch to 'mean'.")
        if len(reference_weights) != num_references:
            raise InputError(f"{len(reference_weights)} reference weights for {num_references} faces: give one "
                             f"weight per face.")
        if any(not math.isfinite(w) or w < 0 for w in reference_weights) or sum(reference_weights) <= 0:
            raise InputError("reference_weights must be >= 0 with a positive sum, e.g. [0.5, 0.5].")


@contextlib.contextmanager
def face_lora_switch(pipe, on: bool) -> Iterator[None]:
    """The face adapter's LoRA on (as loaded) or, with ``on=False``, off for the length of a call.

    The face attention's weight (``face_scale``) does not touch the LoRA that was trained with it: as in the
    original, ``face_scale=0`` still runs the LoRA-adapted attention. ``face_scale=0`` with the LoRA off is plain
    AnimateDiff on the base model.
    """
    if on:
        yield
        return
    pipe.disable_lora()
    try:
        yield
    finally:
        pipe.enable_lora()


def warn_if_prompt_truncated(tokenizer, prompt: str | None, what: str = "prompt") -> int:
    """Warn when CLIP will cut ``prompt`` at its 77-token window; returns the prompt's token count."""
    if tokenizer is None or not prompt:
        return 0
    count = len(tokenizer(prompt, truncation=False, add_special_tokens=True, verbose=False).input_ids)
    limit = tokenizer.model_max_length
    if count > limit:
        warnings.warn(f"The {what} is {count} tokens long; CLIP reads only the first {limit}, so the rest is "
                      f"ignored: shorten it to keep every word.", UserWarning, stacklevel=3)
    return count


def _as_list(images: FaceImage | Sequence[FaceImage] | None) -> list[FaceImage]:
    if images is None:
        return []
    if isinstance(images, (PIL.Image.Image, np.ndarray, torch.Tensor)):
        return [images]
    return list(images)


class IDAnimatorPipeline(AnimateDiffPipeline):
    """AnimateDiff (SD1.5 + MotionAdapter v2) with ID-Animator's face adapter, as a stock diffusers pipeline.

    Build it with ``assemble_id_animator_pipeline`` or ``load_id_animator_pipeline`` (loading.py), which load the
    face adapter with the stock IP-Adapter and LoRA loaders and switch on the faithfulness options.
    """

    _callback_tensor_inputs = ["latents", "prompt_embeds", "unet_output"]
    # The original divides latents by this constant before decoding (= the SD1.5 VAE's scaling factor).
    latent_scaling_factor = 0.18215

    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int = 16, *,
                       done: Sequence[torch.Tensor] = (),
                       on_chunk: Callable[[list[torch.Tensor]], None] | None = None) -> torch.Tensor:
        """Latents ``[B, 4, F, h, w]`` -> video ``[B, 3, F, H, W]`` in [-1, 1] (float32), frames decoded
        ``decode_chunk_size`` at a time (each frame independently, as the original's one-by-one decode).

        ``done``: chunks an interrupted call already decoded (only the others are decoded); ``on_chunk(chunks)`` is
        called after every chunk with the chunks so far."""
        batch, channels, frames, height, width = latents.shape
        per_frame = (latents / self.latent_scaling_factor).transpose(1, 2).reshape(batch * frames, channels, height,
                                                                                   width)
        pieces = per_frame.split(max(1, decode_chunk_size))
        if len(done) > len(pieces):
            raise ValueError(f"{len(done)} decoded chunks were saved, this decode has {len(pieces)}")
        chunks = [chunk.to(latents.device) for chunk in done]
        for piece in pieces[len(chunks):]:
            chunks.append(self.vae.decode(piece).sample)
            if on_chunk is not None:
                on_chunk(chunks)
        decoded = torch.cat(chunks)
        return decoded.reshape(batch, frames, *decoded.shape[1:]).transpose(1, 2).float()

    # -- conditioning ------------------------------------------------------------------------------------------
    def encode_faces(self, face_images: FaceImage | Sequence[FaceImage]) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP penultimate hidden states of each reference face ``[N, 257, E]`` and of an all-zeros pixel tensor
        ``[1, 257, E]`` (the unconditional face, zeros *after* normalisation, as the original does)."""
        images = _as_list(face_images)
        pixel_values = self.feature_extractor(images, return_tensors="pt").pixel_values
        encoder_dtype = next(self.image_encoder.parameters()).dtype
        pixel_values = pixel_values.to(device=self._execution_device, dtype=encoder_dtype)
        faces = self.image_encoder(pixel_values, output_hidden_states=True).hidden_states[-2]
        zeros = torch.zeros_like(pixel_values[:1])
        uncond = self.image_encoder(zeros, output_hidden_states=True).hidden_states[-2]
        return faces, uncond

    def face_tokens(self, face_images: FaceImage | Sequence[FaceImage],
                    reference_weights: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The 16 face tokens ``[1, 16, D]`` (mixed over references) and the unconditional tokens ``[1, 16, D]``."""
        faces, uncond = self.encode_faces(face_images)
        projection: FaceTokenMixer = self.unet.encoder_hid_proj
        uncond_tokens = projection([uncond[None]])[0]
        projection.reference_weights = normalized_reference_weights(reference_weights, faces.shape[0])
        try:
            cond_tokens = projection([faces[None]])[0]
        finally:
            projection.reference_weights = None
        return cond_tokens.flatten(1, 2), uncond_tokens.flatten(1, 2)

    # -- generation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        face_images: FaceImage | Sequence[FaceImage] | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        *,
        face_scale: float = DEFAULT_FACE_SCALE,
        face_lora: bool = True,
        reference_weights: Sequence[float] | None = None,
        num_frames: int = DEFAULT_FRAMES,
        height: int = DEFAULT_SIZE,
        width: int = DEFAULT_SIZE,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        decode_chunk_size: int = 16,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        return_dict: bool = True,
        resume_from: LoopState | None = None,
        on_state: StateCallback | None = None,
    ) -> AnimateDiffPipelineOutput | tuple:
        """Generate a video of the person in ``face_images`` (aligned 224x224 face crops; several = mixed identity).

        ``face_scale`` weighs the face attention; the face LoRA trained with it stays on unless ``face_lora=False``
        (the original has no such switch: its ``face_scale=0`` still runs the LoRA; 0 with the LoRA off is plain
        AnimateDiff). ``reference_weights`` weigh the references' face tokens (default: plain mean, as the original).
        ``prompt_embeds``/``negative_prompt_embeds`` ([1, 77, D]) replace the text encoder. ``latents``
        ([1, 4, F, H/8, W/8]) replace the noise drawn from ``generator``. ``callback_on_step_end(pipe, step,
        timestep, tensors)`` runs after every step with the tensors named in ``callback_on_step_end_tensor_inputs``
        (``latents``, ``prompt_embeds`` = text context [uncond; cond] per frame, ``unet_output`` = the UNet's
        output for [uncond; cond] before guidance); returning ``{"latents": ...}`` replaces the latents.
        Frames: ``output.frames`` in ``output_type`` ("pil", "np", "pt": [1, F, 3, H, W] in [0, 1], "latent").
        ``resume_from`` / ``on_state``: continue an interrupted call / receive the loop's state after every step and
        every decoded chunk (:mod:`helpers.pipelines.loop_state`).
        """
        faces = _as_list(face_images)
        mixer = self.unet.encoder_hid_proj
        validate_generation_args(
            prompt=prompt, num_frames=num_frames, height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, face_scale=face_scale, num_references=len(faces),
            reference_weights=reference_weights, identity_mixing=getattr(mixer, "mode", "concat"),
            max_frames=motion_max_frames(self.unet), have_prompt_embeds=prompt_embeds is not None,
            size_multiple=size_multiple(self.vae))
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise InputError(f"callback tensors {sorted(unknown)} are not available: choose from "
                             f"{self._callback_tensor_inputs}.")
        if prompt_embeds is None:
            warn_if_prompt_truncated(self.tokenizer, prompt)
            warn_if_prompt_truncated(self.tokenizer, negative_prompt, "negative prompt")

        device = self._execution_device
        self._guidance_scale = guidance_scale
        self._interrupt = False
        do_cfg = self.do_classifier_free_guidance

        # 1. Text: [uncond; cond] x 77 tokens, repeated per frame (the UNet runs frames as batch rows).
        cond_text, uncond_text = self.encode_prompt(
            prompt, device, 1, do_cfg, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
        text = torch.cat([uncond_text, cond_text]) if do_cfg else cond_text
        text = text.repeat_interleave(num_frames, dim=0)

        # 2. Faces: CLIP features per reference; the UNet's projection turns them into 16 (mixed) tokens.
        face_features, uncond_features = self.encode_faces(faces)
        face_features = face_features[None]  # [1, N, 257, E]
        if do_cfg:
            uncond_features = uncond_features[None].expand_as(face_features)
            face_features = torch.cat([uncond_features, face_features])
        added_cond_kwargs = {"image_embeds": [face_features.to(self.unet.dtype)]}
        self.set_ip_adapter_scale(face_scale)
        if isinstance(mixer, FaceTokenMixer):
            mixer.reference_weights = normalized_reference_weights(reference_weights, len(faces))

        # 3. Timesteps and initial noise.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        latents = self.prepare_latents(1, self.unet.config.in_channels, num_frames, height, width, text.dtype,
                                       device, generator, latents)
        start = 0
        if resume_from is not None:
            saved = resume_loop(resume_from, len(timesteps), tuple(latents.shape), scheduler=self.scheduler,
                                generator=generator, device=latents.device)
            start, latents = resume_from.step, saved.to(device=latents.device, dtype=latents.dtype)

        # 4. Denoising loop.
        try:
            with face_lora_switch(self, face_lora), self.progress_bar(total=len(timesteps)) as progress_bar:
                for step, t in enumerate(timesteps):
                    if step < start:
                        progress_bar.update()
                        continue
                    model_input = torch.cat([latents] * 2) if do_cfg else latents
                    model_input = self.scheduler.scale_model_input(model_input, t)
                    unet_output = self.unet(model_input, t, encoder_hidden_states=text,
                                            added_cond_kwargs=added_cond_kwargs).sample
                    if do_cfg:
                        noise_uncond, noise_cond = unet_output.chunk(2)
                        noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
                    else:
                        noise_pred = unet_output
                    latents = self.scheduler.step(noise_pred, t, latents, eta=eta, generator=generator).prev_sample
                    if callback_on_step_end is not None:
                        available = {"latents": latents, "prompt_embeds": text, "unet_output": unet_output}
                        tensors = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                        returned = callback_on_step_end(self, step, t, tensors) or {}
                        latents = returned.get("latents", latents)
                    if on_state is not None:
                        on_state(LoopState.capture(step + 1, len(timesteps), latents, scheduler=self.scheduler,
                                                   generator=generator))
                    progress_bar.update()
        finally:
            if isinstance(mixer, FaceTokenMixer):
                mixer.reference_weights = None

        # 5. Decode every frame with the VAE (latents / scaling factor), then to the requested format.
        if output_type == "latent":
            video = latents
        else:
            video = self.decode_latents(latents, decode_chunk_size, **decode_resume(self, resume_from, on_state,
                                                                                   len(timesteps), latents, generator))
            video = self.video_processor.postprocess_video(video=video, output_type=output_type)
        self.maybe_free_model_hooks()
        return AnimateDiffPipelineOutput(frames=video) if return_dict else (video,)


def decode_resume(pipe, resume_from: LoopState | None, on_state: StateCallback | None, total: int,
                  latents: torch.Tensor, generator) -> dict:
    """``decode_latents``' arguments for a resumable decode: the chunks already decoded and the per-chunk report."""
    done = resume_from.decoded if resume_from is not None and resume_from.phase == "decode" else []
    on_chunk = None
    if on_state is not None:
        def on_chunk(chunks):
            on_state(LoopState.capture(total, total, latents, scheduler=pipe.scheduler, generator=generator,
                                       decoded=chunks))
    return {"done": done, "on_chunk": on_chunk}


def motion_max_frames(unet: torch.nn.Module) -> int:
    """How many frames the UNet's motion modules can take (their positional table length; 32 for v2)."""
    return int(getattr(unet.config, "motion_max_seq_length", MAX_FRAMES) or MAX_FRAMES)
