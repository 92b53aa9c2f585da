"""What keeping a run resumable costs: the state written after each step, per task at its reference size.

For every task's denoising loop at its reference setting this writes a state of the real shapes (latents, anything
the loop carries, scheduler and generator state; decoded chunks) through the real writer (``helpers.resume``: temporary
file, fsync, rename, sha256 in the index) into ``--folder`` and reports the bytes per state and the seconds per
write (median of ``--repeats``). Point ``--folder`` at Google Drive on Colab to measure Drive; the default is a
temporary folder on the local disk. Compare the seconds with a step's time in ``docs/benchmarks.md``: the saving rule
(``helpers.resume.SAVE_RATIO``) writes every step while a step takes at least ten times a write.

    python benchmarks/resume_state.py --json resume_state.json
    python benchmarks/resume_state.py --folder /content/drive/MyDrive/human-video/outputs
    python benchmarks/resume_state.py --tiny        # tiny shapes, seconds (the suite runs it)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import resume  # noqa: E402
from helpers.pipelines.loop_state import LoopState, generator_states, scheduler_snapshot  # noqa: E402


@dataclass(frozen=True)
class Loop:
    """One denoising loop's state at a task's reference setting."""

    task: str
    setting: str
    latents: tuple[int, ...]
    latents_dtype: torch.dtype = torch.float32
    extra: dict[str, tuple[tuple[int, ...], torch.dtype]] = field(default_factory=dict)
    chunk: tuple[int, ...] | None = None  # one decoded chunk as kept
    chunk_dtype: torch.dtype = torch.float16
    chunks: int = 0
    scheduler: str = "EulerDiscreteScheduler"


F32, F16, U8 = torch.float32, torch.float16, torch.uint8

LOOPS = [
    Loop("pose_to_dance", "v2, 1024×576, 240 frames, decode chunk 2", (1, 240, 4, 128, 72),
         chunk=(2, 3, 1024, 576), chunks=120),
    Loop("pose_to_dance", "v1, 768×512, 240 frames, decode chunk 4", (1, 240, 4, 96, 64),
         chunk=(4, 3, 768, 512), chunks=60),
    # MuseV: [1, 4, generated frames, h, w] float32 latents, uint8 frames decoded with the last
    # loop; the README's yongen preset size; a T4 decodes 2 frames at a time
    Loop("text_image_to_video", "704×1216, 12-frame shot (13 frames with the condition frame)", (1, 4, 12, 152, 88),
         chunk=(2, 1216, 704, 3), chunk_dtype=U8, chunks=7),
    Loop("text_image_to_video", "704×1216, 96-frame parallel video (97 with the condition frame)", (1, 4, 96, 152, 88),
         chunk=(2, 1216, 704, 3), chunk_dtype=U8, chunks=49),
    Loop("video_to_video", "512×960 pose preset, 12 frames (11 generated)", (1, 4, 11, 120, 64),
         chunk=(2, 960, 512, 3), chunk_dtype=U8, chunks=6),
    # ID-Animator: fp16 latents on a GPU (the pipeline's dtype), DDIM with eta 0 carries nothing else
    Loop("id_preserving_video", "512×512, 16 frames, fp16, decode chunk 2 (T4)", (1, 4, 16, 64, 64),
         latents_dtype=F16, chunk=(2, 3, 512, 512), chunks=8, scheduler="DDIMScheduler"),
    # all frames in one batch; the loop carries its frame-evaluation count; uint8 frames decoded 2 at a time (T4)
    Loop("zero_shot_pose_video", "SD2.1-base, 512×512, 16 frames, decode chunk 2", (16, 4, 64, 64),
         extra={"frame_steps": ((), torch.int64)}, chunk=(2, 512, 512, 3), chunk_dtype=U8, chunks=8,
         scheduler="DDIMScheduler"),
]


def tiny(loop: Loop) -> Loop:
    """The same loop with every spatial size and frame count cut down (a seconds-long smoke run)."""
    def small(shape):
        return tuple(min(s, 4) for s in shape)
    extra = {k: (small(s), d) for k, (s, d) in loop.extra.items()}
    return Loop(loop.task, loop.setting + " (tiny)", small(loop.latents), loop.latents_dtype, extra,
                small(loop.chunk) if loop.chunk else None, loop.chunk_dtype, min(loop.chunks, 2), loop.scheduler)


def _tensor(shape, dtype) -> torch.Tensor:
    if dtype == U8:
        return torch.randint(0, 256, shape, dtype=U8)
    return torch.randn(shape).to(dtype)


@dataclass
class Row:
    task: str
    setting: str
    state_bytes: int
    write_s: float
    chunk_bytes: int
    chunk_write_s: float
    chunks: int


def measure(loop: Loop, folder: Path, repeats: int) -> Row:
    import diffusers

    scheduler = getattr(diffusers, loop.scheduler)()
    scheduler.set_timesteps(25)
    generator = torch.Generator().manual_seed(0)
    latents = _tensor(loop.latents, loop.latents_dtype)
    extra = {k: _tensor(s, d) for k, (s, d) in loop.extra.items()}
    params = {"task": loop.task, "setting": loop.setting}
    run = resume.RunState.open(loop.task, params, folder=folder)
    recorder = run.loop()
    for step in range(1, repeats + 1):
        recorder._put_state(LoopState(step=step, total=repeats + 1, latents=latents, extra=extra,
                                      scheduler=scheduler_snapshot(scheduler),
                                      generators=generator_states(generator)))
    state_bytes = run.index["entries"]["main"]["bytes"]
    chunk_bytes, chunk_times = 0, []
    if loop.chunk:
        chunk = _tensor(loop.chunk, loop.chunk_dtype)
        for i in range(repeats):
            chunk_times.append(run._put(f"main.decoded.{i}", chunk))
        chunk_bytes = run.index["entries"]["main.decoded.0"]["bytes"]
    run.close()
    return Row(loop.task, loop.setting, state_bytes, round(statistics.median(recorder.writes), 4), chunk_bytes,
               round(statistics.median(chunk_times), 4) if chunk_times else 0.0, loop.chunks)


def markdown(rows: list[Row], where: str) -> str:
    lines = [f"Measured on {where}.", "",
             "| task | setting | state per step | write | decoded chunk | chunk write | state at the end of decoding |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        end = r.state_bytes + r.chunk_bytes * r.chunks
        lines.append(f"| {r.task} | {r.setting} | {r.state_bytes / 1e6:.1f} MB | {r.write_s:.3f} s | "
                     f"{r.chunk_bytes / 1e6:.1f} MB | {r.chunk_write_s:.3f} s | {end / 1e6:.0f} MB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (seconds; the suite runs this)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    loops = [tiny(loop) for loop in LOOPS] if args.tiny else LOOPS
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        rows = [measure(loop, folder, args.repeats) for loop in loops]
        where = f"{folder if args.folder else 'a temporary folder on the local disk'}"
    print(markdown(rows, where))
    if args.json:
        args.json.write_text(json.dumps({"where": where, "rows": [asdict(r) for r in rows]}, indent=1))
    return rows


if __name__ == "__main__":
    main()
