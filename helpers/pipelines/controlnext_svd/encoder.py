"""The ControlNeXt pose encoder (v1 and v2) with the official attribute names, so official files load strictly.

The encoder turns pose frames in [0, 1] into feature maps that are later added to one hidden state of the SVD
UNet (see ``injection.py``). Both released versions share one layout; they differ in the number of stages, an
extra max-pool after the stem, the output width (UNet ``block_out_channels[0]`` for v2, ``[-1]`` for v1) and a
learned 0-d ``scale`` parameter (v1 only).

>>> enc = ControlNeXtEncoder.from_state_dict(state_dict)          # widths and version read from the keys
>>> enc.config.variant
'v2'
>>> features = enc(poses, timestep)                               # poses [B, F, 3, H, W] -> [B*F, C, h', w']
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from helpers.errors import StrictLoadError, check_strict_load

# GroupNorm group counts are not visible in a checkpoint's shapes; these are the released model's values (the same
# for v1 and v2): the stem uses 2 groups, stage i uses STAGE_NORM_GROUPS[i], the mid convolutions 8.
EMBEDDING_NORM_GROUPS = 2
STAGE_NORM_GROUPS = (4, 8, 8)
MID_NORM_GROUPS = 8

# The official pose encoders, as configuration dictionaries of ``ControlNeXtEncoder``.
OFFICIAL_V2 = dict(
    variant="v2", time_proj_channels=128, time_embed_dim=256, embedding_channels=(64, 64, 128),
    embedding_norm_groups=2, embedding_maxpool=False, stage_in_channels=(128, 128), stage_out_channels=(128, 256),
    stage_norm_groups=(4, 8), mid_norm_groups=8, output_channels=320, scale_is_parameter=False,
)
OFFICIAL_V1 = dict(
    variant="v1", time_proj_channels=128, time_embed_dim=256, embedding_channels=(64, 64, 128),
    embedding_norm_groups=2, embedding_maxpool=True, stage_in_channels=(128, 128, 256),
    stage_out_channels=(128, 256, 256), stage_norm_groups=(4, 8, 8), mid_norm_groups=8, output_channels=1280,
    scale_is_parameter=True,
)


class ControlNeXtEncoder(ModelMixin, ConfigMixin):
    """ControlNeXt pose encoder: stem convolutions, time-conditioned residual stages, a residual mid block.

    The configuration fields are those of the goldens' ``components.controlnext`` schema, so
    ``ControlNeXtEncoder.from_config(cfg)`` builds the tiny test models and ``ControlNeXtEncoder(**OFFICIAL_V2)`` the
    released one.

    >>> enc = ControlNeXtEncoder(**OFFICIAL_V2)
    >>> sum(p.numel() for p in enc.parameters())
    3526400
    """

    @register_to_config
    def __init__(
        self,
        variant: str = "v2",
        time_proj_channels: int = 128,
        time_embed_dim: int = 256,
        embedding_channels: tuple[int, int, int] = (64, 64, 128),
        embedding_norm_groups: int = 2,
        embedding_maxpool: bool = False,
        stage_in_channels: tuple[int, ...] = (128, 128),
        stage_out_channels: tuple[int, ...] = (128, 256),
        stage_norm_groups: tuple[int, ...] = (4, 8),
        mid_norm_groups: int = 8,
        output_channels: int = 320,
        scale_is_parameter: bool = False,
    ):
        super().__init__()
        if variant not in ("v1", "v2"):
            raise ValueError(f"variant must be 'v1' or 'v2', not {variant!r}")
        if not len(stage_in_channels) == len(stage_out_channels) == len(stage_norm_groups):
            raise ValueError("stage_in_channels, stage_out_channels and stage_norm_groups need one entry per stage")
        e1, e2, e3 = embedding_channels

        # v1 learns its control strength (used as sigmoid(scale) * 1.3); v2 uses a fixed 1.0 with no key. Registered
        # first so the state dict lists it first, like the released file.
        if scale_is_parameter:
            self.scale = nn.Parameter(torch.tensor(1.0))
        else:
            self.register_buffer("scale", torch.tensor(1.0), persistent=False)
        self.time_proj = Timesteps(time_proj_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_proj_channels, time_embed_dim)

        stem: list[nn.Module] = [
            nn.Conv2d(3, e1, kernel_size=3, stride=2, padding=1),
            nn.GroupNorm(embedding_norm_groups, e1),
            nn.ReLU(),
            nn.Conv2d(e1, e2, kernel_size=3),
            nn.GroupNorm(embedding_norm_groups, e2),
            nn.ReLU(),
            nn.Conv2d(e2, e3, kernel_size=3),
            nn.GroupNorm(embedding_norm_groups, e3),
            nn.ReLU(),
        ]
        if embedding_maxpool:  # v1 only; parameter-free, so it adds no keys
            stem.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.embedding = nn.Sequential(*stem)

        self.down_res = nn.ModuleList(
            ResnetBlock2D(in_channels=c_in, out_channels=c_out, temb_channels=time_embed_dim, groups=groups)
            for c_in, c_out, groups in zip(stage_in_channels, stage_out_channels, stage_norm_groups)
        )
        # name="op" keeps the convolution under `conv` only (the default name would register it twice).
        self.down_sample = nn.ModuleList(
            Downsample2D(c, use_conv=True, out_channels=c, padding=1, name="op") for c in stage_out_channels
        )

        width = stage_out_channels[-1]
        self.mid_convs = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(width, width, kernel_size=3, padding=1),
                    nn.ReLU(),
                    nn.GroupNorm(mid_norm_groups, width),
                    nn.Conv2d(width, width, kernel_size=3, padding=1),
                    nn.GroupNorm(mid_norm_groups, width),
                ),
                nn.Conv2d(width, output_channels, kernel_size=1),
            ]
        )

    def forward(self, poses: torch.Tensor, timestep: torch.Tensor | float) -> torch.Tensor:
        """Encode pose videos ``[B, F, 3, H, W]`` (RGB in [0, 1]) at one diffusion timestep.

        ``timestep`` is the scheduler's continuous SVD timestep (0.25·ln σ), a number or a 0-d/1-element tensor; it
        is shared by all B videos. Returns ``[B*F, output_channels, h', w']`` (video-major, like the UNet's batch).
        """
        if poses.ndim != 5:
            raise ValueError(f"poses must be [batch, frames, 3, height, width], got shape {tuple(poses.shape)}")
        batch, frames = poses.shape[:2]
        t = torch.as_tensor(timestep, device=poses.device).reshape(-1)
        t = t.expand(batch) if t.numel() == 1 else t
        # Timesteps always returns float32; the embedding MLP runs in the module's dtype.
        emb = self.time_embedding(self.time_proj(t).to(dtype=poses.dtype))
        emb = emb.repeat_interleave(frames, dim=0)

        x = self.embedding(poses.flatten(0, 1))
        for resnet, downsample in zip(self.down_res, self.down_sample):
            x = downsample(resnet(x, emb))
        x = x + self.mid_convs[0](x)
        return self.mid_convs[1](x)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], what: str = "ControlNeXt pose encoder"):
        """Build an encoder whose widths match ``state_dict`` and load it strictly (on the CPU, in float32)."""
        encoder = cls(**config_from_state_dict(state_dict, what))
        check_strict_load(what, encoder, dict(state_dict))
        encoder.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
        return encoder


def detect_version(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'v1' or 'v2' from a pose-encoder checkpoint's keys (v1 alone has the learned ``scale`` and a third stage).

    >>> detect_version({"scale": torch.tensor(0.0), "mid_convs.1.weight": ...})
    'v1'
    """
    return "v1" if "scale" in state_dict or any(k.startswith("down_res.2.") for k in state_dict) else "v2"


def config_from_state_dict(state_dict: Mapping[str, torch.Tensor], what: str = "ControlNeXt pose encoder") -> dict:
    """Encoder configuration read from a checkpoint's keys and shapes (group counts are the released values)."""
    needed = ["time_embedding.linear_1.weight", "embedding.0.weight", "embedding.3.weight", "embedding.6.weight",
              "mid_convs.1.weight"]
    absent = [k for k in needed if k not in state_dict]
    stages = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"down_res\.(\d+)\.conv1\.weight$", k))})
    if absent or not stages or stages != list(range(len(stages))) or len(stages) > len(STAGE_NORM_GROUPS):
        raise StrictLoadError(what, missing=absent or ["down_res.<i>.conv1.weight for consecutive stages"])
    version = detect_version(state_dict)
    time_embed_dim, time_proj_channels = state_dict["time_embedding.linear_1.weight"].shape
    return dict(
        variant=version,
        time_proj_channels=int(time_proj_channels),
        time_embed_dim=int(time_embed_dim),
        embedding_channels=tuple(int(state_dict[f"embedding.{i}.weight"].shape[0]) for i in (0, 3, 6)),
        embedding_norm_groups=EMBEDDING_NORM_GROUPS,
        embedding_maxpool=version == "v1",
        stage_in_channels=tuple(int(state_dict[f"down_res.{i}.conv1.weight"].shape[1]) for i in stages),
        stage_out_channels=tuple(int(state_dict[f"down_res.{i}.conv1.weight"].shape[0]) for i in stages),
        stage_norm_groups=STAGE_NORM_GROUPS[: len(stages)],
        mid_norm_groups=MID_NORM_GROUPS,
        output_channels=int(state_dict["mid_convs.1.weight"].shape[0]),
        scale_is_parameter="scale" in state_dict,
    )
