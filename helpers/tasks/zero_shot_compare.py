"""Several zero-shot techniques on the same poses and seed: the videos, a labelled grid video and a contact sheet.

>>> from helpers.tasks import zero_shot_pose_video as task
>>> task.compare(task.Params(driving_video="swing.mp4"), ["independent_noise", "shared_noise", "recommended"]).show()

Each technique is its own denoising loop, resumable on its own: an interrupted comparison, run again with the same
settings, takes the finished techniques' frames from the run folder (never computing them again) and continues the
interrupted technique from its last saved step (:mod:`helpers.resume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from helpers.errors import InputError
from helpers.tasks import zero_shot_pose_video as zs
from helpers.tasks.base import Progress, Result, Timings, finish, output_folder

NAME = f"{zs.NAME}_comparison"


def frame_to_frame_change(video: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (0-255 per pixel): lower is steadier. With the same poses
    the motion is the same for every technique, so differences between techniques are flicker."""
    if len(video) < 2:
        return 0.0
    return float(np.abs(np.diff(video.astype(np.int16), axis=0)).mean())


@dataclass
class Comparison:
    """Several techniques on the same poses and seed: the videos, a labelled grid video and a contact sheet."""

    techniques: list[str]
    videos: dict[str, np.ndarray]  # technique → [F, H, W, 3] uint8
    poses: np.ndarray
    grid: np.ndarray  # [F, H', W', 3] uint8: poses, then one labelled tile per technique
    sheet: np.ndarray  # H'' × W'' × 3 uint8: a row per technique, a column per sampled frame
    change: dict[str, float]  # technique → frame_to_frame_change
    result: Result  # the grid as written (mp4 + preview + sidecar)

    def table(self) -> str:
        lines = ["technique               frame-to-frame change (lower = steadier)"]
        lines += [f"{name:<23} {self.change[name]:6.1f}" for name in self.techniques]
        return "\n".join(lines)

    def show(self) -> None:
        from helpers import media

        media.show_video(self.grid, fps=self.result.fps, title="same poses, same seed, one technique per tile",
                         max_side=1024)
        media.show_image(self.sheet, title="frames side by side", max_side=1024)
        print(self.table())


def check_techniques(techniques: Sequence[str]) -> list[str]:
    techniques = list(techniques)
    unknown = [t for t in techniques if t not in zs.TECHNIQUES]
    if not techniques or unknown or len(set(techniques)) != len(techniques):
        raise InputError(f"techniques must be distinct names among {', '.join(zs.TECHNIQUES)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return techniques


def _technique_frames(run_state, pipe, name: str, params, p, inputs, progress: Progress | None,
                      said: set[str]) -> np.ndarray:
    """One technique's frames: kept from an interrupted run when it finished there, else generated (continuing
    its own loop's saved state) and kept at once, before the next technique starts."""
    import torch

    label = zs.TECHNIQUES[name].label
    kept = run_state.saved(f"frames.{name}")
    if kept is not None:
        if kept["prompt_note"]:
            zs.note_prompt(p, kept["prompt_note"], said)
        if progress is not None:
            progress(f"resuming: {label} finished earlier", 1, 1)
        return kept["frames"].numpy()
    recorder = run_state.loop(f"technique.{name}", label=label)
    frames = zs.generate(pipe, params, p, inputs, p.options, progress, said, resume_from=recorder.resume_from,
                         on_state=recorder).frames
    run_state.save(f"frames.{name}", {"frames": torch.from_numpy(frames), "prompt_note": p.notes.get("prompt", "")})
    recorder.done()
    return frames


def compare(params, techniques: Sequence[str], *, progress: Progress | None = None, columns: int = 3,
            tile: int = 256) -> Comparison:
    """Run several techniques on the same poses and seed; return (and save) a labelled grid for comparison.

    Every technique is checked before anything loads; poses are prepared and the pipeline loaded once. An
    interrupted comparison resumes (same settings, same techniques): finished techniques are not computed again.
    """
    from helpers import media, resume

    techniques = check_techniques(techniques)
    timings = Timings()
    with timings.stage("inputs"):
        # masks act where a latent reference does, noise progression where the noise is shared
        variants = {t: replace(params, technique=t, masks=params.masks if zs.TECHNIQUES[t].uses_reference else "",
                               noise_progression=params.noise_progression if zs.shares_noise(t) else 0.0)
                    for t in techniques}
        plans = {t: zs.plan(v) for t, v in variants.items()}
    # the inputs are prepared once, for the technique that needs the most (source frames, masks): whatever the order
    widest = max(techniques, key=lambda t: (plans[t].source is not None) + (plans[t].masks is not None))
    ready = zs.prepare_run(variants[widest], plans[widest], timings, progress)
    inputs = ready.inputs
    folder = output_folder(zs.NAME, params)
    identity = dict(zs.run_identity(plans[widest], inputs, ready.memory, ready.root), techniques=techniques,
                    columns=columns, tile=tile)
    run_state = resume.RunState.open(NAME, params, identity=identity, progress=progress, folder=folder)
    with timings.stage("load"):
        pipe = zs.load_pipeline(ready.base, ready.controlnet, ready.memory)
    videos, described, masked, said = {}, {}, [], set()
    with timings.stage("generate"):
        for done, name in enumerate(techniques):
            p = plans[name]
            own = replace(inputs, masks=inputs.masks if p.masks is not None else None)
            if own.masks is not None:
                masked.append(name)
            videos[name] = _technique_frames(run_state, pipe, name, variants[name], p, own, progress, said)
            described[name] = p.options.describe()
            if progress is not None:
                progress("techniques", done + 1, len(techniques))
    clips = [("poses", inputs.poses)] + [(zs.TECHNIQUES[t].label, videos[t]) for t in techniques]
    grid = media.comparison_grid(clips, columns=columns, tile=tile)
    sheet = media.contact_sheet(clips)
    change = {t: round(frame_to_frame_change(v), 3) for t, v in videos.items()}
    p = plans[widest]
    for other in plans.values():  # the prompt note, whichever technique met it (a kept one meets nothing)
        if "prompt" in other.notes:
            p.notes.setdefault("prompt", other.notes["prompt"])
    meta = zs.run_meta(params, p, inputs, ready.memory, ready.base, ready.root)
    meta["comparison"] = {"techniques": techniques, "options": described, "frame_to_frame_change": change,
                          "masked": {"techniques": masked, "mask_mode": params.mask_mode} if masked else None,
                          "layout": f"{columns} tiles per row: poses, then " + ", ".join(techniques)}
    effective = replace(zs.effective_params(params, p), output_dir=str(folder))
    result = finish(NAME, effective, grid, p.fps, meta=meta, timings=timings, run_state=run_state)
    return Comparison(techniques=techniques, videos=videos, poses=inputs.poses, grid=grid, sheet=sheet,
                      change=change, result=result)
