"""Sketch control for ID-Animator: the same face adapter on AnimateDiff's SparseCtrl scribble ControlNet.

ID-Animator's own ControlNet code was never released; its authors point to AnimateDiff v3 SparseCtrl. This is the
stock ``AnimateDiffSparseControlNetPipeline`` (denoising loop unchanged) with the face adapter, identity mixing and
per-frame motion GroupNorm of the main pipeline. One sketch conditions one frame ("sketch image"); several sketches
at chosen frames form a "sketch sequence". The ControlNet sees the text context only (diffusers' behaviour). The VAE
decodes ``decode_chunk_size`` frames at a time, as in the main pipeline (the memory plan's chunk). Grids of sketches,
frame lists and drawings on white are turned into these arguments by :mod:`.sketch_inputs`.

>>> pipe = load_id_animator_pipeline(sketch=True)
>>> video = pipe([face], "a woman walking", sketches=[sketch0, sketch15], sketch_frame_indices=[0, 15])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import PIL.Image
import torch
from diffusers import AnimateDiffSparseControlNetPipeline
from diffusers.pipelines.animatediff.pipeline_output import AnimateDiffPipelineOutput

from helpers.errors import InputError

from ..loop_state import LoopState, StateCallback, check_resume, restore_generators, restore_scheduler
from ..sizes import size_multiple
from .modules import FaceTokenMixer, normalized_reference_weights
from .pipeline import (
    DEFAULT_FACE_SCALE,
    DEFAULT_FRAMES,
    DEFAULT_GUIDANCE,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    FaceImage,
    IDAnimatorPipeline,
    _as_list,
    decode_resume,
    face_lora_switch,
    motion_max_frames,
    validate_generation_args,
    warn_if_prompt_truncated,
)

DEFAULT_DECODE_CHUNK = 16  # frames per VAE decode call, the main pipeline's default


def validate_sketches(num_sketches: int, frame_indices: Sequence[int], num_frames: int) -> None:
    """One sketch per frame index, indices distinct and inside the video; ``InputError`` otherwise."""
    if num_sketches < 1:
        raise InputError("No sketch given: pass one sketch image (frame 0) or a sequence with their frame indices.")
    if len(frame_indices) != num_sketches:
        raise InputError(f"{num_sketches} sketches but {len(frame_indices)} frame indices: give one index per sketch.")
    if len(set(frame_indices)) != len(frame_indices):
        raise InputError(f"Sketch frame indices repeat ({list(frame_indices)}): give each sketch its own frame.")
    outside = [i for i in frame_indices if not 0 <= i < num_frames]
    if outside:
        raise InputError(f"Sketch frame indices {outside} are outside the video (0..{num_frames - 1}).")


class IDAnimatorSketchPipeline(AnimateDiffSparseControlNetPipeline):
    """ID-Animator + SparseCtrl scribble: face crop(s) + prompt + sketch(es) at chosen frames -> video."""

    _decode_chunk_size = DEFAULT_DECODE_CHUNK  # set for the length of a call
    _decode_resume: Callable[[torch.Tensor], dict] | None = None  # decode_latents' resume arguments, for a call

    @property
    def latent_scaling_factor(self) -> float:
        return self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The stock loop's decode, ``decode_chunk_size`` frames at a time (the main pipeline's chunked decode)."""
        resuming = self._decode_resume(latents) if self._decode_resume is not None else {}
        return IDAnimatorPipeline.decode_latents(self, latents, self._decode_chunk_size, **resuming)

    @torch.no_grad()
    def __call__(
        self,
        face_images: FaceImage | Sequence[FaceImage] | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        *,
        sketches: PIL.Image.Image | Sequence[PIL.Image.Image] | None = None,
        sketch_frame_indices: Sequence[int] = (0,),
        sketch_scale: float = 1.0,
        face_scale: float = DEFAULT_FACE_SCALE,
        face_lora: bool = True,
        reference_weights: Sequence[float] | None = None,
        num_frames: int = DEFAULT_FRAMES,
        height: int = DEFAULT_SIZE,
        width: int = DEFAULT_SIZE,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        decode_chunk_size: int = DEFAULT_DECODE_CHUNK,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        return_dict: bool = True,
        resume_from: LoopState | None = None,
        on_state: StateCallback | None = None,
    ) -> AnimateDiffPipelineOutput | tuple:
        """Generate with sketches: ``sketches[k]`` (white strokes on black, any size; resized to the video) holds
        frame ``sketch_frame_indices[k]``. Other arguments as ``IDAnimatorPipeline.__call__``.

        The stock loop runs unchanged; ``resume_from`` hands it the saved latents and only the timesteps not yet done
        (:func:`_continue_stock_loop`), and ``on_state`` is called from its step-end callback."""
        faces = _as_list(face_images)
        sketch_list = [sketches] if isinstance(sketches, PIL.Image.Image) else list(sketches or [])
        mixer = self.unet.encoder_hid_proj
        validate_generation_args(
            prompt=prompt, num_frames=num_frames, height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, face_scale=face_scale, num_references=len(faces),
            reference_weights=reference_weights, identity_mixing=getattr(mixer, "mode", "concat"),
            max_frames=motion_max_frames(self.unet), have_prompt_embeds=prompt_embeds is not None,
            size_multiple=size_multiple(self.vae))
        validate_sketches(len(sketch_list), list(sketch_frame_indices), num_frames)
        total, done = num_inference_steps, resume_from.step if resume_from is not None else 0
        if resume_from is not None:
            check_resume(resume_from, total, (1, self.unet.config.in_channels, num_frames,
                                              height // self.vae_scale_factor, width // self.vae_scale_factor))
            latents = resume_from.latents
        if prompt_embeds is None:
            warn_if_prompt_truncated(self.tokenizer, prompt)
            warn_if_prompt_truncated(self.tokenizer, negative_prompt, "negative prompt")

        self.set_ip_adapter_scale(face_scale)
        if isinstance(mixer, FaceTokenMixer):
            mixer.reference_weights = normalized_reference_weights(reference_weights, len(faces))
        self._decode_chunk_size = decode_chunk_size
        full_timesteps: list[torch.Tensor] = []
        step_end, tensor_inputs = callback_on_step_end, list(callback_on_step_end_tensor_inputs)
        if on_state is not None or done:
            def step_end(pipe, i, t, tensors):
                wanted = {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                returned = (callback_on_step_end(pipe, i + done, t, wanted) or {}) if callback_on_step_end else {}
                if on_state is not None:
                    state = LoopState.capture(i + done + 1, total, returned.get("latents", tensors["latents"]),
                                              scheduler=pipe.scheduler, generator=generator)
                    state.scheduler["timesteps"] = {"value": full_timesteps[0].cpu(), "tuple": False}
                    on_state(state)
                return returned

            tensor_inputs = sorted(set(tensor_inputs) | {"latents"})
        self._decode_resume = lambda final: decode_resume(self, resume_from, on_state, total, final, generator)
        try:
            with face_lora_switch(self, face_lora), _continue_stock_loop(self.scheduler, resume_from, full_timesteps):
                if resume_from is not None:
                    restore_generators(generator, resume_from.generators)
                return super().__call__(
                    prompt=None if prompt_embeds is not None else prompt,
                    negative_prompt=None if negative_prompt_embeds is not None else negative_prompt,
                    prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                    ip_adapter_image=[faces], conditioning_frames=sketch_list,
                    controlnet_frame_indices=list(sketch_frame_indices), controlnet_conditioning_scale=sketch_scale,
                    num_frames=num_frames, height=height, width=width, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, generator=generator, latents=latents, output_type=output_type,
                    callback_on_step_end=step_end, callback_on_step_end_tensor_inputs=tensor_inputs,
                    return_dict=return_dict,
                )
        finally:
            del self._decode_chunk_size, self._decode_resume
            if isinstance(mixer, FaceTokenMixer):
                mixer.reference_weights = None


@contextlib.contextmanager
def _continue_stock_loop(scheduler, state: LoopState | None, full_timesteps: list) -> Iterator[None]:
    """The stock loop walks ``scheduler.timesteps`` as ``set_timesteps`` leaves them and starts from the latents it is
    given (times ``init_noise_sigma``, 1 for DDIM). To continue a saved state, ``set_timesteps`` is followed, for
    the length of the call, by putting the saved scheduler state back and keeping only the timesteps not done yet
    (DDIM steps by the timestep it is given, not by position). ``full_timesteps`` receives every timestep, for the
    states this call reports."""
    original = scheduler.set_timesteps

    def set_timesteps(*args, **kwargs):
        original(*args, **kwargs)
        full_timesteps[:] = [scheduler.timesteps]
        if state is not None:
            restore_scheduler(scheduler, state.scheduler, scheduler.timesteps.device)
            scheduler.timesteps = scheduler.timesteps[state.step:]

    if state is not None and scheduler.init_noise_sigma != 1.0:
        raise ValueError(f"resuming needs a scheduler that starts from unscaled noise, not {type(scheduler).__name__}")
    scheduler.set_timesteps = set_timesteps
    try:
        yield
    finally:
        del scheduler.set_timesteps
