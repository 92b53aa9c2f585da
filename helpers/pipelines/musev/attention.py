"""Attention pieces of the MuseV video UNet, as processors and helpers around stock ``diffusers`` ``Attention``.

Three behaviours differ from a plain SD1.5 UNet:

* reference-only self-attention (``attn1`` of every spatial transformer, no parameters): every frame also attends
  to the tokens of the clean condition frame(s) of its own batch item;
* decoupled IP-Adapter cross-attention (``attn2`` of the spatial transformers of the referencenet variants): a second
  attention over image-prompt tokens with its own key/value projections ``to_k_ip`` / ``to_v_ip``, added with a scale;
* ReferenceNet fusion: a stock ``Attention`` whose keys/values are the ReferenceNet feature tokens followed by the
  frame's own tokens, with a residual connection.

Both processors accept the same keyword arguments, because a stock ``BasicTransformerBlock`` hands the same
``cross_attention_kwargs`` to ``attn1`` and ``attn2``::

    attn.set_processor(ReferenceOnlySelfAttnProcessor())
    attn(norm_hidden_states, num_frames=5, condition_frame_index=torch.tensor([0]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn

FrameIndex = Sequence[int] | torch.Tensor

# The original transformer block subclass hands its constructor arguments positionally to a parent whose signature
# has ``norm_eps`` where the subclass passes ``final_dropout=False``: its ``norm1`` and ``norm3`` LayerNorms get
# eps 0, while ``norm2`` is re-created with the default 1e-5. The released weights were trained that way.
ORIGINAL_NORM1_NORM3_EPS = 0.0


def use_original_layer_norm_eps(module: nn.Module) -> nn.Module:
    """Give every stock ``BasicTransformerBlock`` inside ``module`` the original's LayerNorm eps (see above).

    >>> block = BasicTransformerBlock(32, 8, 4, cross_attention_dim=32)
    >>> use_original_layer_norm_eps(block).norm1.eps, block.norm2.eps, block.norm3.eps
    (0.0, 1e-05, 0.0)
    """
    for block in module.modules():
        if isinstance(block, BasicTransformerBlock):
            block.norm1.eps = ORIGINAL_NORM1_NORM3_EPS
            block.norm3.eps = ORIGINAL_NORM1_NORM3_EPS
    return module


def _attend(attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head softmax attention of already projected (batch, tokens, channels) tensors."""
    batch = query.shape[0]
    head_dim = query.shape[-1] // attn.heads

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value), scale=attn.scale)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)


def _output_projection(attn: Attention, hidden_states: torch.Tensor) -> torch.Tensor:
    hidden_states = attn.to_out[0](hidden_states)
    return attn.to_out[1](hidden_states)  # dropout, inactive in eval


def _as_index(index: FrameIndex, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(index, dtype=torch.long, device=device).reshape(-1)


class ReferenceOnlySelfAttnProcessor:
    """Spatial self-attention that also looks at the condition frame(s) (MuseV's "reference-only" attention).

    For tokens ``x`` of shape ``(B*T, N, C)`` (frames flattened into the batch, row ``b*T + t``) and condition frames
    ``I``, frame ``t`` of item ``b`` uses queries from its own tokens and keys/values from
    ``concat([x[b, t], x[b, i] for i in I])`` along the token axis. The condition frame itself thus sees its own
    tokens twice, which is exactly plain self-attention. With ``num_frames == 1`` or no condition index it is plain
    self-attention. ``enabled=False`` always gives plain self-attention.

    Keys and values of the condition tokens are sliced from the projections of all frames instead of projecting the
    concatenation: the projections are row-wise, so the result is identical and cheaper.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        condition_frame_index: FrameIndex | None = None,
        ip_hidden_states: torch.Tensor | None = None,
        ip_adapter_scale: float = 1.0,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("reference-only self-attention takes neither encoder_hidden_states nor a mask")
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if self.enabled and num_frames > 1 and condition_frame_index is not None:
            key = _with_condition_tokens(key, num_frames, condition_frame_index)
            value = _with_condition_tokens(value, num_frames, condition_frame_index)
        return _output_projection(attn, _attend(attn, query, key, value))


def _with_condition_tokens(tokens: torch.Tensor, num_frames: int, condition_frame_index: FrameIndex) -> torch.Tensor:
    """``(B*T, N, C)`` -> ``(B*T, N + len(I)*N, C)``: each frame's tokens followed by its item's condition tokens."""
    batch_frames, n_tokens, channels = tokens.shape
    frames = tokens.view(batch_frames // num_frames, num_frames, n_tokens, channels)
    index = _as_index(condition_frame_index, tokens.device)
    condition = frames[:, index].reshape(frames.shape[0], 1, -1, channels).expand(-1, num_frames, -1, -1)
    return torch.cat([frames, condition], dim=2).reshape(batch_frames, -1, channels)


class IPAdapterCrossAttnProcessor:
    """Spatial cross-attention to the text, plus the decoupled IP-Adapter branch when the layer has one.

    ``out = to_out(Attn(q, to_k(text), to_v(text)) + ip_adapter_scale * Attn(q, to_k_ip(ip), to_v_ip(ip)))`` with
    ``to_k_ip`` / ``to_v_ip`` stored on the attention module itself (official key names ``attn2.to_k_ip.weight``,
    ``attn2.to_v_ip.weight``; see ``add_ip_adapter_projections``). ``ip_hidden_states`` must already be repeated per
    frame, like the text. Without IP tokens, or with scale 0, it is plain cross-attention.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        condition_frame_index: FrameIndex | None = None,
        ip_hidden_states: torch.Tensor | None = None,
        ip_adapter_scale: float = 1.0,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("MuseV cross-attention takes no attention mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.to_q(hidden_states)
        out = _attend(attn, query, attn.to_k(context), attn.to_v(context))
        if ip_hidden_states is not None and ip_adapter_scale != 0:
            if not hasattr(attn, "to_k_ip"):
                raise ValueError("IP-Adapter tokens given, but this UNet has no IP-Adapter layers (use a referencenet variant)")
            ip_out = _attend(attn, query, attn.to_k_ip(ip_hidden_states), attn.to_v_ip(ip_hidden_states))
            out = out + ip_adapter_scale * ip_out
        return _output_projection(attn, out)


def add_ip_adapter_projections(attn: Attention, ip_token_dim: int) -> None:
    """Give a stock cross-attention the IP-Adapter key/value projections (``to_k_ip``, ``to_v_ip``, no bias).

    >>> attn = Attention(query_dim=320, cross_attention_dim=768, heads=8, dim_head=40)
    >>> add_ip_adapter_projections(attn, 768)
    >>> tuple(attn.to_k_ip.weight.shape)
    (320, 768)
    """
    inner_dim = attn.to_k.out_features
    attn.to_k_ip = nn.Linear(ip_token_dim, inner_dim, bias=False)
    attn.to_v_ip = nn.Linear(ip_token_dim, inner_dim, bias=False)


def reference_fusion_attention(channels: int, heads: int = 8) -> Attention:
    """The ReferenceNet fusion module (original ``ReferEmbFuseAttention``): stock attention with a residual.

    Keys ``to_q``, ``to_k``, ``to_v`` (no bias) and ``to_out.0``. Use it through ``fuse_reference_features``.
    """
    return Attention(query_dim=channels, heads=heads, dim_head=channels // heads, bias=False, residual_connection=True)


def fuse_reference_features(
    attn: Attention, hidden_states: torch.Tensor, refer_emb: torch.Tensor, num_frames: int
) -> torch.Tensor:
    """Fuse one ReferenceNet feature map into the video hidden states.

    ``hidden_states`` ``(B*T, C, h, w)``; ``refer_emb`` ``(B, C, 1, h_r, w_r)`` or ``(B, C, h_r, w_r)``; the reference
    grid may differ from ``h x w`` (the original routes block-2 features into block 3). Queries are the frame's own
    tokens; keys/values are ``concat([reference tokens, own tokens])``; the output is ``to_out(...) + hidden_states``.

    >>> attn = reference_fusion_attention(32)
    >>> fuse_reference_features(attn, torch.randn(10, 32, 2, 2), torch.randn(2, 32, 1, 4, 4), num_frames=5).shape
    torch.Size([10, 32, 2, 2])
    """
    batch_frames, channels = hidden_states.shape[:2]
    if refer_emb.shape[0] * num_frames != batch_frames or refer_emb.shape[1] != channels:
        raise ValueError(
            f"ReferenceNet feature {tuple(refer_emb.shape)} does not fit hidden states {tuple(hidden_states.shape)} "
            f"with {num_frames} frames"
        )
    refer_emb = refer_emb.to(hidden_states.dtype)
    refer_tokens = refer_emb.flatten(2).transpose(1, 2).repeat_interleave(num_frames, dim=0)
    own_tokens = hidden_states.flatten(2).transpose(1, 2)
    # The stock processor takes the 4-D input as queries, adds the residual and restores the 4-D shape.
    return attn(hidden_states, encoder_hidden_states=torch.cat([refer_tokens, own_tokens], dim=1))
