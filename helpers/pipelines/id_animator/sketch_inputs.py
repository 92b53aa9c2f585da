"""Sketch inputs for :class:`~helpers.pipelines.id_animator.sketch.IDAnimatorSketchPipeline`: one drawing, or a
sequence of drawings laid out as a grid in one image, and the frames they stand for.

>>> tiles = split_grid(grid_image, "2x2")                       # left to right, top to bottom
>>> sketches = [prepare_sketch(tile, 512, 512)[0] for tile in tiles]
>>> indices = parse_frame_indices("0, 5, 10, 15") or spread_indices(len(tiles), 16)
"""

from __future__ import annotations

import numpy as np

from helpers.errors import InputError


def parse_frame_indices(text: str) -> list[int]:
    """``"0, 5, 10"`` → ``[0, 5, 10]``; ``InputError`` for anything that is not whole numbers."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise InputError(f"sketch frames must be whole numbers separated by commas, e.g. 0, 5, 10, 15 "
                         f"(got {text!r})") from None


def split_grid(image: np.ndarray, grid: str) -> list[np.ndarray]:
    """The tiles of a ``rows x columns`` grid image, left to right, top to bottom."""
    rows, cols = (int(n) for n in grid.split("x"))
    height, width = image.shape[:2]
    if height // rows < 8 or width // cols < 8:
        raise InputError(f"the sketch image ({width}x{height}) is too small for a {grid} grid: check the grid setting")
    return [image[r * height // rows:(r + 1) * height // rows, c * width // cols:(c + 1) * width // cols]
            for r in range(rows) for c in range(cols)]


def prepare_sketch(tile: np.ndarray, width: int, height: int) -> tuple[np.ndarray, bool]:
    """A sketch as SparseCtrl's scribble model expects it (white lines on black) at the video size.

    Drawings on a light background are inverted; returns (sketch, whether it was inverted)."""
    from helpers import media

    grey = tile.astype(np.float32).mean(axis=-1)
    inverted = bool(np.median(grey) > 127)
    if inverted:
        tile = 255 - tile
    return media.center_crop_resize(tile, (width, height)), inverted


def spread_indices(count: int, frames: int) -> list[int]:
    """``count`` frame indices spread evenly from the first to the last frame."""
    if count == 1:
        return [0]
    return [round(i * (frames - 1) / (count - 1)) for i in range(count)]


def sketches_from_image(image: np.ndarray, *, grid: str | None, frame_text: str, num_frames: int, width: int,
                        height: int) -> tuple[list[np.ndarray], list[int], bool]:
    """``(sketches, frame indices, inverted)`` from one picture: the picture itself (``grid=None``), or the tiles of a
    ``rows x columns`` grid. The indices come from ``frame_text`` ("0, 5, 10"), or spread over the video when it is
    empty; ``InputError`` when they do not fit ``num_frames``. Sketches are white on black at ``width`` x ``height``.
    """
    from .sketch import validate_sketches

    tiles = [image] if grid is None else split_grid(image, grid)
    indices = parse_frame_indices(frame_text) if frame_text.strip() else spread_indices(len(tiles), num_frames)
    validate_sketches(len(tiles), indices, num_frames)
    prepared = [prepare_sketch(tile, width, height) for tile in tiles]
    return [s for s, _ in prepared], indices, any(inverted for _, inverted in prepared)


def fit_sketches(sketches: list[np.ndarray], indices: list[int], num_frames: int, to_frames: int, width: int,
                 height: int) -> tuple[list[np.ndarray], list[int]]:
    """The same sketches for a shorter, smaller video: resized, at the same moments of ``to_frames`` frames; when
    more sketches than frames remain, the first ones, spread evenly."""
    sketches = [prepare_sketch(s, width, height)[0] for s in sketches]
    if not indices:
        return sketches, indices
    scaled = [round(i * (to_frames - 1) / max(num_frames - 1, 1)) for i in indices]
    if len(set(scaled)) != len(scaled):
        count = min(len(indices), to_frames)
        scaled, sketches = spread_indices(count, to_frames), sketches[:count]
    return sketches, scaled
