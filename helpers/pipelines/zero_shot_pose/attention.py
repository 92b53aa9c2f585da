"""Cross-frame self-attention: each frame's queries attend to keys/values taken from other frames of the clip.

The frames of a clip go through the UNet and the ControlNet as one batch, laid out as ``groups × frames`` (with
classifier-free guidance: the unconditional frames, then the conditional ones). The processor is told the frame
count explicitly and regroups the batch by it, so frame k of each group attends to the chosen frames of the *same*
group. It replaces only the self-attention layers (``attn1``); text cross-attention (``attn2``) is untouched.

>>> with cross_frame_attention([pipe.unet, pipe.controlnet], "first_frame", num_frames=16) as processor:
...     processor.num_frames = 16           # the loop sets it before each call when the batch shrinks
...     noise = pipe.unet(...)

Key sources per mode (frame k; for k = 0 every source is frame 0 itself, so frame 0 is computed exactly as alone —
attending to a duplicated key set gives the same softmax average):

- ``first_frame``: frame 0 (Text2Video-Zero);
- ``first_and_previous``: frame 0 and frame k−1 (sparse-causal);
- ``self_and_first``: frame k and frame 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

KEY_SOURCES = {
    "first_frame": ("first",),
    "first_and_previous": ("first", "previous"),
    "self_and_first": ("self", "first"),
}


def key_frame_indices(mode: str, num_frames: int) -> list[torch.Tensor]:
    """For each key source of ``mode``, the frame index each frame takes its keys from.

    >>> [t.tolist() for t in key_frame_indices("first_and_previous", 4)]
    [[0, 0, 0, 0], [0, 0, 1, 2]]
    """
    if mode not in KEY_SOURCES:
        raise ValueError(f"unknown cross-frame attention mode {mode!r}: use one of {', '.join(KEY_SOURCES)}")
    frames = torch.arange(num_frames)
    by_source = {
        "first": torch.zeros_like(frames),
        "previous": (frames - 1).clamp(min=0),
        "self": frames,
    }
    return [by_source[source] for source in KEY_SOURCES[mode]]


class CrossFrameAttnProcessor:
    """Attention processor for self-attention layers that takes keys/values from other frames.

    ``num_frames`` is the number of frames in the batch the next forward pass sees; the batch must be a whole number
    of groups of that many frames. Uses ``scaled_dot_product_attention`` (memory-efficient kernels on CUDA).
    """

    def __init__(self, mode: str, num_frames: int):
        self.mode = mode
        self.num_frames = num_frames
        key_frame_indices(mode, 1)  # validates the mode

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("cross-frame attention is for self-attention layers without a mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = None
        if hidden_states.ndim == 4:  # (B, C, H, W) → (B, HW, C)
            image_shape = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        batch, tokens, _ = hidden_states.shape
        frames = self.num_frames
        if frames < 1 or batch % frames:
            raise ValueError(f"cross-frame attention: a batch of {batch} is not whole groups of {frames} frames")
        query = attn.to_q(hidden_states)
        key = self._gather_frames(attn.to_k(hidden_states), batch // frames)
        value = self._gather_frames(attn.to_v(hidden_states), batch // frames)

        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))  # projection, then dropout

        if image_shape is not None:
            out = out.transpose(1, 2).reshape(image_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _gather_frames(self, projected: torch.Tensor, groups: int) -> torch.Tensor:
        """``[G·F, N, D]`` keys or values → ``[G·F, S·N, D]``: for each frame, its S source frames' tokens in a row."""
        frames = self.num_frames
        per_group = projected.view(groups, frames, *projected.shape[1:])
        sources = [per_group[:, index.to(projected.device)] for index in key_frame_indices(self.mode, frames)]
        gathered = torch.cat(sources, dim=2) if len(sources) > 1 else sources[0]
        return gathered.reshape(groups * frames, -1, projected.shape[-1])


def self_attention_names(model: torch.nn.Module) -> list[str]:
    """Processor names of the self-attention layers (``...attn1.processor``) of a UNet or ControlNet."""
    return [name for name in model.attn_processors if name.endswith("attn1.processor")]


@contextmanager
def cross_frame_attention(models: Sequence[torch.nn.Module], mode: str,
                          num_frames: int) -> Iterator[CrossFrameAttnProcessor | None]:
    """Install one :class:`CrossFrameAttnProcessor` on every self-attention layer of ``models`` for the duration of
    the block, then put the previous processors back (so attention slicing or other settings survive).

    Yields the processor (its ``num_frames`` may be changed between forward passes), or None for ``mode="off"``.
    """
    if mode == "off":
        yield None
        return
    processor = CrossFrameAttnProcessor(mode, num_frames)
    saved: list[tuple[torch.nn.Module, dict]] = []
    try:
        for model in models:
            previous = dict(model.attn_processors)
            if not self_attention_names(model):
                raise ValueError(f"{type(model).__name__} has no self-attention layers to make cross-frame")
            model.set_attn_processor({name: processor if name.endswith("attn1.processor") else current
                                      for name, current in previous.items()})
            saved.append((model, previous))
        yield processor
    finally:
        for model, previous in saved:
            model.set_attn_processor(previous)
