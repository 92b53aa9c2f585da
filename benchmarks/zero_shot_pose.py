"""Benchmark of the zero-shot pose-video pipeline: seconds per frame and peak VRAM for each technique.

GPU only (never in CI): full-size SD2.1 + OpenPose ControlNet with *random* weights in fp16 (the speed and memory of
the real models, no download needed), 16 frames, 30 DDIM steps, at 512×512 (SD2.1-base) or 768×768 (SD2.1-768).
``--t4`` caps the process at 15 GB and applies the T4 memory plan (model offload, small VAE chunks), to check that
every technique fits a Colab T4. ``--tiny`` runs the same code on tiny random models on the CPU (a smoke test).

    python benchmarks/zero_shot_pose.py                       # 512 px, all techniques
    python benchmarks/zero_shot_pose.py --size 768 --t4 --json docs/zero_shot_t4.json
    python benchmarks/zero_shot_pose.py --tiny                # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import runtime  # noqa: E402
from helpers.pipelines.zero_shot_pose import ConsistencyOptions, ZeroShotPosePipeline, configs, recommended  # noqa: E402

T4_CAP_GB = 15.0


def techniques(steps: int) -> dict[str, ConsistencyOptions]:
    """One entry per technique, each alone on top of shared noise (except the baseline), plus the combination."""
    early = max(1, round(0.3 * steps))  # the original's copy step 8 (+1) of 50 is ~18 %; 30 % fixes more layout
    return {
        "a_independent_noise": ConsistencyOptions(),
        "b_shared_noise": ConsistencyOptions(noise="shared"),
        "c_cross_frame_attention": ConsistencyOptions(noise="shared", cross_frame_attention="first_and_previous"),
        "d_first_frame_copy": ConsistencyOptions(noise="shared", latent_reference="first_frame", reference_steps=early),
        "d_previous_frame_blend": ConsistencyOptions(noise="shared", latent_reference="previous_frame",
                                                     reference_steps=early, reference_strength=0.5),
        "e_source_latents": ConsistencyOptions(noise="shared", latent_reference="source", reference_steps=early),
        "f_latent_differences": ConsistencyOptions(noise="shared", latent_reference="source_motion",
                                                   reference_steps=early),
        "g_keyframe": ConsistencyOptions(noise="shared", latent_reference="keyframe", reference_steps=early),
        "recommended": ConsistencyOptions(**{**asdict(recommended()), "reference_steps": early}),
    }


def full_size_pipeline(size: int, dtype: torch.dtype, device: str) -> ZeroShotPosePipeline:
    """SD2.1 (-base for 512, -768 for 768) + SD2.1 ControlNet, random weights, built directly on ``device``."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from helpers.testing import common

    unet_config, ddim_config = ((configs.SD21_UNET_768, configs.SD21_DDIM_768) if size == 768
                                else (configs.SD21_UNET_512, configs.SD21_DDIM_512))
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config).to(dtype)
        controlnet = ControlNetModel(**configs.SD21_CONTROLNET).to(dtype)
        vae = AutoencoderKL(**configs.SD_VAE).to(dtype)
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs.SD21_TEXT_ENCODER)).to(dtype)
    tokenizer = common.load_clip_tokenizer(common.write_clip_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer"))
    return ZeroShotPosePipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                unet=unet.eval(), controlnet=controlnet.eval(), scheduler=DDIMScheduler(**ddim_config))


def tiny_pipeline() -> ZeroShotPosePipeline:
    from helpers.pipelines.zero_shot_pose import load_zero_shot_pipeline
    from helpers.testing.zero_shot import write_tiny_zero_shot_packs

    paths = write_tiny_zero_shot_packs(tempfile.mkdtemp())
    return load_zero_shot_pipeline(base_dir=paths["base"], controlnet_path=paths["controlnet"], device="cpu")


@dataclass
class Row:
    technique: str
    frames: int
    steps: int
    size: int
    seconds: float
    seconds_per_frame: float
    peak_vram_gb: float
    unet_frame_evaluations: int
    finite: bool
    error: str = ""


def run_one(pipe: ZeroShotPosePipeline, name: str, options: ConsistencyOptions, *, frames: int, steps: int,
            size: int) -> Row:
    rng = np.random.default_rng(0)
    poses = np.zeros((frames, size, size, 3), np.uint8)
    for k in range(frames):  # a bar that moves: enough for timing (random weights ignore what the pose means)
        x = (size // 4 + k * size // (2 * frames)) % (size - 8)
        poses[k, size // 4: 3 * size // 4, x:x + 6] = (255, 0, 85)
    source = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) if options.needs_source else None
    runtime.reset_peak_memory()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        out = pipe("a golfer in a red polo shirt mid-swing, best quality", poses, negative_prompt="bad anatomy",
                   options=options, source_frames=source, num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(1887), output_type="float")
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        return Row(name, frames, steps, size, float("nan"), float("nan"), runtime.peak_memory_gb(), 0, False,
                   f"out of memory: {str(error).splitlines()[0][:120]}")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return Row(name, frames, steps, size, round(seconds, 3), round(seconds / frames, 3),
               round(runtime.peak_memory_gb(), 2), out.frame_steps, bool(np.isfinite(out.frames).all()))


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| technique | s/frame | total s | peak VRAM GB | UNet frame-steps | finite | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.technique} | {r.seconds_per_frame} | {r.seconds} | {r.peak_vram_gb} | "
                     f"{r.unet_frame_evaluations} | {r.finite} | {r.error} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, choices=(512, 768), default=512)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--only", nargs="*", help="technique names to run (default: all)")
    parser.add_argument("--t4", action="store_true", help="cap memory at 15 GB and use the T4 memory plan")
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    if args.tiny:
        pipe, size, frames, steps = tiny_pipeline(), 32, min(args.frames, 3), min(args.steps, 3)
        where = "CPU, tiny random models"
    else:
        if not torch.cuda.is_available():
            parser.error("the full-size benchmark needs a CUDA GPU (use --tiny on the CPU)")
        size, frames, steps = args.size, args.frames, args.steps
        gpu = runtime.gpu_info()
        plan = runtime.memory_plan("t4" if args.t4 else None)
        if args.t4:
            torch.cuda.set_per_process_memory_fraction(min(1.0, T4_CAP_GB / gpu.total_gb))
        pipe = full_size_pipeline(size, torch.float16, "cpu" if plan.offload != "none" else "cuda")
        pipe.apply_memory_plan(plan)
        where = f"{gpu.name}, fp16, random weights, plan: {plan.describe()}" + (
            f", capped at {T4_CAP_GB} GB" if args.t4 else "")
    selected = techniques(steps)
    if args.only:
        unknown = set(args.only) - set(selected)
        if unknown:
            parser.error(f"unknown techniques {sorted(unknown)}: choose from {', '.join(selected)}")
        selected = {name: selected[name] for name in args.only}

    if not args.tiny:  # warm-up: kernel selection and allocator growth stay out of the first row
        run_one(pipe, "warm-up", ConsistencyOptions(), frames=2, steps=1, size=size)
    rows = [run_one(pipe, name, options, frames=frames, steps=steps, size=size) for name, options in selected.items()]
    print(markdown(rows, f"Zero-shot pose video: {frames} frames, {steps} steps, {size}×{size} — {where}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"where": where, "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


if __name__ == "__main__":
    main()
