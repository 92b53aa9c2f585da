"""MuseV's ReferenceNet: the encoder half of a stock SD1.5 ``UNet2DConditionModel``, run once on the reference latent.

It returns the 12 standard down-path skip tensors (``conv_in`` output, then every layer and downsampler output) and the
mid-block output, each with a singleton frame axis, ready for the video UNet's fusion attentions. MuseV runs it at
timestep 0 with the IP-Adapter tokens (not the text) as context, once per generation.

    >>> net = MuseVReferenceNet(block_out_channels=(32, 64, 32, 32), cross_attention_dim=32, attention_head_dim=8,
    ...                         down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",))
    >>> feats = net(torch.randn(2, 4, 16, 16), 0, encoder_hidden_states=torch.randn(2, 4, 32))
    >>> len(feats.down_block_refer_embs), tuple(feats.mid_block_refer_emb.shape)
    (12, (2, 32, 1, 2, 2))

The weights are the 298 SD1.5 keys under ``conv_in``, ``time_embedding``, ``down_blocks`` and ``mid_block`` (the
official file is a trained encoder, not overwritten by the base model).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.utils import BaseOutput

from .attention import use_original_layer_norm_eps

logger = logging.getLogger(__name__)


@dataclass
class ReferenceNetOutput(BaseOutput):
    """``down_block_refer_embs``: 12 tensors ``(B, C_i, 1, h_i, w_i)``; ``mid_block_refer_emb``: ``(B, C, 1, h, w)``."""

    down_block_refer_embs: list[torch.Tensor]
    mid_block_refer_emb: torch.Tensor


class MuseVReferenceNet(UNet2DConditionModel):
    """Stock ``UNet2DConditionModel`` without its decoder; ``forward`` returns the encoder features.

    Constructed with the same keyword arguments as ``UNet2DConditionModel`` (see ``from_musev_config`` for the
    original ``config.json``); ``up_blocks``, ``conv_norm_out``, ``conv_act`` and ``conv_out`` are removed. The one
    numerical difference from stock: the transformer blocks' ``norm1``/``norm3`` use the original's eps 0.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Never run: dropping the decoder saves about 0.5 B parameters at full size.
        self.up_blocks = None
        self.conv_norm_out = None
        self.conv_act = None
        self.conv_out = None
        use_original_layer_norm_eps(self)  # norm1/norm3 eps 0, as in the original's transformer blocks

    @classmethod
    def from_musev_config(cls, config: dict[str, Any]) -> MuseVReferenceNet:
        """Build from an original ReferenceNet ``config.json`` (extra keys such as ``need_block_embs`` are dropped)."""
        accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
        kwargs = {k: v for k, v in config.items() if k in accepted}
        dropped = sorted(k for k in config if k not in accepted and not k.startswith("_"))
        if dropped:
            logger.info("ReferenceNet config: ignoring %s", dropped)
        return cls(**kwargs)

    def forward(  # type: ignore[override]  (encoder only, other outputs)
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
    ) -> ReferenceNetOutput | tuple[list[torch.Tensor], torch.Tensor]:
        """``sample`` ``(B, 4, h, w)`` reference latent, ``encoder_hidden_states`` ``(B, n, D)`` (IP tokens)."""
        sample = sample.to(self.dtype)
        encoder_hidden_states = encoder_hidden_states.to(self.dtype)
        emb = self.time_embedding(self.get_time_embed(sample, timestep))
        hidden = self.conv_in(sample)
        features = [hidden]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                hidden, skips = block(hidden, temb=emb, encoder_hidden_states=encoder_hidden_states)
            else:
                hidden, skips = block(hidden, temb=emb)
            features.extend(skips)
        hidden = self.mid_block(hidden, emb, encoder_hidden_states=encoder_hidden_states)
        down = [f.unsqueeze(2) for f in features]
        mid = hidden.unsqueeze(2)
        return ReferenceNetOutput(down, mid) if return_dict else (down, mid)
