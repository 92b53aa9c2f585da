"""The named zero-shot techniques: each a fixed set of :class:`~.options.ConsistencyOptions` fields, with a short
label (grid tiles) and a one-line description (the form's help, the notebook).

>>> from helpers.pipelines.zero_shot_pose.techniques import TECHNIQUES
>>> TECHNIQUES["recommended"].settings["latent_reference"]
'first_frame'

The labels' letters build up: (a) independent noise, (b) shared noise, (c) cross-frame attention, (d) a copied
frame's latents, (e) the source video's latents, (f) its latent differences, (g) a keyframe with differences.
Plain data: importing it loads neither torch nor diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Technique:
    """A named way of tying the frames together: the form's dropdown, the comparison grid, the notebook."""

    label: str  # short, for grid labels
    what: str  # one line
    settings: dict  # ConsistencyOptions fields fixed by the technique
    schedule: str = "each_step"  # when the latent reference acts, unless the user picks a schedule

    @property
    def uses_reference(self) -> bool:
        """Copy steps, strength and schedule act (a latent reference is on)."""
        return self.settings.get("latent_reference", "off") != "off"

    @property
    def needs_source(self) -> bool:
        """Needs the real frames behind the poses."""
        return self.settings.get("latent_reference") in ("source", "source_motion", "keyframe")


TECHNIQUES: dict[str, Technique] = {
    "independent_noise": Technique(
        "a. independent noise", "new noise per frame: every frame is its own picture (the per-image baseline)", {}),
    "shared_noise": Technique(
        "b. shared noise", "one initial noise for every frame: frames differ only where their poses differ",
        {"noise": "shared"}),
    "cross_frame_attention": Technique(
        "c. + cross-frame attn", "shared noise, and each frame's self-attention also reads frame 0 and the previous "
        "frame", {"noise": "shared", "cross_frame_attention": "first_and_previous"}),
    "copy_first_frame": Technique(
        "d. copy frame 0", "shared noise, and frame 0's latents copied into every frame over the first copy steps",
        {"noise": "shared", "latent_reference": "first_frame"}),
    "copy_previous_frame": Technique(
        "d'. copy prev. frame", "as d. but from the previous frame, a chain along the clip (equal to d. at strength 1)",
        {"noise": "shared", "latent_reference": "previous_frame"}),
    "source_latents": Technique(
        "e. source latents", "the real frames, VAE-encoded and noised to the current level, copied in (SDEdit)",
        {"noise": "shared", "latent_reference": "source"}),
    "latent_differences": Technique(
        "f. latent differences", "frame 0's latents moved by the source's latent differences z_k - z_0",
        {"noise": "shared", "latent_reference": "source_motion"}),
    "keyframe_differences": Technique(
        "g. keyframe + diffs", "as f., but only frame 0 sees its pose: an I-frame and P-frames, like a video codec",
        {"noise": "shared", "latent_reference": "keyframe"}),
    "recommended": Technique(
        "recommended", "shared noise + cross-frame attention + frame 0 copied over the first copy steps",
        {"noise": "shared", "cross_frame_attention": "first_and_previous", "latent_reference": "first_frame"}),
    "original_v2": Technique(
        "original v2 CLI", "the original's runnable script: new noise per frame, the previous frame's latents "
        "copied once, after the copy steps (its preset adds the 768 model and the dropped negative prompt)",
        {"latent_reference": "previous_frame"}, schedule="last_step"),
}


def shares_noise(technique: str) -> bool:
    """The technique starts every frame from one shared noise (the noise progression slider acts on it)."""
    return TECHNIQUES[technique].settings.get("noise") == "shared"
