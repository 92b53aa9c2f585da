"""The temporal-consistency techniques of the zero-shot pose-video method, as one validated options object.

Every technique is a named field; all of them are off in ``ConsistencyOptions()`` except what the baseline needs, so
each one can be switched on alone to see what it does:

>>> from helpers.pipelines.zero_shot_pose.options import ConsistencyOptions
>>> baseline = ConsistencyOptions()                                   # (a) new noise per frame, nothing else
>>> shared = ConsistencyOptions(noise="shared")                       # (b) one initial noise for every frame
>>> attend = ConsistencyOptions(noise="shared", cross_frame_attention="first_and_previous")      # (c)
>>> copied = ConsistencyOptions(noise="shared", latent_reference="first_frame", reference_steps=9)  # (d)
>>> copied.check(num_inference_steps=50)                              # raises InputError on a bad combination

Step vocabulary. Denoising step ``i`` (0-based) takes the latents from noise level ``timesteps[i]`` to
``timesteps[i + 1]`` (clean after the last step). A latent reference is applied *after* a step, to latents that sit at
the level the next step will see. ``reference_steps = k`` applies it after each of the first ``k`` steps
(``reference_schedule="each_step"``, as the original's third version did) or only after step ``k - 1``
(``"last_step"``, as its first two versions did). The original's "copy step j" is ``reference_steps = j + 1``.

Masks (white = the person). ``mask_mode="source_inside"`` (default, the original's): inside the mask the latents are
pulled towards the *source* frame's latents, outside towards the technique's reference (frame 0, the previous frame,
or frame 0 moved by the latent difference); with the ``"source"`` reference the outside is left free. So a mask needs
the source frames. ``mask_mode="reference_inside"``: the technique's reference acts inside the mask only and the
outside is left free (no source frames needed unless the reference itself uses them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from helpers.errors import InputError

NoiseMode = Literal["independent", "shared"]
CrossFrameMode = Literal["off", "first_frame", "first_and_previous", "self_and_first"]
LatentReference = Literal["off", "first_frame", "previous_frame", "source", "source_motion", "keyframe"]
ReferenceSchedule = Literal["each_step", "last_step"]
MaskMode = Literal["source_inside", "reference_inside"]

NOISE_MODES: tuple[str, ...] = ("independent", "shared")
CROSS_FRAME_MODES: tuple[str, ...] = ("off", "first_frame", "first_and_previous", "self_and_first")
LATENT_REFERENCES: tuple[str, ...] = ("off", "first_frame", "previous_frame", "source", "source_motion", "keyframe")
REFERENCE_SCHEDULES: tuple[str, ...] = ("each_step", "last_step")
MASK_MODES: tuple[str, ...] = ("source_inside", "reference_inside")

#: References built from the source video's latents: they need ``source_frames``.
SOURCE_REFERENCES: tuple[str, ...] = ("source", "source_motion", "keyframe")


@dataclass(frozen=True)
class ConsistencyOptions:
    """How the frames of one clip are tied together (all frames are denoised in one batch).

    Attributes:
        noise: initial noise. ``"independent"`` (a): a new draw per frame, the per-image baseline.
            ``"shared"`` (b): one draw repeated over the clip; with DDIM (eta 0) the trajectory of a frame is then
            fixed by its pose alone, so frames differ only where their poses differ.
        noise_independence: with ``noise="shared"``, the share of per-frame noise variance mixed in,
            ``√(1 − w)·shared + √w·own`` (unit variance kept); 0 is fully shared, 1 fully independent.
        cross_frame_attention: (c) which frames the self-attention layers of the UNet and the ControlNet take their
            keys and values from. ``"first_frame"``: frame 0 only (Text2Video-Zero); ``"first_and_previous"``:
            frame 0 and frame k−1 (sparse-causal); ``"self_and_first"``: the frame itself and frame 0.
            Frame 0 always sees only itself, so it is generated as it would be alone.
        latent_reference: what the latents are pulled towards after each reference step:
            ``"first_frame"`` (d): frame 0's latents at the same step (same noise level);
            ``"previous_frame"`` (d): frame k−1's latents after its own pull, a scan along the clip (at strength 1
            this equals ``"first_frame"``; below 1 it is an exponential moving average along the clip);
            ``"source"`` (e): the source video's VAE latents noised to the level of the next step with
            ``scheduler.add_noise`` and each frame's own initial noise (SDEdit); at strength 1 this is ControlNet
            image-to-image from the source video;
            ``"source_motion"`` (f): frame 0's latents plus the source's motion ``√ᾱ·(z_k − z_0)``, the clean latent
            difference scaled to the noise level it joins;
            ``"keyframe"`` (g): as ``"source_motion"``, but the pose conditions frame 0 only: later frames are the
            keyframe moved by the latent differences ("compression-inspired": an I-frame and P-frames).
        reference_steps: how many of the first denoising steps the reference acts on (see the module docstring).
        reference_strength: ``s`` in ``x ← x + s·(r − x)``. 1 copies.
            Below 1 the blend is linear in the noisy latents, an approximation that is close when frames share
            their initial noise (the noise parts then coincide) and under-noises the result when they do not.
        reference_schedule: ``"each_step"`` or ``"last_step"`` (module docstring).
        match_noise_level: True (the correct form): source latents are noised to the current level and latent
            differences scaled by √ᾱ. False reproduces the original scripts, which mixed clean latents into noisy
            ones (3-5x too much signal and no noise at their default steps); kept to show why that fails.
        mask_mode: what per-frame masks mean (module docstring). ``"source_inside"`` (the original's): ``r = m·z_src
            + (1 − m)·r_technique``, the source latents at the same noise level as the reference (clean with
            ``match_noise_level=False``); frame 0 too has its masked region pulled towards its source, as the
            original's first version did. ``"reference_inside"``: ``x ← x + s·m·(r − x)``.
    """

    noise: NoiseMode = "independent"
    noise_independence: float = 0.0
    cross_frame_attention: CrossFrameMode = "off"
    latent_reference: LatentReference = "off"
    reference_steps: int = 9
    reference_strength: float = 1.0
    reference_schedule: ReferenceSchedule = "each_step"
    match_noise_level: bool = True
    mask_mode: MaskMode = "source_inside"

    @property
    def needs_source(self) -> bool:
        """True when the reference is built from the source video's latents."""
        return self.latent_reference in SOURCE_REFERENCES

    def needs_source_frames(self, masked: bool) -> bool:
        """True when a call needs ``source_frames``: the reference uses them, or masks take the source inside."""
        return self.needs_source or (masked and self.latent_reference != "off" and self.mask_mode == "source_inside")

    @property
    def pose_on_keyframe_only(self) -> bool:
        return self.latent_reference == "keyframe"

    def reference_applies_after(self, step_index: int) -> bool:
        """Whether the latent reference acts after denoising step ``step_index`` (0-based)."""
        if self.latent_reference == "off":
            return False
        if self.reference_schedule == "last_step":
            return step_index == self.reference_steps - 1
        return step_index < self.reference_steps

    def check(self, num_inference_steps: int) -> None:
        """Raise :class:`InputError` (one line, saying what to change) on an invalid combination."""
        _choice("noise", self.noise, NOISE_MODES)
        _choice("cross_frame_attention", self.cross_frame_attention, CROSS_FRAME_MODES)
        _choice("latent_reference", self.latent_reference, LATENT_REFERENCES)
        _choice("reference_schedule", self.reference_schedule, REFERENCE_SCHEDULES)
        _choice("mask_mode", self.mask_mode, MASK_MODES)
        _unit_interval("noise_independence", self.noise_independence)
        _unit_interval("reference_strength", self.reference_strength)
        if self.noise == "independent" and self.noise_independence != 0.0:
            raise InputError("noise_independence only mixes into shared noise: set noise='shared' or leave it at 0")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be a whole number ≥ 1, not {num_inference_steps!r}")
        if self.latent_reference == "off":
            return
        if not isinstance(self.reference_steps, int) or self.reference_steps < 1:
            raise InputError(f"reference_steps must be a whole number ≥ 1, not {self.reference_steps!r}: "
                             "it counts the first denoising steps the latent reference acts on")
        if self.reference_steps > num_inference_steps:
            raise InputError(f"reference_steps ({self.reference_steps}) is more than the number of denoising steps "
                             f"({num_inference_steps}): lower it to at most {num_inference_steps}")

    def describe(self) -> str:
        """One line for logs and sidecars, e.g. ``"shared noise, cross-frame attention off, no latent reference"``."""
        noise = self.noise if self.noise_independence == 0 else f"shared (independence {self.noise_independence})"
        if self.latent_reference == "off":
            reference = "no latent reference"
        else:
            when = (f"after step {self.reference_steps}" if self.reference_schedule == "last_step"
                    else f"after each of the first {self.reference_steps} steps")
            clean = "" if self.match_noise_level else " (clean latents, as the original)"
            reference = f"{self.latent_reference} × {self.reference_strength} {when}{clean}"
        return f"{noise} noise, cross-frame attention {self.cross_frame_attention}, {reference}"


def original_v2_cli() -> ConsistencyOptions:
    """The original's last runnable script at its command-line defaults: new noise per frame, and after step 8
    every frame's latents replaced by the previous frame's (which at strength 1 means frame 0's)."""
    return ConsistencyOptions(noise="independent", latent_reference="previous_frame", reference_steps=9,
                              reference_strength=1.0, reference_schedule="last_step")


def recommended() -> ConsistencyOptions:
    """The strongest training-free recipe of this family: shared noise, attention to frame 0 and the previous
    frame, and frame 0's latents copied over the first steps (the layout is fixed early, details follow each pose)."""
    return ConsistencyOptions(noise="shared", cross_frame_attention="first_and_previous",
                              latent_reference="first_frame", reference_steps=9, reference_strength=1.0)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)} — not {value!r}")


def _unit_interval(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be a number between 0 and 1, not {value!r}")
