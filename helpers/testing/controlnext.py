"""Tiny random-weight ControlNeXt-SVD packs in the real on-disk layout (tests and SMOKE mode).

Writes, under ``<root>/models/``:

- ``controlnext_svd_<version>/unet/<path in the source repo>``: a tiny SVD UNet as a torch pickle, like the
  released ``unet.bin`` (fp32 for v2, fp16 for v1); ``weights.resolve`` converts it to fp16 safetensors on first use;
- ``controlnext_svd_<version>/controlnext/<path>``: a tiny pose encoder pickle with the official key names;
- ``svd_xt_1_1/components/``: temporal VAE (downsampling by 8, like the real one), CLIP vision encoder with
  projection (224-pixel input, so the real 224×224 resize runs), scheduler and feature-extractor configs,
  ``model_index.json`` and ``unet/config.json`` (the tiny UNet's config; the real repo ships its own).

So ``load_pipeline(root, version=...)`` runs the real resolution, conversion and strict loading code.

>>> root = write_tiny_controlnext_packs(tmp_path, version="v2")
>>> pipe = load_pipeline(root, version="v2", device="cpu", dtype=torch.float32)
>>> pipe(ref, poses, height=64, width=64, frames_per_window=4, overlap=2, num_inference_steps=2)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import registry
from helpers.testing import common

# The tiny UNet: 32 channels at the v2 injection site (latent/2), 64 at the v1 site (latent/4, before the mid block).
TINY_UNET_CONFIG = dict(
    sample_size=32, in_channels=8, out_channels=4,
    down_block_types=["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
    up_block_types=["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
    block_out_channels=[32, 64], addition_time_embed_dim=32, projection_class_embeddings_input_dim=96,
    layers_per_block=1, cross_attention_dim=32, transformer_layers_per_block=1, num_attention_heads=[4, 8],
    num_frames=25,
)


def tiny_encoder_config(version: str) -> dict:
    """A tiny pose encoder whose group counts equal the released ones (so widths can be read back from keys)."""
    if version == "v2":
        stages = dict(stage_in_channels=[16, 16], stage_out_channels=[16, 32], stage_norm_groups=[4, 8])
        out = TINY_UNET_CONFIG["block_out_channels"][0]
    elif version == "v1":
        stages = dict(stage_in_channels=[16, 16, 32], stage_out_channels=[16, 32, 32], stage_norm_groups=[4, 8, 8])
        out = TINY_UNET_CONFIG["block_out_channels"][-1]
    else:
        raise ValueError(f"version must be 'v1' or 'v2', not {version!r}")
    return dict(variant=version, time_proj_channels=128, time_embed_dim=32, embedding_channels=[8, 8, 16],
                embedding_norm_groups=2, embedding_maxpool=version == "v1", mid_norm_groups=8, output_channels=out,
                scale_is_parameter=version == "v1", **stages)


def _entry_path(root: Path, pack: str, role: str) -> Path:
    """Where the first (official) candidate of a role puts its entry file."""
    entry = registry.PACKS[pack].roles[role].candidates[0].entry
    return root / "models" / pack / role / entry


def write_tiny_svd_components(folder: Path, *, seed: int = 0) -> Path:
    """The SVD-XT 1.1 folder without UNet weights, with tiny random weights (see the module docstring)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler

    folder = Path(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=1,
        latent_channels=4, in_channels=3, out_channels=3,
    )
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    common.write_clip_vision(folder / "image_encoder", hidden_size=32, projection_dim=32, image_size=224,
                             patch_size=32, seed=seed)
    common.write_image_processor(folder / "feature_extractor", 224)
    EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
        sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous", steps_offset=1,
    ).save_pretrained(folder / "scheduler")
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "unet" / "config.json").write_text(
        json.dumps({"_class_name": "UNetSpatioTemporalConditionModel", **TINY_UNET_CONFIG}, indent=2)
    )
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }, indent=2))
    return folder


def write_tiny_controlnext_packs(root: Path | str, version: str = "v2", *, seed: int = 0) -> Path:
    """Write the three roles a ControlNeXt-SVD pipeline needs under ``root`` (skipping those already there).

    Returns ``root``; pass it to ``load_pipeline`` (or set ``HV_ROOT`` to it).
    """
    from diffusers import UNetSpatioTemporalConditionModel

    from helpers.pipelines.controlnext_svd.encoder import ControlNeXtEncoder

    root = Path(root)
    pack = f"controlnext_svd_{version}"
    file_dtype = torch.float32 if version == "v2" else torch.float16  # as released

    unet_file = _entry_path(root, pack, "unet")
    if not unet_file.is_file():
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)
        unet_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.to(file_dtype) for k, v in unet.state_dict().items()}, unet_file)

    encoder_file = _entry_path(root, pack, "controlnext")
    if not encoder_file.is_file():
        torch.manual_seed(seed + 1)
        encoder = ControlNeXtEncoder(**tiny_encoder_config(version))
        if version == "v1":
            with torch.no_grad():
                encoder.scale.fill_(0.5)  # a trained-looking value, not the initial 1.0
        encoder_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(encoder.state_dict()), encoder_file)

    components = _entry_path(root, "svd_xt_1_1", "components")
    if not (components / "model_index.json").is_file():
        write_tiny_svd_components(components, seed=seed + 2)
    return root
