"""Tiny random-weight packs for the zero-shot pose-video method, in the real on-disk layout.

``write_tiny_zero_shot_packs(root)`` writes

- ``<root>/models/sd21/base/``: an SD2-style pipeline folder standing in for SD2.1-base (epsilon DDIM, linear
  transformer projections, a 32-wide text encoder standing in for the 1024-wide OpenCLIP one; the VAE downsamples
  by 2);
- ``<root>/models/sd21/base_768/``: the same model with a v-prediction scheduler, standing in for SD2.1-768;
- ``<root>/models/controlnet_sd21_openpose/controlnet/``: a ControlNet matching that UNet.

The real loader (``load_zero_shot_pipeline``) then runs unchanged on them.

>>> paths = write_tiny_zero_shot_packs(tmp_path)
>>> pipe = load_zero_shot_pipeline(base_dir=paths["base"], controlnet_path=paths["controlnet"])

``write_tiny_controlnet_single_file`` writes a ControlNet in the *original* (LDM) key layout as one safetensors file,
with the config that converts it, to exercise the single-file route.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers.testing import common

TINY_CROSS_ATTENTION_DIM = 32  # stands in for SD2.1's 1024


def write_tiny_zero_shot_packs(root: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Write both tiny packs under ``root/models`` and return ``{"base": folder, "base_768": folder,
    "controlnet": folder}`` (the two base folders hold the same weights, epsilon and v-prediction)."""
    models = Path(root) / "models"
    base = common.write_sd_folder(models / "sd21" / "base", cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
                                  v_prediction=False, linear_projection=True, seed=seed)
    base_768 = common.write_sd_folder(models / "sd21" / "base_768", cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
                                      v_prediction=True, linear_projection=True, seed=seed)
    controlnet = common.write_controlnet(models / "controlnet_sd21_openpose" / "controlnet",
                                         cross_attention_dim=TINY_CROSS_ATTENTION_DIM, linear_projection=True,
                                         seed=seed + 1)
    wake_zero_convolutions(controlnet / "diffusion_pytorch_model.safetensors", seed=seed + 2)
    return {"base": base, "base_768": base_768, "controlnet": controlnet}


def wake_zero_convolutions(weights_file: Path, *, seed: int = 0, scale: float = 0.2) -> None:
    """Give a freshly initialised ControlNet's zero convolutions random weights, in place.

    A new ControlNet starts with all-zero output convolutions, so its pose would change nothing; a trained one does
    not. Tests of pose-dependent behaviour need the pose to matter.
    """
    from safetensors.torch import load_file, save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = load_file(str(weights_file))
    for name, tensor in tensors.items():
        if not tensor.any():
            tensors[name] = (torch.randn(tensor.shape, generator=generator) * scale).to(tensor.dtype)
    save_file(tensors, str(weights_file), metadata={"format": "pt"})


#: A ControlNet whose hint embedding has the original's 8 convolutions (indices 0-14 in the LDM layout), which the
#: single-file converter expects; its 8x hint downsampling does not fit the tiny VAE, so it is for loading tests only.
TINY_SINGLE_FILE_CONFIG = dict(
    block_out_channels=[8, 16], layers_per_block=1, in_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
    conditioning_embedding_out_channels=[4, 4, 4, 4], norm_num_groups=4, attention_head_dim=2,
    use_linear_projection=True,
)

_RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                  ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))


def original_controlnet_name(name: str, layers_per_block: int) -> str:
    """One diffusers ControlNet parameter name → its name in the original ControlLDM layout."""
    def resnet(rest: str) -> str:
        for diffusers_part, ldm_part in _RESNET_TO_LDM:
            if rest.startswith(diffusers_part + "."):
                return ldm_part + rest[len(diffusers_part):]
        raise KeyError(name)

    parts = name.split(".")
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "controlnet_cond_embedding.conv_in": "input_hint_block.0",
             "controlnet_cond_embedding.conv_out": "input_hint_block.14", "controlnet_mid_block": "middle_block_out.0"}
    stem, leaf = ".".join(parts[:-1]), parts[-1]
    if stem in fixed:
        return f"{fixed[stem]}.{leaf}"
    if parts[0] == "controlnet_cond_embedding":  # blocks.j → input_hint_block.2(j+1)
        return f"input_hint_block.{2 * (int(parts[2]) + 1)}.{leaf}"
    if parts[0] == "controlnet_down_blocks":
        return f"zero_convs.{parts[1]}.0.{leaf}"
    if parts[0] == "down_blocks":
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        first = 1 + block * (layers_per_block + 1)
        if kind == "downsamplers":
            return f"input_blocks.{first + layers_per_block}.0.op.{leaf}"
        if kind == "resnets":
            return f"input_blocks.{first + index}.0.{resnet(rest)}"
        return f"input_blocks.{first + index}.1.{rest}"
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * index}.{resnet(rest)}"
    raise KeyError(name)


def write_tiny_controlnet_single_file(path: str | Path, *, seed: int = 0,
                                      prefix: str = "control_model.") -> tuple[Path, dict, dict]:
    """Write a tiny ControlNet as one original-layout safetensors file.

    Returns ``(path, config, diffusers_state_dict)``: the config converts it, the state dict is what loading must give.
    """
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = ControlNetModel(**TINY_SINGLE_FILE_CONFIG).eval()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    ldm = {prefix + original_controlnet_name(k, TINY_SINGLE_FILE_CONFIG["layers_per_block"]): v
           for k, v in state.items()}
    if len(ldm) != len(state):
        raise RuntimeError("two ControlNet parameters mapped to one original name")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm, str(path))
    return path, dict(TINY_SINGLE_FILE_CONFIG), state


def stick_figure_poses(num_frames: int, size: int = 32, *, seed: int = 0) -> np.ndarray:
    """``[F, size, size, 3]`` uint8 stand-ins for pose renders: a coloured bar that moves across the frames."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    colour = rng.integers(64, 256, size=3, dtype=np.uint8)
    for i in range(num_frames):
        x = (size // 4 + i * max(1, size // (2 * max(num_frames, 1)))) % (size - 4)
        frames[i, size // 4: 3 * size // 4, x:x + 3] = colour
        frames[i, size // 4: size // 4 + 3, max(0, x - 6):x + 9] = colour[::-1]
    return frames
