"""ID-preserving video (ID-Animator on AnimateDiff v2): a face photo + a prompt → a 16-frame video of that person.

Data flow: insightface finds the face (5 keypoints) → the face is aligned to the ArcFace template and cropped
(112 → 224 px) → CLIP ViT-H/14 features → a Resampler turns them into 16 face tokens → the face tokens join the 77
text tokens in every spatial cross-attention of the SD1.5 UNet (decoupled face attention + a rank-128 LoRA), while
AnimateDiff's motion modules make the frames move together → DDIM, 30 steps, guidance 8 → the VAE decodes every frame.
Two faces mix into one identity (their tokens are averaged); a sketch or a sketch sequence steers the layout through
AnimateDiff's SparseCtrl scribble ControlNet.

>>> from helpers.tasks import id_preserving_video as task
>>> params = task.Params(face_image="me.jpg", prompt="a woman reading a book in a cafe")
>>> task.preview_inputs(params).show()        # the aligned face crop(s), before spending GPU time
>>> result = task.run(params)                  # mp4 + face | video preview + JSON sidecar under <Drive root>/outputs
>>> result.show()

An interrupted run keeps its progress in ``<output folder>/.resume/`` (:mod:`helpers.resume`) and the same settings
run again continue from the last saved denoising step or decoded chunk; ``fresh_start=True`` discards it.

``PRESETS`` are the original repository's examples (its inference script and its demo page), fetched from GitHub on
first use with :func:`helpers.tasks.inputs.fetch_input`; sketch grids and frame lists are read by
:mod:`helpers.pipelines.id_animator.sketch_inputs`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from helpers.errors import InputError, MissingWeightsError
from helpers.tasks.base import (
    Progress,
    Result,
    TaskParams,
    Timings,
    add_gif,
    cached,
    check_multiple,
    check_params,
    check_prompt,
    finish,
    is_smoke,
    param,
    run_memory_plan,
)
from helpers.tasks.id_preserving_weights import (
    ensure_smoke_packs,
    packs_root,
    provenance,
    quiet_libraries,
    run_identity,
)
from helpers.tasks.inputs import FaceInput, local_input, marked_photo, prepare_face_input, synthetic_picture

NAME = "id_preserving_video"

DIAGRAM = Path(__file__).resolve().parents[2] / "assets" / "diagrams" / "id_animator.svg"
MAX_FRAMES = 32  # the motion modules' positional table
OUTPUT_FPS = 9.0  # the original writes its videos at 9 fps
SPACE_PROMPT_SUFFIX = " 8k uhd, high quality, medium shot"  # what the original's demo app appends to every prompt
SPACE_NEGATIVE_SUFFIX = " long shots, full body"
SKETCH_GRIDS = ["2x2", "1x2", "1x3", "1x4", "2x3", "3x3", "4x4"]

# SMOKE mode: tiny random-weight packs and tiny sizes, every line of the real path.
SMOKE_SIZE, SMOKE_FRAMES, SMOKE_STEPS = 64, 4, 2

# The original repository's example inputs, at the commit its published code comes from.
EXAMPLES = "https://raw.githubusercontent.com/ID-Animator/ID-Animator/0170eed6893a22db628f2d54255e9ddeb9043aa3"
DEMO, REF = f"{EXAMPLES}/ID-Animator/demo", f"{EXAMPLES}/__assets__/ref"

# infer.py, the published run: Realistic Vision V6.0 B1, face scale 0.8, seed 4993.
DEFAULT_FACE = f"{DEMO}/lecun.png"
DEFAULT_PROMPT = "Iron Man soars through the clouds, his repulsors blazing"
NEGATIVE_PROMPT = (
    "semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime, text, close up, cropped, out of frame, worst "
    "quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, poorly "
    "drawn hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, extra "
    "limbs, cloned face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, extra arms, extra "
    "legs, fused fingers, too many fingers, long neck")
NEGATIVE_PROMPT_EYES = (
    "(deformed iris, deformed pupils, semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime), text, "
    "cropped, out of frame, worst quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra "
    "fingers, mutated hands, poorly drawn hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad "
    "anatomy, bad proportions, extra limbs, cloned face, disfigured, gross proportions, malformed limbs, missing arms, "
    "missing legs, extra arms, extra legs, fused fingers, too many fingers, long neck, UnrealisticDream")
NEGATIVE_PROMPT_SHORT = "worst quality, low quality, jpeg artifacts, ugly, duplicate, blurry, long neck"


@dataclass
class Params(TaskParams):
    seed: int = field(default=4993, metadata=param(
        "Random seed: the same seed and settings give the same video (4993 = the original's published run)",
        min=0, max=2**31 - 1))
    face_image: str = field(default=DEFAULT_FACE, metadata=param(
        "Photo of the person: the face clearly visible, roughly frontal (path, URL or upload)", widget="file"))
    already_cropped: bool = field(default=False, metadata=param(
        "The photo is already a tight face crop: skip face detection and alignment (no insightface needed)"))
    prompt: str = field(default=DEFAULT_PROMPT, metadata=param(
        "What the person does and where; CLIP reads the first 77 tokens", widget="textarea"))
    negative_prompt: str = field(default=NEGATIVE_PROMPT, metadata=param(
        "What to avoid (the original's; like every CLIP prompt, only its first 77 tokens count)",
        widget="textarea"))
    base_model: str = field(default="community", metadata=param(
        "Image model under the motion module: community = Realistic Vision V6.0 B1 (the original's), sd15 = plain "
        "Stable Diffusion 1.5, file = an SD1.5 single-file checkpoint of your own (base model file)",
        choices=["community", "sd15", "file"]))
    base_model_file: str = field(default="", metadata=param(
        "SD1.5 checkpoint (.safetensors or .ckpt) used when base model is 'file'", widget="file"))
    face_scale: float = field(default=0.8, metadata=param(
        "Weight of the face attention: higher keeps the identity closer, lower follows the prompt more (0.8 published; "
        "0 = no face attention, the face LoRA still on as in the original; for plain AnimateDiff also turn face "
        "LoRA off)", min=0.0, max=1.0, step=0.05))
    steps: int = field(default=30, metadata=param("DDIM denoising steps (30 published)", min=1, max=100))
    guidance_scale: float = field(default=8.0, metadata=param(
        "Classifier-free guidance: how strongly the prompt and face steer the video (8 published)",
        min=0.0, max=15.0, step=0.5))
    frames: int = field(default=16, metadata=param(
        f"Frames to generate (16 published; the motion module takes at most {MAX_FRAMES})", min=2, max=MAX_FRAMES))
    fps: float = field(default=OUTPUT_FPS, metadata=param(
        "Frames per second of the result (the original writes 9)", min=1.0, max=30.0, step=1.0))
    output_format: str = field(default="mp4", metadata=param(
        "mp4 (always written), or mp4 plus a GIF like the original's outputs", choices=["mp4", "gif"]))
    second_face_image: str = field(default="", metadata=param(
        "A second person's photo: the video shows a mix of both identities (empty: one person)", widget="file",
        group="Identity mixing"))
    mix_weight: float = field(default=0.5, metadata=param(
        "Share of the second face in the mix (0.5 = plain average of the two, as the original)", min=0.0, max=1.0,
        step=0.05, group="Identity mixing"))
    identity_mixing: str = field(default="mean", metadata=param(
        "mean = average the 16 face tokens of both faces (ID-Animator); concat = give the model all 32 tokens",
        choices=["mean", "concat"], group="Identity mixing"))
    sketch_mode: str = field(default="off", metadata=param(
        "Steer the layout with a sketch (SparseCtrl scribble): one sketch for one frame, or a sequence of sketches "
        "laid out in a grid image", choices=["off", "one sketch", "sequence"], group="Sketch control"))
    sketch_image: str = field(default="", metadata=param(
        "The sketch (white lines on black, or black on white), or a grid of sketches for a sequence", widget="file",
        group="Sketch control"))
    sketch_grid: str = field(default="2x2", metadata=param(
        "Layout of a sketch sequence in its image: rows x columns, read left to right, top to bottom",
        choices=SKETCH_GRIDS, group="Sketch control"))
    sketch_frames: str = field(default="", metadata=param(
        "Frames the sketches stand for, e.g. 0, 5, 10, 15 (empty: frame 0 for one sketch, spread evenly for a "
        "sequence)", widget="text", group="Sketch control"))
    sketch_scale: float = field(default=1.0, metadata=param(
        "How strongly the sketches steer the video (1 = SparseCtrl's default)", min=0.0, max=2.0, step=0.05,
        group="Sketch control"))
    width: int = field(default=512, metadata=param(
        "Width in pixels (512 published; a multiple of 64)", min=256, max=1024, step=64, group="Advanced"))
    height: int = field(default=512, metadata=param(
        "Height in pixels (512 published; a multiple of 64)", min=256, max=1024, step=64, group="Advanced"))
    space_suffixes: bool = field(default=False, metadata=param(
        "Append the original demo app's prompt endings ('8k uhd, high quality, medium shot' / 'long shots, full "
        "body'), as its examples were made", group="Advanced"))
    face_select: str = field(default="best_score", metadata=param(
        "Which face to use when the photo shows several: best_score = the one the detector is surest of (what the "
        "original does), largest = the largest one", choices=["best_score", "largest"], group="Advanced"))
    face_lora: bool = field(default=True, metadata=param(
        "Keep the face adapter's LoRA on (the original always does, whatever the face scale); off with face scale 0 "
        "gives plain AnimateDiff on the base model", group="Advanced"))
    per_frame_groupnorm: bool = field(default=True, metadata=param(
        "Motion modules normalise each frame on its own, as original AnimateDiff (off: diffusers' pooled statistics)",
        group="Advanced"))


# ------------------------------------------------------------------------------------------------------- presets
# The original's examples: its inference script (infer.py) and the examples of its demo app (app.py, which appends the
# Space suffixes). The README's sketch demos publish no prompt, so those two prompts are ours.
PRESETS: dict[str, dict] = {
    "community model · Iron Man (infer.py, the published run)": dict(
        face_image=DEFAULT_FACE, prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT, base_model="community",
        face_scale=0.8, seed=4993, space_suffixes=False),
    "plain SD1.5 base · Iron Man (compare with the community model)": dict(
        face_image=DEFAULT_FACE, prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT, base_model="sd15",
        face_scale=0.8, seed=4993, space_suffixes=False),
    "recontextualization · reading by the window (demo app)": dict(
        face_image=f"{DEMO}/ann.png",
        prompt="A young girl with a passion for reading, curled up with a book in a cozy nook near a window",
        negative_prompt=NEGATIVE_PROMPT + ",", face_scale=1.0, seed=8290, space_suffixes=True),
    "recontextualization · beach at sunset (demo app)": dict(
        face_image=f"{DEMO}/zendaya.png",
        prompt="A woman on a serene beach at sunset, the sky ablaze with hues of orange and purple.",
        negative_prompt=NEGATIVE_PROMPT, face_scale=1.0, seed=5992, space_suffixes=True),
    "recontextualization · chef (demo app)": dict(
        face_image=f"{DEMO}/qianlong.png",
        prompt="A chef in a white apron, complete with a toqueblanche, garnishing a gourmet dish",
        negative_prompt=NEGATIVE_PROMPT_EYES, face_scale=0.8, seed=1844, space_suffixes=True),
    "recontextualization · pink and purple hair (demo app)": dict(
        face_image=f"{DEMO}/augustus.png", prompt="A man with dyed pink and purple hair, styledin a high ponytail",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.7, seed=870, space_suffixes=True),
    "community model · Iron Man (demo app)": dict(
        face_image=DEFAULT_FACE, prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT_SHORT, face_scale=0.7,
        seed=4993, space_suffixes=True),
    "identity mixing · two faces, guitarist (demo app)": dict(
        face_image=f"{DEMO}/lecun.png", second_face_image=f"{DEMO}/ann.png", mix_weight=0.5, identity_mixing="mean",
        prompt="A musician playing a guitar, fingers deftly moving across the strings, producing a soulful melody",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.9, seed=1897, space_suffixes=True),
    "sketch image · README demo": dict(
        face_image=f"{REF}/fbb.png", sketch_mode="one sketch", sketch_image=f"{REF}/sketch.png", sketch_frames="0",
        prompt="a woman with her hair tied up, wearing a necklace, smiling at the camera",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.8, seed=4993),
    "sketch sequence · README demo": dict(
        face_image=f"{REF}/fbb.png", sketch_mode="sequence", sketch_image=f"{REF}/sketch_sequence.png",
        sketch_grid="2x2", sketch_frames="", prompt="a person playing an acoustic guitar by the sea, clouds in the sky",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.8, seed=4993),
}


# ---------------------------------------------------------------------------------------------------------- inputs


def _local_image(value: str, what: str, smoke: bool, sources: dict, kind: str = "face") -> Path:
    """A local image file for ``value`` (path or URL; URLs are downloaded once, or drawn in SMOKE mode)."""
    from helpers import media

    path = local_input(value, what, smoke=smoke, sources=sources, stand_in=lambda url: synthetic_picture(url, kind),
                       missing=f"no {what} given: upload a picture (or type its path or URL)")
    if path.suffix.lower() in media.VIDEO_SUFFIXES - {".gif"}:
        raise InputError(f"{path.name} is a video: the {what} must be a picture (PNG or JPEG)")
    return path


# ---------------------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """What a run will do, worked out from Params before any video model loads."""

    faces: list[FaceInput]
    reference_weights: list[float] | None
    prompt: str  # as sent to the model (with the demo app's endings when asked for)
    negative_prompt: str
    base_model: str | Path  # "community", "sd15" or a checkpoint file
    width: int
    height: int
    frames: int
    steps: int
    sketches: list[np.ndarray]  # (H, W, 3) uint8 white-on-black, one per index
    sketch_indices: list[int]
    sketch_inverted: bool
    sources: dict
    notes: list[str]

    @property
    def sketch(self) -> bool:
        return bool(self.sketches)


def _check_numbers(params: Params) -> None:
    if params.frames > MAX_FRAMES:
        raise InputError(f"frames is {params.frames}: AnimateDiff's motion module handles at most {MAX_FRAMES} "
                         f"frames; choose {MAX_FRAMES} or fewer (16 is the original's)")
    check_params(params)
    check_multiple("width", params.width, 8)
    check_multiple("height", params.height, 8)


def _base_model(params: Params) -> str | Path:
    from helpers.pipelines.id_animator import resolve_base_model

    if params.base_model != "file":
        return params.base_model
    if not params.base_model_file.strip():
        raise InputError("base model is 'file' but no base model file is given: choose an SD1.5 .safetensors "
                         "checkpoint, or set base model to community")
    return resolve_base_model(params.base_model_file.strip())


def _sketches(params: Params, frames: int, smoke: bool, sources: dict) -> tuple[list[np.ndarray], list[int], bool]:
    """The sketches (at the video size) and the frames they stand for, checked against ``frames``."""
    from helpers import media
    from helpers.pipelines.id_animator.sketch_inputs import sketches_from_image

    if params.sketch_mode == "off":
        return [], [], False
    if not params.sketch_image.strip():
        raise InputError(f"sketch mode is '{params.sketch_mode}' but no sketch image is given: upload a sketch, or "
                         "set sketch mode to off")
    kind = "sketch" if params.sketch_mode == "one sketch" else "sketch-grid"
    path = _local_image(params.sketch_image, "sketch image", smoke, sources, kind)
    return sketches_from_image(media.read_image(path), grid=None if params.sketch_mode == "one sketch" else
                               params.sketch_grid, frame_text=params.sketch_frames, num_frames=frames,
                               width=params.width, height=params.height)


_TOKENIZERS: dict[str, object] = {}


def _tokenizer(smoke: bool):
    """The SD1.5 CLIP tokenizer from the weights (None when the sd15 pack is not there yet)."""
    from transformers import CLIPTokenizer

    from helpers import weights

    try:
        folder = str(weights.resolve("sd15", "base", packs_root(smoke)))
    except MissingWeightsError:
        return None
    if folder not in _TOKENIZERS:
        _TOKENIZERS[folder] = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    return _TOKENIZERS[folder]


def _check_prompt_length(prompt: str, what: str, smoke: bool) -> list[str]:
    """Warn (and return the warning) when CLIP will cut the prompt at 77 tokens."""
    from helpers.pipelines.id_animator import warn_if_prompt_truncated

    tokenizer = _tokenizer(smoke)
    with warnings.catch_warnings(record=True) as caught, quiet_libraries():
        warnings.simplefilter("always")
        warn_if_prompt_truncated(tokenizer, prompt, what)
    for w in caught:
        warnings.warn(str(w.message), UserWarning, stacklevel=4)
    return [str(w.message) for w in caught]


def plan(params: Params) -> Plan:
    """Check every setting and input (face detection included); raise ``InputError`` on the first problem.

    Loads no video model. Warnings (several faces, a prompt longer than CLIP reads) are shown and kept in
    ``Plan.notes`` for the sidecar."""
    from helpers import media
    from helpers.pipelines.id_animator import validate_generation_args
    from helpers.pipelines.id_animator.sketch_inputs import fit_sketches

    smoke = is_smoke(params)
    _check_numbers(params)
    prompt = check_prompt(params.prompt)
    negative = (params.negative_prompt or "").strip()
    if params.space_suffixes:
        prompt, negative = prompt + SPACE_PROMPT_SUFFIX, negative + SPACE_NEGATIVE_SUFFIX
    if not (params.face_image or "").strip():
        raise InputError("no face photo given: upload a photo of the person (or type its path or URL)")
    base_model = _base_model(params)

    sources: dict[str, str] = {}
    paths = [_local_image(params.face_image, "face image", smoke, sources)]
    if params.second_face_image.strip():
        paths.append(_local_image(params.second_face_image, "second face image", smoke, sources))
    for path in paths:  # unreadable, corrupt or tiny pictures fail here, before any face detection
        media.read_image(path)
    reference_weights = None
    if len(paths) == 2 and not math.isclose(params.mix_weight, 0.5):
        if params.identity_mixing != "mean":
            raise InputError("mix weight only applies to identity mixing 'mean': set it back to 0.5, or choose mean")
        reference_weights = [1.0 - params.mix_weight, params.mix_weight]
    validate_generation_args(
        prompt=prompt, num_frames=params.frames, height=params.height, width=params.width,
        num_inference_steps=params.steps, guidance_scale=params.guidance_scale, face_scale=params.face_scale,
        num_references=len(paths), reference_weights=reference_weights, identity_mixing=params.identity_mixing)
    sketches, indices, inverted = _sketches(params, params.frames, smoke, sources)
    faces = [prepare_face_input(p, already_cropped=params.already_cropped, select=params.face_select, smoke=smoke)
             for p in paths]
    notes = [n for f in faces for n in f.notes]
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    # Only the prompt: the original's own negative prompts run past 77 tokens and were always cut.
    notes += _check_prompt_length(prompt, "prompt", smoke)

    width, height, frames, steps = params.width, params.height, params.frames, params.steps
    if smoke:
        width = height = SMOKE_SIZE
        frames, steps = min(frames, SMOKE_FRAMES), min(steps, SMOKE_STEPS)
        sketches, indices = fit_sketches(sketches, indices, params.frames, frames, width, height)
    return Plan(faces=faces, reference_weights=reference_weights, prompt=prompt, negative_prompt=negative,
                base_model=base_model, width=width, height=height, frames=frames, steps=steps, sketches=sketches,
                sketch_indices=indices, sketch_inverted=inverted, sources=sources, notes=notes)


def validate(params: Params) -> None:
    """Raise ``InputError`` (one line, what to do) for any bad setting or input; loads no video model."""
    plan(params)


# ------------------------------------------------------------------------------------------------------- preview


def _control_strip(p: Plan) -> np.ndarray:
    """What the video is conditioned on, for the preview beside it: the face crop(s), and the sketch of each frame."""
    from helpers import media

    crops = [np.asarray(f.prepared.image) for f in p.faces]
    column = np.concatenate(crops, axis=0) if len(crops) > 1 else crops[0]
    if not p.sketch:
        return column
    sketch_video = np.zeros((p.frames, p.height, p.width, 3), np.uint8)
    for index, sketch in zip(p.sketch_indices, p.sketches):
        sketch_video[index] = sketch
    return media.side_by_side(column, sketch_video)


@dataclass
class InputPreview:
    """What a run will use, shown before any GPU time is spent: see :meth:`show`."""

    plan: Plan
    photos: list[np.ndarray]  # each photo with the chosen face marked (the photo itself for a face crop)
    crops: list[np.ndarray]  # the 224x224 faces the image encoder sees

    def summary(self) -> str:
        p = self.plan
        lines = [f"{p.frames} frames at {p.width}x{p.height}, {p.steps} steps; base model: {p.base_model}"]
        for f in p.faces:
            detected = f.prepared.face
            how = "taken as a face crop" if detected is None else \
                f"face {detected.size:.0f} px across, detector score {detected.score:.2f}"
            lines.append(f"{f.path.name}: {how}")
        if len(p.faces) == 2:
            weights = p.reference_weights or [0.5, 0.5]
            lines.append(f"identity mix: {weights[0]:.2f} first face + {weights[1]:.2f} second face")
        if p.sketch:
            lines.append(f"{len(p.sketches)} sketch(es) at frame(s) {', '.join(map(str, p.sketch_indices))}"
                         + (" (inverted: the drawing had a light background)" if p.sketch_inverted else ""))
        lines += [f"note: {n}" for n in p.notes]
        return "\n".join(lines)

    def show(self) -> None:
        from helpers import media

        for photo, crop, f in zip(self.photos, self.crops, self.plan.faces):
            media.show_image(media.side_by_side(photo, crop)[0], title=f"{f.path.name} | aligned face the model sees")
        if self.plan.sketch:
            tiles = [media.side_by_side(s)[0] for s in self.plan.sketches]
            media.show_image(media.side_by_side(*tiles, height=160)[0],
                             title="sketches at frames " + ", ".join(map(str, self.plan.sketch_indices)))
        print(self.summary())


def preview_inputs(params: Params) -> InputPreview:
    """Check the inputs, detect and align the face(s) (cached) and return them for display."""
    p = plan(params)
    return InputPreview(plan=p, photos=[marked_photo(f) for f in p.faces],
                        crops=[np.asarray(f.prepared.image) for f in p.faces])


# ------------------------------------------------------------------------------------------------------------ run


def _load(base_model, sketch: bool, root: Path | None, memory):
    """Load the pipeline and place it as the memory plan says (offload is enabled after the face adapter loads)."""
    from helpers.pipelines.id_animator import load_id_animator_pipeline

    pipe = load_id_animator_pipeline(base_model=base_model, sketch=sketch, root=root, plan=memory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(params: Params, *, progress: Progress | None = None) -> Result:
    """Generate the video; the returned ``Result`` also holds ``face_crops`` (the 224x224 faces used).

    Order: check everything (``InputError``; face detection included) → find the weights (``MissingWeightsError``)
    → the video model (loaded once, kept between runs) → steps → mp4 (+ GIF) + face | video preview + sidecar.
    The loop's state is kept after every step and decoded chunk (:mod:`helpers.resume`): the same settings run again
    after an interruption continue from there ("resuming from step k of n").
    """
    import torch

    from helpers import resume, runtime, weights
    from helpers.pipelines.id_animator import install_face_token_mixer, set_motion_groupnorm
    from helpers.pipelines.id_animator.loading import required_roles

    timings = Timings()
    smoke = is_smoke(params)
    with timings.stage("inputs"):
        p = plan(params)
        if progress is not None:
            progress("faces", len(p.faces), len(p.faces))
    root = packs_root(smoke)
    if smoke:
        ensure_smoke_packs(root, sketch=p.sketch)
    base_model = p.base_model
    if smoke and params.base_model == "file":  # the tiny single-file model stands in for the user's checkpoint
        base_model = weights.resolve("id_animator", "community_model", root)
    roles = required_roles(params.base_model, p.sketch)
    for pack, role in roles:  # missing weights fail here, before anything loads
        weights.resolve(pack, role, root)
    memory = run_memory_plan(smoke, params.precision)
    runtime.reset_peak_memory()
    identity = str(base_model) if params.base_model != "file" else \
        f"{base_model}:{Path(base_model).stat().st_mtime_ns}"
    used = provenance(roles, root, base_model_file=Path(p.base_model) if params.base_model == "file" else None,
                      detector=not params.already_cropped and not smoke, smoke=smoke)
    run_state = resume.RunState.open(NAME, params, progress=progress, identity=run_identity(
        used, identity, [f.path for f in p.faces], p.sketches, memory))
    recorder = run_state.loop()

    with timings.stage("load"):
        if progress is not None:
            progress("load", 0, 1)
        key = f"{NAME}:{root}:{identity}:sketch={p.sketch}:{memory.tier}:{memory.dtype_name}:{memory.device}"
        with quiet_libraries():
            pipe = cached(key, lambda: _load(base_model, p.sketch, root, memory))
        if progress is not None:
            progress("load", 1, 1)
    install_face_token_mixer(pipe.unet, params.identity_mixing)
    for model in (pipe.unet, getattr(pipe, "controlnet", None)):
        if model is not None:
            set_motion_groupnorm(model, per_frame=params.per_frame_groupnorm)

    chunks = math.ceil(p.frames / memory.vae_decode_chunk)

    def on_state(state):  # the state is kept first: a stop right after a progress line loses nothing
        recorder(state)
        if progress is not None:
            progress(*(("decode", len(state.decoded), chunks) if state.phase == "decode" else
                       ("denoise", state.step, state.total)))

    device = "cuda" if memory.device == "cuda" and torch.cuda.is_available() else "cpu"
    args = dict(face_scale=params.face_scale, face_lora=params.face_lora, reference_weights=p.reference_weights,
                num_frames=p.frames, height=p.height, width=p.width, num_inference_steps=p.steps,
                guidance_scale=params.guidance_scale, generator=torch.Generator(device).manual_seed(params.seed),
                output_type="np", decode_chunk_size=memory.vae_decode_chunk, resume_from=recorder.resume_from,
                on_state=on_state)
    if p.sketch:
        import PIL.Image

        args.update(sketches=[PIL.Image.fromarray(s) for s in p.sketches], sketch_frame_indices=p.sketch_indices,
                    sketch_scale=params.sketch_scale)
    faces = [f.prepared.image for f in p.faces]
    with timings.stage("generate"), warnings.catch_warnings(), quiet_libraries():
        warnings.filterwarnings("ignore", message=".*tokens long; CLIP reads only")  # already said by plan()
        frames = pipe(faces, p.prompt, p.negative_prompt, **args).frames[0]

    effective = params
    if smoke:
        effective = replace(params, width=p.width, height=p.height, frames=p.frames, steps=p.steps,
                            sketch_frames=", ".join(map(str, p.sketch_indices)) if p.sketch else params.sketch_frames)
    meta = {
        "method": "ID-Animator (AnimateDiff v2 + face adapter)" + (" + SparseCtrl scribble" if p.sketch else ""),
        "weights": used,
        "memory_plan": memory.as_dict(),
        "inputs": {
            "faces": [{"file": str(f.path),
                       "mode": "face crop as given" if f.prepared.face is None else "detected and aligned",
                       "box": None if f.prepared.face is None else [round(v, 1) for v in f.prepared.face.box],
                       "score": None if f.prepared.face is None else round(f.prepared.face.score, 4),
                       "detector": None if f.prepared.face is None else ("stand-in (SMOKE)" if smoke else
                                                                         "insightface SCRFD-10G")}
                      for f in p.faces],
            "downloaded_from": p.sources,
            "sketch": None if not p.sketch else {"mode": params.sketch_mode, "file": params.sketch_image,
                                                 "count": len(p.sketches), "frame_indices": p.sketch_indices,
                                                 "inverted": p.sketch_inverted},
        },
        "generation": {"prompt": p.prompt, "negative_prompt": p.negative_prompt, "width": p.width,
                       "height": p.height, "frames": p.frames, "steps": p.steps,
                       "scheduler": "DDIM (linear betas 0.00085-0.012, leading spacing, eta 0)",
                       "reference_weights": p.reference_weights or ([0.5, 0.5] if len(p.faces) == 2 else [1.0]),
                       "identity_mixing": params.identity_mixing, "per_frame_groupnorm": params.per_frame_groupnorm,
                       "face_lora": params.face_lora, "face_select": params.face_select,
                       "generator_device": device,
                       "decode_chunk": memory.vae_decode_chunk},
        "warnings": p.notes,
        "smoke": smoke,
    }
    if smoke:
        meta["requested_params"] = params
    result = finish(NAME, effective, frames, params.fps, control=_control_strip(p), meta=meta, timings=timings,
                    run_state=run_state)
    if params.output_format == "gif":
        result.gif_path = add_gif(result)
    if progress is not None:
        progress("save", 1, 1)
    result.face_crops = [f.prepared.image for f in p.faces]
    return result

