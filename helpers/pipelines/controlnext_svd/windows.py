"""Sliding-window schedule of the ControlNeXt-SVD pipeline (pure logic, no torch).

A long pose sequence of N frames is denoised in windows of F frames that overlap by O frames. Window starts are
0, F−O, 2(F−O), … while below N−O, and a window that would run past the end is moved back to end flush with it.
Frame 0 of the sequence is the reference pose; every window after the first holds an *anchor* slot (its slot 0)
whose result is discarded, so those windows contribute frames s+1 … s+F−1 only. Overlapping results are averaged
uniformly.

>>> [w.start for w in window_schedule(num_frames=50, window=24, overlap=6)]
[0, 18, 26]
>>> window_schedule(11, 4, 2)[1].accumulated
range(3, 6)
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.errors import InputError


@dataclass(frozen=True)
class Window:
    """One window: frames ``start … start+length−1``; ``accumulated`` are the frames whose results are kept."""

    start: int
    length: int

    @property
    def frames(self) -> range:
        return range(self.start, self.start + self.length)

    @property
    def accumulated(self) -> range:
        # Every window but the first drops its anchor slot (slot 0).
        return self.frames if self.start == 0 else range(self.start + 1, self.start + self.length)


def validate_window_args(num_frames: int, window: int, overlap: int) -> None:
    """Raise ``InputError`` (one line, what to do) for a schedule that cannot cover every frame."""
    if num_frames < 1:
        raise InputError(f"need at least 1 frame to generate, got {num_frames}: give a longer pose sequence")
    if window < 2:
        raise InputError(f"frames per window must be at least 2, got {window}")
    if not 1 <= overlap <= window - 1:
        raise InputError(
            f"overlap must be between 1 and frames per window − 1 (= {window - 1}), got {overlap}: "
            "a window must overlap the previous one by at least one frame and advance by at least one"
        )


def window_schedule(num_frames: int, window: int, overlap: int) -> list[Window]:
    """Windows covering ``num_frames`` frames, in processing order (see the module docstring)."""
    validate_window_args(num_frames, window, overlap)
    length = min(window, num_frames)
    if length == num_frames:
        return [Window(0, length)]
    starts = []
    for start in range(0, num_frames - overlap, length - overlap):
        starts.append(min(start, num_frames - length))
    return [Window(s, length) for s in starts]


def frame_counts(windows: list[Window], num_frames: int) -> list[int]:
    """How many windows contribute to each frame (all ≥ 1 for a valid schedule)."""
    counts = [0] * num_frames
    for w in windows:
        for f in w.accumulated:
            counts[f] += 1
    return counts
