"""Pose-to-dance (ControlNeXt-SVD v2) speed and memory, on full-size random-weight components.

GPU only at full size (never in CI): 1024×576, 24-frame windows overlapping by 6, 25 steps, for 24 / 72 / 240
frames. Profiles:

- ``ours``: our pipeline (fp16 on CUDA) with the memory plan ``helpers.runtime.memory_plan()`` picks for this GPU;
- ``t4``: the plan picked for a 16 GB T4, with this process capped at 15 GiB
  (``torch.cuda.set_per_process_memory_fraction``) — memory is representative of a T4, speed is not;
- ``original``: the original's configuration: fp32, model CPU offload, VAE decode chunk 2.

Reported per run: seconds per output frame, seconds per UNet call (one window at one step, both guidance halves),
decode seconds and peak VRAM; then original ÷ ours ratios. ``--tiny`` runs the same code on the CPU with tiny
random packs written to a temporary folder and loaded through the real loaders (64×64, window 4, 2 steps).

    python benchmarks/pose_to_dance.py                       # all profiles, 24/72/240 frames
    python benchmarks/pose_to_dance.py --frames 24 --profiles ours t4 --json bench.json
    python benchmarks/pose_to_dance.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from helpers import runtime  # noqa: E402
from helpers.pipelines.controlnext_svd import (  # noqa: E402
    OFFICIAL_V2,
    SVD_XT_UNET_CONFIG,
    ControlNeXtEncoder,
    ControlNeXtSVDPipeline,
    apply_memory_plan,
    load_pipeline,
    window_schedule,
)
from helpers.pipelines.controlnext_svd.loading import in_dtype  # noqa: E402

# Full-size configurations of the SVD-XT 1.1 parts (from the model's published config files).
SVD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, latent_channels=4, sample_size=768, scaling_factor=0.18215, force_upcast=True,
)
CLIP_VIT_H_CONFIG = dict(
    hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32, patch_size=14,
    image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5,
)
SVD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
    sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous", steps_offset=1,
)
T4_CAP_GIB = 15.0


@dataclasses.dataclass(frozen=True)
class Setting:
    height: int
    width: int
    window: int
    overlap: int
    steps: int
    frames: tuple[int, ...]


FULL = Setting(height=1024, width=576, window=24, overlap=6, steps=25, frames=(24, 72, 240))
TINY = Setting(height=64, width=64, window=4, overlap=2, steps=2, frames=(3, 7))


def build_full_size(dtype: torch.dtype, device: str) -> ControlNeXtSVDPipeline:
    """Every part at its real size with random weights (built directly on ``device`` in ``dtype``)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the target dtype: no fp32 copy of 1.5 B parameters
    try:
        with torch.device(device):
            parts = dict(
                unet=UNetSpatioTemporalConditionModel(**SVD_XT_UNET_CONFIG),
                controlnext=ControlNeXtEncoder(**OFFICIAL_V2),
                vae=AutoencoderKLTemporalDecoder(**SVD_VAE_CONFIG),
                image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_VIT_H_CONFIG)),
            )
    finally:
        torch.set_default_dtype(previous)
    parts = {name: in_dtype(model, dtype).eval() for name, model in parts.items()}
    return ControlNeXtSVDPipeline(scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER_CONFIG),
                                  feature_extractor=CLIPImageProcessor(), **parts)


def build_tiny(plan, folder: Path) -> ControlNeXtSVDPipeline:
    """Tiny random packs on disk, loaded through the real loaders."""
    from helpers.testing.controlnext import write_tiny_controlnext_packs

    return load_pipeline(write_tiny_controlnext_packs(folder, "v2"), version="v2", plan=plan)


class UNetTimer:
    """Wall time of every UNet call (synchronised on CUDA so the GPU work is inside the interval)."""

    def __init__(self, unet: torch.nn.Module):
        self.durations: list[float] = []
        self._start = 0.0
        self._handles = [unet.register_forward_pre_hook(self._begin), unet.register_forward_hook(self._end)]

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _begin(self, module, args) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _end(self, module, args, output) -> None:
        self._sync()
        self.durations.append(time.perf_counter() - self._start)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def random_inputs(setting: Setting, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (setting.height, setting.width, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (num_frames, setting.height, setting.width, 3), dtype=np.uint8)
    return reference, poses


def measure(pipe: ControlNeXtSVDPipeline, setting: Setting, num_frames: int, decode_chunk: int) -> dict:
    """One generation; returns timings and peak memory (or the error that stopped it)."""
    reference, poses = random_inputs(setting, num_frames)
    stamps: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        stamps.setdefault(f"{stage}_start", time.perf_counter())
        stamps[f"{stage}_end"] = time.perf_counter()

    runtime.reset_peak_memory()
    timer = UNetTimer(pipe.unet)
    start = time.perf_counter()
    try:
        pipe(reference, poses, height=setting.height, width=setting.width, frames_per_window=setting.window,
             overlap=setting.overlap, num_inference_steps=setting.steps, decode_chunk_size=decode_chunk,
             generator=torch.Generator().manual_seed(0), progress=progress)
        status = "ok"
    except torch.cuda.OutOfMemoryError:
        status = "out of memory"
    finally:
        timer.remove()
        pipe.maybe_free_model_hooks()
    total = time.perf_counter() - start
    windows = len(window_schedule(num_frames, setting.window, setting.overlap))
    row = dict(frames=num_frames, windows=windows, steps=setting.steps, status=status,
               peak_vram_gb=round(runtime.peak_memory_gb(), 3))
    if status == "ok":
        decode = stamps["decode_end"] - stamps["decode_start"] if "decode_start" in stamps else float("nan")
        row.update(total_s=round(total, 3), s_per_frame=round(total / num_frames, 4),
                   s_per_unet_call=round(float(np.mean(timer.durations)), 4), unet_calls=len(timer.durations),
                   decode_s=round(decode, 4))
    return row


def profile_plans(tiny: bool) -> dict[str, tuple[torch.dtype, object, int]]:
    """Profile name -> (dtype, memory plan, VAE decode chunk)."""
    ours = runtime.memory_plan("cpu" if tiny else None)
    original = dataclasses.replace(ours, dtype_name="float32", offload="model", ff_chunk=None, vae_decode_chunk=2,
                                   tier="original")
    plans = {"ours": (ours.dtype, ours, min(2, ours.vae_decode_chunk)), "original": (torch.float32, original, 2)}
    if not tiny:
        t4 = runtime.memory_plan("t4")
        plans["t4"] = (t4.dtype, t4, t4.vae_decode_chunk)
    return plans


def run(profiles: list[str], setting: Setting, tiny: bool) -> list[dict]:
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("the full-size benchmark needs a CUDA GPU; use --tiny on a CPU")
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    plans = profile_plans(tiny)
    rows = []
    # The T4 cap stays for the rest of the process, so that profile runs last.
    for name in sorted(profiles, key=lambda p: p == "t4"):
        if name not in plans:
            rows.append(dict(profile=name, status="skipped (needs CUDA)" if name == "t4" else "unknown profile"))
            continue
        dtype, plan, decode_chunk = plans[name]
        if name == "t4":
            total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
            torch.cuda.set_per_process_memory_fraction(min(1.0, T4_CAP_GIB / total_gib))
        with tempfile.TemporaryDirectory() as folder:
            pipe = build_tiny(plan, Path(folder)) if tiny else build_full_size(dtype, device)
            if not tiny:
                apply_memory_plan(pipe, plan, torch.device(device))
            for num_frames in setting.frames:
                offload = plan.offload if device == "cuda" else "none"
                row = dict(profile=name, dtype=str(dtype).replace("torch.", ""), offload=offload,
                           ff_chunk=plan.ff_chunk, decode_chunk=decode_chunk, device=device_name(),
                           size=f"{setting.height}x{setting.width}", window=setting.window, overlap=setting.overlap)
                row.update(measure(pipe, setting, num_frames, decode_chunk))
                print(json.dumps(row), flush=True)
                rows.append(row)
            del pipe
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def ratios(rows: list[dict]) -> list[dict]:
    """original ÷ ours per frame count: > 1 means ours is faster / smaller."""
    ok = {(r["profile"], r["frames"]): r for r in rows if r.get("status") == "ok"}
    out = []
    for (profile, frames), row in ok.items():
        base = ok.get(("original", frames))
        if profile == "ours" and base:
            out.append(dict(frames=frames, speedup=round(base["s_per_frame"] / row["s_per_frame"], 2),
                            memory_ratio=round(base["peak_vram_gb"] / row["peak_vram_gb"], 2)
                            if row["peak_vram_gb"] else math.nan))
    return out


def print_table(rows: list[dict]) -> None:
    header = f"{'profile':9} {'frames':>6} {'windows':>7} {'s/frame':>8} {'s/UNet call':>11} {'decode s':>8} " \
             f"{'peak GB':>8}  status"
    print(header)
    for r in rows:
        if "frames" not in r:
            print(f"{r['profile']:9} {'':>6} {'':>7} {'':>8} {'':>11} {'':>8} {'':>8}  {r['status']}")
            continue
        print(f"{r['profile']:9} {r['frames']:>6} {r['windows']:>7} {r.get('s_per_frame', float('nan')):>8.3f} "
              f"{r.get('s_per_unet_call', float('nan')):>11.3f} {r.get('decode_s', float('nan')):>8.2f} "
              f"{r['peak_vram_gb']:>8.2f}  {r['status']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random packs on the CPU (a smoke run)")
    parser.add_argument("--frames", type=int, nargs="+", help="output frame counts (default 24 72 240; tiny 3 7)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 25; tiny 2)")
    parser.add_argument("--profiles", nargs="+", default=["ours", "original", "t4"], help="ours, original, t4")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    setting = TINY if args.tiny else FULL
    setting = dataclasses.replace(setting, frames=tuple(args.frames or setting.frames),
                                  steps=args.steps or setting.steps)
    threads = torch.get_num_threads()
    if args.tiny:
        torch.set_num_threads(1)  # tiny models: extra CPU threads only add synchronisation
    try:
        rows = run(args.profiles, setting, args.tiny)
    finally:
        torch.set_num_threads(threads)
    result = dict(device=device_name(), setting=dataclasses.asdict(setting), runs=rows, ratios=ratios(rows),
                  environment=runtime.environment_summary())
    print_table(rows)
    for r in result["ratios"]:
        print(f"{r['frames']} frames: ours is {r['speedup']}x faster than the original, "
              f"peak VRAM ratio {r['memory_ratio']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
