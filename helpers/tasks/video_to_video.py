"""Video to video (MuseV): a source video + a reference picture → a new video that moves like the source and looks
like the picture; with ``musev_referencenet_pose``, pose to video.

Data flow: the source frames are cropped and resized to the video size as the original does → a condition is drawn
from every frame (``dwpose_body_hand``: DWPose body + hands on black; canny, depth, lineart, softedge) or the video
already is one (``video_is_middle``) → the ControlNet input frames. The reference picture is frame 0 (VAE-encoded,
never noised, ReferenceNet + IP-Adapter for the referencenet models) and the first control frame goes with it. Every
window of noisy frames → the ControlNet (same input as the video UNet) adds its residuals to the UNet's skips →
windows averaged → guidance → one Euler step; ``which2video="video"`` starts from the source frames VAE-encoded and
noised instead of pure noise.

>>> from helpers.tasks import video_to_video as task
>>> params = task.Params(**task.PRESETS["dance1 · spark girl (the README pose2video run)"])
>>> task.preview_inputs(params).show()     # source frame | condition | ControlNet input, before any video model
>>> task.run(params).show()

``PRESETS`` are the video tasks of the original's ``configs/tasks/example.yaml`` (dance1, dance2, duffy), their pose
videos and pictures fetched from GitHub on first use (:func:`helpers.tasks.inputs.fetch_input`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from helpers import registry
from helpers.errors import InputError
from helpers.pipelines.musev.conditions import CONDITIONS as _CONDITION_SPECS
from helpers.pipelines.musev.prompts import NEGATIVE_PROMPT_V2
from helpers.tasks.base import (
    Progress,
    Result,
    TaskParams,
    Timings,
    cached,
    check_params,
    check_prompt,
    finish,
    is_smoke,
    param,
    run_memory_plan,
    weights_root,
)
from helpers.tasks.inputs import ASSETS, bundled_asset, count_frames, file_stamp, local_input, read_clip
from helpers.tasks.text_image_to_video import (
    PART_NAMES,
    output_size,
    pack_base_parts,
    quiet_libraries,
    resolve_base_model,
)

NAME = "video_to_video"

CONDITIONS = tuple(_CONDITION_SPECS)  # dwpose_body_hand, canny, depth, lineart, softedge, hed
POSE_CONDITIONS = tuple(name for name, spec in _CONDITION_SPECS.items() if spec.pose)
MODELS = ("musev_referencenet_pose", "musev_referencenet", "musev")
POSE_MODEL = "musev_referencenet_pose"  # trained on dwpose_body_hand only ("only used for pose2video")
UNET_ROLES = {"musev": "unet_musev", "musev_referencenet": "unet_referencenet",
              "musev_referencenet_pose": "unet_referencenet_pose"}
REFERENCE_ROLES = {"musev": (), "musev_referencenet": ("referencenet", "image_encoder", "ip_adapter_image_proj"),
                   "musev_referencenet_pose": ("referencenet", "image_encoder", "ip_adapter_image_proj_pose")}
FANTASTICMIX_ROLE = "base_model_fantasticmix"  # the README's video2video base model, when the pack offers it
DEFAULT_BASE = "fantasticmix" if FANTASTICMIX_ROLE in registry.PACKS["musev"].roles else "majicmix"
DEFAULT_VIDEO = str(ASSETS / "dancer.mp4")  # a synthetic dancer made by this project, so a plain run works
DEFAULT_IMAGE = str(ASSETS / "reference.png")
DEFAULT_PROMPT = "(masterpiece, best quality, highres:1), a person is dancing"
MAX_FRAMES = 240
FACE_POINTS = (0, 14, 15)  # nose, right eye, left eye (OpenPose body order): a face = the nose and an eye

# SMOKE mode: tiny random-weight packs and tiny sizes, every line of the real path.
SMOKE_SIDE, SMOKE_FRAMES, SMOKE_WINDOW, SMOKE_OVERLAP, SMOKE_STEPS = 64, 5, 3, 1, 2


@dataclass
class Params(TaskParams):
    source_video: str = field(default=DEFAULT_VIDEO, metadata=param(
        "The video whose motion is followed: an RGB video of a person, or a ready condition video (pose "
        "skeletons, depth...) with video_is_middle on (path, URL or upload)", widget="file"))
    reference_image: str = field(default=DEFAULT_IMAGE, metadata=param(
        "Whose appearance: frame 0 of the result, also read by ReferenceNet and IP-Adapter (the original's "
        "condition_images = refer_image = ipadapter_image); its pose should match the first source frame",
        widget="file"))
    prompt: str = field(default=DEFAULT_PROMPT, metadata=param(
        "What the video shows, in A1111 weighting syntax: (word:1.3) stresses, [word] softens", widget="textarea"))
    negative_prompt: str = field(default=NEGATIVE_PROMPT_V2, metadata=param(
        "What to avoid (the original's 'V2')", widget="textarea"))
    model: str = field(default=POSE_MODEL, metadata=param(
        "musev_referencenet_pose: pose to video (dwpose_body_hand only); musev_referencenet: any condition, with "
        "ReferenceNet + IP-Adapter; musev: temporal layers only (least memory)", choices=MODELS))
    condition: str = field(default="dwpose_body_hand", metadata=param(
        "What is drawn from every source frame for the ControlNet: dwpose_body_hand (DWPose body + hands, no face), "
        "canny, depth (MiDaS), lineart, softedge (HED, ControlNet 1.1) or hed (HED, ControlNet 1.0 as the "
        "original)", choices=CONDITIONS))
    video_is_middle: bool = field(default=False, metadata=param(
        "The source video already is a condition video of that kind (e.g. pose skeletons): used as is"))
    which2video: str = field(default="video_middle", metadata=param(
        "video_middle: the condition only, the video starts from noise (README); video: also the RGB source frames, "
        "VAE-encoded and noised, as a weak start (needs an RGB source video)", choices=["video_middle", "video"]))
    width: int = field(default=0, metadata=param(
        "Video width in px, floored to a multiple of 64; 0 = from the reference picture (its own size, longer side "
        "at most 1280, as the original)", min=0, max=2048, step=64))
    height: int = field(default=0, metadata=param(
        "Video height in px, floored to a multiple of 64; 0 = from the reference picture (or from the width)",
        min=0, max=2048, step=64))
    frames: int = field(default=12, metadata=param(
        "Source frames used (the original's time_size, 12): the first one's condition goes with the reference "
        "picture, the others are generated; the video has this many frames", min=2, max=MAX_FRAMES))
    sample_rate: int = field(default=1, metadata=param(
        "Use every n-th source frame (the original's sample_rate, 1); the original also passes it as the motion "
        "speed", min=1, max=16))
    fps: float = field(default=12.0, metadata=param("Frames per second of the result (README: 12)", min=1.0,
                                                    max=60.0, step=1.0))
    steps: int = field(default=10, metadata=param("Euler denoising steps (video_num_inference_steps, 10)",
                                                  min=1, max=100))
    guidance_scale: float = field(default=3.5, metadata=param(
        "Classifier-free guidance of the video (video_guidance_scale, 3.5)", min=0.0, max=15.0, step=0.5))
    condition_video: str = field(default="", metadata=param(
        "Optional: a ready condition video for the RGB source video (same size and length), used instead of "
        "drawing the condition", widget="file", group="Advanced"))
    controlnet_scale: float = field(default=1.0, metadata=param(
        "Weight of the ControlNet residuals (controlnet_conditioning_scale, 1.0)", min=0.0, max=2.0, step=0.05,
        group="Advanced"))
    control_start: float = field(default=0.0, metadata=param(
        "Fraction of the steps before the ControlNet starts (0)", min=0.0, max=1.0, step=0.05, group="Advanced"))
    control_end: float = field(default=1.0, metadata=param(
        "Fraction of the steps after which the ControlNet stops (1)", min=0.0, max=1.0, step=0.05, group="Advanced"))
    window: int = field(default=12, metadata=param(
        "Frames per window (context_frames, 12)", min=2, max=32, group="Long video"))
    overlap: int = field(default=4, metadata=param(
        "Frames shared by neighbouring windows, averaged at every step (context_overlap, 4)", min=0, max=31,
        group="Long video"))
    base_model: str = field(default=DEFAULT_BASE, metadata=param(
        "SD1.5 image model under the temporal layers: fantasticmix (the README's for video2video) or majicmix from "
        "the MuseV pack, or the path of your own (diffusers folder or one .safetensors/.ckpt file)", widget="text",
        group="Advanced"))
    ip_adapter_scale: float = field(default=1.0, metadata=param(
        "Weight of the picture's IP-Adapter tokens (referencenet models; 1 = the original's)", min=0.0, max=2.0,
        step=0.05, group="Advanced"))


# ------------------------------------------------------------------------------------------------------- presets
# The video2video entries of configs/tasks/example.yaml of TMElyralab/MuseV (size = height/width x
# img_length_ratio 1.0, already multiples of 64); run with the README's video2video command (dwpose_body_hand,
# video_middle, time_size 12, fps 12). The yaml marks their videos as pose videos (video_is_middle: True).
DATA = "https://raw.githubusercontent.com/TMElyralab/MuseV/43370a6215afdfcd6d6af404350c132cd3b6eef8/data"
_DANCE1 = "(masterpiece, best quality, highres:1) , a girl is dancing, wearing a dress made of stars, animation"
_WALLPAPER = "(best quality), ((masterpiece)), (highres), illustration, original, extremely detailed wallpaper"
_EXAMPLES = [  # (preset name, pose video, picture, prompt, height, width)
    ("dance1 · spark girl (the README pose2video run)", "video1_girl_poseseq.mp4", "spark_girl.png", _DANCE1,
     960, 512),
    ("dance2 · cyber girl", "video1_girl_poseseq.mp4", "cyber_girl.png", _WALLPAPER, 960, 512),
    # the README notes this pose video is not aligned with its picture (a pose-align step was never released)
    ("duffy", "pose-for-Duffy-4.mp4", "duffy.png", _WALLPAPER, 1280, 704),
]
_README_RUN = dict(condition="dwpose_body_hand", video_is_middle=True, which2video="video_middle", frames=12,
                   fps=12.0, steps=10, guidance_scale=3.5, window=12, overlap=4, sample_rate=1, controlnet_scale=1.0,
                   control_start=0.0, control_end=1.0, base_model=DEFAULT_BASE, condition_video="")
PRESETS: dict[str, dict] = {
    name: dict(_README_RUN, source_video=f"{DATA}/source_video/{video}", reference_image=f"{DATA}/images/{image}",
               prompt=prompt, height=h, width=w, model=POSE_MODEL)
    for name, video, image, prompt, h, w in _EXAMPLES
}
PRESETS["dance1 · musev_referencenet (README)"] = dict(PRESETS[_EXAMPLES[0][0]], model="musev_referencenet")
PRESETS["dance1 · musev, least memory (README)"] = dict(PRESETS[_EXAMPLES[0][0]], model="musev")
PRESETS["dance1 · 96 frames in parallel windows"] = dict(PRESETS[_EXAMPLES[0][0]], frames=96)


# ---------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out from Params before any model loads."""

    video: Path
    video_frames: int  # frames in the source file
    condition_video: Path | None
    image: Path
    prompt: str
    width: int
    height: int
    frames: int  # frames read = frames of the result (frame 0 = the reference picture)
    window: int
    overlap: int
    steps: int
    windows: tuple  # (first, last) generated frame of every window
    base_model: Path | None  # None: a pack's base model
    base_role: str  # the pack role of the base model ("base_model" = majicmix)
    sources: dict
    notes: tuple

    @property
    def unet_calls(self) -> int:
        return self.steps * len(self.windows)


def _stand_in_video(video_is_middle: bool):
    def stand_in(_url: str) -> Path:
        if not video_is_middle:
            return bundled_asset("dancer.mp4", True)
        from helpers.testing.musev_v2v import synthetic_pose_video

        return synthetic_pose_video()
    return stand_in


def _base(value: str, smoke: bool) -> tuple[Path | None, str, str | None]:
    """(own base model path or None, the pack role used when None, a note)."""
    if (value or "").strip().lower() == "fantasticmix":
        if FANTASTICMIX_ROLE not in registry.PACKS["musev"].roles:
            raise InputError("fantasticmix is not offered by this installation: give 'majicmix' or the path of an "
                             "SD1.5 model")
        return None, FANTASTICMIX_ROLE, None  # SMOKE: the tiny pack writes this role too
    path, note = resolve_base_model(value, smoke)
    return path, "base_model", note


def plan(params: Params) -> Plan:
    """Check every setting and input file (downloading example URLs); raise ``InputError`` on the first problem.
    Loads no model and runs no detector (see :func:`prepare` for the conditions)."""
    from helpers import media
    from helpers.pipelines.musev.schedule import context_windows

    check_params(params)
    smoke = is_smoke(params)
    prompt = check_prompt(params.prompt)
    if params.overlap >= params.window:
        raise InputError(f"overlap ({params.overlap}) must be smaller than window ({params.window}): windows must move "
                         "forward (published: window 12, overlap 4)")
    if params.model == POSE_MODEL and params.condition not in POSE_CONDITIONS:
        raise InputError(f"{POSE_MODEL} was trained on dwpose_body_hand poses only: choose that condition, or the "
                         f"model musev_referencenet for {params.condition}")
    if params.control_start >= params.control_end:
        raise InputError(f"control_start ({params.control_start}) must be below control_end ({params.control_end})")
    if params.video_is_middle and params.which2video == "video":
        raise InputError("which2video 'video' starts from the RGB source frames, but video_is_middle says the source "
                         "is a condition video: choose video_middle, or give an RGB video")
    if params.video_is_middle and params.condition_video.strip():
        raise InputError("the source video already is the condition (video_is_middle): leave condition_video empty")
    sources: dict[str, str] = {}
    video = local_input(params.source_video, "source video", smoke=smoke, sources=sources,
                        stand_in=_stand_in_video(params.video_is_middle), folders=True,
                        missing="no source video: give the video whose motion the result should follow")
    frames, window, overlap, steps = params.frames, params.window, params.overlap, params.steps
    if smoke:
        frames, window, overlap, steps = min(frames, SMOKE_FRAMES), SMOKE_WINDOW, SMOKE_OVERLAP, min(steps, SMOKE_STEPS)
    available, _ = count_frames(video, "source video")
    needed = (frames - 1) * params.sample_rate + 1
    if available < needed:
        raise InputError(f"{video.name} has {available} frame(s), {frames} frames every {params.sample_rate} need "
                         f"{needed}: lower frames or sample_rate")
    condition_video = local_input(params.condition_video, "condition video", smoke=smoke, sources=sources,
                                  stand_in=lambda _url: None, folders=True)
    if condition_video is not None:
        length, _ = count_frames(condition_video, "condition video")
        size, source_size = (_frame_size(condition_video), _frame_size(video))
        if length != available or size != source_size:
            raise InputError(f"the condition video is {size[1]}x{size[0]} px with {length} frames, the source video "
                             f"{source_size[1]}x{source_size[0]} px with {available}: give the condition video drawn "
                             "from this source video (same size and length)")
    image = local_input(params.reference_image, "reference image", smoke=smoke, sources=sources,
                        stand_in=lambda _url: bundled_asset("reference.png", smoke),
                        missing="no reference image: give a picture of whose appearance the video should have")
    if image.suffix.lower() in media.VIDEO_SUFFIXES - {".gif"}:
        raise InputError(f"{image.name} is a video: the reference image must be a picture (PNG or JPEG)")
    width, height = output_size(params.width, params.height, media.read_image(image).shape[:2])
    notes = [f"{name} {value} floored to {got} (multiples of 64, as the original)"
             for name, value, got in (("width", params.width, width), ("height", params.height, height))
             if value and value != got]
    base, base_role, base_note = _base(params.base_model, smoke)
    notes += [base_note] if base_note else []
    if smoke:
        width, height = (SMOKE_SIDE, 2 * SMOKE_SIDE) if height > width else \
            (2 * SMOKE_SIDE, SMOKE_SIDE) if width > height else (SMOKE_SIDE, SMOKE_SIDE)
    windows = tuple((w[0], w[-1]) for w in context_windows(frames - 1, window, overlap))
    return Plan(video=video, video_frames=available, condition_video=condition_video, image=image, prompt=prompt,
                width=width, height=height, frames=frames, window=window, overlap=overlap, steps=steps,
                windows=windows, base_model=base, base_role=base_role, sources=sources, notes=tuple(notes))


def _frame_size(path: Path) -> tuple[int, int]:
    from helpers import media

    return read_clip(path, 1, 1, path.name)[0].shape[:2] if path.is_dir() else \
        (media.video_info(path).height, media.video_info(path).width)


# ---------------------------------------------------------------------------------------------------- conditions


@dataclass
class Inputs:
    """Everything the pipeline gets, computed before any video model loads."""

    plan: Plan
    source: np.ndarray  # (frames, h, w, 3) uint8 frames as read
    reference: np.ndarray  # (H, W, 3): the picture as the model gets it
    video: np.ndarray  # (frames, H, W, 3): the source frames cropped and resized as the original does
    condition: np.ndarray  # (frames, ...): the condition frames as drawn or given
    control: np.ndarray  # (frames, H, W, 3): the ControlNet input, frame 0 going with the reference picture
    notes: tuple
    provenance: tuple


_INPUTS: dict[tuple, Inputs] = {}  # one prepared input set, so a preview followed by Generate detects nothing twice


def _reference_face(reference: np.ndarray, smoke: bool) -> list[dict]:
    """DWPose on the reference picture; ``InputError`` when it shows no person or no face (the nose and an eye)."""
    from helpers.pose.keypoints import VISIBILITY_THRESHOLD
    from helpers.tasks.inputs import open_dwpose

    runner, provenance = open_dwpose(smoke)
    try:
        pose = runner(reference)
    finally:
        runner.close()
    if not pose.detected or pose.num_people == 0:
        raise InputError(f"{POSE_MODEL}: the reference image shows no person: give a photo of the person, body and "
                         "face visible")
    nose, *eyes = pose.body_score[0, list(FACE_POINTS)] > VISIBILITY_THRESHOLD
    if not (nose and any(eyes)):
        raise InputError(f"{POSE_MODEL}: no face found on the reference image (nose and an eye): the pose carries "
                         "no face, so give a picture where the person's face is visible")
    return provenance


def prepare(params: Params) -> Inputs:
    """Read and check every input, crop and resize as the original, and draw the condition frames (DWPose or
    controlnet-aux); ``InputError`` for any bad input. No video model runs."""
    from helpers import media
    from helpers.pipelines.musev import preprocess

    p = plan(params)
    smoke = is_smoke(params)
    key = (file_stamp(p.video), file_stamp(p.condition_video), file_stamp(p.image), p.frames, params.sample_rate,
           p.width, p.height, params.condition, params.video_is_middle, params.model, smoke)
    if key in _INPUTS:
        return replace(_INPUTS[key], plan=p)
    source = read_clip(p.video, p.frames, params.sample_rate, "source video")
    video = preprocess.crop_resize_video_frames(source, p.height, p.width)
    reference = preprocess.crop_resize_condition_image(media.read_image(p.image), p.height, p.width)
    provenance: list = []
    if params.video_is_middle:
        condition, control = source, video
    elif p.condition_video is not None:
        condition = read_clip(p.condition_video, p.frames, params.sample_rate, "condition video")
        control = preprocess.crop_resize_video_frames(condition, p.height, p.width)
    else:
        from helpers.pipelines.musev import conditions

        condition = control = conditions.render_condition_frames(params.condition, video, smoke=smoke)
        if params.condition in POSE_CONDITIONS:
            from helpers import weights

            provenance += [weights.provenance("dwpose", role, weights_root(smoke)) for role in ("detector",
                                                                                                "pose_model")]
    if params.model == POSE_MODEL:
        provenance += _reference_face(reference, smoke)
    notes = ["the reference picture takes the place of the first source frame; that frame's condition goes with it "
             "(the original's video_has_condition)"]
    inputs = Inputs(plan=p, source=source, reference=reference, video=video, condition=condition, control=control,
                    notes=tuple(notes), provenance=tuple({(r["pack"], r["role"]): r for r in provenance}.values()))
    _INPUTS.clear()
    _INPUTS[key] = inputs
    return inputs


def validate(params: Params) -> None:
    """Raise ``InputError`` (one line, what to do) for any bad setting or input; loads no video model."""
    prepare(params)


# ------------------------------------------------------------------------------------------------------- preview


@dataclass
class InputPreview:
    """Source frame | condition | ControlNet input for a few frames, and the reference, before any GPU time."""

    inputs: Inputs
    sheet: np.ndarray

    def summary(self) -> str:
        p = self.inputs.plan
        lines = [f"{p.frames} frames at {p.width}x{p.height} (frame 0 = the reference picture) from {p.video.name}; "
                 f"{len(p.windows)} window(s) of {p.window} overlapping by {p.overlap}; {p.steps} steps = "
                 f"{p.unet_calls} UNet + ControlNet calls"]
        lines += [f"note: {n}" for n in (*p.notes, *self.inputs.notes)]
        return "\n".join(lines)

    def show(self) -> None:
        from helpers import media

        media.show_image(self.sheet, title="source frame | condition | ControlNet input; the reference picture "
                                           "replaces source frame 0", max_side=900)
        print(self.summary())


def condition_sheet(inputs: Inputs, *, rows: int = 3, tile: int = 192) -> np.ndarray:
    """One picture: for the first, middle and last frame, the source frame | its condition | the ControlNet input
    (cropped and resized as the model gets them), then the reference picture that replaces source frame 0."""
    from helpers import media

    count = len(inputs.control)
    clips = []
    for i in sorted({0, count // 2, count - 1})[:rows]:
        size = inputs.video[i].shape[1::-1]
        clips += [(f"frame {i}: source", inputs.video[i][None]),
                  (f"frame {i}: condition", media.center_crop_resize(inputs.condition[i], size)[None]),
                  (f"frame {i}: ControlNet input", inputs.control[i][None])]
    clips.append(("frame 0 of the video: the reference", inputs.reference[None]))
    return media.comparison_grid(clips, columns=3, tile=tile)[0]


def preview_inputs(params: Params) -> InputPreview:
    """Check the inputs and draw the conditions; return the preview sheet for display."""
    inputs = prepare(params)
    return InputPreview(inputs=inputs, sheet=condition_sheet(inputs))


# ------------------------------------------------------------------------------------------------------------ run


def _roles(params: Params, p: Plan) -> list[str]:
    from helpers.pipelines.musev.conditions import controlnet_role

    pack_base = [p.base_role] if pack_base_parts(p.base_model, weights_root(is_smoke(params))) else []
    return [UNET_ROLES[params.model], *pack_base, *REFERENCE_ROLES[params.model], controlnet_role(params.condition)]


def _packs_root(smoke: bool, params: Params) -> Path | None:
    """The weights root; in SMOKE mode the tiny packs this run needs are written there first (once)."""
    root = weights_root(smoke)
    if smoke:
        from helpers.testing.musev_v2v import write_tiny_v2v_packs

        write_tiny_v2v_packs(root, params.condition)
    return root


def _load(params: Params, p: Plan, root: Path | None, memory):
    from helpers import weights
    from helpers.pipelines.musev.conditions import controlnet_role
    from helpers.pipelines.musev.pipeline import load_musev_pipeline

    base = p.base_model
    if base is None and p.base_role != "base_model":
        base = weights.resolve("musev", p.base_role, root)
    pipe = load_musev_pipeline(params.model, controlnet=controlnet_role(params.condition), root=root,
                               base_model=base, device=memory.device, dtype=memory.dtype, offload=memory.offload)
    names = [PART_NAMES[part] for part in pack_base_parts(p.base_model, root)] if p.base_model is not None else []
    return pipe, ([f"{', '.join(names)}: the MuseV pack's majicmix (the base model has none of its own)"]
                  if names else [])


def run(params: Params, *, progress: Progress | None = None) -> Result:
    """Generate the video. Order: every input and condition (``InputError``) → the weights, ControlNet included
    (``MissingWeightsError``) → the pipeline (loaded once, kept between runs) → windows × steps → mp4 + sidecar. An
    interrupted run with the same settings and input files continues after its last saved step
    (:mod:`helpers.resume`)."""
    import torch

    from helpers import resume, runtime, weights

    timings = Timings()
    smoke = is_smoke(params)
    with timings.stage("inputs"):
        inputs = prepare(params)
    p = inputs.plan
    with quiet_libraries(smoke):
        root = _packs_root(smoke, params)
    with timings.stage("weights"):  # a missing ControlNet or UNet fails here, before anything loads
        roles = _roles(params, p)
        for done, role in enumerate(roles, 1):
            weights.resolve("musev", role, root)
            if progress is not None:
                progress("weights", done, len(roles))
    memory = run_memory_plan(smoke, params.precision)
    runtime.reset_peak_memory()
    weight_records = [weights.provenance("musev", role, root) for role in roles]
    if p.base_model is not None:
        weight_records.append({"pack": None, "role": "base_model", "source": f"chosen by the user: {p.base_model}"})
    weight_records += inputs.provenance
    run_state = resume.RunState.open(NAME, params, identity={
        "weights": weight_records, "dtype": memory.dtype_name, "device": str(memory.device),
        "inputs": [resume.file_identity(path) for path in (p.video, p.image, p.condition_video) if path is not None]},
        progress=progress)
    recorder = run_state.loop()
    with timings.stage("load"):
        identity = p.base_role if p.base_model is None else \
            f"{p.base_model.resolve()}:{file_stamp(p.base_model) if p.base_model.is_file() else ''}"
        key = f"{NAME}:{params.model}:{params.condition}:{root}:{identity}:{memory.tier}:{memory.dtype_name}:" \
              f"{memory.device}"
        with quiet_libraries(smoke):
            pipe, load_notes = cached(key, lambda: _load(params, p, root, memory))
    with timings.stage("generate"), quiet_libraries(smoke):
        output = pipe(
            p.prompt, inputs.reference, negative_prompt=params.negative_prompt, height=p.height, width=p.width,
            time_size=p.frames - 1, n_batch=1, num_inference_steps=p.steps, guidance_scale=params.guidance_scale,
            motion_speed=float(params.sample_rate), context_frames=p.window, context_overlap=p.overlap,
            ip_adapter_scale=params.ip_adapter_scale, control_frames=inputs.control,
            video=inputs.video[1:] if params.which2video == "video" else None,
            controlnet_conditioning_scale=params.controlnet_scale, control_guidance_start=params.control_start,
            control_guidance_end=params.control_end, generator=torch.Generator("cpu").manual_seed(params.seed),
            output_type="np", decode_chunk_size=memory.vae_decode_chunk, progress=progress,
            resume_from=recorder.resume_from, on_state=recorder)
    frames, output_notes = output.frames, list(output.notes)
    del output

    effective = params
    if smoke:
        effective = replace(params, width=p.width, height=p.height, steps=p.steps, window=p.window,
                            overlap=p.overlap, frames=p.frames)
    meta = {
        "method": f"MuseV {params.model} + SD1.5 ControlNet ({params.condition}), {params.which2video}",
        "weights": weight_records,
        "memory_plan": memory.as_dict(),
        "inputs": {"source_video": str(p.video), "reference_image": str(p.image),
                   "condition_video": None if p.condition_video is None else str(p.condition_video),
                   "downloaded_from": p.sources, "video_is_middle": params.video_is_middle},
        "generation": {"prompt": p.prompt, "negative_prompt": params.negative_prompt, "width": p.width,
                       "height": p.height, "time_size": p.frames, "steps": p.steps,
                       "video_guidance_scale": params.guidance_scale, "motion_speed": float(params.sample_rate),
                       "controlnet_conditioning_scale": params.controlnet_scale,
                       "control_guidance": [params.control_start, params.control_end],
                       "frames_out": int(frames.shape[0]), "generator_device": "cpu"},
        "windows": {"schedule": "uniform_v2", "context_frames": p.window, "context_overlap": p.overlap,
                    "windows": [list(w) for w in p.windows], "unet_calls": p.unet_calls},
        "base_model": str(p.base_model) if p.base_model is not None else
        {"base_model": "majicmixRealv6Fp16 (MuseV pack)", FANTASTICMIX_ROLE: "fantasticmix_v10 (MuseV pack)"}[p.base_role],
        "notes": [*p.notes, *inputs.notes, *load_notes, *output_notes],
        "smoke": smoke,
    }
    if smoke:
        meta["requested_params"] = params
    control = inputs.control if inputs.control.shape[1:] == frames.shape[1:] else None
    result = finish(NAME, effective, frames, params.fps, control=control, meta=meta, timings=timings,
                    run_state=run_state)
    if progress is not None:
        progress("save", 1, 1)
    return result
