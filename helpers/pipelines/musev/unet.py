"""``MuseVUNet3DConditionModel``: the MuseV video UNet (TMElyralab/MuseV) on stock diffusers building blocks.

A ModelScope-style 3-D UNet around an unmodified SD1.5 spatial UNet (the 686 SD1.5 keys keep their names and
shapes): temporal convolutions after every resnet, temporal transformers after every spatial transformer, a learned
frame-position embedding, ``|temporal_weight|``-scaled temporal residuals, 8 attention heads everywhere and
parameter-free reference-only self-attention over the condition frame. The referencenet variants add ReferenceNet
fusion attentions in the encoder, IP-Adapter cross-attention, zeroed time embeddings for condition frames and frame
positions scaled by the motion speed.

    >>> from helpers.pipelines.musev.unet_config import musev_unet_config
    >>> unet = MuseVUNet3DConditionModel(**musev_unet_config("musev", block_out_channels=(32, 64, 32, 32),
    ...                                                      cross_attention_dim=32))
    >>> out = unet(torch.randn(2, 4, 5, 16, 16), 801, torch.randn(2, 7, 32), condition_frame_index=[0]).sample
    >>> out.shape
    torch.Size([2, 4, 5, 16, 16])

Not reproduced because they provably change nothing (checked on the original): the AdaIN of ``need_adain_temporal_cond``
(returns its input), the re-run of ``attn1`` on the unconditional half inside every transformer block when
``do_classifier_free_guidance`` is set (its result is overwritten before use), and the inert flags listed in
``unet_config``. Not implemented (no released model uses them): the in-UNet concatenation of condition latents, pose
guider embeddings, spatial position embeddings, FaceIn / IPAdapterFaceID branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import FrameIndex, fuse_reference_features, reference_fusion_attention
from .unet_blocks import DOWN_BLOCKS, UP_BLOCKS, BlockSpec, UNetMidBlock3DCrossAttn, VideoContext
from .unet_temporal import MuseVTemporalConvLayer, MuseVTemporalTransformer

DEFAULT_TEMPORAL_CHUNK_SIZE = 16384


@dataclass
class MuseVUNetOutput(BaseOutput):
    """``sample``: ``(B, C_out, T, h, w)`` noise prediction for every frame, condition frames included."""

    sample: torch.Tensor


class MuseVUNet3DConditionModel(ModelMixin, ConfigMixin):
    """The MuseV video UNet; attribute names follow the original so official state dicts load strictly.

    Configuration keys keep the original spelling (``keep_vision_condtion``); ``attention_head_dim`` is the number
    of heads (SD1.x convention). Build released variants with ``musev_unet_config(variant)`` or load them with
    ``loading.load_musev_unet``.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types: Sequence[str] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int = 8,
        need_transformer_in: bool = True,
        need_t2i_ip_adapter: bool = True,
        keep_vision_condtion: bool = False,
        use_anivv1_cfg: bool = False,
        resnet_2d_skip_time_act: bool = False,
        need_refer_emb: bool = False,
        ip_adapter_cross_attn: bool = False,
    ):
        super().__init__()
        if act_fn not in ("silu", "swish"):
            raise ValueError(f"MuseV UNets use SiLU activations, not {act_fn!r}")
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
        channels0 = block_out_channels[0]
        embedding_dim = 4 * channels0
        heads = attention_head_dim
        spec = BlockSpec(
            temb_channels=embedding_dim,
            frame_embedding_dim=embedding_dim,
            cross_attention_dim=cross_attention_dim,
            num_heads=heads,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            resnet_skip_time_act=resnet_2d_skip_time_act,
            reference_only_attention=need_t2i_ip_adapter,
            ip_adapter=ip_adapter_cross_attn,
            with_reference_fusion=need_refer_emb,
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
        )
        # Temporal attention runs on B*h*w short sequences; some CUDA attention kernels put the batch on a grid axis
        # limited to 65535, so large frames are processed in chunks (identical results, independent sequences).
        self.temporal_attention_chunk_size: int | None = DEFAULT_TEMPORAL_CHUNK_SIZE

        self.conv_in = nn.Conv2d(in_channels, channels0, kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels0, embedding_dim, act_fn="silu")
        self.frame_proj = Timesteps(channels0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.frame_embedding = TimestepEmbedding(channels0, embedding_dim, act_fn="silu")
        self.transformer_in = None
        if need_transformer_in:
            self.transformer_in = MuseVTemporalTransformer(channels0, embedding_dim, heads, norm_num_groups)
        self.first_refer_emb_attns = reference_fusion_attention(channels0, heads) if need_refer_emb else None

        self.down_blocks = nn.ModuleList()
        output_channels = channels0
        for i, block_type in enumerate(down_block_types):
            input_channels, output_channels = output_channels, block_out_channels[i]
            is_final = i == len(block_out_channels) - 1
            self.down_blocks.append(
                DOWN_BLOCKS[block_type](spec, input_channels, output_channels, layers_per_block, not is_final)
            )

        self.mid_block = UNetMidBlock3DCrossAttn(spec, block_out_channels[-1])
        self.mid_block_refer_emb_attns = (
            reference_fusion_attention(block_out_channels[-1], heads) if need_refer_emb else None
        )

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        output_channels = reversed_channels[0]
        for i, block_type in enumerate(up_block_types):
            is_final = i == len(block_out_channels) - 1
            prev_output_channels, output_channels = output_channels, reversed_channels[i]
            input_channels = reversed_channels[min(i + 1, len(block_out_channels) - 1)]
            self.up_blocks.append(
                UP_BLOCKS[block_type](
                    spec, input_channels, output_channels, prev_output_channels, layers_per_block + 1, not is_final
                )
            )

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels0, eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels0, out_channels, kernel_size=3, padding=1)

    # ---------------------------------------------------------------------------------------------------- helpers
    @property
    def is_referencenet_variant(self) -> bool:
        """True for ``musev_referencenet(_pose)``: ReferenceNet fusion and IP-Adapter layers are present."""
        return bool(self.config.need_refer_emb)

    def set_temporal_attention_chunk_size(self, chunk_size: int | None) -> None:
        """Run temporal attention on at most ``chunk_size`` per-pixel sequences at once (None: all at once)."""
        self.temporal_attention_chunk_size = chunk_size

    def temporal_layers(self) -> list[MuseVTemporalConvLayer | MuseVTemporalTransformer]:
        """Every temporal convolution and temporal transformer (``transformer_in`` included)."""
        return [m for m in self.modules() if isinstance(m, (MuseVTemporalConvLayer, MuseVTemporalTransformer))]

    def fold_temporal_weights(self) -> None:
        """Fold every ``|temporal_weight|`` into the layer's last projection (same output, one multiply less)."""
        for layer in self.temporal_layers():
            layer.fold_temporal_weight()

    def reference_feature_routing(self) -> list[list[int]]:
        """Index of the ReferenceNet feature fed to every fusion module of every down block.

        The original slices the 12 features per block as ``[1 + n*i, 1 + n*i + n)`` with ``n`` the block's *own*
        count (layers + downsampler). Blocks 0-2 have n = 3 (features 1-3, 4-6, 7-9); the last block has n = 2, so
        it starts at 1 + 2*3 = 7 and receives features 7 and 8 (block-2 layer outputs at twice its spatial size)
        instead of 10 and 11. The released weights were trained with this routing, so it is reproduced.
        """
        routing = []
        for i, block in enumerate(self.down_blocks):
            n = block.num_outputs
            routing.append(list(range(1 + n * i, 1 + n * i + n)))
        return routing

    def _timestep_rows(self, timestep: torch.Tensor | float | int, batch: int, device: torch.device) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=device)
        if not torch.is_floating_point(timesteps):
            timesteps = timesteps.to(torch.float32)
        return timesteps.reshape(-1).expand(batch) if timesteps.numel() == 1 else timesteps.reshape(batch)

    def _time_embedding(self, timestep, batch: int, num_frames: int, condition_index: torch.Tensor | None, dtype,
                        device: torch.device) -> torch.Tensor:
        emb = self.time_embedding(self.time_proj(self._timestep_rows(timestep, batch, device)).to(dtype))
        if self.config.use_anivv1_cfg:
            emb = F.silu(emb)  # the resnets of these models skip their own SiLU
        emb = emb.repeat_interleave(num_frames, dim=0)
        if self.config.keep_vision_condtion and condition_index is not None and num_frames > 1:
            # condition frames are clean: their time embedding rows are zero
            keep = torch.ones(num_frames, device=emb.device, dtype=emb.dtype)
            keep[condition_index] = 0
            emb = (emb.view(batch, num_frames, -1) * keep[None, :, None]).view(batch * num_frames, -1)
        return emb

    def _frame_embedding(self, batch: int, num_frames: int, motion_speed: float, dtype, device) -> torch.Tensor:
        positions = torch.arange(num_frames, device=device)  # window-local; condition frame = 0
        if self.config.use_anivv1_cfg:
            positions = (positions * motion_speed).long()  # truncation, as in the original
        emb = self.frame_embedding(self.frame_proj(positions).to(dtype))
        if self.config.use_anivv1_cfg:
            emb = F.silu(emb)
        return emb[None].expand(batch, -1, -1)

    @staticmethod
    def _frames_first(residual: torch.Tensor, batch_frames: int) -> torch.Tensor:
        """ControlNet residuals as ``(B*T, C, h, w)``; 5-D ``(B, C, T, h, w)`` inputs are rearranged."""
        if residual.ndim == 5:
            residual = residual.permute(0, 2, 1, 3, 4).reshape(-1, *residual.shape[1:2], *residual.shape[3:])
        if residual.shape[0] != batch_frames:
            raise ValueError(f"ControlNet residual with {residual.shape[0]} rows, expected {batch_frames} (B*T)")
        return residual

    # ---------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        condition_frame_index: FrameIndex | None = None,
        motion_speed: float = 1.0,
        skip_temporal_layers: bool = False,
        down_block_refer_embs: Sequence[torch.Tensor] | None = None,
        mid_block_refer_emb: torch.Tensor | None = None,
        ip_hidden_states: torch.Tensor | None = None,
        ip_adapter_scale: float = 1.0,
        down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        zero_condition_timestep_embedding: bool = True,
        return_dict: bool = True,
    ) -> MuseVUNetOutput | tuple[torch.Tensor]:
        """Noise prediction for a window of frames.

        Args:
            sample: ``(B, C_in, T, h, w)`` latents; the clean condition latent(s) are already inside at
                ``condition_frame_index`` (usually ``[0]``) and get the same ``timestep``.
            timestep: a number, a 0-d/1-element tensor, or one value per batch item.
            encoder_hidden_states: ``(B, L, D)`` text embeddings (repeated per frame inside).
            condition_frame_index: frames whose tokens every frame also attends to in spatial self-attention
                (reference-only attention, only when T > 1). None: plain self-attention.
            motion_speed: multiplies the frame positions 0..T-1 before the frame embedding (truncated to integers);
                used by the referencenet variants only (original ``sample_frame_rate``).
            skip_temporal_layers: every temporal conv/transformer becomes the identity (first-frame generation).
            down_block_refer_embs: referencenet variants: the 12 ReferenceNet features ``(B, C_i, 1, h_i, w_i)``.
            mid_block_refer_emb: referencenet variants: the ReferenceNet mid-block feature.
            ip_hidden_states: ``(B, n, D)`` IP-Adapter tokens (original ``vision_clip_emb``); None skips the branch.
            ip_adapter_scale: weight of the IP-Adapter branch.
            down_block_additional_residuals / mid_block_additional_residual: ControlNet residuals, frames flattened
                ``(B*T, C, h, w)`` or ``(B, C, T, h, w)``; added to the skips / after the mid block and its fusion.
            zero_condition_timestep_embedding: referencenet variants zero the time embedding of the condition
                frames; the original does so only when it also receives the noisy-frame indices, which every
                pipeline call does. Pass False to mimic a call without them.
        """
        batch, _, num_frames, height, width = sample.shape
        batch_frames = batch * num_frames
        dtype = self.dtype
        uses_reference = down_block_refer_embs is not None and self.first_refer_emb_attns is not None
        if down_block_refer_embs is not None and self.first_refer_emb_attns is None:
            raise ValueError("ReferenceNet features given, but this UNet has no fusion modules (musev variant)")
        condition_index = None
        if condition_frame_index is not None:
            condition_index = torch.as_tensor(condition_frame_index, dtype=torch.long, device=sample.device)
            condition_index = condition_index.reshape(-1)

        zero_index = condition_index if zero_condition_timestep_embedding else None
        ctx = VideoContext(
            num_frames=num_frames,
            temb=self._time_embedding(timestep, batch, num_frames, zero_index, dtype, sample.device),
            frame_embedding=None if skip_temporal_layers
            else self._frame_embedding(batch, num_frames, motion_speed, dtype, sample.device),
            text=encoder_hidden_states.to(dtype).repeat_interleave(num_frames, dim=0),
            attention_kwargs={
                "num_frames": num_frames,
                "condition_frame_index": condition_index,
                "ip_hidden_states": None if ip_hidden_states is None
                else ip_hidden_states.to(dtype).repeat_interleave(num_frames, dim=0),
                "ip_adapter_scale": ip_adapter_scale,
            },
            skip_temporal_layers=skip_temporal_layers,
            temporal_chunk_size=self.temporal_attention_chunk_size,
        )

        hidden = sample.to(dtype).permute(0, 2, 1, 3, 4).reshape(batch_frames, -1, height, width)
        hidden = self.conv_in(hidden)
        if self.transformer_in is not None and not skip_temporal_layers:
            hidden = self.transformer_in(hidden, ctx.frame_embedding, num_frames, ctx.temporal_chunk_size)
        if uses_reference:
            hidden = fuse_reference_features(self.first_refer_emb_attns, hidden, down_block_refer_embs[0], num_frames)

        skips: tuple[torch.Tensor, ...] = (hidden,)
        routing = self.reference_feature_routing()
        for block, feature_index in zip(self.down_blocks, routing):
            block_refer = [down_block_refer_embs[k] for k in feature_index] if uses_reference else None
            hidden, block_skips = block(hidden, ctx, block_refer)
            skips += block_skips

        if down_block_additional_residuals is not None:
            residuals = [self._frames_first(r, batch_frames) for r in down_block_additional_residuals]
            if len(residuals) != len(skips):
                raise ValueError(f"{len(residuals)} ControlNet down residuals for {len(skips)} skip connections")
            skips = tuple(s + r.to(s.dtype) for s, r in zip(skips, residuals))

        hidden = self.mid_block(hidden, ctx)
        if mid_block_refer_emb is not None and self.mid_block_refer_emb_attns is not None:
            hidden = fuse_reference_features(self.mid_block_refer_emb_attns, hidden, mid_block_refer_emb, num_frames)
        if mid_block_additional_residual is not None:
            hidden = hidden + self._frames_first(mid_block_additional_residual, batch_frames).to(hidden.dtype)

        for block in self.up_blocks:
            block_skips, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            upsample_size = tuple(skips[-1].shape[2:]) if skips else None
            hidden = block(hidden, block_skips, ctx, upsample_size)

        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        out = hidden.reshape(batch, num_frames, -1, height, width).permute(0, 2, 1, 3, 4)
        return MuseVUNetOutput(sample=out) if return_dict else (out,)
