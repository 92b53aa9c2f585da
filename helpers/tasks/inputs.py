"""Inputs shared by the tasks: paths, URLs downloaded once, the bundled examples, clips given as a video or a folder of
frames, the DWPose runner, face photos (detected, aligned and cropped).

A task input is a path, an upload (a path too) or a URL. URLs are downloaded once under
``<Drive root>/inputs/examples/`` and reused offline; ``{0000..0025}`` in a URL names a numbered frame sequence,
downloaded into a folder of its own. SMOKE mode never downloads: a stand-in chosen by the task takes the URL's place
and the substitution is noted for the sidecar. The bundled synthetic examples (``assets/pose``) are drawn again
where the package was installed without its assets.

>>> from helpers.tasks.inputs import local_input
>>> sources = {}
>>> video = local_input("https://example.org/dance.mp4", "driving video", smoke=False, sources=sources,
...                     stand_in=lambda url: bundled_asset("dancer.mp4", smoke=True))
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers.errors import InputError
from helpers.tasks.base import public_url, smoke_root, weights_root

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "pose"
BUNDLED = ("reference.png", "dancer.mp4")  # the synthetic examples in ASSETS (helpers.testing.pose draws them)

_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "file://"))


def expand_url_range(url: str) -> list[str]:
    """``.../frame_{0000..0002}.png`` → the three URLs (zero-padded like the first bound); other URLs unchanged."""
    match = _RANGE.search(url)
    if match is None:
        return [url]
    first, last = match.group(1), match.group(2)
    if int(last) < int(first):
        raise InputError(f"the frame range {{{first}..{last}}} counts down: write it as {{{last}..{first}}}")
    return [url[:match.start()] + str(i).zfill(len(first)) + url[match.end():] for i in range(int(first), int(last) + 1)]


_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")


def _looks_like_a_web_page(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_STARTS)


def _download(url: str, target: Path, timeout: float, label: str | None = None) -> None:
    shown, label = public_url(url), label or target.name
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            page = "html" in (response.headers.get("Content-Type") or "").lower()
            first = True
            while block := response.read(1 << 20):
                if first and (page or _looks_like_a_web_page(block[:512])):
                    page = True
                    break
                first = False
                out.write(block)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise InputError(f"could not download {label} ({reason}): check the internet connection, or download "
                         f"{shown} yourself and give its path") from None
    if page:
        partial.unlink(missing_ok=True)
        raise InputError(f"{shown} answered with a web page, not the file: give the file's direct address (on GitHub "
                         "the 'raw' link; on Drive a download link), or download it yourself and give its path")
    partial.replace(target)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def _cached(target: Path) -> bool:
    """A finished download (not empty; a web page kept by an older version is dropped, to be fetched again)."""
    if not (target.is_file() and target.stat().st_size > 0):
        return False
    with open(target, "rb") as f:
        if _looks_like_a_web_page(f.read(512)):
            target.unlink()
            return False
    return True


def _cache_targets(url: str, folder: Path | str | None) -> tuple[Path, list[Path], str | None]:
    """(folder, one local file per URL of the range, readable name for messages) of a download."""
    from helpers import runtime

    parts = [p for p in urllib.parse.urlsplit(url).path.split("/") if p]
    if not parts:
        raise InputError(f"{public_url(url)} does not name a file: give the address of an image, a video or "
                         "numbered frames")
    folder = Path(folder) if folder is not None else runtime.drive_root() / "inputs" / "examples"
    urls = expand_url_range(url)
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    if len(urls) == 1 and not _RANGE.search(url):
        label = _safe_name("_".join(parts[-2:]))
        name = Path(label)
        return folder, [folder / f"{name.stem}-{digest}{name.suffix}"], label
    folder = folder / _safe_name("_".join(parts[-3:-1]) + f"-{digest[:8]}")
    return folder, [folder / Path(urllib.parse.urlsplit(one).path).name for one in urls], None


def cached_input(url: str, folder: Path | str | None = None) -> Path:
    """Where :func:`fetch_input` keeps ``url`` (a file, or the folder of a numbered sequence)."""
    folder, targets, _ = _cache_targets(url, folder)
    return folder if _RANGE.search(url) else targets[0]


def fetch_input(url: str, folder: Path | str | None = None, *, timeout: float = 60.0) -> Path:
    """Download ``url`` once into ``<Drive root>/inputs/examples/`` (or ``folder``) and return the local path.

    One file lands as ``<parent>_<stem>-<hash of the whole URL><suffix>`` (``.../video/02.mp4`` →
    ``video_02-1a2b3c4d5e.mp4``): two addresses that end alike never share a file. A numbered sequence
    (``{0000..0025}`` in the URL) lands in a folder of its own, which is returned. Files already there are reused
    without any network access. Raises ``InputError`` when a download fails or the address answers with a web page
    instead of the file (nothing is kept then).
    """
    folder, targets, label = _cache_targets(url, folder)
    folder.mkdir(parents=True, exist_ok=True)
    for one, target in zip(expand_url_range(url), targets):
        if not _cached(target):
            _download(one, target, timeout, label)
    return folder if _RANGE.search(url) else targets[0]


def bundled_asset(name: str, smoke: bool) -> Path:
    """A bundled synthetic example (``reference.png``, ``dancer.mp4``): from the checkout, or drawn again (once)
    where the package was installed without its assets."""
    if (ASSETS / name).is_file():
        return ASSETS / name
    from helpers import runtime
    from helpers.testing.pose import write_dancer_assets

    folder = (smoke_root() if smoke else runtime.drive_root()) / "inputs" / "synthetic"
    if not (folder / name).is_file():
        write_dancer_assets(folder)
    return folder / name


def synthetic_picture(url: str, kind: str) -> Path:
    """A SMOKE stand-in for a picture URL, drawn once per URL (never a download): ``kind`` is ``"face"`` (a face
    photo), ``"sketch"`` (one drawing) or ``"sketch-grid"`` (four drawings in a 2x2 grid)."""
    from helpers import media
    from helpers.testing.id_animator import synthetic_face_photo, synthetic_sketch

    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    path = smoke_root() / "inputs" / "synthetic" / f"{kind}-{digest}.png"
    if not path.is_file():
        seed = int(digest[:6], 16) % 1000
        if kind == "face":
            image = synthetic_face_photo(seed=seed)
        elif kind == "sketch":
            image = np.asarray(synthetic_sketch(128, 128, phase=seed / 100.0))
        else:
            tiles = [np.asarray(synthetic_sketch(64, 64, phase=k * 0.8)) for k in range(4)]
            image = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
        media.write_image(path, image)
    return path


def local_input(value: str, what: str, *, smoke: bool, sources: dict, stand_in: Callable[[str], Path | None],
                missing: str | None = None, folders: bool = False) -> Path | None:
    """A local path for the input ``value`` (``what`` names it in messages and in ``sources``).

    Empty: ``None``, or ``InputError(missing)`` when given. A URL: downloaded once (:func:`fetch_input`) and noted in
    ``sources``; in SMOKE mode ``stand_in(url)`` instead (``None`` leaves the input out), noted too. A bundled example:
    its file (drawn again when absent). A path: it must be a file, or also a folder with ``folders=True``.
    """
    value = (value or "").strip()
    if not value:
        if missing:
            raise InputError(missing)
        return None
    if is_url(value):
        if not folders and _RANGE.search(value):
            raise InputError(f"the {what} is one file: {value} names a numbered sequence — give one file's address")
        if smoke:
            path = stand_in(value)
            sources[what] = f"{public_url(value)} (SMOKE: " + (f"replaced by the synthetic {path.name})" if path
                                                               else "left out)")
            return path
        sources[what] = public_url(value)  # a token or password in the address never reaches the sidecar
        return fetch_input(value)
    if value in {str(ASSETS / name) for name in BUNDLED}:
        return bundled_asset(Path(value).name, smoke)
    path = Path(value).expanduser()
    if not path.exists():
        raise InputError(f"{what} not found: {path} — check the path or upload the file again")
    if path.is_dir() and not folders:
        raise InputError(f"the {what} {path} is a folder: give one file inside it")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"the {what} {path.name} is empty (0 bytes): the upload or copy did not finish — give the "
                         "file again")
    return path


def frame_files(folder: Path) -> list[Path]:
    """The images in ``folder``, in name order (a clip given as a folder of frames)."""
    from helpers import media

    return sorted(p for p in folder.iterdir() if p.suffix.lower() in media.IMAGE_SUFFIXES)


def _warn_numbering_gaps(files: list[Path], what: str) -> list[int]:
    """Warn when the numbers in frame names skip some (``f_0003.png`` then ``f_0007.png``): the clip is read as if
    those frames were never there, so the motion jumps. Returns the missing numbers."""
    numbers = [re.search(r"(\d+)\D*$", f.stem) for f in files]
    if len(files) < 2 or not all(numbers):
        return []
    present = sorted({int(m.group(1)) for m in numbers})
    missing = sorted(set(range(present[0], present[-1] + 1)) - set(present))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f" … ({len(missing)} in all)" if len(missing) > 5 else "")
        warnings.warn(f"{what}: frame(s) {shown} are missing from {files[0].parent.name}/ — the clip jumps where they "
                      "should be; add them, or ignore this if the gaps are intended", UserWarning, stacklevel=3)
    return missing


def file_stamp(path: Path | None) -> tuple:
    """(name, size, mtime) of a file or of every frame in a folder: a cache key that changes when the input does."""
    if path is None:
        return ()
    files = frame_files(path) if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


def count_frames(path: Path, what: str) -> tuple[int, float | None]:
    """(frames, fps) of a video file or a folder of frames (fps None); InputError when unreadable."""
    from helpers import media

    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise InputError(f"{what}: no images in {path} — give a folder of PNG/JPEG frames or a video")
        _warn_numbering_gaps(files, what)
        return len(files), None
    if path.suffix.lower() in media.IMAGE_SUFFIXES - {".gif"}:
        raise InputError(f"{what} {path.name} is a single image: give a video or a folder of frames")
    info = media.video_info(path)
    return info.frame_count, info.fps


def read_clip(path: Path, count: int, stride: int, what: str) -> np.ndarray:
    """``count`` frames, every ``stride``-th, of a video or a folder of frames, as ``[F, H, W, 3]`` uint8."""
    from helpers import media

    if path.is_dir():
        files = frame_files(path)[::stride][:count]
        images = [media.read_image(f) for f in files]
        if len({i.shape for i in images}) > 1:
            images = [media.center_crop_resize(i, (images[0].shape[1], images[0].shape[0])) for i in images]
        frames = np.stack(images)
    else:
        frames = media.read_video(path, max_frames=count, stride=stride, min_frames=count).frames
    if len(frames) < count:
        raise InputError(f"{what} gave {len(frames)} frames at stride {stride}, {count} needed: ask for fewer frames "
                         "or lower the stride")
    return frames


def open_dwpose(smoke: bool):
    """``(runner, provenance)``: the DWPose runner from the weights (SMOKE: the tiny pack, written once) and the
    sidecar records of its two files. Close the runner when done: its ONNX sessions hold GPU memory."""
    from helpers import weights
    from helpers.pose import DWPoseRunner

    root = weights_root(smoke)
    if smoke:
        from helpers.pose.dwpose import DETECTOR_FILE, DETECTOR_ROLE, WEIGHTS_PACK
        from helpers.testing.pose import write_tiny_dwpose_pack

        if not (root / "models" / WEIGHTS_PACK / DETECTOR_ROLE / DETECTOR_FILE).is_file():
            write_tiny_dwpose_pack(root)
    from helpers.weight_damage import explain_damage

    provenance = [weights.provenance("dwpose", role, root) for role in ("detector", "pose_model")]
    with explain_damage():
        return DWPoseRunner.from_weights(root=root), provenance


# ------------------------------------------------------------------------------------------------------------ faces


def face_detector(smoke: bool):
    """The detector used on photos: insightface's SCRFD (pack ``insightface``), or a stand-in in SMOKE mode."""
    if smoke:
        from helpers.testing.id_animator import FakeFaceDetector

        return FakeFaceDetector()
    from helpers import face

    return face.default_detector()


@dataclass
class FaceInput:
    """One reference face: the file, the 224x224 crop the model sees, the detection and what was noticed."""

    path: Path
    prepared: object  # helpers.face.PreparedFace
    notes: list[str]


_FACES: dict[tuple, FaceInput] = {}  # prepared faces, so a preview followed by Generate detects nothing twice


def prepare_face_input(path: Path, *, already_cropped: bool, select: str, smoke: bool) -> FaceInput:
    """Detect, choose and align the face in ``path`` (cached); ``FaceError`` (an ``InputError``) when unusable.
    Warnings (several faces, a small face) are kept in ``notes``."""
    from helpers import face

    key = (file_stamp(path.resolve()), already_cropped, select, smoke)
    if key not in _FACES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            detector = None if already_cropped else face_detector(smoke)
            prepared = face.prepare_face(path, detector=detector, already_cropped=already_cropped, select=select)
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if len(_FACES) > 8:
            _FACES.clear()
        _FACES[key] = FaceInput(path, prepared, notes)
    return _FACES[key]


def marked_photo(face_input: FaceInput) -> np.ndarray:
    """The photo with the chosen face's box and 5 keypoints drawn on it (the photo itself for a face crop)."""
    import cv2

    from helpers import media

    photo = media.read_image(face_input.path).copy()
    detected = face_input.prepared.face
    if detected is not None:
        thickness = max(2, round(max(photo.shape[:2]) / 200))
        x1, y1, x2, y2 = (int(round(v)) for v in detected.box)
        cv2.rectangle(photo, (x1, y1), (x2, y2), (40, 220, 90), thickness)
        for x, y in np.asarray(detected.keypoints).reshape(-1, 2):
            cv2.circle(photo, (int(round(x)), int(round(y))), thickness + 1, (255, 60, 60), -1)
    return photo
