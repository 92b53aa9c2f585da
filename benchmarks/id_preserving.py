"""Benchmark of ID-Animator (identity-preserving video): seconds per video, seconds per UNet step, peak VRAM.

GPU only (never in CI): full-size SD1.5 + AnimateDiff v2 + CLIP ViT-H/14 + the face adapter with *random* weights in
fp16 (the speed and memory of the real models, no download), 512x512, 16 frames, 30 DDIM steps, CFG 8 — the original's
settings. Two profiles: ``large`` (everything resident on the GPU) and ``t4`` (the process capped at 15 GB with
``torch.cuda.set_per_process_memory_fraction`` and the T4 memory plan applied), which must complete. ``--tiny`` runs
the same code on the tiny random-weight packs on the CPU (a smoke test).

    python benchmarks/id_preserving.py                          # both profiles, JSON on stdout
    python benchmarks/id_preserving.py --profiles t4 --json docs/id_preserving_t4.json
    python benchmarks/id_preserving.py --tiny                   # CPU, seconds
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
from helpers.pipelines.id_animator import (  # noqa: E402
    IDAnimatorPipeline,
    animator_checkpoint_template,
    assemble_id_animator_pipeline,
    convert_animator_checkpoint,
    face_adapter_targets,
)
from helpers.testing import id_animator as tiny  # noqa: E402

T4_CAP_GB = 15.0
PROMPT = "a woman smiling in a garden, 8k uhd, high quality, medium shot"


@dataclass
class Measurement:
    profile: str
    plan: str
    device: str
    size: int
    frames: int
    steps: int
    seconds_per_video: float
    seconds_per_unet_step: float
    peak_vram_gb: float
    output_shape: list[int]


def full_size_pipeline(device: str, dtype: torch.dtype) -> IDAnimatorPipeline:
    """All official architectures at full size with random weights, assembled by the real assembly code."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from helpers.testing import common

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**tiny.SD15_UNET_CONFIG).to(dtype).eval()
        motion_adapter = MotionAdapter(**tiny.MOTION_V2_CONFIG).to(dtype).eval()
        vae = AutoencoderKL(**tiny.SD15_VAE_CONFIG).to(dtype).eval()
        text_encoder = CLIPTextModel(CLIPTextConfig(**tiny.SD15_TEXT_CONFIG)).to(dtype).eval()
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny.VIT_H_CONFIG)).to(dtype).eval()
        targets = face_adapter_targets(unet)
        animator = {k: torch.randn(v.shape, dtype=dtype) * 0.02
                    for k, v in animator_checkpoint_template(targets, tiny.VIT_H_CONFIG["hidden_size"]).items()}
    face_adapter = convert_animator_checkpoint(animator, targets, tiny.VIT_H_CONFIG["hidden_size"])
    tokenizer = common.load_clip_tokenizer(common.write_clip_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer"))
    return assemble_id_animator_pipeline(unet=unet, motion_adapter=motion_adapter, vae=vae, text_encoder=text_encoder,
                                         tokenizer=tokenizer, image_encoder=image_encoder, face_adapter=face_adapter)


def tiny_pipeline() -> IDAnimatorPipeline:
    from helpers.pipelines.id_animator import load_id_animator_pipeline

    root = Path(tempfile.mkdtemp())
    tiny.write_tiny_id_animator_packs(root, sketch=False)
    return load_id_animator_pipeline(root=root, device="cpu", dtype=torch.float32)


def apply_plan(pipe: IDAnimatorPipeline, plan: runtime.MemoryPlan, device: str) -> None:
    """Place the pipeline as the memory plan says (model offload is enabled after the face adapter is loaded)."""
    if plan.offload == "model":
        pipe.enable_model_cpu_offload()
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(device)
    if plan.ff_chunk:
        pipe.unet.enable_forward_chunking(chunk_size=plan.ff_chunk, dim=1)


def measure(pipe: IDAnimatorPipeline, *, profile: str, plan: runtime.MemoryPlan, device: str, size: int,
            frames: int, steps: int, face_image) -> Measurement:
    step_times: list[float] = []

    def on_step(_pipe, _step, _t, tensors):
        if device == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter())
        return {}

    generator = torch.Generator(device="cpu").manual_seed(4993)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    output = pipe([face_image], PROMPT, num_frames=frames, height=size, width=size, num_inference_steps=steps,
                  guidance_scale=8.0, face_scale=0.8, generator=generator, output_type="np",
                  decode_chunk_size=plan.vae_decode_chunk, callback_on_step_end=on_step)
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - start
    per_step = float(np.median(np.diff(step_times))) if len(step_times) > 1 else total / steps
    return Measurement(profile=profile, plan=plan.describe(), device=device, size=size, frames=frames, steps=steps,
                       seconds_per_video=round(total, 3), seconds_per_unet_step=round(per_step, 4),
                       peak_vram_gb=round(runtime.peak_memory_gb(), 3), output_shape=list(output.frames.shape))


def run(profiles: list[str], *, tiny_mode: bool, size: int, frames: int, steps: int) -> list[Measurement]:
    from helpers import face

    face_image = face.prepare_face(tiny.synthetic_face_photo(), detector=tiny.FakeFaceDetector()).image
    if tiny_mode:
        pipe = tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        return [measure(pipe, profile="tiny", plan=runtime.plan_for(None), device="cpu", size=size, frames=frames,
                        steps=steps, face_image=face_image)]
    if not torch.cuda.is_available():
        raise SystemExit("The full-size benchmark needs a CUDA GPU; use --tiny on the CPU.")
    results = []
    for profile in profiles:
        if profile == "t4":
            total_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
            torch.cuda.set_per_process_memory_fraction(min(1.0, T4_CAP_GB / total_gb))
        else:
            torch.cuda.set_per_process_memory_fraction(1.0)
        plan = runtime.memory_plan("t4" if profile == "t4" else "large")
        pipe = full_size_pipeline("cpu" if plan.offload != "none" else "cuda", torch.float16)
        pipe.set_progress_bar_config(disable=True)
        apply_plan(pipe, plan, "cuda")
        results.append(measure(pipe, profile=profile, plan=plan, device="cuda", size=size, frames=frames,
                               steps=steps, face_image=face_image))
        del pipe
        torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random-weight packs on the CPU (smoke test)")
    parser.add_argument("--profiles", nargs="+", default=["large", "t4"], choices=["large", "t4"])
    parser.add_argument("--size", type=int, default=None, help="video side in pixels (512; 64 with --tiny)")
    parser.add_argument("--frames", type=int, default=None, help="frames (16; 4 with --tiny)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (30; 2 with --tiny)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    size = args.size or (64 if args.tiny else 512)
    frames = args.frames or (4 if args.tiny else 16)
    steps = args.steps or (2 if args.tiny else 30)
    results = [asdict(m) for m in run(args.profiles, tiny_mode=args.tiny, size=size, frames=frames, steps=steps)]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
