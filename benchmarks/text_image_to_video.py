"""MuseV image-to-video speed and memory, on full-size random-weight models in fp16.

GPU only at full size (never in CI). Settings (the original's published ones: Euler, 10 steps, guidance 3.5,
windows of 12 frames overlapping by 4):

- ``musev_12``: the ``musev`` UNet, 512×512, 12 frames after the condition frame;
- ``referencenet_12``: ``musev_referencenet`` (ReferenceNet + IP-Adapter + CLIP ViT-H), 512×512, 12 frames;
- ``referencenet_120``: the same for a 120-frame parallel-denoising run (15 windows per step); its peak VRAM should
  stay close to the 12-frame run's, since only one window is on the UNet at a time;
- video-to-video (an SD1.5 ControlNet on every window, motion speed 1 as the original's video2video):
  ``pose_12`` / ``pose_96`` (``musev_referencenet_pose`` + OpenPose ControlNet, ``video_middle``: control frames
  only; 12 frames and a 96-frame parallel run) and ``v2v_12`` (``musev`` + ControlNet, ``which2video="video"``: the
  source frames VAE-encoded and noised).

Profiles: ``large`` (everything resident) and ``t4`` (the T4 memory plan, this process capped at 15 GiB with
``torch.cuda.set_per_process_memory_fraction``: memory is representative of a 16 GB T4, speed is not). Reported per
run: seconds per output frame, seconds per UNet call (one window at one step, both guidance halves), decode seconds,
peak VRAM. ``--tiny`` runs the same code on the CPU with tiny random packs written to a temporary folder and loaded
through the real loaders (64×64, short windows, 2 steps).

    python benchmarks/text_image_to_video.py                               # all settings, both profiles
    python benchmarks/text_image_to_video.py --settings referencenet_120 --profiles t4 --json bench.json
    python benchmarks/text_image_to_video.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from helpers import runtime  # noqa: E402
from helpers.pipelines.musev.controlnet import MuseVControlNetPipeline  # noqa: E402
from helpers.pipelines.musev.pipeline import MuseVPipeline, load_musev_pipeline  # noqa: E402

# Full-size configurations of the parts MuseV runs on (SD1.5 VAE and CLIP-L text encoder, CLIP ViT-H/14).
SD15_VAE_CONFIG = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                       down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                       sample_size=512, scaling_factor=0.18215)
SD15_TEXT_CONFIG = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
VIT_H_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
SD15_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                             beta_schedule="scaled_linear", steps_offset=1)
PROMPT = "(masterpiece, best quality, highres:1), a girl is smiling, (eye blinks:1.8), (head wave:1.3)"
T4_CAP_GIB = 15.0


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    variant: str
    size: int
    frames: int
    steps: int = 10
    context_frames: int = 12
    context_overlap: int = 4
    which2video: str = ""  # "" image-to-video; "video_middle" / "video": with a ControlNet


SETTINGS = {s.name: s for s in (
    Setting("musev_12", "musev", 512, 12),
    Setting("referencenet_12", "musev_referencenet", 512, 12),
    Setting("referencenet_120", "musev_referencenet", 512, 120),
    Setting("pose_12", "musev_referencenet_pose", 512, 12, which2video="video_middle"),
    Setting("pose_96", "musev_referencenet_pose", 512, 96, which2video="video_middle"),
    Setting("v2v_12", "musev", 512, 12, which2video="video"),
)}
_TINY = dict(steps=2, context_frames=4, context_overlap=2)
TINY_SETTINGS = {s.name: s for s in (
    Setting("musev_12", "musev", 64, 4, **_TINY),
    Setting("referencenet_12", "musev_referencenet", 64, 4, **_TINY),
    Setting("referencenet_120", "musev_referencenet", 64, 12, **_TINY),
    Setting("pose_12", "musev_referencenet_pose", 64, 4, which2video="video_middle", **_TINY),
    Setting("pose_96", "musev_referencenet_pose", 64, 12, which2video="video_middle", **_TINY),
    Setting("v2v_12", "musev", 64, 4, which2video="video", **_TINY),
)}


@dataclasses.dataclass
class Measurement:
    setting: str
    profile: str
    plan: str
    device: str
    size: int
    frames_out: int
    steps: int
    unet_calls: int
    seconds_total: float
    seconds_per_frame: float
    seconds_per_unet_call: float
    seconds_decode: float
    peak_vram_gb: float
    output_shape: list[int]


def full_size_pipeline(variant: str, device: str, dtype: torch.dtype, *, controlnet: bool = False) -> MuseVPipeline:
    """Every official architecture at full size with random weights (the speed and memory of the real models);
    ``controlnet``: with an SD1.5 ControlNet (the config of ``control_v11p_sd15_openpose``)."""
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from helpers.pipelines.musev import (
        MuseVReferenceNet,
        MuseVUNet3DConditionModel,
        build_image_projection,
        musev_unet_config,
    )
    from helpers.pipelines.musev.loading import REFERENCENET_SD15_CONFIG
    from helpers.testing import common

    torch.manual_seed(0)

    def build(make):  # built straight in the target dtype and device: no fp32 copy on the way
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                return make().eval().requires_grad_(False)
        finally:
            torch.set_default_dtype(default)

    extras = {}
    if variant != "musev":
        extras = dict(
            referencenet=build(lambda: MuseVReferenceNet(**REFERENCENET_SD15_CONFIG)),
            image_encoder=build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H_CONFIG))),
            feature_extractor=CLIPImageProcessor(),
            image_proj=build(lambda: build_image_projection(1024, 768, 4)),
        )
    pipe_class = MuseVPipeline
    if controlnet:
        extras["controlnet"] = build(lambda: ControlNetModel(cross_attention_dim=768))
        pipe_class = MuseVControlNetPipeline
    tokenizer = common.load_clip_tokenizer(common.write_clip_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer"))
    return pipe_class(
        vae=build(lambda: AutoencoderKL(**SD15_VAE_CONFIG)),
        text_encoder=build(lambda: CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))),
        tokenizer=tokenizer,
        unet=build(lambda: MuseVUNet3DConditionModel(**musev_unet_config(variant))),
        scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER_CONFIG),
        **extras,
    )


def condition_image(size: int) -> np.ndarray:
    """A smooth synthetic photo-like image (gradients and a disc), uint8."""
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.08).astype(np.float32)
    rgb = np.stack([0.3 + 0.5 * x, 0.2 + 0.6 * y, 0.5 + 0.4 * disc], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def moving_frames(size: int, count: int, *, pose: bool) -> np.ndarray:
    """Synthetic video frames, uint8 ``(count, size, size, 3)``: a disc moving left to right, as a white stick
    figure on black (``pose``, what a pose ControlNet reads) or over the condition image's gradients."""
    y, x = np.mgrid[0:size, 0:size] / size
    frames = []
    for i in range(count):
        cx = 0.3 + 0.4 * i / max(count - 1, 1)
        disc = ((x - cx) ** 2 + (y - 0.45) ** 2 < 0.02) | ((abs(x - cx) < 0.01) & (y > 0.45) & (y < 0.85))
        base = np.zeros((size, size, 3), np.uint8) if pose else condition_image(size)
        base[disc] = 255
        frames.append(base)
    return np.stack(frames)


def measure(pipe: MuseVPipeline, setting: Setting, *, profile: str, plan: runtime.MemoryPlan,
            device: str) -> Measurement:
    stamps: dict[str, list[float]] = {"denoise": [], "decode": []}

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def progress(stage: str, done: int, total: int) -> None:
        if stage in stamps:
            sync()
            stamps[stage].append(time.perf_counter())

    control = {}
    if setting.which2video:  # inputs made before the clock starts, as the task hands them over
        control = dict(control_frames=moving_frames(setting.size, 1 + setting.frames, pose=True), motion_speed=1,
                       video=moving_frames(setting.size, setting.frames + 1, pose=False)[1:]
                       if setting.which2video == "video" else None)
    runtime.reset_peak_memory()
    sync()
    start = time.perf_counter()
    out = pipe(PROMPT, condition_image(setting.size), time_size=setting.frames, num_inference_steps=setting.steps,
               context_frames=setting.context_frames, context_overlap=setting.context_overlap,
               generator=torch.Generator().manual_seed(1234), decode_chunk_size=plan.vae_decode_chunk,
               progress=progress, **control)
    sync()
    total = time.perf_counter() - start
    calls = stamps["denoise"]
    per_call = float(np.median(np.diff(calls))) if len(calls) > 1 else total
    decode = stamps["decode"][-1] - calls[-1] if calls and stamps["decode"] else 0.0
    frames = out.frames.shape[0]
    return Measurement(
        setting=setting.name, profile=profile, plan=plan.describe(), device=device, size=setting.size,
        frames_out=frames, steps=setting.steps, unet_calls=len(calls), seconds_total=round(total, 3),
        seconds_per_frame=round(total / frames, 4), seconds_per_unet_call=round(per_call, 4),
        seconds_decode=round(decode, 3), peak_vram_gb=round(runtime.peak_memory_gb(), 3),
        output_shape=list(out.frames.shape),
    )


def apply_plan(pipe: MuseVPipeline, plan: runtime.MemoryPlan, device: str) -> None:
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)


def run(setting_names: list[str], profiles: list[str], *, tiny_mode: bool) -> list[Measurement]:
    if tiny_mode:
        from helpers.testing.musev import write_tiny_musev_packs

        root = write_tiny_musev_packs(Path(tempfile.mkdtemp()), pose=True, controlnets=("controlnet_openpose",))
        pipes = {}
        results = []
        for name in setting_names:
            setting = TINY_SETTINGS[name]
            key = (setting.variant, bool(setting.which2video))
            if key not in pipes:
                pipes[key] = load_musev_pipeline(setting.variant, root=root, device="cpu", dtype=torch.float32,
                                                 controlnet="controlnet_openpose" if key[1] else None)
            results.append(measure(pipes[key], setting, profile="tiny", plan=runtime.plan_for(None), device="cpu"))
        return results
    if not torch.cuda.is_available():
        raise SystemExit("The full-size benchmark needs a CUDA GPU; use --tiny on the CPU.")
    results = []
    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    for profile in profiles:
        torch.cuda.set_per_process_memory_fraction(min(1.0, T4_CAP_GIB / total_gib) if profile == "t4" else 1.0)
        plan = runtime.memory_plan("t4" if profile == "t4" else "large")
        for key in dict.fromkeys((SETTINGS[name].variant, bool(SETTINGS[name].which2video)) for name in setting_names):
            pipe = full_size_pipeline(key[0], "cpu" if plan.offload != "none" else "cuda", torch.float16,
                                      controlnet=key[1])
            apply_plan(pipe, plan, "cuda")
            for name in setting_names:
                if (SETTINGS[name].variant, bool(SETTINGS[name].which2video)) == key:
                    results.append(measure(pipe, SETTINGS[name], profile=profile, plan=plan, device="cuda"))
            del pipe
            gc.collect()
            torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random-weight packs on the CPU (smoke test)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--profiles", nargs="+", default=["large", "t4"], choices=["large", "t4"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    results = [dataclasses.asdict(m) for m in run(args.settings, args.profiles, tiny_mode=args.tiny)]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
