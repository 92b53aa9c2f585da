"""Adding the pose features to a stock ``UNetSpatioTemporalConditionModel`` with one forward hook.

The released ControlNeXt-SVD UNets are the stock SVD UNet whose forward adds the pose features to one hidden
state. We reproduce that with a hook that is attached only while a call runs:

- v2: on the output of ``unet.down_blocks[0]`` (320 channels at latent/2). The block also returns its skip
  tensors, the last of which *is* that hidden state; the hook builds a new tensor and leaves the skips alone,
  so the up path still sees the uncontrolled skip.
- v1: on the input of ``unet.mid_block`` (1280 channels at latent/8).

In both, per sample (one frame of one guidance half) the features are shifted and scaled to the hidden state's
mean and unbiased standard deviation (taken over channels, height and width, before pooling), average-pooled to
the hidden state's size, multiplied by the per-sample strength and added:
v2 ``strength = scale · 0.2``, v1 ``strength = sigmoid(scale) · 1.3``.

>>> with inject_control(unet, "v2", features, scale):   # features [B*F, C, h', w'], scale [B*F]
...     noise_pred = unet(sample, t, encoder_hidden_states=emb, added_time_ids=ids).sample
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel

# Fixed constants of the released models ("control level" in the authors' notes).
V2_STRENGTH = 0.2
V1_STRENGTH = 1.3
STD_EPS = 1e-5


@dataclass(frozen=True)
class Control:
    """One UNet call's control: features ``[N, C, h, w]`` and the raw per-sample scale ``[N]`` (N = B·F)."""

    features: torch.Tensor
    scale: torch.Tensor


def add_matched_control(hidden: torch.Tensor, control: Control, version: str) -> torch.Tensor:
    """``hidden + pool(match(features)) · strength`` as a new tensor (statistics in float32, result in hidden's dtype)."""
    if control.features.shape[0] != hidden.shape[0] or control.scale.numel() != hidden.shape[0]:
        raise ValueError(
            f"control for {control.features.shape[0]} samples (scale {control.scale.numel()}) does not fit a UNet "
            f"batch of {hidden.shape[0]} frames"
        )
    h = hidden.float()
    c = control.features.to(device=hidden.device, dtype=torch.float32)
    dims = (1, 2, 3)
    mean_h, std_h = h.mean(dim=dims, keepdim=True), h.std(dim=dims, keepdim=True)
    mean_c, std_c = c.mean(dim=dims, keepdim=True), c.std(dim=dims, keepdim=True)
    c = (c - mean_c) * (std_h / (std_c + STD_EPS)) + mean_h
    c = F.adaptive_avg_pool2d(c, h.shape[-2:])
    # Kept as (c · scale) · constant rather than c · (scale · constant): the released forward multiplies in that order.
    raw = control.scale.to(device=hidden.device, dtype=torch.float32)
    if version == "v2":
        term = c * raw[:, None, None, None] * V2_STRENGTH
    else:
        term = c * torch.sigmoid(raw)[:, None, None, None] * V1_STRENGTH
    return (h + term).to(hidden.dtype)


@contextmanager
def inject_control(
    unet: UNetSpatioTemporalConditionModel, version: str, features: torch.Tensor, scale: torch.Tensor
) -> Iterator[None]:
    """Attach the control hook for the calls made inside the ``with`` block, and always remove it afterwards."""
    control = Control(features=features, scale=scale)

    if version == "v2":

        def after_first_down_block(module, args, output):
            hidden, skips = output
            # A new tensor: the skip tuple keeps the uncontrolled hidden state, as in the released model.
            return add_matched_control(hidden, control, version), skips

        handle = unet.down_blocks[0].register_forward_hook(after_first_down_block)
    elif version == "v1":

        def before_mid_block(module, args, kwargs):
            if "hidden_states" in kwargs:
                kwargs = {**kwargs, "hidden_states": add_matched_control(kwargs["hidden_states"], control, version)}
            else:
                args = (add_matched_control(args[0], control, version), *args[1:])
            return args, kwargs

        handle = unet.mid_block.register_forward_pre_hook(before_mid_block, with_kwargs=True)
    else:
        raise ValueError(f"version must be 'v1' or 'v2', not {version!r}")
    try:
        yield
    finally:
        handle.remove()
