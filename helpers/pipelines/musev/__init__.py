"""MuseV (TMElyralab/MuseV) on stock diffusers: the video UNet, ReferenceNet, IP-Adapter projection and their loaders.

The models keep the attribute names of the original implementation, so the official checkpoints of the HF repo
``TMElyralab/MuseV`` load strictly. Everything here computes in the dtype the modules hold (fp16 on CUDA, fp32 on CPU).

Public API (the pipeline in ``pipeline.py`` builds on exactly this; the names below are importable from the package,
which loads the modules behind them only on first use)::

    from helpers.pipelines.musev import (
        MuseVUNet3DConditionModel, MuseVUNetOutput, MUSEV_VARIANTS, musev_unet_config, parse_musev_unet_config,
        MuseVReferenceNet, ReferenceNetOutput,
        build_image_projection, convert_image_projection_state_dict, image_prompt_tokens,
        load_musev_unet, load_referencenet, load_image_projection, default_device_and_dtype,
        build_musev_unet_on_meta, build_referencenet_on_meta, build_image_projection_on_meta,
    )

Video UNet (variants ``"musev"``, ``"musev_referencenet"``, ``"musev_referencenet_pose"``)::

    unet = load_musev_unet(unet_dir, base_model=sd15_dir)        # MuseV file first, then the SD1.5 spatial keys
    unet = load_musev_unet(unet_dir, base_model=sd15_dir, variant="musev_referencenet_pose")   # explicit variant
    out = unet(
        sample,                          # (B, 4, T, h, w); the clean condition latent(s) already inside, e.g. frame 0
        timestep,                        # number, 0-d tensor or (B,) tensor
        encoder_hidden_states,           # (B, L, D) text embeddings, repeated per frame inside
        condition_frame_index=[0],       # frames that reference-only attention attends to; None = plain self-attention
        motion_speed=8.0,                # frame positions x motion_speed (referencenet variants only; 8 t2v, 1 v2v)
        skip_temporal_layers=False,      # True for first-frame (text-to-image) generation with T = 1
        down_block_refer_embs=feats.down_block_refer_embs,   # referencenet variants: 12 x (B, C_i, 1, h_i, w_i)
        mid_block_refer_emb=feats.mid_block_refer_emb,       # (B, C, 1, h_m, w_m)
        ip_hidden_states=ip_tokens,      # (B, n_tokens, D) IP-Adapter tokens; None = no IP branch
        ip_adapter_scale=1.0,
        down_block_additional_residuals=None,   # ControlNet: 12 tensors, (B*T, C, h, w) or (B, C, T, h, w)
        mid_block_additional_residual=None,
    ).sample                             # (B, 4, T, h, w): noise prediction for every frame, condition frames included

    unet.is_referencenet_variant          # True when the model fuses ReferenceNet features and has IP-Adapter layers
    unet.set_temporal_attention_chunk_size(4096)    # temporal attention on at most 4096 per-pixel sequences at once
                                                    # (default 16384; None = all at once)

ReferenceNet (run once at t = 0 on the reference latent, IP tokens as context)::

    referencenet = load_referencenet(referencenet_dir)
    feats = referencenet(refer_latent, 0, encoder_hidden_states=ip_tokens)   # refer_latent (B, 4, h, w)
    feats.down_block_refer_embs, feats.mid_block_refer_emb                    # 12 x (B, C_i, 1, h_i, w_i), (B, C, 1, ..)

IP-Adapter image projection (CLIP ViT-H ``image_embeds`` -> 4 tokens of the text width)::

    image_proj = load_image_projection(ip_adapter_image_proj_file)
    uncond_tokens, cond_tokens = image_prompt_tokens(image_proj, clip_image_embeds)   # (N, E) -> 2 x (1, 4N, D)
    ip_tokens = torch.cat([uncond_tokens, cond_tokens])                               # [uncond, cond] CFG order

Loading rules: ``load_*`` accept a file or a folder (the role folder of ``weights.resolve``, which mirrors the HF repo,
or the model's own folder); ``.bin`` pickles load with ``weights_only=True``; fp16 safetensors converted beside them
are preferred. The default device/dtype is CUDA + fp16 when available, else CPU + fp32. Any mismatch between a
checkpoint and the model raises ``helpers.errors.StrictLoadError`` listing the keys.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule; resolved lazily so that light submodules (schedule, prompts, noise) import fast
_EXPORTS = {
    "MuseVUNet3DConditionModel": "unet",
    "MuseVUNetOutput": "unet",
    "MUSEV_VARIANTS": "unet_config",
    "musev_unet_config": "unet_config",
    "parse_musev_unet_config": "unet_config",
    "MuseVReferenceNet": "referencenet",
    "ReferenceNetOutput": "referencenet",
    "build_image_projection": "ip_adapter",
    "convert_image_projection_state_dict": "ip_adapter",
    "image_prompt_tokens": "ip_adapter",
    "load_musev_unet": "loading",
    "load_referencenet": "loading",
    "load_image_projection": "loading",
    "default_device_and_dtype": "loading",
    "build_musev_unet_on_meta": "loading",
    "build_referencenet_on_meta": "loading",
    "build_image_projection_on_meta": "loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
