"""Pose to dance (ControlNeXt-SVD v2, or v1): a photo of a person + a dance video → that person dancing.

Data flow: DWPose finds the reference person and the dancer in every sampled frame → one linear map fits the dancer
onto the reference person (torso and head) → the aligned poses are drawn as skeletons, frame 0 being the reference
pose → the ControlNeXt pose encoder turns them into features that are added inside Stable Video Diffusion's UNet →
the video is denoised in overlapping windows of 24 frames.

>>> from helpers.tasks import pose_to_dance as task
>>> params = task.Params(reference_image="me.jpg", driving_video="dance.mp4")
>>> task.preview_inputs(params).show()        # the detected and aligned poses, before spending GPU time
>>> result = task.run(params)                  # mp4 + side-by-side preview + JSON sidecar under <Drive root>/outputs
>>> result.show()

``PRESETS`` are the original repository's examples with its published settings (fetched from GitHub on first use,
see :func:`helpers.tasks.inputs.fetch_input`). With ``pose_video=True`` the driving video is taken as already rendered
poses, the way ControlNeXt-SVD v1 was released.
"""

from __future__ import annotations

import gc
import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from helpers.errors import InputError
from helpers.tasks.base import (
    Progress,
    Result,
    TaskParams,
    Timings,
    cached,
    check_multiple,
    check_params,
    finish,
    is_smoke,
    param,
    run_memory_plan,
    smoke_root,
    weights_root,
)
from helpers.tasks.inputs import ASSETS, bundled_asset, file_stamp, local_input, open_dwpose

NAME = "pose_to_dance"

DEFAULT_REFERENCE = str(ASSETS / "reference.png")
DEFAULT_VIDEO = str(ASSETS / "dancer.mp4")
DIAGRAM = Path(__file__).resolve().parents[2] / "assets" / "diagrams" / "pose_to_dance.svg"

RESOLUTIONS = {"576x1024": (576, 1024), "512x768": (512, 768), "384x640": (384, 640)}
AUTO_FRAME_LIMIT = 240  # the published run's max_frame_num: "all frames" stops here
ORIGINAL_TIME_IDS = (6, 128, 0.02)  # (fps id, motion bucket, noise augmentation) the released pipelines always feed

# SMOKE mode: tiny random-weight packs and tiny sizes, every line of the real path.
SMOKE_FRAMES, SMOKE_WINDOW, SMOKE_OVERLAP, SMOKE_STEPS = 6, 4, 2, 2


@dataclass
class Params(TaskParams):
    reference_image: str = field(default=DEFAULT_REFERENCE, metadata=param(
        "Photo of the person to animate: one person, body visible, facing the camera (path, URL or upload)",
        widget="file"))
    driving_video: str = field(default=DEFAULT_VIDEO, metadata=param(
        "Dance video whose moves are copied: one dancer, whole body in view (path, URL or upload)", widget="file"))
    version: str = field(default="v2", metadata=param(
        "ControlNeXt-SVD release: v2 (DWPose + alignment, 576x1024) or v1 (its pre-rendered pose videos, 512x768)",
        choices=["v2", "v1"]))
    resolution: str = field(default="576x1024", metadata=param(
        "Width x height of the video: 576x1024 is v2's published size; 512x768 (v1's) is about twice as fast; "
        "384x640 for quick previews; custom: width/height under Advanced",
        choices=[*RESOLUTIONS, "custom"]))
    frames: int = field(default=0, metadata=param(
        "Frames to generate, frame 0 being the reference pose; 0 = all the video gives at this stride "
        f"(at most {AUTO_FRAME_LIMIT}, the published run's limit)", min=0, max=480))
    sample_stride: int = field(default=2, metadata=param(
        "Use every n-th frame of the dance video (2 = the published run: a 30 fps dance becomes 15 fps)",
        min=1, max=8))
    window: int = field(default=24, metadata=param(
        "Frames denoised together; longer videos are covered by overlapping windows (v2: 24, v1: 14)", min=2, max=48))
    overlap: int = field(default=6, metadata=param(
        "Frames shared by neighbouring windows, averaged to hide the seams (v2: 6, v1: 4)", min=1, max=47))
    steps: int = field(default=25, metadata=param("Denoising steps (25 published)", min=1, max=100))
    guidance_scale: float = field(default=3.0, metadata=param(
        "Classifier-free guidance, the same for every frame (v2: 3.0, v1: 3.5); higher follows the photo more "
        "closely but saturates colours", min=0.0, max=10.0, step=0.1))
    fps: float = field(default=0.0, metadata=param(
        "Frames per second of the result; 0 = the dance video's fps / sample stride, rounded down to a whole number "
        "as the original (29 fps at stride 2 → 14)", min=0.0, max=60.0, step=0.5))
    width: int = field(default=576, metadata=param(
        "Width when resolution is custom (a multiple of 64)", min=64, max=1536, step=64, group="Advanced"))
    height: int = field(default=1024, metadata=param(
        "Height when resolution is custom (a multiple of 64)", min=64, max=1536, step=64, group="Advanced"))
    pose_video: bool = field(default=False, metadata=param(
        "The driving video already shows rendered skeletons (v1's examples): use its frames as they are, no DWPose",
        group="Advanced"))
    drop_first_frame: bool = field(default=False, metadata=param(
        "Leave out frame 0 (it shows the reference pose, so the video starts with a still frame)", group="Advanced"))
    exact_fps: bool = field(default=False, metadata=param(
        "With fps 0: keep the exact rate, the dance's real speed (29 fps at stride 2 → 14.5), instead of the "
        "original's whole-number rate", group="Advanced"))
    align_frames: str = field(default="all", metadata=param(
        "Frames the alignment is fitted on: all = every sampled frame of the dance video, as the original (each is "
        "detected once and cached), generated = only those that become video frames", choices=["all", "generated"],
        group="Advanced"))
    align_skip_undetected: bool = field(default=False, metadata=param(
        "Leave frames where nobody was detected out of the alignment fit (the original keeps them: the detector's "
        "whole-image guess then pulls the fit)", group="Advanced"))
    noise_aug_strength: float = field(default=0.02, metadata=param(
        "Noise added to the photo before it is encoded (0.02 published)", min=0.0, max=1.0, step=0.01,
        group="Advanced"))
    override_time_ids: bool = field(default=False, metadata=param(
        "Feed the three numbers below to the UNet; the releases always feed fps id 6, motion bucket 128, "
        "noise 0.02, whatever their arguments say", group="Advanced"))
    fps_id: int = field(default=6, metadata=param(
        "fps id seen by the UNet (used only with override_time_ids)", min=0, max=60, group="Advanced"))
    motion_bucket_id: int = field(default=128, metadata=param(
        "Motion bucket seen by the UNet: more means more motion (used only with override_time_ids)",
        min=0, max=255, group="Advanced"))
    time_noise_aug: float = field(default=0.02, metadata=param(
        "Noise augmentation value seen by the UNet (used only with override_time_ids)", min=0.0, max=1.0,
        step=0.01, group="Advanced"))


# ------------------------------------------------------------------------------------------------------- presets
# The original repository's example inputs, at the commit its published runs come from.
EXAMPLES = "https://raw.githubusercontent.com/dvlab-research/ControlNeXt/ab4b3acf912cc178d23bbf003369dfb657fc8d01"
V2_EXAMPLES, V1_EXAMPLES = f"{EXAMPLES}/ControlNeXt-SVD-v2/examples", f"{EXAMPLES}/ControlNeXt-SVD/examples"
_V2_SETTINGS = dict(version="v2", resolution="576x1024", frames=0, sample_stride=2, window=24, overlap=6, steps=25,
                    guidance_scale=3.0, fps=0.0, pose_video=False)
_V1_SETTINGS = dict(version="v1", resolution="512x768", frames=0, sample_stride=1, window=14, overlap=4, steps=25,
                    guidance_scale=3.5, fps=14.0, pose_video=True)

PRESETS: dict[str, dict] = {
    "v2 · ref 01 + dance 02 (the published run)": dict(
        _V2_SETTINGS, reference_image=f"{V2_EXAMPLES}/ref_imgs/01.jpeg", driving_video=f"{V2_EXAMPLES}/video/02.mp4"),
    "v2 · ref 02 + dance 01": dict(
        _V2_SETTINGS, reference_image=f"{V2_EXAMPLES}/ref_imgs/02.jpeg", driving_video=f"{V2_EXAMPLES}/video/01.mp4"),
    "v2 · ref 03 + dance 02": dict(
        _V2_SETTINGS, reference_image=f"{V2_EXAMPLES}/ref_imgs/03.jpeg", driving_video=f"{V2_EXAMPLES}/video/02.mp4"),
    "v2 · ref 04 + dance 01": dict(
        _V2_SETTINGS, reference_image=f"{V2_EXAMPLES}/ref_imgs/04.jpeg", driving_video=f"{V2_EXAMPLES}/video/01.mp4"),
    "v1 · tiktok + pose video": dict(
        _V1_SETTINGS, reference_image=f"{V1_EXAMPLES}/ref_imgs/tiktok.png", driving_video=f"{V1_EXAMPLES}/pose/pose.mp4"),
    "v1 · spiderman + pose video": dict(
        _V1_SETTINGS, reference_image=f"{V1_EXAMPLES}/ref_imgs/spiderman.jpg",
        driving_video=f"{V1_EXAMPLES}/pose/pose.mp4"),
}


# ---------------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out from Params before any model loads."""

    reference: Path
    video: Path
    width: int
    height: int
    video_frames: int  # frames in the file
    video_fps: float
    driving_indices: tuple[int, ...]  # frames of the video that become control frames
    fit_indices: tuple[int, ...]  # frames of the video the alignment is fitted on (driving_indices come first)
    prepend_reference_pose: bool  # control frame 0 is the pose of the photo (v2, or v1 with DWPose)
    detect: bool  # DWPose on the video (False: it already shows rendered poses)
    crop_reference: bool  # cover-crop the photo to the output size (False: v1 squeezes it, as released)
    window: int
    overlap: int
    steps: int
    sources: dict  # URL each input came from, when it was downloaded

    @property
    def num_frames(self) -> int:
        return len(self.driving_indices) + int(self.prepend_reference_pose)


def _input(value: str, what: str, bundled: str, smoke: bool, sources: dict) -> Path:
    """A local file for an input; SMOKE mode never downloads: the bundled example ``bundled`` stands in."""
    return local_input(value, what, smoke=smoke, sources=sources, stand_in=lambda _url: bundled_asset(bundled, smoke),
                       missing=f"no {what} given: type a path or URL, or upload a file")


def output_size(params: Params) -> tuple[int, int]:
    """(width, height) of the video asked for."""
    if params.resolution == "custom":
        return params.width, params.height
    return RESOLUTIONS[params.resolution]


def plan(params: Params) -> Plan:
    """Check every setting and input file (downloading example URLs); raise ``InputError`` on the first problem."""
    from helpers import media

    check_params(params)
    smoke = is_smoke(params)
    width, height = output_size(params)
    check_multiple("width", width, 64)
    check_multiple("height", height, 64)
    if params.overlap >= params.window:
        raise InputError(f"overlap ({params.overlap}) must be smaller than window ({params.window}): "
                         "windows must move forward (published: window 24, overlap 6)")
    if params.frames == 1:
        raise InputError("frames must be 0 (all) or at least 2: frame 0 only shows the reference pose")

    sources: dict[str, str] = {}
    reference = _input(params.reference_image, "reference image", "reference.png", smoke, sources)
    video = _input(params.driving_video, "driving video", "dancer.mp4", smoke, sources)
    media.read_image(reference)  # unreadable, corrupt or tiny images fail here
    if video.suffix.lower() in media.IMAGE_SUFFIXES - {".gif"}:
        raise InputError(f"{video.name} is a picture: the driving video must be a video file (mp4, mov, webm)")
    info = media.video_info(video)
    if info.frame_count < 2:
        raise InputError(f"{video.name} has {info.frame_count} frame(s): the driving video must be a clip of the "
                         "dance, not a still image")

    prepend = not (params.pose_video and params.version == "v1")
    available = math.ceil(info.frame_count / params.sample_stride)
    limit = available + int(prepend)
    wanted = params.frames or min(AUTO_FRAME_LIMIT, limit)
    if wanted > limit:
        raise InputError(
            f"{params.frames} frames asked for, but {video.name} ({info.frame_count} frames) gives {available} at "
            f"sample stride {params.sample_stride}: ask for at most {limit} frames (or 0 = all) or lower the stride")
    if wanted < 2:
        raise InputError(f"{video.name} gives only {available} frame(s) at sample stride {params.sample_stride}: "
                         "lower the stride")
    window, overlap, steps = params.window, params.overlap, params.steps
    if smoke:
        width, height = (64, 128) if height > width else (128, 64) if width > height else (64, 64)
        wanted = min(wanted, SMOKE_FRAMES)
        window, overlap, steps = SMOKE_WINDOW, SMOKE_OVERLAP, min(steps, SMOKE_STEPS)
    stride = params.sample_stride
    driving_indices = tuple(range(0, stride * (wanted - int(prepend)), stride))
    # The original detects and fits on every sampled frame of the video, however many are generated.
    fit_indices = tuple(range(0, info.frame_count, stride)) if params.align_frames == "all" else driving_indices
    return Plan(
        reference=reference, video=video, width=width, height=height, video_frames=info.frame_count,
        video_fps=info.fps, driving_indices=driving_indices, fit_indices=fit_indices,
        prepend_reference_pose=prepend, detect=not params.pose_video,
        crop_reference=not (params.pose_video and params.version == "v1"),
        window=window, overlap=overlap, steps=steps, sources=sources,
    )


def validate(params: Params) -> None:
    """Raise ``InputError`` (one line, what to do) for any bad setting or input file; loads no model."""
    plan(params)


# -------------------------------------------------------------------------------------------------- control frames


@dataclass
class ControlInputs:
    """The prepared inputs of a run: the photo as the pipeline gets it and the pose frames the video will follow."""

    reference: np.ndarray  # H×W×3 uint8 (cropped), or the whole photo (v1 with a pose video: squeezed as released)
    control: np.ndarray  # [N, H, W, 3] uint8; frame 0 is the reference pose unless v1 takes a pose video
    reference_pose: object | None = None  # PoseFrame of the cropped photo
    driving_poses: list | None = None  # PoseFrame per driving frame, as detected
    alignment: object | None = None  # PoseAlignment (driving → reference); fit_frames index Plan.fit_indices
    dwpose_weights: list = field(default_factory=list)


def _pose_cache(video: Path, smoke: bool) -> bool | Path:
    """Keypoints are cached beside the video, except for the bundled examples and in SMOKE mode."""
    if not smoke and ASSETS not in video.resolve().parents:
        return True
    from helpers import runtime

    base = smoke_root() if smoke else runtime.drive_root()
    key = hashlib.sha256(str(video.resolve()).encode()).hexdigest()[:16]
    return base / "cache" / "pose" / f"{video.stem}-{key}.dwpose.npz"


def _render(poses, height: int, width: int, stage: str, progress: Progress | None) -> np.ndarray:
    from helpers.pose import draw_pose

    frames = np.empty((len(poses), height, width, 3), np.uint8)
    for i, pose_frame in enumerate(poses):
        frames[i] = draw_pose(pose_frame, height, width)
        if progress is not None:
            progress(stage, i + 1, len(poses))
    return frames


_PREPARED: dict = {}  # the last prepared inputs, so a preview followed by Generate detects nothing twice


def _prepare_key(p: Plan, params: Params) -> tuple:
    return (file_stamp(p.reference), file_stamp(p.video), p.width, p.height, p.driving_indices, p.fit_indices,
            params.align_skip_undetected, p.prepend_reference_pose, p.detect, p.crop_reference, is_smoke(params))


def prepare_control(params: Params, p: Plan | None = None, progress: Progress | None = None) -> ControlInputs:
    """Detect, align and draw the poses (DWPose sessions are closed again before returning)."""
    from helpers import media, pose
    from helpers.pose.video import read_frames

    p = p or plan(params)
    key = _prepare_key(p, params)
    if key in _PREPARED:
        return _PREPARED[key]
    photo = media.read_image(p.reference)
    reference = pose.crop_reference_image(np.array(photo), p.height, p.width) if p.crop_reference else photo
    out = ControlInputs(reference=reference, control=np.zeros((0, p.height, p.width, 3), np.uint8))
    runner = None
    try:
        if p.prepend_reference_pose or p.detect:
            runner, out.dwpose_weights = open_dwpose(is_smoke(params))
            out.reference_pose = runner(reference)
        if p.detect:
            # every frame detected once (and cached), the fit frames being the generated ones or a superset
            detected = pose.detect_video(p.video, p.fit_indices + p.driving_indices[len(p.fit_indices):],
                                         runner=runner, cache=_pose_cache(p.video, is_smoke(params)),
                                         progress=progress)
            out.driving_poses = detected[:len(p.driving_indices)]
            out.alignment = pose.fit_pose_alignment(out.reference_pose, detected[:len(p.fit_indices)],
                                                    skip_undetected=params.align_skip_undetected)
            aligned = [out.alignment.apply(d) for d in out.driving_poses]
            poses = [out.reference_pose, *aligned] if p.prepend_reference_pose else aligned
            out.control = _render(poses, p.height, p.width, "draw poses", progress)
        else:
            frames = np.stack([f for _, f in read_frames(p.video, p.driving_indices)])
            frames = media.resize(frames, (p.width, p.height))  # v1's pipeline squeezes its pose frames too
            if p.prepend_reference_pose:
                frames = np.concatenate([pose.draw_pose(out.reference_pose, p.height, p.width)[None], frames])
            out.control = frames
    finally:
        if runner is not None:  # free the ONNX sessions (GPU memory) before the video model loads
            runner.close()
            del runner
            gc.collect()
    _PREPARED.clear()
    _PREPARED[key] = out
    return out


# ------------------------------------------------------------------------------------------------------- preview


@dataclass
class InputPreview:
    """What a run will use, shown before any GPU time is spent: see :meth:`show`."""

    plan: Plan
    inputs: ControlInputs
    driving: np.ndarray  # the sampled dance frames, small
    detected: np.ndarray | None  # the detected poses drawn over them (None for a pose video)
    overlay: np.ndarray  # the control poses drawn over the reference photo
    fps: float
    windows: int

    def summary(self) -> str:
        p = self.plan
        lines = [f"{p.num_frames} frames at {p.width}x{p.height}, {self.fps:g} fps; "
                 f"{self.windows} window(s) x {p.steps} steps = {self.windows * p.steps} UNet calls"]
        align = self.inputs.alignment
        if align is not None:
            def line(scale: float, offset: float, axis: str) -> str:
                return f"{axis}' = {scale:.3f}·{axis} {'+' if offset >= 0 else '-'} {abs(offset):.3f}"

            lines.append(f"alignment: {line(align.ax, align.bx, 'x')}, {line(align.ay, align.by, 'y')} (normalised "
                         f"coordinates; fitted on {len(align.fit_frames)} of {len(p.fit_indices)} sampled frames)")
        return "\n".join(lines)

    def show(self) -> None:
        from helpers import media

        if self.detected is not None:
            media.show_video(media.side_by_side(self.driving, self.detected), fps=self.fps,
                             title="dance video | detected poses")
        else:
            media.show_video(self.driving, fps=self.fps, title="pose video (used as it is)")
        media.show_video(media.side_by_side(self.inputs.control, self.overlay), fps=self.fps,
                         title="control frames (frame 0 = your photo's pose) | over your photo")
        print(self.summary())


def fps_rule(params: Params) -> str:
    """How the output rate was chosen (for the sidecar)."""
    if params.fps > 0:
        return "as set"
    return "exact: video fps / stride" if params.exact_fps else "original: video fps // stride (floor)"


def output_fps(params: Params, p: Plan) -> float:
    """The rate written: as set, else the dance video's fps / stride floored to a whole number as the original
    (``exact_fps``: the exact rate)."""
    if params.fps > 0:
        return float(params.fps)
    if params.exact_fps:
        return round(p.video_fps / params.sample_stride, 3)
    return float(p.video_fps // params.sample_stride)


def preview_inputs(params: Params, *, progress: Progress | None = None, max_side: int = 384) -> InputPreview:
    """Detect and align the poses of the frames that will be generated (cached) and return them for display."""
    from helpers import media
    from helpers.pipelines.controlnext_svd import window_schedule
    from helpers.pose import draw_pose
    from helpers.pose.video import read_frames

    p = plan(params)
    inputs = prepare_control(params, p, progress)
    driving = np.stack([f for _, f in read_frames(p.video, p.driving_indices)])
    driving = media.fit_within(driving, max_side)
    detected = None
    if inputs.driving_poses is not None:
        # A quick drawing at preview size (the supersampled look of the control frames costs ~10x more per frame);
        # channels reversed so the colours match the control frames.
        height, width = driving.shape[1:3]
        skeletons = np.stack([draw_pose(d, height, width, style="openpose")[:, :, ::-1] for d in inputs.driving_poses])
        detected = media.dim_under(driving, skeletons)
    reference = media.resize(inputs.reference, (p.width, p.height))
    overlay = media.dim_under(np.broadcast_to(reference, inputs.control.shape), inputs.control)
    windows = len(window_schedule(p.num_frames, p.window, p.overlap))
    return InputPreview(plan=p, inputs=inputs, driving=driving, detected=detected, overlay=overlay,
                        fps=output_fps(params, p), windows=windows)


# ------------------------------------------------------------------------------------------------------------ run


def _video_model_paths(version: str, smoke: bool):
    from helpers.pipelines.controlnext_svd import ControlNeXtPaths
    from helpers.testing.controlnext import write_tiny_controlnext_packs

    root = weights_root(smoke)
    if smoke:
        write_tiny_controlnext_packs(root, version)  # skips the parts already written
    return ControlNeXtPaths.from_packs(version, root), root


def _inputs_digest(inputs: ControlInputs) -> str:
    """sha256 of the photo and pose frames the video model gets: a saved state is only continued with the very
    inputs it was computed from (whatever changed in detection or drawing since)."""
    digest = hashlib.sha256()
    for array in (inputs.reference, inputs.control):
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.data)
    return digest.hexdigest()


def run(params: Params, *, progress: Progress | None = None) -> Result:
    """Generate the video; returns a ``Result`` whose extra attribute ``control`` holds the pose frames followed.

    Order: check everything (``InputError``) → find the weights (``MissingWeightsError``) → poses (DWPose, cached)
    → DWPose freed → video model (loaded once, kept between runs) → windows × steps → mp4 + preview + sidecar.
    The state after every step and every decoded chunk is kept beside the outputs (:mod:`helpers.resume`): the same
    settings run again continue an interrupted run.
    """
    import torch

    from helpers import resume, runtime, weights
    from helpers.pipelines.controlnext_svd import DEFAULTS, load_pipeline, window_schedule

    timings = Timings()
    smoke = is_smoke(params)
    with timings.stage("inputs"):
        p = plan(params)
    paths, root = _video_model_paths(params.version, smoke)  # before any pose work: missing weights fail fast
    memory = run_memory_plan(smoke, params.precision)
    runtime.reset_peak_memory()
    with timings.stage("poses"):
        inputs = prepare_control(params, p, progress)
    with timings.stage("load"):
        key = f"{NAME}:{params.version}:{paths}:{memory.tier}:{memory.dtype_name}:{memory.device}"
        pipe = cached(key, lambda: load_pipeline(paths, version=params.version, plan=memory))
    time_ids = ((params.fps_id, params.motion_bucket_id, params.time_noise_aug) if params.override_time_ids
                else ORIGINAL_TIME_IDS)
    weight_records = [weights.provenance(f"controlnext_svd_{params.version}", role, root)
                      for role in ("unet", "controlnext")]
    weight_records += [weights.provenance("svd_xt_1_1", "components", root)] + inputs.dwpose_weights
    decode_chunk = min(DEFAULTS[params.version]["decode_chunk_size"],
                       pipe.max_decode_chunk or DEFAULTS[params.version]["decode_chunk_size"])
    run_state = resume.RunState.open(NAME, params, progress=progress, identity={
        "weights": weight_records, "reference_image": resume.file_identity(p.reference),
        "driving_video": resume.file_identity(p.video), "pipeline_inputs": _inputs_digest(inputs),
        # what the numbers depend on beyond the settings: the precision, the device kind and the decoded clip length
        "dtype": memory.dtype_name, "device": memory.device, "decode_chunk": decode_chunk})
    recorder = run_state.loop("video")
    with timings.stage("generate"):
        output = pipe(
            inputs.reference, inputs.control, height=p.height, width=p.width, num_frames=p.num_frames,
            frames_per_window=p.window, overlap=p.overlap, num_inference_steps=p.steps,
            guidance_scale=params.guidance_scale, noise_aug_strength=params.noise_aug_strength,
            added_time_ids=[float(v) for v in time_ids], generator=torch.Generator("cpu").manual_seed(params.seed),
            output_type="np", progress=progress, resume_from=recorder.resume_from, on_state=recorder,
        )
    frames, control = output.frames, inputs.control
    if params.drop_first_frame:
        frames, control = frames[1:], control[1:]

    windows = window_schedule(p.num_frames, p.window, p.overlap)
    effective = params
    if smoke:
        effective = replace(params, resolution="custom", width=p.width, height=p.height, frames=p.num_frames,
                            window=p.window, overlap=p.overlap, steps=p.steps, smoke=True)
    align = inputs.alignment
    meta = {
        "method": f"ControlNeXt-SVD {params.version}",
        "weights": weight_records,
        "memory_plan": memory.as_dict(),
        "inputs": {"reference_image": str(p.reference), "driving_video": str(p.video), "downloaded_from": p.sources,
                   "video_frames": p.video_frames, "video_fps": p.video_fps},
        "control": {
            "mode": "dwpose + alignment" if p.detect else "pose video as given",
            "reference_pose_first": p.prepend_reference_pose,
            "driving_frame_indices": list(p.driving_indices),
            "alignment": None if align is None else {
                "ax": align.ax, "ay": align.ay, "bx": align.bx, "by": align.by,
                "reference_keypoints": list(align.reference_keypoints), "fit_frame_count": len(align.fit_frames),
                "fit_on": params.align_frames, "sampled_frames_considered": len(p.fit_indices),
                "undetected_frames": "skipped" if params.align_skip_undetected else "kept (as the original)"},
        },
        "fps_rule": fps_rule(params),
        "generation": {"width": p.width, "height": p.height, "frames": p.num_frames, "windows": len(windows),
                       "unet_calls": len(windows) * p.steps, "added_time_ids": list(time_ids),
                       "decode_chunk": decode_chunk},
        "smoke": smoke,
    }
    if smoke:
        meta["requested_params"] = params
    result = finish(NAME, effective, frames, output_fps(params, p), control=control, meta=meta, timings=timings,
                    run_state=run_state)
    result.control = control
    return result
