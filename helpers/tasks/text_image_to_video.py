"""Text/image to video (MuseV): a picture + a prompt → a video that starts from the picture; long videos by parallel
denoising.

Data flow: the condition image is centre-cropped to the video size and VAE-encoded; its clean latent is frame 0 of
every window of noisy frames → MuseV's video UNet (the SD1.5 base model's spatial layers + MuseV's temporal layers;
spatial self-attention also looks at frame 0, "reference-only") predicts the noise of each window; overlapping windows
are averaged → classifier-free guidance → one Euler step for all frames → 10 steps → the VAE decodes every frame.
``musev_referencenet`` also feeds ReferenceNet features and IP-Adapter tokens of the picture into the UNet.
Without a picture the first frame is drawn from the prompt by the same UNet with its temporal layers off.

>>> from helpers.tasks import text_image_to_video as task
>>> params = task.Params(condition_image="girl.jpg", prompt="(masterpiece, best quality), a girl, (eye blinks:1.8)")
>>> task.preview_inputs(params).show()        # the frame 0 the model gets and the window schedule, before any GPU time
>>> result = task.run(params)                  # mp4 + picture | video preview + JSON sidecar under <Drive root>/outputs
>>> result.show()

``PRESETS`` are the original repository's examples (``configs/tasks/example.yaml``: people, paintings and scenes with
their prompts and sizes), fetched from GitHub on first use (:func:`helpers.tasks.inputs.fetch_input`).

LoRA files are not supported: the MuseV pipeline has no LoRA loader. Merge a LoRA into an SD1.5 model and give that
model as ``base_model`` instead.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from helpers.errors import InputError
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
from helpers.tasks.inputs import ASSETS, bundled_asset, file_stamp, local_input

NAME = "text_image_to_video"

DIAGRAM = Path(__file__).resolve().parents[2] / "assets" / "diagrams" / "musev_parallel_denoising.svg"
DEFAULT_IMAGE = str(ASSETS / "reference.png")  # a synthetic person made by this project, so a plain run works
DEFAULT_PROMPT = "(masterpiece, best quality, highres:1),(1boy, solo:1),(eye blinks:1.8),(head wave:1.3)"
DEFAULT_BASE = "majicmix"  # majicmixRealv6Fp16 from the MuseV pack, the original's text-to-video base model
SIZE_UNIT = 64  # the original floors video sizes to multiples of 64
IMG_EDGE_RATIO = 1.0  # the original's img_edge_ratio: a picture's own size x this when no size is given ...
MAX_IMAGE_EDGE = 1280  # ... lowered so that the longer side stays within this many pixels (its demo's rule)
NO_IMAGE_SIDE = 512  # size without a picture (the README's memory figures are for 512x512)
MAX_FRAMES = 240
SD15_TEXT_WIDTH = 768  # cross-attention width of every SD1.5 model (SD2: 1024, SDXL: 2048)
UNET_ROLES = {"musev": "unet_musev", "musev_referencenet": "unet_referencenet"}
REFERENCE_ROLES = ("referencenet", "image_encoder", "ip_adapter_image_proj")
FIRST_FRAME_STEPS = 30  # the original's first-frame generation (text-to-image, guidance 7.5)
FIRST_FRAME = "generated from the prompt (temporal layers off, 30 steps, guidance 7.5, as the original)"

# SMOKE mode: tiny random-weight packs and tiny sizes, every line of the real path.
SMOKE_SIDE, SMOKE_FRAMES, SMOKE_WINDOW, SMOKE_OVERLAP, SMOKE_STEPS = 64, 6, 4, 2, 2


@dataclass
class Params(TaskParams):
    condition_image: str = field(default=DEFAULT_IMAGE, metadata=param(
        "The first frame: a photo or painting of a person, or a scene (path, URL or upload); empty = the first frame "
        "is drawn from the prompt", widget="file"))
    prompt: str = field(default=DEFAULT_PROMPT, metadata=param(
        "What moves, in A1111 weighting syntax: (eye blinks:1.8) stresses, [blurry] softens; up to 225 tokens",
        widget="textarea"))
    negative_prompt: str = field(default=NEGATIVE_PROMPT_V2, metadata=param(
        "What to avoid (the original's 'V2'; badhandv4 and ng_deepnegative_v1_75t are textual-inversion embeddings)",
        widget="textarea"))
    model: str = field(default="musev_referencenet", metadata=param(
        "musev_referencenet: also ReferenceNet + IP-Adapter on the picture (README's first run, ~12 GB at 512x512); "
        "musev: temporal layers only (~8 GB)", choices=["musev_referencenet", "musev"]))
    width: int = field(default=0, metadata=param(
        "Video width in px, floored to a multiple of 64 as the original; 0 = from the picture (its own size as the "
        f"original, scaled down so the longer side is at most {MAX_IMAGE_EDGE})", min=0, max=2048, step=64))
    height: int = field(default=0, metadata=param(
        "Video height in px, floored to a multiple of 64; 0 = from the picture (or from the width and the picture's "
        "shape)", min=0, max=2048, step=64))
    frames: int = field(default=12, metadata=param(
        "Frames generated after the picture (the original's time_size, 12); the video starts with the picture",
        min=1, max=MAX_FRAMES))
    fps: float = field(default=12.0, metadata=param(
        "Frames per second of the result (the README runs save at 12)", min=1.0, max=60.0, step=1.0))
    steps: int = field(default=10, metadata=param("Euler denoising steps (10 published)", min=1, max=100))
    guidance_scale: float = field(default=3.5, metadata=param(
        "Classifier-free guidance: how strongly the prompt steers the video (3.5 published)",
        min=0.0, max=15.0, step=0.5))
    motion_speed: float = field(default=8.0, metadata=param(
        "Spacing of the frame positions the UNet sees (8 published for image-to-video); only musev_referencenet "
        "reads it: higher moves faster", min=0.5, max=32.0, step=0.5))
    long_video: str = field(default="parallel", metadata=param(
        "parallel: all frames denoised together in overlapping windows that share frame 0 (periodic motion, fixed "
        "camera); serial: shots of one window, each starting from the last frame of the one before (larger motion, "
        "errors add up; frames are rounded up to whole shots)", choices=["parallel", "serial"], group="Long video"))
    window: int = field(default=12, metadata=param(
        "Frames per window (the original's context_frames, 12); fewer saves memory", min=2, max=32,
        group="Long video"))
    overlap: int = field(default=4, metadata=param(
        "Frames shared by neighbouring windows in parallel mode, averaged at every step (context_overlap, 4)",
        min=0, max=31, group="Long video"))
    base_model: str = field(default=DEFAULT_BASE, metadata=param(
        "SD1.5 image model under the temporal layers: majicmix (the original's, in the MuseV pack), or the path of "
        "your own: a diffusers folder (UNet, text encoder, scheduler used) or one .safetensors/.ckpt file (UNet only)",
        widget="text", group="Advanced"))
    ip_adapter_scale: float = field(default=1.0, metadata=param(
        "Weight of the picture's IP-Adapter tokens (musev_referencenet; 1 = the original's)", min=0.0, max=2.0,
        step=0.05, group="Advanced"))


# ------------------------------------------------------------------------------------------------------- presets
# configs/tasks/example.yaml of TMElyralab/MuseV at the commit of its published code; size = the yaml's height and
# width x img_length_ratio, floored to 64 as its text2video.py does. ({eye_blinks_factor} is 1.8 in every entry.)
EXAMPLES = "https://raw.githubusercontent.com/TMElyralab/MuseV/43370a6215afdfcd6d6af404350c132cd3b6eef8/data/images"
_QUALITY = "(masterpiece, best quality, highres:1)"
_BOY, _MAN = f"{_QUALITY},(1boy, solo:1),(eye blinks:1.8),(head wave:1.3)", f"{_QUALITY},(1man, solo:1)"
_GIRL = f"{_QUALITY},(1girl, solo:1),(beautiful face,\nsoft skin, costume:1),(eye blinks:1.8),(head wave:1.3)"
_SEA, _GUITAR = f"{_QUALITY}, peaceful beautiful sea scene", f"{_QUALITY}, playing guitar"
_EXAMPLES = [  # (preset name, file, prompt, yaml height, yaml width, img_length_ratio)
    ("people · yongen (the README run)", "yongen.jpeg", _BOY, 1308, 736, 0.957),
    ("people · jinkesi2", "jinkesi2.jpeg", _GIRL, 714, 563, 1.25),
    ("people · seaside girl", "seaside_girl.jpeg", _SEA, 736, 736, 0.957),
    ("people · boy playing guitar", "boy_play_guitar.jpeg", _GUITAR, 846, 564, 1.248),
    ("people · girl playing guitar 2", "girl_play_guitar2.jpeg", _GUITAR, 1002, 564, 1.248),
    ("people · boy playing guitar 2", "boy_play_guitar2.jpeg", _GUITAR, 630, 420, 1.676),
    ("people · girl playing guitar 4", "girl_play_guitar4.jpeg", _GUITAR, 846, 564, 1.248),
    ("painting · Du Fu, ink", "dufu.jpeg", f"{_MAN},(eye blinks:1.8),(head wave:1.3),Chinese ink painting style",
     500, 471, 1.495),
    # the yaml names "Mona_Lisa..jpg"; the file in the repository is Mona_Lisa.jpg
    ("painting · Mona Lisa", "Mona_Lisa.jpg", _GIRL, 894, 600, 1.173),
    ("painting · Portrait of Dr. Gachet", "Portrait-of-Dr.-Gachet.jpg", f"{_MAN},(eye blinks:1.8),(head wave:1.3)",
     985, 800, 0.88),
    ("painting · Self-Portrait with Cropped Hair", "Self-Portrait-with-Cropped-Hair.jpg", f"{_BOY}, animate",
     565, 848, 1.246),
    ("painting · The Laughing Cavalier", "The-Laughing-Cavalier.jpg", f"{_MAN},(eye blinks:1.8),(head wave:1.3)",
     1462, 1200, 0.587),
    # the yaml's landscape size crops the middle of this portrait picture, as in the original
    ("scene · seaside 4", "seaside4.jpeg", _SEA, 317, 564, 2.221),
    ("scene · waterfall", "waterfall4.jpeg", f"{_QUALITY}, peaceful beautiful waterfall, an\nendless waterfall",
     846, 564, 1.248),
    ("scene · river", "river.jpeg", f"{_QUALITY}, peaceful beautiful river", 736, 736, 0.957),
    ("scene · seaside 2", "seaside2.jpeg", _SEA, 1313, 736, 0.957),
]


def floor_to_unit(value: float) -> int:
    """``value`` floored to a multiple of 64, as the original sizes its videos (float noise below 1e-6 ignored)."""
    return int(round(value, 6) // SIZE_UNIT * SIZE_UNIT)


PRESETS: dict[str, dict] = {
    name: dict(condition_image=f"{EXAMPLES}/{file}", prompt=prompt, height=floor_to_unit(h * ratio),
               width=floor_to_unit(w * ratio), model="musev_referencenet", frames=12, fps=12.0, long_video="parallel",
               window=12, overlap=4, steps=10, guidance_scale=3.5, motion_speed=8.0, base_model=DEFAULT_BASE)
    for name, file, prompt, h, w, ratio in _EXAMPLES
}
PRESETS["people · yongen, musev without ReferenceNet (README)"] = dict(
    PRESETS["people · yongen (the README run)"], model="musev")
PRESETS["long video · yongen, 96 frames in parallel windows"] = dict(
    PRESETS["people · yongen (the README run)"], frames=96)
PRESETS["long video · yongen, 8 serial shots of 12"] = dict(
    PRESETS["people · yongen (the README run)"], frames=96, long_video="serial")


# ---------------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out from Params before any model loads."""

    image: Path | None  # None: the first frame is generated from the prompt
    prompt: str
    width: int
    height: int
    time_size: int  # frames per shot (all frames in parallel mode)
    shots: int  # n_batch: serial shots
    window: int
    overlap: int
    steps: int
    windows: tuple  # per shot, the (first, last) frame of every window
    base_model: Path | None  # None: the pack's majicmix
    sources: dict
    notes: tuple

    @property
    def output_frames(self) -> int:  # frame 0, then every generated frame
        return 2 + self.windows[-1][-1][1]

    @property
    def unet_calls(self) -> int:  # one window at one step, both guidance halves in one call
        return self.steps * sum(len(shot) for shot in self.windows)


def output_size(width: int, height: int, image_hw: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) of the video: as given, the missing side from the picture's shape, or both from the picture
    (its own size x ``IMG_EDGE_RATIO``, lowered so that the longer side is at most ``MAX_IMAGE_EDGE``: the original's
    ``img_edge_ratio`` rule); 512x512 without a picture. Floored to multiples of 64; ``InputError`` below 64."""
    ih, iw = image_hw or (1, 1)
    if not width and not height:
        if image_hw:
            scale = min(MAX_IMAGE_EDGE / max(ih, iw), IMG_EDGE_RATIO)
            w, h = iw * scale, ih * scale
        else:
            w = h = NO_IMAGE_SIDE
    else:
        w = width or height * iw / ih
        h = height or width * ih / iw
    out_w, out_h = floor_to_unit(w), floor_to_unit(h)
    if min(out_w, out_h) < SIZE_UNIT:
        if not width and not height and image_hw:
            raise InputError(f"the picture is {iw}x{ih} px, too small for a video of its own size (at least 64x64): "
                             "give width and height, or a larger picture")
        raise InputError(f"the video would be {out_w}x{out_h} px: width and height must be at least 64 "
                         "(give both, or 0 to follow the picture)")
    return out_w, out_h


def plan(params: Params) -> Plan:
    """Check every setting and input (downloading example URLs); raise ``InputError`` on the first problem.

    Loads no model: the picture is read, the base model's file header is checked."""
    from helpers import media
    from helpers.pipelines.musev.schedule import context_windows

    check_params(params)
    smoke = is_smoke(params)
    prompt = check_prompt(params.prompt)
    serial = params.long_video == "serial"
    if not serial and params.overlap >= params.window:
        raise InputError(f"overlap ({params.overlap}) must be smaller than window ({params.window}): windows must move "
                         "forward (published: window 12, overlap 4)")
    sources: dict[str, str] = {}
    image = local_input(params.condition_image, "condition image", smoke=smoke, sources=sources,
                        stand_in=lambda _url: bundled_asset("reference.png", smoke))
    if image is not None and image.suffix.lower() in media.VIDEO_SUFFIXES - {".gif"}:
        raise InputError(f"{image.name} is a video: the condition image must be a picture (PNG or JPEG)")
    image_hw = media.read_image(image).shape[:2] if image is not None else None  # unreadable pictures fail here
    if image is None and params.frames < 2:
        raise InputError("without a condition image the first frame is generated: ask for at least 2 frames")
    width, height = output_size(params.width, params.height, image_hw)
    notes = [f"{name} {value} floored to {got} (multiples of 64, as the original)"
             for name, value, got in (("width", params.width, width), ("height", params.height, height))
             if value and value != got]
    if image_hw and bool(params.width) != bool(params.height):
        missing = "height" if params.width else "width"
        notes.append(f"{missing} {height if params.width else width} follows the picture's shape (the original "
                     f"would take the picture's own {missing})")
    if image_hw and not params.width and not params.height and max(image_hw) * IMG_EDGE_RATIO > MAX_IMAGE_EDGE:
        notes.append(f"the picture ({image_hw[1]}x{image_hw[0]}) scaled so its longer side is at most "
                     f"{MAX_IMAGE_EDGE} px (the original's img_edge_ratio rule)")
    base, base_note = resolve_base_model(params.base_model, smoke)
    notes += [base_note] if base_note else []

    frames, window, overlap, steps = params.frames, params.window, params.overlap, params.steps
    if smoke:
        width, height = (SMOKE_SIDE, 2 * SMOKE_SIDE) if height > width else \
            (2 * SMOKE_SIDE, SMOKE_SIDE) if width > height else (SMOKE_SIDE, SMOKE_SIDE)
        frames, window, overlap, steps = min(frames, SMOKE_FRAMES), SMOKE_WINDOW, SMOKE_OVERLAP, min(steps, SMOKE_STEPS)
        frames = max(frames, 2 if image is None else 1)
    if serial:  # shots of one window each, as the maintainers' serial recipe (time_size = context_frames, overlap 0)
        shots, time_size, overlap = math.ceil(frames / window), window, 0
    else:
        shots, time_size = 1, frames
    windows = []
    for shot in range(shots):
        # a generated first frame counts toward the first shot's frames, as in the original
        count = time_size - 1 if (shot == 0 and image is None) else time_size
        offset = windows[-1][-1][1] + 1 if windows else 0
        windows.append(tuple((offset + w[0], offset + w[-1]) for w in context_windows(count, window, overlap)))
    return Plan(image=image, prompt=prompt, width=width, height=height, time_size=time_size, shots=shots,
                window=window, overlap=overlap, steps=steps, windows=tuple(windows), base_model=base,
                sources=sources, notes=tuple(notes))


def validate(params: Params) -> None:
    """Raise ``InputError`` (one line, what to do) for any bad setting or input; loads no model."""
    plan(params)


# ---------------------------------------------------------------------------------------------------- base model


def resolve_base_model(value: str, smoke: bool) -> tuple[Path | None, str | None]:
    """(the base model path, or None for majicmix; a note for the sidecar). SMOKE mode runs an own SD1.5 model as
    the tiny pack's base model unless it is tiny itself (tests)."""
    value = (value or "").strip()
    if value.lower() in ("", DEFAULT_BASE):
        return None, None
    path = Path(value).expanduser()
    if not path.exists():
        raise InputError(f"base model not found: {path} — give 'majicmix' or the path of an SD1.5 model folder/file")
    from helpers.pipelines.musev.base_model import text_width

    width = text_width(path)
    if smoke:
        from helpers.testing.musev import TINY_WIDTHS

        if width == TINY_WIDTHS["cross_attention_dim"]:
            return path, None
        if width == SD15_TEXT_WIDTH:
            return None, f"SMOKE: the tiny base model ran instead of {path}"
    if width != SD15_TEXT_WIDTH:
        kind = {1024: "an SD2.x model", 2048: "an SDXL model"}.get(width, f"cross-attention width {width}")
        raise InputError(f"base model {path.name} is {kind}: MuseV needs an SD1.5 model (width 768)")
    return path, None


PART_NAMES = {"text_encoder": "text encoder", "scheduler": "scheduler", "vae": "VAE"}


def pack_base_parts(base: Path | None, root: Path | None) -> list[str]:
    """The parts the pack's majicmix gives the pipeline: all of them without an own base model, else what the own
    one lacks (a single file has only a UNet; its VAE matters only when sd-vae-ft-mse is absent)."""
    from helpers import weights
    from helpers.errors import MissingWeightsError
    from helpers.pipelines.musev.pipeline import BASE_MODEL_PARTS, base_model_parts

    if base is None:
        return list(BASE_MODEL_PARTS)
    own = base_model_parts(base)
    parts = [part for part in ("text_encoder", "scheduler") if part not in own]
    if "vae" not in own:
        try:
            weights.resolve("musev", "vae", root)
        except MissingWeightsError:
            parts.append("vae")
    return parts


# ------------------------------------------------------------------------------------------------------- preview


def window_chart(windows, cell: int | None = None) -> np.ndarray:
    """The window schedule as a picture: one row per window, one column per frame (frame 0 first); the clean frame
    each window is conditioned on in orange (frame 0; in serial mode the last frame of the shot before), the
    window's frames in blue, frames shared by several windows darker."""
    rows = [(shot == 0, w) for shot, shot_windows in enumerate(windows) for w in shot_windows]
    total = 2 + max(last for _, (_, last) in rows)
    cell = cell or max(3, min(24, 720 // total))
    chart = np.full((len(rows) * (cell + 2) + 2, total * cell + 2, 3), 255, np.uint8)
    coverage = np.zeros(total, int)
    for _, (first, last) in rows:
        coverage[first + 1 : last + 2] += 1
    for r, (first_shot, (first, last)) in enumerate(rows):
        y, anchor = 2 + r * (cell + 2), 0 if first_shot else first
        chart[y : y + cell, 1 + anchor * cell : 1 + anchor * cell + cell - 1] = (240, 150, 40)
        for frame in range(first + 1, last + 2):
            shade = (70, 120, 200) if coverage[frame] > 1 else (120, 170, 235)
            chart[y : y + cell, 1 + frame * cell : frame * cell + cell] = shade
    return chart


@dataclass
class InputPreview:
    """What a run will use, shown before any GPU time is spent: see :meth:`show`."""

    plan: Plan
    condition: np.ndarray | None  # frame 0 as the model gets it (centre-cropped and resized)
    chart: np.ndarray

    def summary(self) -> str:
        p = self.plan
        windows = sum(len(shot) for shot in p.windows)
        mode = f"{p.shots} serial shots of {p.time_size}" if p.shots > 1 else \
            f"{windows} window(s) of {p.window} overlapping by {p.overlap}"
        first = "the picture" if p.image is not None else "generated from the prompt"
        lines = [f"{p.output_frames} frames at {p.width}x{p.height} (frame 0 = {first}); {mode}; "
                 f"{p.steps} steps = {p.unet_calls} UNet calls"]
        lines += [f"note: {n}" for n in p.notes]
        return "\n".join(lines)

    def show(self) -> None:
        from helpers import media

        if self.condition is not None:
            media.show_image(self.condition, title="frame 0: the picture as the model gets it")
        media.show_image(self.chart, title="windows (rows) over frames (columns): orange = frame 0 in every window",
                         max_side=720)
        print(self.summary())


def _condition(p: Plan) -> np.ndarray | None:
    from helpers import media
    from helpers.pipelines.musev.preprocess import crop_resize_condition_image

    # as the original's predictor: always cropped (its box drops the last row and column) and resampled, LANCZOS
    return None if p.image is None else crop_resize_condition_image(media.read_image(p.image), p.height, p.width)


def preview_inputs(params: Params) -> InputPreview:
    """Check the inputs and return frame 0 as the model gets it and the window schedule, for display."""
    p = plan(params)
    return InputPreview(plan=p, condition=_condition(p), chart=window_chart(p.windows))


# ------------------------------------------------------------------------------------------------------------ run


@contextmanager
def quiet_libraries(smoke: bool):
    """No library progress bars or notices while tiny packs are written and models load (the task reports its own
    stages); in SMOKE mode also no prompt-length notice (the tiny tokenizer splits text into many more tokens)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    diffusers_logging.get_verbosity(), hf_logging.get_verbosity()  # both libraries set up their loggers first
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    loggers = [logging.getLogger(n) for n in ("transformers", "diffusers")]
    loggers += [logging.getLogger("helpers.pipelines.musev.prompts")] if smoke else []
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels):
            one.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def _packs_root(smoke: bool) -> Path | None:
    """The weights root; in SMOKE mode the tiny packs are written there first (once)."""
    root = weights_root(smoke)
    if smoke:
        from helpers.testing.musev import write_tiny_musev_packs

        write_tiny_musev_packs(root)  # skips the parts already there
    return root


def _load(variant: str, base: Path | None, root: Path | None, memory):
    """Load the pipeline placed as the memory plan says, on an own base model when given; notes for the sidecar."""
    from helpers.pipelines.musev.pipeline import load_musev_pipeline

    pipe = load_musev_pipeline(variant, root=root, base_model=base, device=memory.device, dtype=memory.dtype,
                               offload=memory.offload)
    if base is None:
        return pipe, []
    names = [PART_NAMES[part] for part in pack_base_parts(base, root)]
    if not names:
        return pipe, []
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return pipe, [f"{listed}: the MuseV pack's majicmix (the base model has none of its own)"]


def _provenance(variant: str, base: Path | None, root: Path | None) -> list[dict]:
    from helpers import weights
    from helpers.errors import MissingWeightsError

    roles = [UNET_ROLES[variant], *(REFERENCE_ROLES if variant == "musev_referencenet" else ())]
    roles += ["base_model"] if pack_base_parts(base, root) else []
    for role in ("vae", "negative_embeddings"):  # optional: the base's VAE / no embeddings otherwise
        try:
            weights.resolve("musev", role, root)
            roles.append(role)
        except MissingWeightsError:
            pass
    records = [weights.provenance("musev", role, root) for role in roles]
    if base is not None:
        size = sum(f.stat().st_size for f in base.rglob("*") if f.is_file()) if base.is_dir() else base.stat().st_size
        records.append({"pack": None, "role": "base_model", "source": f"chosen by the user: {base}",
                        "size_bytes": size})
    return records


def run(params: Params, *, progress: Progress | None = None) -> Result:
    """Generate the video. Order: check everything (``InputError``) → find the weights (``MissingWeightsError``) →
    the pipeline (loaded once, kept between runs) → windows × steps → decode → mp4 + preview + sidecar. An
    interrupted run with the same settings continues where it stopped (:mod:`helpers.resume`): after its last
    saved step, and never recomputing a finished serial shot."""
    import torch

    from helpers import resume, runtime, weights
    from helpers.pipelines.musev.loops import denoising_loops

    timings = Timings()
    smoke = is_smoke(params)
    with timings.stage("inputs"):
        p = plan(params)
        condition = _condition(p)
    with quiet_libraries(smoke):
        root = _packs_root(smoke)
    variant = params.model
    with timings.stage("weights"):  # missing weights fail here; pickles are converted to fp16 once
        pack_base = ("base_model",) if pack_base_parts(p.base_model, root) else ()  # not needed beside an own one
        roles = (UNET_ROLES[variant], *pack_base, *(REFERENCE_ROLES if variant != "musev" else ()))
        for done, role in enumerate(roles, 1):
            weights.resolve("musev", role, root)
            if progress is not None:
                progress("weights", done, len(roles))
    memory = run_memory_plan(smoke, params.precision)
    runtime.reset_peak_memory()
    weight_records = _provenance(variant, p.base_model, root)
    run_state = resume.RunState.open(NAME, params, identity={
        "weights": weight_records, "dtype": memory.dtype_name, "device": str(memory.device),
        "condition_image": None if p.image is None else resume.file_identity(p.image)}, progress=progress)
    recorders = [run_state.loop(name, label=label) for name, label in denoising_loops(p.shots, p.image is None)]

    with timings.stage("load"):
        if progress is not None:
            progress("load", 0, 1)
        identity = "majicmix" if p.base_model is None else \
            f"{p.base_model.resolve()}:{file_stamp(p.base_model) if p.base_model.is_file() else ''}"
        key = f"{NAME}:{variant}:{root}:{identity}:{memory.tier}:{memory.dtype_name}:{memory.device}"
        with quiet_libraries(smoke):
            pipe, load_notes = cached(key, lambda: _load(variant, p.base_model, root, memory))
        if progress is not None:
            progress("load", 1, 1)
    with timings.stage("generate"), quiet_libraries(smoke):
        output = pipe(
            p.prompt, condition, negative_prompt=params.negative_prompt, height=p.height, width=p.width,
            time_size=p.time_size, n_batch=p.shots, num_inference_steps=p.steps,
            guidance_scale=params.guidance_scale, motion_speed=params.motion_speed, context_frames=p.window,
            context_overlap=p.overlap, ip_adapter_scale=params.ip_adapter_scale,
            first_frame_steps=min(FIRST_FRAME_STEPS, p.steps) if smoke else FIRST_FRAME_STEPS,
            generator=torch.Generator("cpu").manual_seed(params.seed), output_type="np",
            decode_chunk_size=memory.vae_decode_chunk, progress=progress,
            resume_from=[r.resume_from for r in recorders], on_state=recorders)
    frames, output_notes = output.frames, list(output.notes)
    del output  # the latents are not needed any more

    effective = params
    if smoke:
        effective = replace(params, width=p.width, height=p.height, steps=p.steps, window=p.window,
                            overlap=p.overlap, frames=p.time_size * p.shots)
    meta = {
        "method": f"MuseV {variant} on SD1.5 ("
                  + ("serial shots)" if p.shots > 1 else "visual-conditioned parallel denoising)"),
        "weights": weight_records,
        "memory_plan": memory.as_dict(),
        "inputs": {"condition_image": None if p.image is None else str(p.image), "downloaded_from": p.sources,
                   "first_frame": "the condition image" if p.image is not None else FIRST_FRAME},
        "generation": {"prompt": p.prompt, "negative_prompt": params.negative_prompt, "width": p.width,
                       "height": p.height, "time_size": p.time_size, "n_batch": p.shots, "steps": p.steps,
                       "frames_out": int(frames.shape[0]), "scheduler": "Euler discrete (the base model's config)",
                       "noise": "video fusion (w_ind_noise 0.5) + condition prior (img_weight 0.001)",
                       "decode_chunk": memory.vae_decode_chunk, "generator_device": "cpu"},
        "windows": {"mode": params.long_video, "schedule": "uniform_v2", "context_frames": p.window,
                    "context_overlap": p.overlap, "shots": [[list(w) for w in shot] for shot in p.windows],
                    "unet_calls": p.unet_calls,
                    "note": "(first, last) noisy frame of each window, counted after the condition frame, which "
                            "every window sees in front of its frames"},
        "base_model": "majicmixRealv6Fp16 (MuseV pack)" if p.base_model is None else str(p.base_model),
        "notes": [*p.notes, *load_notes, *output_notes],
        "smoke": smoke,
    }
    if smoke:
        meta["requested_params"] = params
    result = finish(NAME, effective, frames, params.fps, control=condition, meta=meta, timings=timings,
                    run_state=run_state)
    if progress is not None:
        progress("save", 1, 1)
    return result
