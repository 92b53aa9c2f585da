"""GPU acceptance in one command: all four tasks at full size, random weights, the real pipeline code in fp16.

No downloads: every component is built at its official size with random weights by the task's own benchmark script
(``benchmarks/<task>.py``, whose builders, plans and measurements this reuses). Per task a short run (a few steps)
at the reference size, first with the plan chosen for this card, then again with the T4 plan under a 15 GiB cap
(``torch.cuda.set_per_process_memory_fraction``; the cap stays for the process, so every T4 run comes last).
Reported per run: seconds per UNet call, seconds per output frame extrapolated to the published step count (the
task's default), peak VRAM, and whether the output is finite and not constant. Every MuseV setting that
``benchmarks/text_image_to_video.py`` defines is run (at most one context window of frames).

Sized to finish in under 8 minutes on one H100; when the time budget (``--budget``) runs short, the runs left are
skipped and listed. ``--tiny`` runs the same code on the CPU with tiny random packs (the T4 runs are skipped).

    python benchmarks/gpu_check.py --json gpu_check.json --markdown gpu_check.md
    python benchmarks/gpu_check.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import runtime  # noqa: E402

HERE = Path(__file__).resolve().parent
T4_CAP_GIB = 15.0
SHORT_STEPS = 2
TASK_OF = {"pose_to_dance": "pose_to_dance", "text_image_to_video": "text_image_to_video",
           "id_preserving": "id_preserving_video", "zero_shot_pose": "zero_shot_pose_video"}


def script(name: str):
    """``benchmarks/<name>.py`` as a module (registered under ``<name>_benchmark``)."""
    key = f"{name}_benchmark"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def published_steps(script_name: str) -> int:
    """The task's default step count (the original's published setting)."""
    return int(importlib.import_module(f"helpers.tasks.{TASK_OF[script_name]}").Params().steps)


class Recording:
    """A pipeline that keeps what each call returned (the benchmark scripts' measurements discard it)."""

    def __init__(self, pipe):
        self._pipe, self.outputs = pipe, []

    def __call__(self, *args, **kwargs):
        out = self._pipe(*args, **kwargs)
        self.outputs.append(out)
        return out

    def __getattr__(self, name):
        return getattr(self._pipe, name)


@dataclasses.dataclass
class Case:
    """One run: ``build(plan, device)`` gives a placed pipeline; ``call(pipe, plan, device)`` runs it once."""

    name: str
    script: str
    size: str
    frames: int
    build: Callable
    call: Callable


def cases(tiny: bool) -> list[Case]:
    pose, musev, ida, zero = (script(n) for n in ("pose_to_dance", "text_image_to_video", "id_preserving",
                                                    "zero_shot_pose"))
    out = []
    # pose to dance: one 24-frame window at 1024×576 (tiny: the script's tiny setting)
    setting = dataclasses.replace(pose.TINY if tiny else pose.FULL, steps=SHORT_STEPS)
    frames = setting.frames[0] if tiny else setting.window

    def build_pose(plan, device):
        if tiny:
            return pose.build_tiny(plan, Path(tempfile.mkdtemp()))
        from helpers.pipelines.controlnext_svd.loading import apply_memory_plan

        pipe = pose.build_full_size(plan.dtype, "cpu" if plan.offload != "none" else device)
        apply_memory_plan(pipe, plan, torch.device(device))
        return pipe

    out.append(Case("pose_to_dance", "pose_to_dance", f"{setting.height}x{setting.width}", frames, build_pose,
                    lambda pipe, plan, device, s=setting, f=frames: pose.measure(pipe, s, f,
                                                                                 min(2, plan.vae_decode_chunk))))
    # text/image to video: every setting the script defines, at most one context window long
    seen = set()
    for setting in (musev.TINY_SETTINGS if tiny else musev.SETTINGS).values():
        short = dataclasses.replace(setting, steps=SHORT_STEPS, frames=min(setting.frames, setting.context_frames))
        if (short.variant, short.which2video, short.size, short.frames) in seen:
            continue
        seen.add((short.variant, short.which2video, short.size, short.frames))

        def build_musev(plan, device, variant=short.variant, control=bool(short.which2video)):
            if tiny:
                from helpers.pipelines.musev.pipeline import load_musev_pipeline
                from helpers.testing.musev import write_tiny_musev_packs

                root = write_tiny_musev_packs(Path(tempfile.mkdtemp()), pose=control,
                                              controlnets=("controlnet_openpose",) if control else ())
                return load_musev_pipeline(variant, root=root, device="cpu", dtype=plan.dtype,
                                           controlnet="controlnet_openpose" if control else None)
            pipe = musev.full_size_pipeline(variant, "cpu" if plan.offload != "none" else device, plan.dtype,
                                            controlnet=control)
            musev.apply_plan(pipe, plan, device)
            return pipe

        out.append(Case(f"text_image_to_video:{setting.name}", "text_image_to_video", f"{short.size}x{short.size}",
                        short.frames, build_musev,
                        lambda pipe, plan, device, s=short: musev.measure(pipe, s, profile=plan.tier, plan=plan,
                                                                          device=device)))
    # ID-preserving video: 16 frames at 512×512 (tiny: 4 at 64)
    size, frames = (64, 4) if tiny else (512, 16)

    def build_ida(plan, device):
        if tiny:
            return ida.tiny_pipeline()
        pipe = ida.full_size_pipeline("cpu" if plan.offload != "none" else device, plan.dtype)
        ida.apply_plan(pipe, plan, device)
        return pipe

    def call_ida(pipe, plan, device, size=size, frames=frames):
        try:  # the aligned crop the benchmark script uses (needs OpenCV)
            from helpers import face

            photo = face.prepare_face(ida.tiny.synthetic_face_photo(), detector=ida.tiny.FakeFaceDetector()).image
        except ImportError:  # random weights do not care what the face looks like: a crop of noise, same size
            import PIL.Image

            noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
            photo = PIL.Image.fromarray(noise)
        pipe.set_progress_bar_config(disable=True)
        return ida.measure(pipe, profile=plan.tier, plan=plan, device=device, size=size, frames=frames,
                           steps=SHORT_STEPS, face_image=photo)

    out.append(Case("id_preserving_video", "id_preserving", f"{size}x{size}", frames, build_ida, call_ida))
    # zero-shot pose video: 16 frames at 512×512, the recommended techniques (tiny: 3 at 32)
    size, frames = (32, 3) if tiny else (512, 16)

    def build_zero(plan, device):
        if tiny:
            return zero.tiny_pipeline()
        pipe = zero.full_size_pipeline(size, plan.dtype, "cpu" if plan.offload != "none" else device)
        return pipe.apply_memory_plan(plan)

    out.append(Case("zero_shot_pose_video", "zero_shot_pose", f"{size}x{size}", frames, build_zero,
                    lambda pipe, plan, device, size=size, frames=frames: zero.run_one(
                        pipe, "recommended", zero.techniques(SHORT_STEPS)["recommended"], frames=frames,
                        steps=SHORT_STEPS, size=size)))
    return out


def output_check(output) -> tuple[bool, bool]:
    """(finite, not constant) of a pipeline output's frames."""
    frames = output.frames if hasattr(output, "frames") else output
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames, dtype=np.float32)
    return bool(np.isfinite(frames).all()), bool(np.nanstd(frames) > 0)


def run_case(case: Case, profile: str, plan: runtime.MemoryPlan, device: str) -> dict:
    row = dict(case=case.name, profile=profile, plan=plan.describe(), size=case.size, frames=case.frames,
               steps=SHORT_STEPS, published_steps=published_steps(case.script))
    start = time.perf_counter()
    pipe = None
    try:
        pipe = Recording(case.build(plan, device))
        timer = script("pose_to_dance").UNetTimer(pipe.unet)
        runtime.reset_peak_memory()
        t0 = time.perf_counter()
        try:
            measured = case.call(pipe, plan, device)
        finally:
            timer.remove()
        seconds = time.perf_counter() - t0
        if not pipe.outputs:  # the script's measurement caught an error (out of memory)
            note = measured.get("status") if isinstance(measured, dict) else getattr(measured, "error", "")
            raise RuntimeError(note or "no output")
        unet_s = float(np.sum(timer.durations))
        per_step = unet_s / SHORT_STEPS
        extrapolated = seconds + (row["published_steps"] - SHORT_STEPS) * per_step
        finite, varied = output_check(pipe.outputs[-1])
        row.update(status="ok" if finite and varied else "bad output", unet_calls=len(timer.durations),
                   s_per_unet_call=round(float(np.mean(timer.durations)), 4) if timer.durations else None,
                   s_per_frame_published=round(extrapolated / case.frames, 3), seconds=round(seconds, 2),
                   peak_vram_gb=round(runtime.peak_memory_gb(), 2), finite=finite, not_constant=varied)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        row.update(status=f"failed: {str(error).splitlines()[0][:160]}")
    finally:
        pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    row["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(row), flush=True)
    return row


def run(*, tiny: bool, budget_s: float) -> dict:
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("the GPU check needs a CUDA GPU; use --tiny on a CPU")
    device = "cpu" if tiny else "cuda"
    card = runtime.plan_for(None) if tiny else runtime.memory_plan()
    profiles = [("card", card)] + ([] if tiny else [("t4", runtime.memory_plan("t4"))])
    todo = [(profile, plan, case) for profile, plan in profiles for case in cases(tiny)]
    rows, skipped, start, longest = [], [], time.perf_counter(), 0.0
    for profile, plan, case in todo:
        elapsed = time.perf_counter() - start
        if elapsed + longest > budget_s:  # the next run would likely not fit
            skipped.append(f"{case.name} ({profile} plan): {elapsed:.0f} s of the {budget_s:.0f} s budget used")
            continue
        if profile == "t4" and not tiny:
            total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
            torch.cuda.set_per_process_memory_fraction(min(1.0, T4_CAP_GIB / total_gib))
        t0 = time.perf_counter()
        rows.append(run_case(case, profile, plan, device))
        longest = max(longest, time.perf_counter() - t0)
    if tiny:
        skipped.extend(f"{case.name} (t4 plan): needs CUDA" for case in cases(tiny))
    for line in skipped:
        print(f"skipped: {line}", flush=True)
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not tiny else "CPU (tiny)"
    return dict(device=device_name, torch=torch.__version__, total_s=round(time.perf_counter() - start, 1),
                rows=rows, skipped=skipped)


def markdown(result: dict) -> str:
    """The rows for docs/benchmarks.md."""
    lines = [f"GPU acceptance ({result['device']}, torch {result['torch']}, random weights in the plan's dtype, "
             f"{SHORT_STEPS} steps extrapolated to the published count; {result['total_s']} s in all)", "",
             "| case | plan | size × frames | s / UNet call | s / frame (published steps) | peak VRAM GB | finite, "
             "not constant | status |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ok = f"{r.get('finite', '')}, {r.get('not_constant', '')}" if "finite" in r else ""
        lines.append(f"| {r['case']} | {r['profile']}: {r['plan']} | {r['size']} × {r['frames']} | "
                     f"{r.get('s_per_unet_call', '')} | {r.get('s_per_frame_published', '')} | "
                     f"{r.get('peak_vram_gb', '')} | {ok} | {r['status']} |")
    lines += [f"| {line} | | | | | | | skipped |" for line in result["skipped"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random packs on the CPU (a smoke run)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds before the remaining runs are skipped")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--markdown", type=Path, help="write the markdown rows to this file")
    args = parser.parse_args(argv)
    result = run(tiny=args.tiny, budget_s=args.budget)
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
