"""MuseV's crop-and-resize of input pictures and clip frames, reproduced as the original computes it.

The original centre-crops every input to the video's aspect ratio, then resizes it to the video size:

* pictures (condition, ReferenceNet and IP-Adapter images) with PIL's LANCZOS filter;
* clip frames (source video, control frames) with a bilinear resize of the uint8 frames (no antialiasing,
  ``align_corners=False``).

Its crop box rounds both ends up and its end is exclusive, capped at the last pixel: the last row and the last column
are always cut away, even when the input already has the target aspect or size, so a picture at the video size is
still resampled (by up to a few levels). Both functions reproduce that box; :func:`crop_box` gives it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["crop_box", "crop_resize_condition_image", "crop_resize_video_frames"]


def crop_box(in_h: int, in_w: int, height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (end exclusive) of the region the original keeps of an ``in_h x in_w`` input for a
    ``height x width`` output: the full height and the centre of the width when the input is wider (or as wide) in
    aspect, else the full width and the centre of the height; ends rounded up and capped at the last pixel."""
    if in_w / in_h >= width / height:
        margin = (in_w - in_h * width / height) / 2
        x0, x1, y0, y1 = math.ceil(margin), math.ceil(in_w - margin), 0, in_h - 1
    else:
        margin = (in_h - in_w * height / width) / 2
        x0, x1, y0, y1 = 0, in_w - 1, math.ceil(margin), math.ceil(in_h - margin)
    return max(0, x0), max(0, y0), min(x1, in_w - 1), min(y1, in_h - 1)


def _check(a: np.ndarray, ndim: int, what: str, height: int, width: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim or a.shape[-1] != 3:
        raise ValueError(f"{what} must be {'(T, H, W, 3)' if ndim == 4 else '(H, W, 3)'} RGB, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (0..255), got {a.dtype}")
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    if a.shape[-3] < 2 or a.shape[-2] < 2:
        raise ValueError(f"{what} is {a.shape[-3]}x{a.shape[-2]} px: at least 2x2 is needed (the last row and "
                         "column are cropped)")
    return a


def crop_resize_condition_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` → uint8 ``(height, width, 3)``: the original's crop box, then PIL LANCZOS."""
    from PIL import Image

    image = _check(image, 3, "image", height, width)
    x0, y0, x1, y1 = crop_box(image.shape[0], image.shape[1], height, width)
    picture = Image.fromarray(np.ascontiguousarray(image), mode="RGB").crop((x0, y0, x1, y1))
    return np.asarray(picture.resize((width, height), resample=Image.Resampling.LANCZOS), dtype=np.uint8)


def crop_resize_video_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` → uint8 ``(T, height, width, 3)``: the original's crop box, then torch's bilinear
    resize of uint8 frames (``align_corners=False``, no antialiasing; a float resize + rounding differs by up to 1)."""
    import torch

    frames = _check(frames, 4, "frames", height, width)
    x0, y0, x1, y1 = crop_box(frames.shape[1], frames.shape[2], height, width)
    clip = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y1, x0:x1])).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(clip.contiguous(), size=(height, width), mode="bilinear",
                                          align_corners=False)
    return out.permute(0, 2, 3, 1).contiguous().numpy()
