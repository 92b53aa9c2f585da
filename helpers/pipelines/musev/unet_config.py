"""Configurations of the MuseV video UNet: the published variants and the reader of the original ``config.json``.

The effective configuration of an official model is its ``config.json`` overridden by the original loader's keyword
arguments; ``MUSEV_VARIANTS`` holds that result for the three released UNets. ``parse_musev_unet_config`` turns an
original ``config.json`` (or the constructor arguments of the original class) into the keyword arguments of
``MuseVUNet3DConditionModel``, refusing settings this implementation does not reproduce.

    >>> cfg = musev_unet_config("musev_referencenet")
    >>> cfg["need_refer_emb"], cfg["block_out_channels"]
    (True, (320, 640, 1280, 1280))
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

SD15_LAYOUT: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1.0,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,  # SD1.x convention: this is the number of heads
}

_MUSEV_FLAGS: dict[str, Any] = {
    "need_transformer_in": True,
    "need_t2i_ip_adapter": True,
    "keep_vision_condtion": False,
    "use_anivv1_cfg": False,
    "resnet_2d_skip_time_act": False,
    "need_refer_emb": False,
    "ip_adapter_cross_attn": False,
}
_REFERENCENET_FLAGS: dict[str, Any] = {
    "need_transformer_in": False,
    "need_t2i_ip_adapter": True,
    "keep_vision_condtion": True,
    "use_anivv1_cfg": True,
    "resnet_2d_skip_time_act": True,
    "need_refer_emb": True,
    "ip_adapter_cross_attn": True,
}

MUSEV_VARIANTS: dict[str, dict[str, Any]] = {
    "musev": {**SD15_LAYOUT, **_MUSEV_FLAGS},
    "musev_referencenet": {**SD15_LAYOUT, **_REFERENCENET_FLAGS},
    "musev_referencenet_pose": {**SD15_LAYOUT, **_REFERENCENET_FLAGS},  # same architecture, other weights
}

MODEL_KEYS = tuple(MUSEV_VARIANTS["musev"])

# Original settings that build nothing or are never read (verified on the original implementation).
_INERT_KEYS = {
    "need_adain_temporal_cond",  # its AdaIN returns the input unchanged for the 4-D tensors it receives
    "norm_spatial_length",  # only read when need_spatial_position_emb is True
    "spatial_max_length",
    "need_zero_vis_cond_temb",  # documented upstream as an invalid parameter; unused
    "sample_size",
    "t2i_ip_adapter_attn_processor",  # checked below: must be a parameter-free ("NonParam") processor
    "t2i_crossattn_ip_adapter_attn_processor",  # the IP processor kind; ip_adapter_cross_attn decides
    "temporal_conv_block_kwargs",
    "dropout",
}

# Original settings that must keep these values (anything else would build a different network).
_REQUIRED_VALUES: dict[str, tuple[Any, ...]] = {
    "temporal_conv_block": ("TemporalConvLayer",),
    "temporal_transformer": ("TransformerTemporalModel",),
    "need_spatial_position_emb": (False, None),
    "need_t2i_facein": (False, None),
    "need_t2i_ip_adapter_face": (False, None),
    "need_vis_cond_mask": (False, None),
    "flip_sin_to_cos": (True, None),
    "freq_shift": (0, None),
    "center_input_sample": (False, None),
    "use_linear_projection": (False, None),
    "upcast_attention": (False, None),
    "only_cross_attention": (False, None),
    "dual_cross_attention": (False, None),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "addition_embed_type": (None,),
    "encoder_hid_dim": (None,),
    "time_cond_proj_dim": (None,),
    "resnet_time_scale_shift": ("default", None),
    "time_embedding_type": ("positional", None),
    "conv_in_kernel": (3, None),
    "conv_out_kernel": (3, None),
    "transformer_layers_per_block": (1, None),
    "num_attention_heads": (None,),
    "mid_block_type": ("UNetMidBlock3DCrossAttn", "UNetMidBlock2DCrossAttn", None),
    "pose_guider_emb": (None, False),
}


def musev_unet_config(variant: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments of ``MuseVUNet3DConditionModel`` for a released variant (full size unless overridden)."""
    if variant not in MUSEV_VARIANTS:
        raise ValueError(f"unknown MuseV UNet variant {variant!r}; choose one of {sorted(MUSEV_VARIANTS)}")
    unknown = set(overrides) - set(MODEL_KEYS)
    if unknown:
        raise ValueError(f"unknown MuseV UNet settings: {sorted(unknown)}")
    return {**MUSEV_VARIANTS[variant], **overrides}


def _as_3d_block_name(name: str) -> str:
    # The original loader builds the video UNet from 2-D configs by renaming the block types.
    return name.replace("2D", "3D")


def parse_musev_unet_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of ``MuseVUNet3DConditionModel`` from an original MuseV UNet ``config.json``.

    Keys the model uses are taken; inert original settings are dropped; settings that would change the network
    must keep their SD1.5/MuseV values, otherwise ``ValueError`` names them. Unknown keys are logged and ignored.
    """
    kwargs: dict[str, Any] = {}
    wrong: list[str] = []
    unknown: list[str] = []
    for key, value in raw.items():
        if key.startswith("_") or key in _INERT_KEYS:
            continue
        if key in _REQUIRED_VALUES:
            if value not in _REQUIRED_VALUES[key]:
                wrong.append(f"{key}={value!r}")
        elif key in MODEL_KEYS:
            kwargs[key] = value
        else:
            unknown.append(key)
    if raw.get("need_t2i_ip_adapter") and "NonParam" not in str(raw.get("t2i_ip_adapter_attn_processor", "NonParam")):
        wrong.append(f"t2i_ip_adapter_attn_processor={raw['t2i_ip_adapter_attn_processor']!r}")
    if not isinstance(kwargs.get("attention_head_dim", 8), int):
        wrong.append(f"attention_head_dim={kwargs['attention_head_dim']!r}")
    if kwargs.get("act_fn", "silu") not in ("silu", "swish"):
        wrong.append(f"act_fn={kwargs['act_fn']!r}")
    if wrong:
        raise ValueError("unsupported MuseV UNet configuration: " + ", ".join(wrong))
    if unknown:
        logger.warning("MuseV UNet config: ignoring unknown settings %s", sorted(unknown))
    for key in ("down_block_types", "up_block_types"):
        if key in kwargs:
            kwargs[key] = tuple(_as_3d_block_name(name) for name in kwargs[key])
    if "block_out_channels" in kwargs:
        kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
    kwargs["act_fn"] = "silu"
    return {**SD15_LAYOUT, **_MUSEV_FLAGS, **kwargs}
