"""Window schedules for MuseV's parallel denoising of long videos.

A video of ``num_frames`` noisy latent frames is denoised window by window: each window is a list of frame indices,
the UNet sees the clean condition latent followed by those frames, and the predictions of overlapping frames are
averaged. The schedules reproduce the original implementation exactly (checked against its recorded windows):

- ``"uniform_v2"`` (the default of MuseV's inference scripts): windows start at 0, s, 2s, … with
  ``s = context_frames - context_overlap`` while the start is inside the video; each window runs to
  ``min(start + context_frames, num_frames)``, so the last ones can be shorter.
- ``"uniform"`` (legacy, AnimateDiff-style, as the original evaluates it once before the loop): a single window when
  the video fits; otherwise windows over frame strides 1, 2, 4, … that wrap around the end of the video.

Both then drop the last window when it ends on the same frame as the one before it (it adds nothing new).

>>> context_windows(20, context_frames=12, context_overlap=4)
[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]]
>>> [len(w) for w in context_windows(7, context_frames=4, context_overlap=2)]
[4, 4, 3]
"""

from __future__ import annotations

import math

from helpers.errors import InputError

Window = list[int]

SCHEDULES = ("uniform_v2", "uniform")


def check_window_settings(context_frames: int, context_overlap: int, schedule: str = "uniform_v2") -> None:
    """Raise ``InputError`` for window settings the schedules cannot use (before anything heavy runs)."""
    if schedule not in SCHEDULES:
        raise InputError(f"unknown context schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    if context_frames < 1:
        raise InputError(f"context_frames is {context_frames}: use at least 1 frame per window (12 is the default)")
    if context_overlap < 0:
        raise InputError(f"context_overlap is {context_overlap}: use 0 or more overlapping frames (4 is the default)")
    if context_overlap >= context_frames:
        raise InputError(
            f"context_overlap ({context_overlap}) must be smaller than context_frames ({context_frames}): "
            "lower the overlap (e.g. 4 for windows of 12)"
        )


def uniform_v2_windows(num_frames: int, context_frames: int, context_overlap: int) -> list[Window]:
    """The raw ``uniform_v2`` windows (before the repeated-last-window rule).

    >>> uniform_v2_windows(12, 12, 4)
    [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [8, 9, 10, 11]]
    """
    check_window_settings(context_frames, context_overlap, "uniform_v2")
    step = context_frames - context_overlap
    return [list(range(start, min(start + context_frames, num_frames))) for start in range(0, num_frames, step)]


def uniform_windows(num_frames: int, context_frames: int, context_overlap: int, context_stride: int = 1) -> list[Window]:
    """The raw legacy ``uniform`` windows, as the original computes them at step 0 (no per-step offset).

    Frame strides ``1, 2, 4, …`` are used, as many as ``min(context_stride, ceil(log2(num_frames / context_frames)) + 1)``;
    at stride ``c`` the windows start every ``context_frames * c - context_overlap`` frames and take
    ``context_frames`` frames ``c`` apart, wrapping around the end of the video.

    >>> uniform_windows(24, 12, 4)[-1]
    [16, 17, 18, 19, 20, 21, 22, 23, 0, 1, 2, 3]
    """
    check_window_settings(context_frames, context_overlap, "uniform")
    if context_stride < 1:
        raise InputError(f"context_stride is {context_stride}: use 1 or more")
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    n_strides = min(context_stride, math.ceil(math.log2(num_frames / context_frames)) + 1)
    windows = []
    for level in range(n_strides):
        frame_stride = 1 << level
        span = context_frames * frame_stride
        for start in range(0, num_frames, span - context_overlap):
            windows.append([index % num_frames for index in range(start, start + span, frame_stride)])
    return windows


def drop_repeated_last_window(windows: list[Window]) -> list[Window]:
    """Drop the last window when it ends on the same frame as the one before it (the original's rule)."""
    if len(windows) >= 2 and windows[-1][-1] == windows[-2][-1]:
        return windows[:-1]
    return windows


def context_windows(
    num_frames: int,
    context_frames: int = 12,
    context_overlap: int = 4,
    schedule: str = "uniform_v2",
    context_stride: int = 1,
) -> list[Window]:
    """The windows the denoising loop visits at every step, in order.

    ``num_frames`` counts the noisy frames only (the condition frame is prepended to every window separately).
    """
    check_window_settings(context_frames, context_overlap, schedule)
    if num_frames < 1:
        raise InputError(f"the video has {num_frames} frames to generate: ask for at least 1")
    if schedule == "uniform_v2":
        raw = uniform_v2_windows(num_frames, context_frames, context_overlap)
    else:
        raw = uniform_windows(num_frames, context_frames, context_overlap, context_stride)
    return drop_repeated_last_window(raw)


def batch_windows(windows: list[Window], batch_size: int = 1) -> list[list[Window]]:
    """Group consecutive windows by ``batch_size`` (the original's ``global_context``; its loop only works with 1).

    >>> batch_windows([[0, 1], [1, 2], [2, 3]], 2)
    [[[0, 1], [1, 2]], [[2, 3]]]
    """
    if batch_size < 1:
        raise InputError(f"context_batch_size is {batch_size}: use 1")
    return [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]


def frame_coverage(windows: list[Window], num_frames: int) -> list[int]:
    """How many windows cover each frame (every frame must be covered at least once)."""
    counts = [0] * num_frames
    for window in windows:
        for index in window:
            counts[index] += 1
    return counts
