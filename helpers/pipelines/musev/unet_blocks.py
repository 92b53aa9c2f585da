"""The 3-D blocks of the MuseV video UNet, assembled from stock diffusers parts under the original attribute names.

Every block works on frames flattened into the batch, ``(B*T, C, h, w)``, and reads the per-call inputs from one
``VideoContext``. Layer order (per layer ``j``):

* ``CrossAttnDownBlock3D``: ``resnets[j] -> temp_convs[j] -> attentions[j] -> temp_attentions[j] ->
  refer_emb_attns[j]``, then ``downsamplers[0] -> refer_emb_attns[-1]``; the skip tensors are taken after fusion;
* ``DownBlock3D``: ``resnets[j] -> temp_convs[j] -> refer_emb_attns[j]`` (+ downsampler when there is one);
* ``UNetMidBlock3DCrossAttn``: ``resnets[0] -> temp_convs[0] -> attentions[0] -> temp_attentions[0] -> resnets[1] ->
  temp_convs[1]``;
* ``CrossAttnUpBlock3D`` / ``UpBlock3D``: ``cat(hidden, skip) -> resnets[j] -> temp_convs[j] (-> attentions[j] ->
  temp_attentions[j])``, then ``upsamplers[0]``.

The spatial transformers are SD1.5 ``Transformer2DModel`` (8 heads, 1x1-conv ``proj_in``/``proj_out``) with MuseV's
reference-only ``attn1`` and, in the referencenet variants, IP-Adapter ``attn2``; their ``norm1``/``norm3`` use the
original's eps 0 (``attention.use_original_layer_norm_eps``). ``refer_emb_attns`` exist only in
the down blocks of the referencenet variants (``with_reference_fusion=True``).

The original's AdaIN towards the condition frame after each temporal layer (``need_adain_temporal_cond``) returns
its input unchanged for these 4-D tensors, so it is not reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .attention import (
    IPAdapterCrossAttnProcessor,
    ReferenceOnlySelfAttnProcessor,
    add_ip_adapter_projections,
    fuse_reference_features,
    reference_fusion_attention,
    use_original_layer_norm_eps,
)
from .unet_temporal import MuseVTemporalConvLayer, MuseVTemporalTransformer


@dataclass
class VideoContext:
    """Per-call inputs shared by every block of one UNet forward."""

    num_frames: int
    temb: torch.Tensor  # (B*T, E) time embedding, one row per frame
    frame_embedding: torch.Tensor | None  # (B, T, E); None when the temporal layers are skipped
    text: torch.Tensor  # (B*T, L, D) text context, repeated per frame
    attention_kwargs: dict[str, Any] = field(default_factory=dict)  # for the spatial attention processors
    skip_temporal_layers: bool = False
    temporal_chunk_size: int | None = None


@dataclass(frozen=True)
class BlockSpec:
    """Construction settings shared by all blocks of one UNet."""

    temb_channels: int
    frame_embedding_dim: int
    cross_attention_dim: int
    num_heads: int = 8
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    resnet_skip_time_act: bool = False
    reference_only_attention: bool = True
    ip_adapter: bool = False  # IP-Adapter to_k_ip / to_v_ip in the spatial cross-attentions
    with_reference_fusion: bool = False  # ReferenceNet fusion attentions in the down blocks
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0


def _resnet(spec: BlockSpec, in_channels: int, out_channels: int, output_scale_factor: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=spec.temb_channels,
        eps=spec.norm_eps,
        groups=spec.norm_num_groups,
        output_scale_factor=output_scale_factor,
        skip_time_act=spec.resnet_skip_time_act,
    )


def _spatial_transformer(spec: BlockSpec, channels: int) -> Transformer2DModel:
    transformer = Transformer2DModel(
        num_attention_heads=spec.num_heads,
        attention_head_dim=channels // spec.num_heads,
        in_channels=channels,
        num_layers=1,
        cross_attention_dim=spec.cross_attention_dim,
        norm_num_groups=spec.norm_num_groups,
        use_linear_projection=False,
    )
    use_original_layer_norm_eps(transformer)
    block = transformer.transformer_blocks[0]
    block.attn1.set_processor(ReferenceOnlySelfAttnProcessor(enabled=spec.reference_only_attention))
    block.attn2.set_processor(IPAdapterCrossAttnProcessor())
    if spec.ip_adapter:
        add_ip_adapter_projections(block.attn2, spec.cross_attention_dim)
    return transformer


def _temporal_conv(spec: BlockSpec, channels: int) -> MuseVTemporalConvLayer:
    return MuseVTemporalConvLayer(channels, norm_num_groups=spec.norm_num_groups)


def _temporal_transformer(spec: BlockSpec, channels: int) -> MuseVTemporalTransformer:
    return MuseVTemporalTransformer(channels, spec.frame_embedding_dim, spec.num_heads, spec.norm_num_groups)


def _fusions(spec: BlockSpec, channels: int, count: int) -> nn.ModuleList | None:
    if not spec.with_reference_fusion:
        return None
    return nn.ModuleList([reference_fusion_attention(channels, spec.num_heads) for _ in range(count)])


class _Block3D(nn.Module):
    """Shared per-layer steps of the 3-D blocks."""

    # Set by every subclass; no class-level defaults (they would shadow registered submodules).
    resnets: nn.ModuleList
    temp_convs: nn.ModuleList
    attentions: nn.ModuleList | None
    temp_attentions: nn.ModuleList | None

    def _layer(self, j: int, hidden_states: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        hidden_states = self.resnets[j](hidden_states, ctx.temb)
        if not ctx.skip_temporal_layers:
            hidden_states = self.temp_convs[j](hidden_states, num_frames=ctx.num_frames)
        if self.attentions is not None:
            hidden_states = self.attentions[j](
                hidden_states,
                encoder_hidden_states=ctx.text,
                cross_attention_kwargs=ctx.attention_kwargs,
                return_dict=False,
            )[0]
            if not ctx.skip_temporal_layers:
                hidden_states = self.temp_attentions[j](
                    hidden_states, ctx.frame_embedding, ctx.num_frames, chunk_size=ctx.temporal_chunk_size
                )
        return hidden_states


class _DownBlock3D(_Block3D):
    """Down block; ``with_attention`` selects CrossAttnDownBlock3D (True) or DownBlock3D (False)."""

    def __init__(
        self, spec: BlockSpec, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool,
        with_attention: bool,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [_resnet(spec, in_channels if j == 0 else out_channels, out_channels) for j in range(num_layers)]
        )
        self.temp_convs = nn.ModuleList([_temporal_conv(spec, out_channels) for _ in range(num_layers)])
        self.attentions = self.temp_attentions = None
        if with_attention:
            self.attentions = nn.ModuleList([_spatial_transformer(spec, out_channels) for _ in range(num_layers)])
            self.temp_attentions = nn.ModuleList(
                [_temporal_transformer(spec, out_channels) for _ in range(num_layers)]
            )
        self.downsamplers = None
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                              padding=spec.downsample_padding, name="op")]
            )
        self.refer_emb_attns = _fusions(spec, out_channels, num_layers + int(add_downsample))

    @property
    def num_outputs(self) -> int:
        """How many skip tensors (and ReferenceNet features) this block takes/produces."""
        return len(self.resnets) + int(self.downsamplers is not None)

    def forward(
        self, hidden_states: torch.Tensor, ctx: VideoContext, refer_embs: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips: tuple[torch.Tensor, ...] = ()
        for j in range(len(self.resnets)):
            hidden_states = self._layer(j, hidden_states, ctx)
            hidden_states = self._fuse(j, hidden_states, ctx, refer_embs)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            hidden_states = self._fuse(len(self.resnets), hidden_states, ctx, refer_embs)
            skips += (hidden_states,)
        return hidden_states, skips

    def _fuse(
        self, j: int, hidden_states: torch.Tensor, ctx: VideoContext, refer_embs: Sequence[torch.Tensor] | None
    ) -> torch.Tensor:
        if refer_embs is None or self.refer_emb_attns is None:
            return hidden_states
        return fuse_reference_features(self.refer_emb_attns[j], hidden_states, refer_embs[j], ctx.num_frames)


class CrossAttnDownBlock3D(_DownBlock3D):
    def __init__(self, spec: BlockSpec, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool):
        super().__init__(spec, in_channels, out_channels, num_layers, add_downsample, with_attention=True)


class DownBlock3D(_DownBlock3D):
    def __init__(self, spec: BlockSpec, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool):
        super().__init__(spec, in_channels, out_channels, num_layers, add_downsample, with_attention=False)


class UNetMidBlock3DCrossAttn(_Block3D):
    """``resnets[0] -> temp_convs[0] -> attentions[0] -> temp_attentions[0] -> resnets[1] -> temp_convs[1]``."""

    def __init__(self, spec: BlockSpec, channels: int):
        super().__init__()
        scale = spec.mid_block_scale_factor
        self.resnets = nn.ModuleList([_resnet(spec, channels, channels, scale) for _ in range(2)])
        self.temp_convs = nn.ModuleList([_temporal_conv(spec, channels) for _ in range(2)])
        self.attentions = nn.ModuleList([_spatial_transformer(spec, channels)])
        self.temp_attentions = nn.ModuleList([_temporal_transformer(spec, channels)])

    def forward(self, hidden_states: torch.Tensor, ctx: VideoContext) -> torch.Tensor:
        hidden_states = self._layer(0, hidden_states, ctx)
        hidden_states = self.resnets[1](hidden_states, ctx.temb)
        if not ctx.skip_temporal_layers:
            hidden_states = self.temp_convs[1](hidden_states, num_frames=ctx.num_frames)
        return hidden_states


class _UpBlock3D(_Block3D):
    """Up block; ``with_attention`` selects CrossAttnUpBlock3D (True) or UpBlock3D (False)."""

    def __init__(
        self, spec: BlockSpec, in_channels: int, out_channels: int, prev_output_channels: int, num_layers: int,
        add_upsample: bool, with_attention: bool,
    ):
        super().__init__()
        resnets = []
        for j in range(num_layers):
            skip_channels = in_channels if j == num_layers - 1 else out_channels
            resnet_in = prev_output_channels if j == 0 else out_channels
            resnets.append(_resnet(spec, resnet_in + skip_channels, out_channels))
        self.resnets = nn.ModuleList(resnets)
        self.temp_convs = nn.ModuleList([_temporal_conv(spec, out_channels) for _ in range(num_layers)])
        self.attentions = self.temp_attentions = None
        if with_attention:
            self.attentions = nn.ModuleList([_spatial_transformer(spec, out_channels) for _ in range(num_layers)])
            self.temp_attentions = nn.ModuleList(
                [_temporal_transformer(spec, out_channels) for _ in range(num_layers)]
            )
        self.upsamplers = None
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: Sequence[torch.Tensor],
        ctx: VideoContext,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """``skips`` are this block's skip tensors in production order; they are consumed last first."""
        for j in range(len(self.resnets)):
            hidden_states = torch.cat([hidden_states, skips[-1 - j]], dim=1)
            hidden_states = self._layer(j, hidden_states, ctx)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, output_size=upsample_size)
        return hidden_states


class CrossAttnUpBlock3D(_UpBlock3D):
    def __init__(
        self, spec: BlockSpec, in_channels: int, out_channels: int, prev_output_channels: int, num_layers: int,
        add_upsample: bool,
    ):
        super().__init__(spec, in_channels, out_channels, prev_output_channels, num_layers, add_upsample, True)


class UpBlock3D(_UpBlock3D):
    def __init__(
        self, spec: BlockSpec, in_channels: int, out_channels: int, prev_output_channels: int, num_layers: int,
        add_upsample: bool,
    ):
        super().__init__(spec, in_channels, out_channels, prev_output_channels, num_layers, add_upsample, False)


DOWN_BLOCKS: dict[str, type[_DownBlock3D]] = {"CrossAttnDownBlock3D": CrossAttnDownBlock3D, "DownBlock3D": DownBlock3D}
UP_BLOCKS: dict[str, type[_UpBlock3D]] = {"CrossAttnUpBlock3D": CrossAttnUpBlock3D, "UpBlock3D": UpBlock3D}
