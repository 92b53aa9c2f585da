"""Zero-shot pose video ("Controlled video generation without finetuning"): a pose sequence + a prompt → a video,
from an image model (Stable Diffusion 2.1 + thibaud's OpenPose ControlNet) by latent manipulation only.

Data flow: the driving clip is sampled and centre-cropped to the generation size → DWPose (or OpenPose) finds the
body in every frame, drawn OpenPose-style; or the clip already shows rendered skeletons → all frames are denoised in
one batch, tied together only by the chosen *technique* (shared noise, cross-frame attention, latent references) →
mp4 + side-by-side preview (poses | result) + JSON sidecar.

>>> from helpers.tasks import zero_shot_pose_video as task
>>> params = task.Params(driving_video="swing.mp4", technique="recommended")
>>> task.preview_inputs(params).show()                    # the pose frames, before spending GPU time
>>> task.run(params).show()
>>> task.compare(params, ["independent_noise", "shared_noise", "recommended"]).show()   # the same poses and seed

``TECHNIQUES`` maps each named technique to :class:`~helpers.pipelines.zero_shot_pose.ConsistencyOptions`;
``PRESETS`` are the original repository's golf-swing demo frames (fetched from GitHub on first use).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from helpers.errors import InputError
from helpers.pipelines.zero_shot_pose.techniques import TECHNIQUES, shares_noise
from helpers.tasks.base import (
    Progress,
    Result,
    TaskParams,
    Timings,
    cached,
    check_multiple,
    check_params,
    check_prompt,
    finish,
    is_smoke,
    param,
    run_memory_plan,
    weights_root,
)
from helpers.tasks.inputs import ASSETS, bundled_asset, count_frames, file_stamp, local_input, open_dwpose, read_clip

NAME = "zero_shot_pose_video"

DEFAULT_VIDEO = str(ASSETS / "dancer.mp4")
DEFAULT_FOLDER_FPS = 10.0  # frame folders carry no fps: the original wrote its videos at 10 fps
SIZE_MULTIPLE = 64
BASE_ROLES = {"sd21-base": "base", "sd21-768": "base_768"}

# SMOKE mode: tiny random-weight packs and tiny sizes, every line of the real path.
SMOKE_SIZE, SMOKE_FRAMES, SMOKE_STEPS = 64, 4, 3

# The original's prompt and negative prompt (its v2/v3 demos), and its golf-swing demo at the commit described in
# the method notes. Frame ranges like {0000..0025} are expanded into one download per frame.
ORIGINAL_PROMPT = (
    "A professional male golfer in a red polo shirt and white trousers, holding a golf club in his hands. "
    "The golfer is in the process of a swing seriously. The club is in motion, and its direction is aligned with "
    "the arm. Front-facing view, best quality, extremely detailed, realistic.")
ORIGINAL_NEGATIVE = (
    "longbody, low res, bad anatomy, bad hands, missing fingers, bad figure, bad proportions, bad shape, "
    "bad silhouette, bad form, bad structure, bad model, impossible pose, unnatural pose, awkward pose, bad pose, "
    "bad posture, extra golf clubs, twisted body, broken body, missing limbs, bad quality, blurry, out of focus, "
    "low quality, bad composition, bad framing, bad angle")
ORIGINAL_DEMO = ("https://raw.githubusercontent.com/QingquanBao/Controlled-video-generation-without-finetuning/"
                 "2b21d897d792d96de01d6fdd865fddacb5dcc3d7/demo")
GOLF_POSES = f"{ORIGINAL_DEMO}/poses/frame_{{0000..0025}}_rendered.png"
GOLF_FRAMES = f"{ORIGINAL_DEMO}/frames/frame_{{0000..0025}}.png"
GOLF_MASKS = f"{ORIGINAL_DEMO}/masks/mask_{{00..25}}.png"


# ---------------------------------------------------------------------------------------------------- techniques


def options_for(params: Params):
    """The :class:`ConsistencyOptions` of a run: the technique's settings, the noise progression where the noise is
    shared, plus copy steps, strength, schedule, noise matching and mask mode where a latent reference acts."""
    from helpers.pipelines.zero_shot_pose import ConsistencyOptions

    technique = TECHNIQUES[params.technique]
    settings = dict(technique.settings)
    if params.noise_progression and shares_noise(params.technique):
        settings["noise_independence"] = params.noise_progression
    if not technique.uses_reference:
        return ConsistencyOptions(**settings)
    schedule = technique.schedule if params.reference_schedule == "auto" else params.reference_schedule
    return ConsistencyOptions(**settings, reference_steps=params.copy_steps,
                              reference_strength=params.strength, reference_schedule=schedule,
                              match_noise_level=params.match_noise_level, mask_mode=params.mask_mode)


# -------------------------------------------------------------------------------------------------------- params


@dataclass
class Params(TaskParams):
    driving_video: str = field(default=DEFAULT_VIDEO, metadata=param(
        "The motion to follow: a video, a folder of frames, or a URL (one person, whole body in view); with "
        "detector 'none' it already shows rendered OpenPose skeletons", widget="file"))
    detector: str = field(default="dwpose", metadata=param(
        "How poses are found: dwpose (fast, robust), openpose (the annotator the ControlNet was trained with; "
        "needs the openpose_annotator pack), or none (the driving video already shows skeletons)",
        choices=["dwpose", "openpose", "none"]))
    prompt: str = field(default=ORIGINAL_PROMPT, metadata=param(
        "What every frame shows (the person, the clothes, the scene)", widget="textarea"))
    negative_prompt: str = field(default=ORIGINAL_NEGATIVE, metadata=param(
        "What to avoid (acts only with guidance above 1)", widget="textarea"))
    technique: str = field(default="recommended", metadata=param(
        "How the frames are tied together: " + "; ".join(f"{k}: {t.what}" for k, t in TECHNIQUES.items()),
        choices=list(TECHNIQUES)))
    noise_progression: float = field(default=0.0, metadata=param(
        "Noise progression, for the techniques that share one noise: 0 = every frame starts from the same noise, "
        "1 = each from its own, between = that share of each frame's own noise mixed in (variance kept)",
        min=0.0, max=1.0, step=0.05))
    copy_steps: int = field(default=9, metadata=param(
        "Denoising steps the latent reference acts on (the original's 'copy step 8' is 9 here); more steps fix "
        "more of the layout, fewer leave each frame freer", min=1, max=100))
    strength: float = field(default=1.0, metadata=param(
        "How far the latents are pulled towards the reference: 1 copies, below 1 blends", min=0.0, max=1.0,
        step=0.05))
    steps: int = field(default=50, metadata=param("Denoising steps (DDIM; 50 in the original)", min=1, max=100))
    guidance_scale: float = field(default=7.5, metadata=param(
        "Classifier-free guidance: how closely the prompt is followed (7.5 in the original)", min=0.0, max=20.0,
        step=0.5))
    width: int = field(default=512, metadata=param(
        "Width in pixels (a multiple of 64); 512 suits SD2.1-base, 768 the 768 model", min=256, max=1024, step=64))
    height: int = field(default=512, metadata=param(
        "Height in pixels (a multiple of 64); the driving video is centre-cropped to this aspect", min=256,
        max=1024, step=64))
    frames: int = field(default=16, metadata=param(
        "Frames to generate (16 in the original); all are denoised in one batch, so memory grows with them",
        min=2, max=64))
    sample_stride: int = field(default=2, metadata=param(
        "Use every n-th frame of the driving video", min=1, max=8))
    fps: float = field(default=0.0, metadata=param(
        f"Frames per second of the result; 0 = the driving video's fps / stride ({DEFAULT_FOLDER_FPS:g} for frame "
        "folders, as the original)", min=0.0, max=60.0, step=0.5))
    source_video: str = field(default="", metadata=param(
        "The real frames behind the poses (video, folder or URL), for the techniques that use the source video "
        "(source_latents, latent_differences, keyframe_differences); empty = the driving video", widget="file",
        group="Advanced"))
    masks: str = field(default="", metadata=param(
        "Optional per-frame masks (white = the person) for the techniques with a latent reference; see mask mode",
        widget="file", group="Advanced"))
    mask_mode: str = field(default="source_inside", metadata=param(
        "What masks mean. source_inside (the original's): the real frames' latents inside the mask, the technique's "
        "reference outside (needs the source video). reference_inside: the reference inside only, the outside "
        "left free", choices=["source_inside", "reference_inside"], group="Advanced"))
    base_model: str = field(default="sd21-base", metadata=param(
        "sd21-base: the 512 px model the ControlNet was trained on; sd21-768: the v-prediction model the original "
        "loaded (fetch sd21/base_768 in the setup notebook; use 768x768)", choices=list(BASE_ROLES),
        group="Advanced"))
    reference_schedule: str = field(default="auto", metadata=param(
        "each_step: the reference acts after each of the copy steps; last_step: once, after the last of them; "
        "auto: the technique's own (last_step for original_v2)", choices=["auto", "each_step", "last_step"],
        group="Advanced"))
    match_noise_level: bool = field(default=True, metadata=param(
        "Noise source latents to the current level and scale latent differences by it (off: mix clean latents "
        "into noisy ones, as the original did)", group="Advanced"))
    controlnet_scale: float = field(default=1.0, metadata=param(
        "How strongly the pose steers each frame", min=0.0, max=2.0, step=0.05, group="Advanced"))


_GOLF = dict(driving_video=GOLF_POSES, detector="none", source_video=GOLF_FRAMES, prompt=ORIGINAL_PROMPT,
             negative_prompt=ORIGINAL_NEGATIVE, frames=16, sample_stride=1, steps=50, guidance_scale=7.5, width=512,
             height=512, fps=10.0, copy_steps=9, strength=1.0, seed=1337)

PRESETS: dict[str, dict] = {
    "golf swing · recommended": dict(_GOLF, technique="recommended"),
    # The original's v2 script at its command-line defaults: the 768 v-model at 512 px, and no negative prompt (its
    # negative prompt never reached the model). Its noise came from a CUDA generator it never seeded, so its seed
    # option did nothing; ours is seeded (and drawn on the CPU), so the frames are not the original's.
    "golf swing · the original's v2 command line (768 model, own seeded noise)": dict(
        _GOLF, technique="original_v2", base_model="sd21-768", negative_prompt=""),
    "golf swing · poses re-detected with DWPose": dict(_GOLF, driving_video=GOLF_FRAMES, detector="dwpose",
                                                       source_video="", technique="recommended"),
    "golf swing · keyframe + latent differences": dict(_GOLF, frames=10, technique="keyframe_differences",
                                                       copy_steps=16),
    "golf swing · source latents inside the masks": dict(_GOLF, technique="source_latents", masks=GOLF_MASKS,
                                                         copy_steps=16),
}


# -------------------------------------------------------------------------------------------------------- inputs

def _local_input(value: str, what: str, smoke: bool, notes: dict) -> Path | None:
    """A path (file or folder) for ``value``, downloaded when a URL; SMOKE mode never downloads: the bundled dancer
    stands in for a video, masks are left out."""
    def stand_in(_url: str) -> Path | None:
        return None if what == "masks" else bundled_asset("dancer.mp4", smoke)

    return local_input(value, what, smoke=smoke, sources=notes, stand_in=stand_in, folders=True)


# ---------------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out from Params before any model loads."""

    driving: Path
    source: Path | None  # the real frames (None: no technique needs them)
    masks: Path | None
    width: int
    height: int
    frames: int
    steps: int
    copy_steps: int
    fps: float
    options: object  # ConsistencyOptions
    base_role: str
    notes: dict  # where inputs came from (URLs), SMOKE substitutions

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def _check_count(path: Path, what: str, frames: int, stride: int) -> float | None:
    """Refuse asking for more frames than ``path`` gives at this stride; returns its fps (None for folders)."""
    count, fps = count_frames(path, what)
    available = math.ceil(count / stride)
    if frames > available:
        raise InputError(f"{frames} frames asked for, but the {what} ({path.name}, {count} frames) gives {available} "
                         f"at sample stride {stride}: ask for at most {available} frames or lower the stride")
    return fps


def plan(params: Params) -> Plan:
    """Check everything and work out the run (downloads URL inputs once); raises ``InputError``, loads no model."""
    from helpers.pipelines.zero_shot_pose import check_call_inputs

    check_params(params)
    prompt = check_prompt(params.prompt)
    technique = TECHNIQUES[params.technique]
    smoke = is_smoke(params)
    check_multiple("width", params.width, SIZE_MULTIPLE)
    check_multiple("height", params.height, SIZE_MULTIPLE)
    if technique.uses_reference and params.copy_steps > params.steps:
        raise InputError(f"copy steps ({params.copy_steps}) is more than the denoising steps ({params.steps}): "
                         f"lower copy steps to at most {params.steps}")
    if params.noise_progression and not shares_noise(params.technique):
        raise InputError(f"noise progression mixes per-frame noise into a shared noise, and {params.technique} "
                         "shares none: set noise progression to 0, or pick a technique with shared noise")
    if params.negative_prompt.strip() and params.guidance_scale <= 1:
        raise InputError(f"a negative prompt only acts with guidance above 1 (it is {params.guidance_scale}): "
                         "raise guidance_scale or clear the negative prompt")

    notes: dict = {}
    if smoke and params.detector == "openpose":
        notes["detector"] = "SMOKE mode: the tiny DWPose model stands in for OpenPose (there is no tiny OpenPose)"
    driving = _local_input(params.driving_video, "driving video", smoke, notes)
    if driving is None:
        raise InputError("no driving video: give a video, a folder of frames or a URL")
    video_fps = _check_count(driving, "driving video", params.frames, params.sample_stride)

    masks = _local_input(params.masks, "masks", smoke, notes)
    if masks is not None:
        if not technique.uses_reference:
            raise InputError(f"masks limit where a latent reference acts, and {params.technique} has none: pick a "
                             "copy or source technique, or clear masks")
        _check_count(masks, "masks", params.frames, params.sample_stride)
    masked_source = masks is not None and params.mask_mode == "source_inside"
    source = None
    if technique.needs_source or masked_source:
        source = _local_input(params.source_video, "source video", smoke, notes)
        if source is None and params.detector == "none" and not smoke:
            what = f"the technique {params.technique}" if technique.needs_source else \
                "masks (mask mode source_inside, the original's)"
            raise InputError(f"{what} builds on the real frames behind the poses, but the driving video holds "
                             "rendered skeletons: set source_video, or pick another technique or mask mode")
        source = source or driving
        _check_count(source, "source video", params.frames, params.sample_stride)

    width, height, frames, steps, copy_steps = params.width, params.height, params.frames, params.steps, \
        params.copy_steps
    if smoke:
        width = height = SMOKE_SIZE
        frames, steps = min(frames, SMOKE_FRAMES), min(steps, SMOKE_STEPS)
        copy_steps = min(copy_steps, steps)
    options = options_for(replace(params, copy_steps=copy_steps))
    # the pipeline's own checks, on stand-in arrays of the real shapes: what it would refuse is refused now
    blank = np.zeros((frames, height, width, 3), np.uint8)
    check_call_inputs(prompt=prompt, negative_prompt=params.negative_prompt.strip() or None, poses=blank,
                      options=options, num_inference_steps=steps, source_frames=blank if source else None,
                      masks=blank[..., 0] if masks else None, guidance_scale=params.guidance_scale,
                      controlnet_conditioning_scale=params.controlnet_scale)
    fps = float(params.fps) if params.fps > 0 else (
        round(video_fps / params.sample_stride, 3) if video_fps else DEFAULT_FOLDER_FPS)
    return Plan(driving=driving, source=source, masks=masks, width=width, height=height, frames=frames, steps=steps,
                copy_steps=copy_steps, fps=fps, options=options, base_role=BASE_ROLES[params.base_model], notes=notes)


def validate(params: Params) -> None:
    """Raise ``InputError`` (one line, what to do) for any bad setting or input; loads no model."""
    plan(params)


# ------------------------------------------------------------------------------------------------------ the poses


@dataclass
class PoseInputs:
    """The prepared inputs of a run, all at the generation size."""

    driving: np.ndarray  # [F, H, W, 3] uint8 driving frames, centre-cropped
    poses: np.ndarray  # [F, H, W, 3] uint8 OpenPose-style renders
    source: np.ndarray | None  # [F, H, W, 3] uint8 real frames (techniques that use them)
    masks: np.ndarray | None  # [F, H, W] float32 in [0, 1]
    held: list[int]  # frames without a person, holding a neighbour's pose
    weights: list  # provenance of the pose detector
    detector: str


def _detect(frames: np.ndarray, detector: str, smoke: bool, progress: Progress | None):
    from helpers import weights
    from helpers.pipelines.zero_shot_pose import poses_from_video
    from helpers.pipelines.zero_shot_pose.poses import OPENPOSE_PACK, OPENPOSE_ROLE, openpose_body_detector

    if detector == "dwpose":
        runner, provenance = open_dwpose(smoke)
    else:
        runner = openpose_body_detector()
        provenance = [weights.provenance(OPENPOSE_PACK, OPENPOSE_ROLE)]
    done = []

    def detect(image):  # the detector, reporting progress("pose detection", done, total)
        pose = runner(image)
        done.append(1)
        if progress is not None:
            progress("pose detection", len(done), len(frames))
        return pose

    try:
        found = poses_from_video(frames, detect=detect)
    finally:  # free the detector (ONNX sessions on the GPU) before the image model loads
        if hasattr(runner, "close"):
            runner.close()
    return found, provenance


_PREPARED: dict = {}  # the last prepared inputs: a preview, Generate and a comparison detect only once


def prepare_inputs(params: Params, p: Plan | None = None, progress: Progress | None = None) -> PoseInputs:
    """Read, crop and (unless detector is 'none') detect and draw the poses; cached for the same inputs."""
    from helpers import media
    from helpers.pipelines.zero_shot_pose import prepare_pose_frames

    p = p or plan(params)
    smoke = is_smoke(params)
    key = (file_stamp(p.driving), file_stamp(p.source), file_stamp(p.masks), p.size, p.frames, params.sample_stride,
           params.detector, smoke)
    if key in _PREPARED:
        return _PREPARED[key]
    driving = media.center_crop_resize(read_clip(p.driving, p.frames, params.sample_stride, "driving video"), p.size)
    if params.detector == "none":
        found, provenance = prepare_pose_frames(driving), []
    else:
        found, provenance = _detect(driving, "dwpose" if smoke else params.detector, smoke, progress)
    source = masks = None
    if p.source is not None:
        source = driving if p.source == p.driving else media.center_crop_resize(
            read_clip(p.source, p.frames, params.sample_stride, "source video"), p.size)
    if p.masks is not None:
        mask_frames = media.center_crop_resize(read_clip(p.masks, p.frames, params.sample_stride, "masks"), p.size)
        masks = mask_frames.astype(np.float32).mean(axis=-1) / 255.0
    out = PoseInputs(driving=driving, poses=found.frames, source=source, masks=masks, held=list(found.held),
                     weights=provenance, detector=params.detector)
    _PREPARED.clear()
    _PREPARED[key] = out
    return out


@dataclass
class InputPreview:
    """What a run will use, shown before any GPU time is spent: see :meth:`show`."""

    plan: Plan
    inputs: PoseInputs

    def summary(self) -> str:
        p, inputs = self.plan, self.inputs
        how = {"none": "used as given", "dwpose": "detected with DWPose", "openpose": "detected with OpenPose"}
        lines = [f"{p.frames} frames at {p.width}x{p.height}, {p.fps:g} fps; poses {how[inputs.detector]}",
                 f"technique: {p.options.describe()}"]
        if inputs.held:
            lines.append(f"no person found in frame(s) {inputs.held}: they hold the nearest earlier pose")
        return "\n".join(lines)

    def show(self) -> None:
        from helpers import media

        overlay = media.dim_under(self.inputs.driving, self.inputs.poses)
        media.show_video(media.side_by_side(self.inputs.driving, self.inputs.poses, overlay), fps=self.plan.fps,
                         title="driving frames | pose frames | poses over the frames")
        print(self.summary())


def preview_inputs(params: Params, *, progress: Progress | None = None) -> InputPreview:
    """Prepare the poses of the frames that will be generated (cached) and return them for display."""
    p = plan(params)
    return InputPreview(plan=p, inputs=prepare_inputs(params, p, progress))


# ------------------------------------------------------------------------------------------------------------ run


def _model_paths(base_role: str, smoke: bool) -> tuple[Path, Path, Path | None]:
    """(base folder, ControlNet path, weights root); SMOKE writes tiny random-weight packs into its own root."""
    from helpers import weights
    from helpers.pipelines.zero_shot_pose.loading import BASE_PACK, CONTROLNET_PACK, CONTROLNET_ROLE

    root = weights_root(smoke)
    if smoke:
        from helpers.testing.zero_shot import write_tiny_zero_shot_packs

        models = root / "models"
        if not ((models / CONTROLNET_PACK / CONTROLNET_ROLE / "config.json").is_file()
                and (models / BASE_PACK / base_role / "model_index.json").is_file()):
            write_tiny_zero_shot_packs(root)
    return weights.resolve(BASE_PACK, base_role, root), weights.resolve(CONTROLNET_PACK, CONTROLNET_ROLE, root), root


def load_pipeline(base: Path, controlnet: Path, memory):
    """The pipeline, loaded once and kept between runs (same weights and memory plan)."""
    from helpers.pipelines.zero_shot_pose import load_zero_shot_pipeline

    def load():
        # offloading plans load on the CPU; accelerate's hooks then move each model to the GPU while it runs
        device = "cpu" if memory.offload != "none" else memory.device
        pipe = load_zero_shot_pipeline(base_dir=base, controlnet_path=controlnet, device=device, dtype=memory.dtype)
        return pipe.apply_memory_plan(memory)

    return cached(f"{NAME}:{base}:{controlnet}:{memory.tier}:{memory.dtype_name}:{memory.device}", load)


def note_prompt(p: Plan, message: str, said: set[str]) -> None:
    """Keep CLIP's 77-token note in ``p.notes`` for the sidecar; print it once (``said``: what was printed)."""
    p.notes["prompt"] = message
    if message not in said:
        said.add(message)
        print(f"note: {message}")


def generate(pipe, params: Params, p: Plan, inputs: PoseInputs, options, progress: Progress | None,
             said: set[str] | None = None, *, resume_from=None, on_state=None):
    """One pipeline call. CLIP's 77-token cut (the original's own prompt is longer) is kept in ``p.notes`` for the
    sidecar and printed once (once per comparison too: ``said`` holds what was already printed). ``resume_from``
    and ``on_state`` go to the pipeline (:mod:`helpers.pipelines.loop_state`)."""
    said = set() if said is None else said
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = pipe(params.prompt.strip(), inputs.poses, negative_prompt=params.negative_prompt.strip() or None,
                      options=options,
                      source_frames=inputs.source if options.needs_source_frames(inputs.masks is not None) else None,
                      masks=inputs.masks, num_inference_steps=p.steps, guidance_scale=params.guidance_scale,
                      controlnet_conditioning_scale=params.controlnet_scale,
                      generator=torch.Generator("cpu").manual_seed(params.seed), output_type="uint8",
                      progress=progress, resume_from=resume_from, on_state=on_state)
    for w in caught:
        message = str(w.message)
        if "tokens long" in message:
            note_prompt(p, message, said)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return output


def _weights(p: Plan, inputs: PoseInputs, root: Path | None) -> list[dict]:
    from helpers import weights
    from helpers.pipelines.zero_shot_pose.loading import BASE_PACK, CONTROLNET_PACK, CONTROLNET_ROLE

    return [weights.provenance(BASE_PACK, p.base_role, root),
            weights.provenance(CONTROLNET_PACK, CONTROLNET_ROLE, root), *inputs.weights]


def run_identity(p: Plan, inputs: PoseInputs, memory, root: Path | None) -> dict:
    """What decides a run's result besides its parameters (:func:`helpers.resume.RunState.open`): the weights,
    the input files' contents and the number format the loop runs in."""
    from helpers import resume

    files = {"driving_video": p.driving, "source_video": p.source, "masks": p.masks}
    return {"weights": _weights(p, inputs, root), "dtype": memory.dtype_name,
            "inputs": {k: resume.file_identity(v) for k, v in files.items() if v is not None}}


def run_meta(params: Params, p: Plan, inputs: PoseInputs, memory, base: Path, root: Path | None) -> dict:
    """The sidecar's description of a run (method, weights, memory plan, inputs, sizes)."""
    meta = {
        "method": "zero-shot pose video (SD2.1 + OpenPose ControlNet, latent manipulation)",
        "weights": _weights(p, inputs, root),
        "base_folder": str(base),
        "memory_plan": memory.as_dict(),
        "inputs": {"driving_video": str(p.driving), "source_video": str(p.source) if p.source else None,
                   "masks": str(p.masks) if p.masks else None, "notes": p.notes, "detector": inputs.detector,
                   "frames_holding_a_pose": inputs.held},
        "generation": {"width": p.width, "height": p.height, "frames": p.frames, "steps": p.steps},
        "smoke": is_smoke(params),
    }
    if is_smoke(params):
        meta["requested_params"] = params
    return meta


def effective_params(params: Params, p: Plan) -> Params:
    """The parameters actually used (SMOKE shrinks sizes, frames and steps)."""
    return replace(params, width=p.width, height=p.height, frames=p.frames, steps=p.steps, copy_steps=p.copy_steps)


@dataclass
class Prepared:
    """What :func:`run` and :func:`compare` set up before the pipeline: model paths, memory plan, pose inputs."""

    base: Path
    controlnet: Path
    root: Path | None
    memory: object  # runtime.MemoryPlan
    inputs: PoseInputs


def prepare_run(params: Params, p: Plan, timings: Timings, progress: Progress | None) -> Prepared:
    """Find the weights (missing ones fail before any pose work), pick the memory plan, prepare the poses."""
    from helpers import runtime

    base, controlnet, root = _model_paths(p.base_role, is_smoke(params))
    memory = run_memory_plan(is_smoke(params), params.precision)
    runtime.reset_peak_memory()
    with timings.stage("poses"):
        inputs = prepare_inputs(params, p, progress)
    return Prepared(base=base, controlnet=controlnet, root=root, memory=memory, inputs=inputs)


def run(params: Params, *, progress: Progress | None = None) -> Result:
    """Generate the video; the returned ``Result`` also holds the pose frames followed (``result.control``).

    Order: check everything (``InputError``) → find the weights (``MissingWeightsError``) → poses (the detector is
    closed again) → the pipeline (loaded once, kept between runs) → all frames in one batch → mp4 + preview + sidecar.
    The denoising loop's state is kept beside the outputs while it works: run again with the same settings after an
    interruption and it continues where it stopped (``fresh_start`` discards that).
    """
    from helpers import resume

    timings = Timings()
    with timings.stage("inputs"):
        p = plan(params)
    ready = prepare_run(params, p, timings, progress)
    run_state = resume.RunState.open(NAME, params, identity=run_identity(p, ready.inputs, ready.memory, ready.root),
                                     progress=progress)
    recorder = run_state.loop("denoise")
    with timings.stage("load"):
        pipe = load_pipeline(ready.base, ready.controlnet, ready.memory)
    with timings.stage("generate"):
        output = generate(pipe, params, p, ready.inputs, p.options, progress, resume_from=recorder.resume_from,
                          on_state=recorder)
    meta = run_meta(params, p, ready.inputs, ready.memory, ready.base, ready.root)
    meta["technique"] = {"name": params.technique, "options": p.options, "described": p.options.describe(),
                         "unet_frame_evaluations": output.frame_steps}
    result = finish(NAME, effective_params(params, p), output.frames, p.fps, control=ready.inputs.poses, meta=meta,
                    timings=timings, run_state=run_state)
    result.control = ready.inputs.poses
    return result


def compare(params: Params, techniques: Sequence[str], *, progress: Progress | None = None, columns: int = 3,
            tile: int = 256):
    """Run several techniques on the same poses and seed; return (and save) a labelled grid for comparison
    (:class:`helpers.tasks.zero_shot_compare.Comparison`). Every technique is checked before anything loads; an
    interrupted comparison resumes without computing its finished techniques again."""
    from helpers.tasks import zero_shot_compare

    return zero_shot_compare.compare(params, techniques, progress=progress, columns=columns, tile=tile)
