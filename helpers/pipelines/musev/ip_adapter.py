"""IP-Adapter image projection as MuseV uses it: CLIP ViT-H ``image_embeds`` -> 4 tokens of the text width.

The official ``ip_adapter_image_proj.bin`` holds ``{"image_proj": {proj.weight, proj.bias, norm.weight, norm.bias}}``
(tencent-ailab ``ImageProjModel``). That is exactly stock ``diffusers`` ``ImageProjection`` with ``proj`` renamed
``image_embeds``: tokens = LayerNorm(reshape(proj(x), [N, tokens, D])).

    >>> proj = build_image_projection(clip_embeddings_dim=16, cross_attention_dim=32, num_tokens=4)
    >>> uncond, cond = image_prompt_tokens(proj, torch.randn(1, 16))
    >>> tuple(uncond.shape), tuple(cond.shape)
    ((1, 4, 32), (1, 4, 32))

The unconditional tokens are the projection of zeros (not zeros), as in the original pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers.models.embeddings import ImageProjection

# official key prefix -> stock ImageProjection key prefix
_OFFICIAL_TO_STOCK = {"proj.": "image_embeds.", "norm.": "norm."}
_CONTAINER_PREFIX = "image_proj."


def build_image_projection(
    clip_embeddings_dim: int = 1024, cross_attention_dim: int = 768, num_tokens: int = 4
) -> ImageProjection:
    """The projection with MuseV's settings (defaults: CLIP ViT-H/14 ``projection_dim`` 1024, SD1.5 width 768)."""
    return ImageProjection(
        image_embed_dim=clip_embeddings_dim, cross_attention_dim=cross_attention_dim, num_image_text_embeds=num_tokens
    )


def convert_image_projection_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official keys (bare, or under ``image_proj.`` as flattened from the pickle) -> stock ``ImageProjection`` keys.

    Keys that are neither ``proj.*`` nor ``norm.*`` are kept as they are, so a strict load reports them.
    """
    flat = {k[len(_CONTAINER_PREFIX):] if k.startswith(_CONTAINER_PREFIX) else k: v for k, v in state_dict.items()}
    converted = {}
    for key, value in flat.items():
        prefix = next((p for p in _OFFICIAL_TO_STOCK if key.startswith(p)), None)
        converted[_OFFICIAL_TO_STOCK[prefix] + key[len(prefix):] if prefix else key] = value
    return converted


def image_projection_dims(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int, int]:
    """``(clip_embeddings_dim, cross_attention_dim, num_tokens)`` read from the shapes of a converted state dict."""
    out_features, clip_dim = state_dict["image_embeds.weight"].shape
    width = state_dict["norm.weight"].shape[0]
    return int(clip_dim), int(width), int(out_features) // int(width)


def image_prompt_tokens(
    image_proj: ImageProjection, clip_image_embeds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unconditional and conditional IP-Adapter tokens for one or more images.

    ``clip_image_embeds`` ``(N, E)`` (or ``(N, 1, E)``) -> two tensors ``(1, N*tokens, D)``: the tokens of the N
    images are concatenated along the sequence, as the original does with several IP images. The unconditional
    tokens are ``proj(zeros_like(clip_image_embeds))``.
    """
    param = next(image_proj.parameters())
    embeds = clip_image_embeds.reshape(clip_image_embeds.shape[0], -1).to(device=param.device, dtype=param.dtype)
    cond = image_proj(embeds[:, None])
    uncond = image_proj(torch.zeros_like(embeds)[:, None])
    return uncond.reshape(1, -1, uncond.shape[-1]), cond.reshape(1, -1, cond.shape[-1])
