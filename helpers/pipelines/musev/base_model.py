"""What kind of Stable Diffusion model a base model file or folder holds, read from its config or file header
without loading it: the cross-attention width of its UNet (768 for SD1.5, 1024 for SD2.x, 2048 for SDXL).

>>> text_width(Path("realisticVision_v51.safetensors"))
768
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.errors import InputError

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
CROSS_ATTENTION_KEYS = ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",  # diffusers names
                         "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")  # original


def text_width(path: Path) -> int:
    """Cross-attention width of the UNet in an SD model folder or file (768 for SD1.5), read from its config or
    its file header; ``InputError`` when it holds no such UNet."""
    what = f"base model {path.name}"
    if path.is_dir():
        for config in (path / "unet" / "config.json", path / "config.json"):
            if config.is_file():
                width = json.loads(config.read_text()).get("cross_attention_dim")
                if isinstance(width, int):
                    return width
        raise InputError(f"{what} is not a diffusers SD1.5 folder (no unet/config.json): give the model's folder or "
                         "one .safetensors/.ckpt file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                shapes = {k: handle.get_slice(k).get_shape() for k in CROSS_ATTENTION_KEYS if k in handle.keys()}
        elif suffix in PICKLE_SUFFIXES:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # an original LDM .ckpt
                state = state["state_dict"]
            shapes = {k: list(state[k].shape) for k in CROSS_ATTENTION_KEYS if isinstance(state, dict) and k in state}
        else:
            raise InputError(f"{what}: unknown format {suffix or '(no suffix)'}: give a diffusers folder or a "
                             ".safetensors/.ckpt file")
    except InputError:
        raise
    except Exception as exc:  # a damaged or foreign file
        raise InputError(f"cannot read {what} ({type(exc).__name__}): give an SD1.5 .safetensors/.ckpt file or a "
                         "diffusers folder") from None
    if not shapes:
        raise InputError(f"{what} holds no SD1.5 UNet (a LoRA or an SDXL/SD2 file?): give a full SD1.5 model")
    return int(next(iter(shapes.values()))[1])
