"""The task pattern shared by every notebook: Params dataclass → ``run(params, progress=...)`` → Result.

A task declares its parameters once; the widget form (``helpers.ui``), the CLI (``python -m helpers``) and the JSON
sidecar are generated from that declaration.

>>> from dataclasses import dataclass, field
>>> from helpers.tasks.base import TaskParams, param
>>> @dataclass
... class Params(TaskParams):
...     steps: int = field(default=25, metadata=param("Denoising steps", min=1, max=100))
...     width: int = field(default=576, metadata=param("Width (px)", min=64, max=1024, step=64))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from helpers.errors import InputError, OutputError

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called as work advances (e.g. ``("denoise", 12, 50)``)."""


def param(help: str, *, min: float | None = None, max: float | None = None, step: float | None = None,
          choices: typing.Sequence | None = None, widget: str | None = None, group: str | None = None) -> dict:
    """Field metadata for a Params dataclass.

    ``widget`` overrides the default control: ``"text"``, ``"textarea"``, ``"file"`` (an upload; the value is a path),
    ``"hidden"`` (not in the form). ``group`` puts the field under a heading ("Advanced" fields start collapsed).
    """
    return {"help": help, "min": min, "max": max, "step": step,
            "choices": list(choices) if choices is not None else None, "widget": widget, "group": group}


@dataclass
class TaskParams:
    """Fields every task has. Task Params subclass this and add their own (all with defaults)."""

    seed: int = field(default=42, metadata=param("Random seed: the same seed and settings give the same video",
                                                  min=0, max=2**31 - 1))
    smoke: bool = field(default=False, metadata=param(
        "SMOKE mode: tiny random-weight models and tiny sizes, to check the whole path in seconds (output is noise)",
        widget="hidden"))
    precision: str = field(default="auto", metadata=param(
        "Number precision: auto = float16 on a GPU, float32 on the CPU; bfloat16 where the GPU supports it; "
        "float32 for fidelity runs (slower, twice the memory)", choices=("auto", "float16", "bfloat16", "float32"),
        group="Advanced"))
    output_dir: str = field(default="", metadata=param(
        "Folder for the mp4 + JSON sidecar (empty: <Drive root>/outputs/<task>)", widget="text", group="Advanced"))
    fresh_start: bool = field(default=False, metadata=param(
        "Discard the saved progress of an interrupted run with these same settings and start again (an interrupted "
        "run otherwise resumes where it stopped)", group="Advanced"))


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: type
    default: Any
    help: str
    min: float | None
    max: float | None
    step: float | None
    choices: list | None
    widget: str | None
    group: str | None


def field_specs(params_cls: type) -> list[FieldSpec]:
    """The fields of a Params class with their resolved types and metadata, task fields first."""
    hints = typing.get_type_hints(params_cls)
    own, common = [], []
    base_names = {f.name for f in dataclasses.fields(TaskParams)}
    for f in dataclasses.fields(params_cls):
        meta = dict(f.metadata) or param("")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        ftype = hints[f.name]
        if typing.get_origin(ftype) is typing.Union or type(ftype).__name__ == "UnionType":
            args = [a for a in typing.get_args(ftype) if a is not type(None)]
            ftype = args[0] if len(args) == 1 else str
        spec = FieldSpec(f.name, ftype, default, meta.get("help", ""), meta.get("min"), meta.get("max"),
                         meta.get("step"), meta.get("choices"), meta.get("widget"), meta.get("group"))
        (common if f.name in base_names else own).append(spec)
    return own + common


MAX_TEXT_CHARS = 2000  # prompts: CLIP reads 77 tokens (MuseV 3 × 75); longer text is a paste gone wrong


def check_params(params: TaskParams) -> None:
    """Check every field against its declared type, range (finite numbers only) and choices, prompts against a
    sane length, then the output folder (:func:`check_output_folder`); raise ``InputError`` on the first problem."""
    for spec in field_specs(type(params)):
        value = getattr(params, spec.name)
        label = spec.name
        if spec.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(f"{label} must be true or false (got {value!r})")
            continue
        if spec.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(f"{label} must be a number (got {value!r})")
            if not math.isfinite(value):  # NaN passes every comparison, so the range check alone lets it through
                span = (f"from {spec.min} to {spec.max}" if spec.min is not None and spec.max is not None
                        else "an ordinary number")
                raise InputError(f"{label} must be a finite number (got {value}): give {span}")
            if spec.type is int and float(value) != int(value):
                raise InputError(f"{label} must be a whole number (got {value!r})")
            if spec.min is not None and value < spec.min:
                raise InputError(f"{label} must be at least {spec.min} (got {value})")
            if spec.max is not None and value > spec.max:
                raise InputError(f"{label} must be at most {spec.max} (got {value})")
        if spec.choices is not None and value not in spec.choices:
            raise InputError(f"{label} must be one of {', '.join(map(str, spec.choices))} (got {value!r})")
        if spec.widget == "textarea" and isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise InputError(f"{label} is {len(value)} characters long: the text encoder reads only its first 77 "
                             f"tokens (a few hundred characters) — shorten it to under {MAX_TEXT_CHARS}")
    check_output_folder(params)
    from helpers import weights

    weights.resolved_log.clear()  # a run starts here: the roles it resolves from now on are the ones it uses


def params_from_dict(params_cls: type, values: dict) -> TaskParams:
    """Build Params from a dict (preset, CLI, JSON), refusing unknown names with the list of known ones."""
    known = {f.name for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return params_cls(**values)


def is_smoke(params: TaskParams | None = None) -> bool:
    """SMOKE mode: ``params.smoke`` or ``$HV_SMOKE=1``."""
    return bool(getattr(params, "smoke", False)) or os.environ.get("HV_SMOKE", "") in ("1", "true", "True")


def smoke_root() -> Path:
    """Where SMOKE mode writes its tiny random-weight packs (a temp folder, never the user's Drive)."""
    path = Path(os.environ.get("HV_SMOKE_ROOT", Path(tempfile.gettempdir()) / "human-video-smoke"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_root(smoke: bool) -> Path | None:
    """Where a run's weights are looked up: the SMOKE root (tiny packs), or ``None`` for the Drive root."""
    return smoke_root() if smoke else None


def run_memory_plan(smoke: bool, precision: str = "auto"):
    """The memory plan a run uses (``runtime.memory_plan()``) in the ``precision`` asked for
    (``runtime.with_precision``); a GPU tier rehearsed on a machine without CUDA (``HV_PLAN``) becomes the CPU plan
    in SMOKE mode, so SMOKE runs anywhere."""
    import torch

    from helpers import runtime

    chosen = runtime.memory_plan()
    if smoke and chosen.device == "cuda" and not torch.cuda.is_available():
        chosen = runtime.plan_for(None)
    return runtime.with_precision(chosen, precision)


def check_multiple(name: str, value: int, multiple: int) -> None:
    if value % multiple:
        lower = value - value % multiple
        raise InputError(f"{name} must be a multiple of {multiple} (got {value}; try {lower or multiple})")


def check_prompt(prompt: str, *, name: str = "prompt") -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise InputError(f"the {name} is empty: describe what you want to see")
    return prompt


# ------------------------------------------------------------------------------------------------------- progress


class Timings:
    """Wall-clock seconds per stage, for the sidecar."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)

    def total(self) -> float:
        return round(time.perf_counter() - self._start, 3)


class TqdmProgress:
    """Default progress when none is given: one tqdm bar per stage (works in notebooks and terminals)."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(stage)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = self._bars[stage] = tqdm(total=total, desc=stage, leave=True)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()
            self._bars.pop(stage, None)


def progress_or_default(progress: Progress | None) -> Progress:
    return progress if progress is not None else TqdmProgress()


# --------------------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """What a task returns. ``frames`` is (T, H, W, 3) uint8; paths point at what was written."""

    frames: np.ndarray
    fps: float
    control: np.ndarray | None = None  # what conditioned the video (poses, face crop...), shown beside it
    video_path: Path | None = None
    preview_path: Path | None = None
    sidecar_path: Path | None = None
    metadata: dict = field(default_factory=dict)

    def show(self) -> None:
        from helpers import media

        shown = self.preview_path if self.preview_path and self.preview_path.exists() else None
        media.show_video(media.read_video(shown).frames if shown else self.frames, fps=self.fps)


_MODEL_CACHE: dict[str, Any] = {}


def cached(key: str, loader: Callable[[], Any]) -> Any:
    """Keep one loaded pipeline between runs (pressing Generate twice does not reload weights). A different key
    frees the previous pipeline first, so two large models never sit on the GPU together."""
    from helpers.weight_damage import explain_damage

    if key not in _MODEL_CACHE:
        clear_cache()
        with explain_damage():  # a damaged checkpoint is named with its pack and repair, not a raw traceback
            _MODEL_CACHE[key] = loader()
    return _MODEL_CACHE[key]


def clear_cache() -> None:
    import gc

    from helpers import load_policy

    _MODEL_CACHE.clear()
    load_policy.clear()  # its notes describe the models just freed
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Infinity: a sidecar must stay readable by every JSON parser
    if isinstance(value, str):
        return _URL.sub(lambda m: public_url(m.group()), value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return str(value)


_URL = re.compile(r"\b(?:https?|ftp)://[^\s\"'<>]+")


_SECRET_QUERY = re.compile(r"token|key|sig|secret|pass|pwd|auth|credential|session|policy|x-amz-|x-goog-", re.I)


def public_url(url: str) -> str:
    """``url`` without what may be a credential: ``user:password@`` and query parameters whose names say token, key,
    signature, password... (signed links and access tokens travel there); other parameters (``?id=``) stay. Used for
    everything a sidecar or a message shows.

    >>> public_url("https://me:secret@example.org/a/b.png?token=abc&id=7#x")
    'https://example.org/a/b.png?id=7'
    """
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if not _SECRET_QUERY.search(k)]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, urllib.parse.urlencode(query), ""))


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot take outputs (created when missing, then a test file written and removed), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return "it is a file, not a folder"
    except NotADirectoryError:
        return "a part of the path is a file"
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    if not folder.is_dir():
        return "it is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        return f"cannot write there: {exc.strerror or exc.__class__.__name__}"
    return None


def check_output_folder(params: TaskParams) -> Path:
    """Create the folder the outputs go to and write a test file there, so a folder that is a file, read-only or
    on a full drive is refused in one line before any model loads (not after the whole generation). Returns the
    folder checked: ``output_dir``, or the outputs folder of the Drive root (SMOKE: of the SMOKE root)."""
    if params.output_dir:
        folder = Path(params.output_dir).expanduser()
    elif is_smoke(params):
        folder = smoke_root() / "outputs"
    else:
        from helpers import runtime

        folder = runtime.drive_root() / "outputs"
    problem = _folder_problem(folder)
    if problem:
        raise InputError(f"output_dir {folder} cannot hold the results ({problem}): choose a folder you can write "
                         f"to, or leave output_dir empty")
    return folder


def output_folder(task: str, params: TaskParams) -> Path:
    from helpers import runtime

    if params.output_dir:
        folder = Path(params.output_dir).expanduser()
    elif is_smoke(params):
        folder = smoke_root() / "outputs" / task
    else:
        folder = runtime.drive_root() / "outputs" / task
    problem = _folder_problem(folder)
    if problem:
        raise OutputError(f"cannot write the results to {folder} ({problem}): choose another output_dir")
    return folder


OUTPUT_NAMES = ("{stem}.mp4", "{stem}_preview.mp4", "{stem}.json")


def _claim(path: Path) -> bool:
    """Create ``path`` empty if no file has that name (atomic: of two runs asking at once, one gets it)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def reserve_outputs(folder: Path, base: str, names: typing.Sequence[str] = OUTPUT_NAMES) -> tuple[str, list[Path]]:
    """Claim every output name of one result at once: ``base``, else ``base_2``, ``base_3``... — the first stem
    whose files (``names``, formatted with ``stem``) are all free. Each name is created empty with ``O_EXCL``, so
    two runs started together in one folder (two notebooks on one Drive, CLI batches) never share a name and
    nothing already there is overwritten. Returns the stem and the claimed (empty) files."""
    n = 1
    while True:
        stem = base if n == 1 else f"{base}_{n}"
        claimed: list[Path] = []
        for name in names:
            path = folder / name.format(stem=stem)
            if not _claim(path):
                break
            claimed.append(path)
        else:
            return stem, claimed
        for path in claimed:
            path.unlink(missing_ok=True)
        n += 1


def _release_unwritten(paths: typing.Iterable[Path]) -> None:
    """Remove the claimed names that never got their content (still empty): a failed run leaves no stub behind."""
    for path in paths:
        try:
            if path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


def write_json(path: Path, data: dict) -> Path:
    """Write a sidecar in one step (a temporary file renamed over ``path``): valid JSON or nothing, never a
    truncated or empty file. Non-finite numbers become ``null``."""
    from helpers import media

    text = json.dumps(_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise media.write_error(path, exc, len(text.encode())) from None
    return path


def finish(task: str, params: TaskParams, frames, fps: float, *, control=None, meta: dict | None = None,
           timings: Timings | None = None, run_state=None) -> Result:
    """Write the result: ``<stem>.mp4``, ``<stem>_preview.mp4`` (control | result, small) and ``<stem>.json``.

    The sidecar holds every parameter, the seed, the weight files and their revisions (``meta["weights"]``), timings,
    peak GPU memory, the memory plan, library versions and any checkpoint entries the loads left out
    (``ignored_checkpoint_keys``, :mod:`helpers.load_policy`). The three names are reserved together before anything
    is written (:func:`reserve_outputs`): existing files are never overwritten. A write that fails (a full disk)
    raises ``OutputError`` saying how much space is needed, and leaves no empty or partial file behind.

    With ``run_state`` (:class:`helpers.resume.RunState`) the names are recorded in the run's state before anything
    is written, a resumed run writes under the names its interrupted first part reserved (no second, sidecar-less
    mp4), the sidecar says whether the run was resumed (``resume``), and the state is removed once it is written.
    """
    from helpers import media, runtime

    frames = media.as_uint8_video(frames)
    folder = output_folder(task, params)
    if run_state is not None and run_state.stem:
        stem = run_state.stem
        claimed = [folder / name.format(stem=stem) for name in OUTPUT_NAMES]
        for path in claimed:
            _claim(path)  # ours: reserved by the interrupted part of this run; taken again if it was removed
    else:
        stem, claimed = reserve_outputs(folder, f"{task}_{time.strftime('%Y%m%d-%H%M%S')}_seed{params.seed}")
        if run_state is not None:
            run_state.record_stem(stem)
    video_path, preview_path, sidecar_path = claimed
    try:
        media.write_video(video_path, frames, fps)
        preview = media.side_by_side(control, frames) if control is not None else frames
        media.write_video(preview_path, media.fit_box(preview, *media.PREVIEW_BOX), fps, crf=28)
        metadata = _jsonable({
            "task": task,
            "params": params,
            "seed": params.seed,
            "frames": int(frames.shape[0]),
            "size": [int(frames.shape[2]), int(frames.shape[1])],
            "fps": fps,
            "timings_s": (timings.seconds | {"total": timings.total()}) if timings else {},
            "peak_gpu_memory_gb": round(runtime.peak_memory_gb(), 3),
            "environment": runtime.environment_summary(),
            **(meta or {}),
        })
        from helpers import load_policy

        if load_policy.notes():  # checkpoint entries the loads left out, as the originals do (never silent)
            metadata["ignored_checkpoint_keys"] = _jsonable(load_policy.notes())
        if run_state is not None:
            metadata["resume"] = _jsonable(run_state.summary())
        write_json(sidecar_path, metadata)
    except BaseException:
        _release_unwritten(claimed)
        raise
    if run_state is not None:
        run_state.close()
    return Result(frames=frames, fps=fps, control=None if control is None else media.as_uint8_video(
        control if np.asarray(control).ndim == 4 else np.asarray(control)[None]), video_path=video_path, preview_path=preview_path,
                  sidecar_path=sidecar_path, metadata=metadata)


def add_gif(result: Result) -> Path:
    """Write ``<stem>.gif`` beside the result's mp4 (``<stem>_2.gif``... when that name is taken) and record it in
    the sidecar (``outputs.gif``)."""
    from helpers import media

    stem = result.video_path.stem
    _, (gif,) = reserve_outputs(result.video_path.parent, stem, ("{stem}.gif",))
    try:
        media.write_gif(gif, result.frames, result.fps)
    except BaseException:
        _release_unwritten([gif])
        raise
    result.metadata.setdefault("outputs", {})["gif"] = str(gif)
    write_json(result.sidecar_path, result.metadata)
    return gif
