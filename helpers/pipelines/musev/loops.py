"""The denoising loops of one MuseV call, and how an interrupted call continues them.

A call runs one loop per serial shot (one for a parallel video), after a loop for the first frame when it is
generated; :func:`denoising_loops` names them in order. ``MuseVPipeline.__call__`` takes ``resume_from`` /
``on_state`` per loop (:mod:`helpers.pipelines.loop_state`): a finished loop's state gives its latents without a
UNet call, a partly done one continues at its step, and the last loop's state carries the decoded chunks.
"""

from __future__ import annotations

import torch

from helpers.pipelines.loop_state import LoopState, resume_loop


def denoising_loops(n_batch: int = 1, generate_first_frame: bool = False) -> list[tuple[str, str | None]]:
    """``(name, label)`` of each denoising loop of a call, in the order of ``resume_from`` / ``on_state``: the first
    frame's (when it is generated), then each serial shot's; a call with one loop has ``("main", None)``.

    >>> denoising_loops()
    [('main', None)]
    >>> denoising_loops(2, generate_first_frame=True)
    [('first_frame', 'the first frame'), ('shot1', 'shot 1 of 2'), ('shot2', 'shot 2 of 2')]
    """
    loops = [("first_frame", "the first frame")] if generate_first_frame else []
    if n_batch > 1:
        loops += [(f"shot{k}", f"shot {k} of {n_batch}") for k in range(1, n_batch + 1)]
    else:
        loops.append(("main", "the video" if loops else None))
    return loops


def per_loop(value, count: int, what: str) -> list:
    """``resume_from`` / ``on_state`` as one entry per denoising loop (a single value for a call with one loop)."""
    if value is None:
        return [None] * count
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{what} has {len(value)} entries, this call runs {count} denoising loops "
                             "(denoising_loops)")
        return list(value)
    if count != 1:
        raise ValueError(f"this call runs {count} denoising loops: give {what} as a list, one per loop "
                         "(denoising_loops)")
    return [value]


def continue_loop(state: LoopState, shape: tuple, steps: int, generator) -> torch.Tensor:
    """The latents a loop continues from (its state's, already scaled), the generators moved to where they were
    after its last finished step. The loop's own initial noise is not drawn again: the generators' positions
    replace the draws, and the latents replace the noise."""
    return resume_loop(state, steps, shape, generator=generator)  # the scheduler is restored by the loop itself


def chunk_frames(chunk: torch.Tensor, output_type: str) -> int:
    """Frames in a decoded chunk: uint8 ``(n, H, W, 3)`` for ``"np"``, float ``(1, 3, n, H, W)`` for ``"pt"``."""
    if (chunk.dtype == torch.uint8) != (output_type == "np"):
        raise ValueError(f"the saved decoded frames are not of output_type {output_type!r}")
    return int(chunk.shape[0] if output_type == "np" else chunk.shape[2])
