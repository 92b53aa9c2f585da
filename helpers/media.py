"""Images and videos: read, write, resize, side-by-side, and small inline previews.

Everything is a ``uint8`` RGB numpy array: an image is ``(H, W, 3)``, a video ``(T, H, W, 3)``. Video IO goes through
mediapy and the system ``ffmpeg`` (Debian/Colab ffmpeg 4-7; the ffmpeg 9 bundled by imageio-ffmpeg 0.8 breaks
mediapy's reader). ``diffusers.export_to_video`` is not used: it corrupts uint8 frames.

>>> from helpers import media
>>> video = media.read_video("dance.mp4", max_frames=48, stride=2)
>>> video.frames.shape, video.fps
>>> media.write_video("out.mp4", video.frames, fps=video.fps)
>>> media.show_video(video.frames, fps=video.fps)     # small, bitrate-capped inline preview
"""

from __future__ import annotations

import errno
import functools
import html
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.errors import InputError, OutputError

# Images larger than this (longest side) are downscaled on read: a 50-megapixel photo gains nothing at 1024 px output.
MAX_IMAGE_SIDE = 4096
# Refuse images with more pixels than this (a 10000 × 10000 photo is allowed, decoded downscaled where possible).
MAX_IMAGE_PIXELS = 100_000_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif", ".m4v"}


def _mediapy():
    import mediapy

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError("ffmpeg is not installed: run `apt-get install ffmpeg` (Colab has it already)")
    mediapy.set_ffmpeg(ffmpeg)
    return mediapy


# ---------------------------------------------------------------------------------------------------------- images


def to_uint8_rgb(array: np.ndarray, *, background: int = 255) -> np.ndarray:
    """Normalise any image array to uint8 RGB: greyscale → 3 channels, alpha composited over ``background``,
    16-bit and float images rescaled."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"expected an image of shape (H, W[, C]) but got {a.shape}: give an RGB photo")
    if a.dtype == np.uint16:
        a = (a.astype(np.float32) / 65535.0)
    elif a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype != np.uint8:
        a = a.astype(np.float32)
        if a.max(initial=0) > 1.0:
            a = a / 255.0
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    channels = a.shape[-1]
    if channels in (2, 4):  # composite the alpha channel over a flat background
        alpha = a[..., -1:].astype(np.float32) / 255.0
        colour = a[..., :-1].astype(np.float32)
        a = np.round(colour * alpha + background * (1.0 - alpha)).astype(np.uint8)
        channels -= 1
    if channels == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def read_image(source, *, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Read an image file (or take an array / PIL image) as uint8 RGB, EXIF-rotated, at most ``max_side`` pixels."""
    from PIL import Image, ImageOps

    if isinstance(source, np.ndarray):
        image = to_uint8_rgb(source)
    else:
        if isinstance(source, Image.Image):
            pil = source
        else:
            pil = _open_image(Path(source), max_side)
        pil = ImageOps.exif_transpose(pil)
        if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
            image = to_uint8_rgb(np.asarray(pil).astype(np.uint16 if pil.mode.startswith("I;16") else np.int64)
                                 .clip(0, 65535).astype(np.uint16))
        elif pil.mode == "P":
            image = to_uint8_rgb(np.asarray(pil.convert("RGBA")))
        elif pil.mode in ("RGB", "RGBA", "L", "LA"):
            image = to_uint8_rgb(np.asarray(pil))
        else:
            image = to_uint8_rgb(np.asarray(pil.convert("RGB")))
    if min(image.shape[:2]) < 8:
        raise InputError(f"image is only {image.shape[1]}×{image.shape[0]} pixels: use a real photo")
    if max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        image = resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    return image


def _open_image(path: Path, max_side: int):
    """Open and decode an image file; ``InputError`` saying what is wrong with it (missing, a folder, empty, cut
    off, not an image, too many pixels). Large JPEGs are decoded at a reduced size (``max_side``)."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise InputError(f"{path} is a folder: give one image file")
    if not path.is_file():
        raise InputError(f"image not found: {path} — check the path or upload the file again")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes): the upload or copy did not finish — give the file again")

    def too_large(size: str) -> InputError:
        return InputError(f"{path.name} is too large to open ({size}; at most {MAX_IMAGE_PIXELS / 1e6:.0f} "
                          f"megapixels): shrink it to at most {max_side} px on the longest side")

    with warnings.catch_warnings():  # our own limit replaces PIL's "DOS attack" warning and error
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            pil = Image.open(path)
            width, height = pil.size
            if width * height > MAX_IMAGE_PIXELS:
                raise too_large(f"{width}×{height} pixels")
            if pil.format == "JPEG" and max(width, height) > 2 * max_side:
                pil.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 size: far less memory and time
            pil.load()
        except Image.DecompressionBombError:
            raise too_large("more pixels than can be decoded safely") from None
        except UnidentifiedImageError:
            raise InputError(f"cannot read {path.name} as an image (not an image format PIL knows): use a PNG or "
                             "JPEG photo") from None
        except OSError as exc:
            detail = str(exc).split(":")[0] or exc.__class__.__name__
            raise InputError(f"cannot read {path.name} as an image ({detail}: the file is damaged or cut off): "
                             "download or export it again as PNG or JPEG") from None
    return pil


def write_image(path, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_rgb(image)).save(path)
    return path


def resize(image_or_video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image ``(H, W, 3)`` or video ``(T, H, W, 3)`` to ``size = (width, height)`` (area/cubic filter)."""
    import cv2

    width, height = int(size[0]), int(size[1])
    a = np.asarray(image_or_video)
    if a.ndim == 4:
        return np.stack([resize(frame, (width, height)) for frame in a])
    if a.shape[1] == width and a.shape[0] == height:
        return a.copy()
    shrinking = width < a.shape[1] and height < a.shape[0]
    return cv2.resize(a, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def center_crop_resize(image_or_video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop the largest centred region with the aspect of ``size = (width, height)``, then resize to it."""
    a = np.asarray(image_or_video)
    h, w = a.shape[-3], a.shape[-2]
    target_w, target_h = size
    scale = min(w / target_w, h / target_h)
    crop_w, crop_h = round(target_w * scale), round(target_h * scale)
    x0, y0 = (w - crop_w) // 2, (h - crop_h) // 2
    return resize(a[..., y0 : y0 + crop_h, x0 : x0 + crop_w, :], size)


# ---------------------------------------------------------------------------------------------------------- videos


@dataclass
class Video:
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    source_frame_count: int | None = None  # frames in the file (before stride/max_frames)
    indices: np.ndarray | None = None  # which source frames ``frames`` holds


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int
    fps: float
    width: int
    height: int


def video_info(path) -> VideoInfo:
    """Frame count, fps and size of a video file, without decoding it all. A file with a variable frame rate
    (motion would change speed) gets a warning."""
    path = _existing_video(path)
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        opened = cap.isOpened()
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if opened else 0
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) if opened else 0.0
        width, height = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) if opened \
            else (0, 0)
    finally:
        cap.release()
    if count <= 0 or width <= 0:
        raise InputError(f"{path.name} {why_unreadable(path)}")
    stat = path.stat()
    _warn_variable_rate(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return VideoInfo(frame_count=count, fps=fps if fps > 0 else 25.0, width=width, height=height)


def _ffprobe(path: Path, *args: str) -> subprocess.CompletedProcess | None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    try:
        return subprocess.run([ffprobe, "-v", "error", *args, str(path)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def why_unreadable(path: Path) -> str:
    """What is wrong with a video file that cannot be opened, and what to do (the end of a one-line message)."""
    if path.stat().st_size == 0:
        return "is empty (0 bytes): the upload or copy did not finish — give the file again"
    probe = _ffprobe(path, "-show_entries", "stream=codec_type", "-of", "csv=p=0")
    if probe is not None:
        kinds = {line.strip().strip(",") for line in probe.stdout.splitlines() if line.strip()}
        if probe.returncode == 0 and kinds and "video" not in kinds:
            return (f"has no video track (only {', '.join(sorted(kinds))}): give a video file, not a sound "
                    "recording")
        if "moov atom not found" in probe.stderr:
            return ("is incomplete (cut off while it was downloaded or copied: its index is missing): download or "
                    "copy it again")
        if probe.returncode != 0:
            lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
            detail = lines[-1].split(": ", 1)[-1] if lines else "unknown format"
            return f"is not a video ffmpeg can read ({detail}): re-export it as H.264 mp4"
    return "has no readable video frames: re-export it as H.264 mp4"


VFR_SPREAD = 1.5  # frame intervals further apart than this ratio: the clip changes speed when read frame by frame


@functools.lru_cache(maxsize=64)
def _warn_variable_rate(path: str, size: int, mtime_ns: int) -> bool:
    """Warn (once per file version) when the frames of a video are not evenly spaced in time."""
    probe = _ffprobe(Path(path), "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0")
    if probe is None or probe.returncode != 0:
        return False
    stamps = sorted(float(v) for v in (line.strip().strip(",") for line in probe.stdout.splitlines())
                    if v and v != "N/A")
    gaps = np.diff(np.asarray(stamps))
    gaps = gaps[gaps > 0]
    if len(gaps) < 2 or gaps.max() <= VFR_SPREAD * gaps.min():
        return False
    warnings.warn(f"{Path(path).name} has a variable frame rate (frames {1 / gaps.max():.0f} to "
                  f"{1 / gaps.min():.0f} per second): its motion changes speed when read frame by frame — convert it "
                  f"to a constant rate first (ffmpeg -i in.mp4 -fps_mode cfr -r 30 out.mp4)", UserWarning,
                  stacklevel=3)
    return True


def _existing_video(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder: give a video file")
    if not path.is_file():
        raise InputError(f"video not found: {path} — check the path or upload the file again")
    return path


def read_video(path, *, max_frames: int | None = None, stride: int = 1, start: int = 0,
               min_frames: int = 1) -> Video:
    """Read frames ``start, start+stride, ...`` (at most ``max_frames``) of a video as uint8 RGB.

    Only the frames asked for are kept in memory. Raises ``InputError`` for unreadable files and for videos with
    fewer than ``min_frames`` usable frames.
    """
    if stride < 1:
        raise InputError(f"sample stride must be ≥ 1 (got {stride})")
    path = _existing_video(path)
    mediapy = _mediapy()
    frames, fps, total = [], 25.0, 0
    try:
        with mediapy.VideoReader(path) as reader:
            fps = float(reader.metadata.fps or 25.0)
            for i, frame in enumerate(reader):
                total = i + 1
                if i >= start and (i - start) % stride == 0:
                    frames.append(frame)
                    if max_frames is not None and len(frames) >= max_frames:
                        break
    except Exception:
        if not frames:  # a truncated file keeps what decoded; a broken one is an input error
            raise InputError(f"cannot decode {path.name}: it {why_unreadable(path)}") from None
    if len(frames) < min_frames:
        raise InputError(
            f"{path.name} gave {len(frames)} frame(s) with stride {stride} from frame {start}; at least {min_frames} "
            "are needed: use a longer video or a smaller stride/frame count"
        )
    indices = np.arange(start, start + stride * len(frames), stride)
    return Video(frames=np.stack(frames), fps=fps, source_frame_count=total, indices=indices)


def as_uint8_video(frames) -> np.ndarray:
    """Accept a list of PIL images / arrays, float in [0, 1] or uint8, and return ``(T, H, W, 3)`` uint8."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        if frames.dtype == np.uint8 and frames.shape[-1] == 3:
            return frames
        return np.stack([to_uint8_rgb(f) for f in frames])
    return np.stack([to_uint8_rgb(np.asarray(f)) for f in frames])


def write_video(path, frames, fps: float, *, crf: int = 18) -> Path:
    """Write an H.264 mp4 (yuv420p, even sizes) that every browser and phone plays.

    ffmpeg encodes into a temporary folder (straight beside ``path`` when that one is full), the file is checked
    (every frame there) and renamed onto ``path``: ``path`` only ever holds a complete video. When ffmpeg or the copy
    fails (a full disk), nothing partial is left and ``OutputError`` says how much space the video needs.
    """
    mediapy = _mediapy()
    video = _even_size(as_uint8_video(frames))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def encode(target: Path) -> None:
        mediapy.write_video(target, video, fps=fps, codec="h264", crf=crf)
        _check_encoded(target, len(video))

    partial = path.with_name(f".{path.stem}.partial{path.suffix or '.mp4'}")  # ffmpeg picks the format by suffix
    with tempfile.TemporaryDirectory(prefix="hv-video-") as scratch:
        encoded: Path | None = Path(scratch) / partial.name
        try:
            encode(encoded)
        except (OSError, RuntimeError):
            encoded = None
        try:
            if encoded is None:
                encode(partial)
            else:
                shutil.copyfile(encoded, partial)
            os.replace(partial, path)
        except (OSError, RuntimeError) as exc:
            written = partial.stat().st_size if partial.exists() else 0
            partial.unlink(missing_ok=True)
            needed = encoded.stat().st_size if encoded is not None else written
            raise write_error(path, exc, needed, at_least=encoded is None) from None
    return path


def _check_encoded(path: Path, frames: int) -> None:
    """ffmpeg can end without an error status yet leave a file cut short (no index, frames missing).

    The frames are counted by ffprobe from the packets (no decoding); where ffprobe is missing, OpenCV reads the
    container's count."""
    probe = _ffprobe(path, "-select_streams", "v:0", "-count_packets", "-show_entries", "stream=nb_read_packets",
                     "-of", "csv=p=0")
    if probe is not None:
        text = probe.stdout.strip().splitlines()
        count = int(text[0]) if probe.returncode == 0 and text and text[0].strip().isdigit() else 0
    else:
        import cv2

        cap = cv2.VideoCapture(str(path))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        finally:
            cap.release()
    if count != frames:
        raise OSError(errno.EIO, f"the file ffmpeg wrote holds {count} of {frames} frames")


def _megabytes(n: int) -> str:
    if n < 1e6:
        return f"{max(1, round(n / 1e3))} kB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def write_error(path: Path, exc: BaseException, needed: int, *, at_least: bool = False,
                folder: Path | None = None) -> OutputError:
    """The one line for an output that could not be written: why, how much space it needs, how much is free
    (in ``folder``: where the write failed, ``path``'s folder unless given)."""
    folder = Path(folder or Path(path).absolute().parent)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = _megabytes(shutil.disk_usage(probe).free)
    except OSError:
        free = "an unknown amount"
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:  # mediapy: "Error writing '<file>': <ffmpeg's error output>"
        text = str(exc).partition("': ")[2] if str(exc).startswith("Error writing") else str(exc)
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        reason = f"ffmpeg: {lines[-1]}" if lines else "ffmpeg stopped with an error"
    need = f"more than {_megabytes(needed)}" if at_least else _megabytes(needed)
    return OutputError(f"could not write {Path(path).name} to {folder} ({reason}): it needs {need} and {free} is "
                       f"free there — free some space (or choose another output_dir) and run again")


def write_gif(path, frames, fps: float, *, max_side: int = 512) -> Path:
    from PIL import Image

    video = fit_within(as_uint8_video(frames), max_side)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in video]
    partial = path.with_name(f".{path.name}.partial")
    try:
        images[0].save(partial, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0)
        os.replace(partial, path)
    except OSError as exc:
        size = partial.stat().st_size if partial.exists() else 0
        partial.unlink(missing_ok=True)
        raise write_error(path, exc, size, at_least=True) from None
    return path


def _even_size(video: np.ndarray) -> np.ndarray:
    h, w = video.shape[1:3]
    return video[:, : h - h % 2, : w - w % 2]


def fit_within(video: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longest side is at most ``max_side`` (never upscales)."""
    return fit_box(video, max_side, max_side)


def fit_box(video: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    """Downscale, keeping the aspect ratio, to fit a ``max_width`` × ``max_height`` box (never upscales)."""
    h, w = video.shape[-3], video.shape[-2]
    scale = min(max_width / w, max_height / h)
    if scale >= 1:
        return video
    return resize(video, (max(2, round(w * scale)), max(2, round(h * scale))))


def side_by_side(*clips, height: int | None = None, gap: int = 4) -> np.ndarray:
    """Put videos (or images, shown for every frame) next to each other at one height.

    Shorter clips hold their last frame, so a 1-frame reference image sits beside a whole video.
    """
    videos = [as_uint8_video(c[None] if np.asarray(c).ndim == 3 else c) for c in clips]
    height = height or max(v.shape[1] for v in videos)
    length = max(len(v) for v in videos)
    scaled = []
    for v in videos:
        width = max(2, round(v.shape[2] * height / v.shape[1]))
        v = resize(v, (width, height)) if v.shape[1:3] != (height, width) else v
        if len(v) < length:
            v = np.concatenate([v, np.repeat(v[-1:], length - len(v), axis=0)])
        scaled.append(v)
    spacer = np.full((length, height, gap, 3), 255, np.uint8)
    parts = []
    for i, v in enumerate(scaled):
        if i:
            parts.append(spacer)
        parts.append(v)
    return np.concatenate(parts, axis=2)



def dim_under(background: np.ndarray, drawing: np.ndarray) -> np.ndarray:
    """``drawing`` (on black, e.g. pose skeletons) over ``background`` at half brightness; same shapes."""
    dimmed = (np.asarray(background).astype(np.float32) * 0.5).astype(np.uint8)
    return np.maximum(dimmed, drawing)


# ---------------------------------------------------------------------------------------------- labelled layouts

LABEL_HEIGHT = 22


def _text_band(text: str, width: int, height: int = LABEL_HEIGHT) -> np.ndarray:
    """A white band with ``text`` in black, shrunk (then shortened) until it fits."""
    import cv2

    band = np.full((height, width, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    while True:
        (text_width, text_height), _ = cv2.getTextSize(text, font, scale, 1)
        if text_width <= width - 6 or (scale <= 0.3 and len(text) <= 3):
            break
        if scale > 0.3:
            scale = round(scale - 0.05, 2)
        else:
            text = text[:-3] + ".."
    cv2.putText(band, text, (3, (height + text_height) // 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def comparison_grid(clips: Sequence[tuple[str, np.ndarray]], *, columns: int = 3, tile: int = 256,
                    gap: int = 4) -> np.ndarray:
    """Labelled videos of one length and size in a grid, ``columns`` per row, each tile ``tile`` px wide with its
    label above it: ``[F, H', W', 3]`` uint8 on white.

    >>> grid = comparison_grid([("poses", poses), ("result", video)], columns=2)
    """
    frames, height, width = clips[0][1].shape[:3]
    tile_height = max(2, round(tile * height / width))
    tiles = [np.concatenate([np.broadcast_to(_text_band(label, tile), (frames, LABEL_HEIGHT, tile, 3)),
                             resize(video, (tile, tile_height))], axis=1) for label, video in clips]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)  # fill the last row
    rows = [side_by_side(*tiles[i:i + columns], gap=gap) for i in range(0, len(tiles), columns)]
    spacer = np.full((frames, gap, rows[0].shape[2], 3), 255, np.uint8)
    return np.concatenate([part for row in rows for part in (spacer, row)][1:], axis=1)


def contact_sheet(clips: Sequence[tuple[str, np.ndarray]], *, max_columns: int = 8, thumb: int = 96,
                  label_width: int = 170) -> np.ndarray:
    """One image: a row per clip (labelled on the left), a column per sampled frame (``frame k`` on top); every
    thumbnail is ``thumb`` px high."""
    frames, height, width = clips[0][1].shape[:3]
    picked = np.unique(np.linspace(0, frames - 1, min(frames, max_columns)).round().astype(int))
    thumb_width = max(2, round(thumb * width / height))
    header = [_text_band("", label_width)] + [_text_band(f"frame {k}", thumb_width) for k in picked]
    rows = [np.concatenate(header, axis=1)]
    for label, video in clips:
        cells = [_text_band(label, label_width, thumb)] + [resize(video[k], (thumb_width, thumb)) for k in picked]
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------------------------------------- preview

PREVIEW_BOX = (768, 512)  # width, height: a portrait control | result pair shows at 576 × 512, a landscape clip at 768 wide
PREVIEW_BPS = 600_000  # bits per second: a few hundred kB of base64 per clip keeps a Colab tab responsive


def _fit_preview(video: np.ndarray, max_side: int | None) -> np.ndarray:
    return fit_within(video, max_side) if max_side else fit_box(video, *PREVIEW_BOX)


def preview_html(frames, fps: float, *, title: str | None = None, max_side: int | None = None,
                 bps: int = PREVIEW_BPS) -> str:
    """A small, bitrate-capped, looping ``<video>`` element (base64 mp4) for inline display; it fits
    ``PREVIEW_BOX``, or a square of ``max_side`` when given."""
    mediapy = _mediapy()
    video = _even_size(_fit_preview(as_uint8_video(frames), max_side))
    data = mediapy.compress_video(video, fps=fps, bps=bps)
    h, w = video.shape[1:3]
    return mediapy.html_from_compressed_video(data, w, h, title=html.escape(title) if title else None)


def show_video(frames_or_path, fps: float | None = None, *, title: str | None = None,
               max_side: int | None = None) -> None:
    """Display a small inline preview of frames or of a video file."""
    from IPython.display import HTML, display

    if isinstance(frames_or_path, (str, Path)):
        video = read_video(frames_or_path)
        frames, fps = video.frames, fps or video.fps
    else:
        frames = frames_or_path
    display(HTML(preview_html(frames, fps or 8.0, title=title, max_side=max_side)))


def show_image(image, *, title: str | None = None, max_side: int | None = None) -> None:
    import mediapy
    from IPython.display import display  # noqa: F401  (mediapy displays through IPython)

    image = _fit_preview(to_uint8_rgb(np.asarray(image))[None], max_side)[0]
    mediapy.show_image(image, title=title)
