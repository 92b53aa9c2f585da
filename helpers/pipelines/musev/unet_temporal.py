"""Temporal layers of the MuseV video UNet: stock diffusers modules plus MuseV's learned ``temporal_weight``.

Both layers take frames flattened into the batch, ``(B*T, C, h, w)`` with row ``b*T + t``, and return the same
shape. Their residual branch is scaled by ``|temporal_weight|`` (the absolute value, as in the original).

    >>> conv = MuseVTemporalConvLayer(32)
    >>> conv(torch.randn(10, 32, 4, 4), num_frames=5).shape
    torch.Size([10, 32, 4, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.resnet import TemporalConvLayer
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from torch import nn

from .attention import use_original_layer_norm_eps

# The original initialises every temporal_weight to this value before training.
TEMPORAL_WEIGHT_INIT = 1e-5


class MuseVTemporalConvLayer(TemporalConvLayer):
    """Stock ``TemporalConvLayer`` (4 x GroupNorm -> SiLU -> Conv3d over time) with ``out = x + |w| * branch(x)``.

    Keys: ``conv1.0``, ``conv1.2``, ``conv{2,3,4}.0``, ``conv{2,3,4}.3``, ``temporal_weight`` ``[1]``.
    """

    def __init__(self, channels: int, norm_num_groups: int = 32, dropout: float = 0.1):
        super().__init__(channels, channels, dropout=dropout, norm_num_groups=norm_num_groups)
        self.temporal_weight = nn.Parameter(torch.full((1,), TEMPORAL_WEIGHT_INIT))

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        batch_frames, channels, height, width = hidden_states.shape
        video = hidden_states.view(batch_frames // num_frames, num_frames, channels, height, width)
        video = video.permute(0, 2, 1, 3, 4)  # (B, C, T, h, w) for the Conv3d layers
        branch = self.conv4(self.conv3(self.conv2(self.conv1(video))))
        video = video + branch * self.temporal_weight.abs()
        return video.permute(0, 2, 1, 3, 4).reshape(batch_frames, channels, height, width)

    @torch.no_grad()
    def fold_temporal_weight(self) -> None:
        """Multiply ``|temporal_weight|`` into the last convolution and set the weight to 1 (same output)."""
        scale = self.temporal_weight.abs()
        self.conv4[-1].weight.mul_(scale.to(self.conv4[-1].weight.dtype))
        self.conv4[-1].bias.mul_(scale.to(self.conv4[-1].bias.dtype))
        self.temporal_weight.fill_(1.0)


class MuseVTemporalTransformer(TransformerTemporalModel):
    """Stock ``TransformerTemporalModel`` (one block, two self-attentions over time, GEGLU) with frame embeddings.

    Its block's ``norm1``/``norm3`` use the original's eps 0 (``attention.use_original_layer_norm_eps``).
    After ``norm`` -> ``proj_in`` on the per-pixel sequences ``(B*h*w, T, C)`` it adds
    ``frame_emb_proj(SiLU(frame_embedding))``; the output is ``x + |temporal_weight| * proj_out(...)``. Heads: 8 of
    ``C/8`` (SD convention). Extra keys over stock: ``frame_emb_proj.{weight,bias}``, ``temporal_weight`` ``[1]``.

    ``chunk_size`` bounds how many per-pixel sequences go through the attention block at once (the sequences are
    independent, so chunking changes nothing but peak memory and kernel grid sizes).
    """

    def __init__(self, channels: int, frame_embedding_dim: int, num_heads: int = 8, norm_num_groups: int = 32):
        super().__init__(
            num_attention_heads=num_heads,
            attention_head_dim=channels // num_heads,
            in_channels=channels,
            num_layers=1,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=None,
            attention_bias=False,
            activation_fn="geglu",
            double_self_attention=True,
        )
        self.frame_emb_proj = nn.Linear(frame_embedding_dim, channels)
        self.temporal_weight = nn.Parameter(torch.full((1,), TEMPORAL_WEIGHT_INIT))
        use_original_layer_norm_eps(self)

    def forward(  # type: ignore[override]  (own inputs: frame embeddings, no text)
        self,
        hidden_states: torch.Tensor,
        frame_embedding: torch.Tensor,
        num_frames: int,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """``hidden_states`` ``(B*T, C, h, w)``, ``frame_embedding`` ``(B, T, E)`` -> ``(B*T, C, h, w)``."""
        batch_frames, channels, height, width = hidden_states.shape
        batch = batch_frames // num_frames
        video = hidden_states.view(batch, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
        video = self.norm(video)  # statistics over the group's channels and all of T, h, w
        sequences = video.permute(0, 3, 4, 2, 1).reshape(batch, height * width, num_frames, channels)
        sequences = self.proj_in(sequences)
        sequences = sequences + self.frame_emb_proj(F.silu(frame_embedding))[:, None]
        sequences = sequences.reshape(batch * height * width, num_frames, channels)
        sequences = self._run_blocks(sequences, chunk_size)
        sequences = self.proj_out(sequences)
        branch = sequences.view(batch, height, width, num_frames, channels).permute(0, 3, 4, 1, 2)
        branch = branch.reshape(batch_frames, channels, height, width)
        return hidden_states + branch * self.temporal_weight.abs()

    def _run_blocks(self, sequences: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
        if chunk_size is None or sequences.shape[0] <= chunk_size:
            for block in self.transformer_blocks:
                sequences = block(sequences)
            return sequences
        return torch.cat([self._run_blocks(chunk, None) for chunk in sequences.split(chunk_size)])

    @torch.no_grad()
    def fold_temporal_weight(self) -> None:
        """Multiply ``|temporal_weight|`` into ``proj_out`` and set the weight to 1 (same output)."""
        scale = self.temporal_weight.abs()
        self.proj_out.weight.mul_(scale.to(self.proj_out.weight.dtype))
        self.proj_out.bias.mul_(scale.to(self.proj_out.bias.dtype))
        self.temporal_weight.fill_(1.0)
