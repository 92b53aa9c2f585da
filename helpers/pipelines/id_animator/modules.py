"""The small pieces that make stock AnimateDiff compute what ID-Animator computes.

* ``PerFrameGroupNorm`` / ``set_motion_groupnorm``: original AnimateDiff normalises the motion-module input per frame;
  diffusers' ``AnimateDiffTransformer3D`` pools GroupNorm statistics over all frames. Same weights, other outputs.
* ``FaceTokenMixer``: ID-Animator mixes identities by averaging the 16 face tokens of several reference faces;
  diffusers' default for several images of one IP-Adapter concatenates them inside one softmax.
* ``make_ddim_scheduler``: DDIM exactly as ID-Animator configures it (linear betas, ``leading`` spacing).

>>> set_motion_groupnorm(pipe.unet, per_frame=True)
>>> install_face_token_mixer(pipe.unet, mode="mean")
>>> pipe.scheduler = make_ddim_scheduler()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from diffusers import DDIMScheduler
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

IdentityMixing = Literal["mean", "concat"]

# ID-Animator's inference config; every other value is the library default the original ran with.
DDIM_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def make_ddim_scheduler(**overrides) -> DDIMScheduler:
    """DDIM as ID-Animator runs it: 30 steps give timesteps 958, 925, ..., 34, 1.

    >>> make_ddim_scheduler().set_timesteps(30)
    """
    return DDIMScheduler(**{**DDIM_CONFIG, **overrides})


class PerFrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to every frame of a ``[B, C, F, H, W]`` tensor on its own (statistics per frame).

    Holds the same ``weight``/``bias`` as the GroupNorm it replaces, so state dicts are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)
        batch, channels, frames, height, width = x.shape
        per_frame = x.transpose(1, 2).reshape(batch * frames, channels, height, width)
        normed = super().forward(per_frame)
        return normed.reshape(batch, frames, channels, height, width).transpose(1, 2)


def _regroup(norm: nn.GroupNorm, cls: type[nn.GroupNorm]) -> nn.GroupNorm:
    """A ``cls`` GroupNorm sharing ``norm``'s parameters (no copy: same device, dtype and values)."""
    new = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=False)
    if norm.affine:
        new.affine = True
        new.weight, new.bias = norm.weight, norm.bias
    return new


def set_motion_groupnorm(model: nn.Module, *, per_frame: bool) -> int:
    """Switch the input GroupNorm of every motion module in ``model`` (UNet or SparseCtrl) between per-frame
    statistics (original AnimateDiff, ``per_frame=True``) and statistics over all frames (stock diffusers).

    Returns how many motion modules were switched.
    """
    cls = PerFrameGroupNorm if per_frame else nn.GroupNorm
    count = 0
    for module in model.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            if type(module.norm) is not cls:
                module.norm = _regroup(module.norm, cls)
            count += 1
    return count


def mix_face_tokens(tokens: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, N, T, D]`` token sets of N references -> ``[B, 1, T, D]`` (weighted) mean over the references."""
    if weights is None:
        return tokens.mean(dim=1, keepdim=True)
    weights = weights.to(device=tokens.device, dtype=tokens.dtype).view(1, -1, 1, 1)
    return (tokens * weights).sum(dim=1, keepdim=True)


def normalized_reference_weights(weights: Sequence[float] | None, count: int) -> torch.Tensor | None:
    """Mix weights for ``count`` references scaled to sum 1 (None: plain mean). Callers validate the values."""
    if weights is None:
        return None
    tensor = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    return (tensor / tensor.sum()).float()


class FaceTokenMixer(MultiIPAdapterImageProjection):
    """The IP-Adapter projection of the UNet, plus identity mixing of several reference faces.

    ``mode="mean"`` (ID-Animator): project each reference's CLIP features to 16 tokens, then average the token sets
    (weighted by ``reference_weights`` when set). ``mode="concat"``: diffusers' behaviour (all tokens side by side).
    Keeps the ``image_projection_layers`` attribute, so state-dict keys do not change.
    """

    def __init__(self, layers: Sequence[nn.Module], mode: IdentityMixing = "mean"):
        super().__init__(list(layers))
        self.mode: IdentityMixing = mode
        self.reference_weights: torch.Tensor | None = None

    def forward(self, image_embeds: list[torch.Tensor]) -> list[torch.Tensor]:
        projected = super().forward(image_embeds)
        if self.mode == "concat":
            return projected
        return [mix_face_tokens(tokens, self.reference_weights) for tokens in projected]


def install_face_token_mixer(unet: nn.Module, mode: IdentityMixing = "mean") -> FaceTokenMixer:
    """Wrap the UNet's loaded IP-Adapter projection (after ``load_ip_adapter``) in a ``FaceTokenMixer``."""
    current = unet.encoder_hid_proj
    if isinstance(current, FaceTokenMixer):
        current.mode = mode
        return current
    if not isinstance(current, MultiIPAdapterImageProjection):
        raise ValueError("load the face adapter (load_ip_adapter) before installing the face-token mixer")
    mixer = FaceTokenMixer(current.image_projection_layers, mode)
    unet.encoder_hid_proj = mixer
    return mixer
