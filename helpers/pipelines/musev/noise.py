"""MuseV's initial noise: "video fusion" noise mixed with the condition latent.

The original starts every video from noise that is partly shared by all frames and partly per frame, then pulls it a
little toward the (time-averaged) condition latent:

    noise = sqrt(1 - w_ind) * common + sqrt(w_ind) * individual      common: (B, C, 1, h, w), broadcast over time
    noise = sqrt(img_weight) * mean_t(condition_latent) + sqrt(1 - img_weight) * noise
    latents = noise * scheduler.init_noise_sigma

with ``w_ind = 0.5`` and ``img_weight = 1e-3`` by default. The shared part makes frames start alike (smooth motion);
the image prior is tiny but measurable.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> noise = video_fusion_noise((1, 4, 12, 64, 64), generator=g)
>>> noise = add_condition_prior(noise, torch.zeros(1, 4, 1, 64, 64))
>>> noise.shape
torch.Size([1, 4, 12, 64, 64])
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

W_IND_NOISE = 0.5
IMG_WEIGHT = 1e-3


def video_fusion_noise(
    shape: tuple[int, int, int, int, int],
    *,
    w_ind_noise: float = W_IND_NOISE,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    common: torch.Tensor | None = None,
    individual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise of ``shape = (B, C, T, h, w)`` whose frames share a common part.

    Draw order follows the original so a seeded generator gives the same numbers: the common noise ``(B, C, 1, h, w)``
    first, then the individual noise ``(B, C, T, h, w)``; with a list of generators (one per batch item) each item
    draws its own common then individual part. ``common`` / ``individual`` replace the draws (given noise).
    """
    batch, channels, frames, height, width = shape
    if isinstance(generator, list):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}: pass one per batch item")
        parts = [
            video_fusion_noise(
                (1, channels, frames, height, width),
                w_ind_noise=w_ind_noise,
                generator=one,
                device=device,
                dtype=dtype,
                common=None if common is None else common[i : i + 1],
                individual=None if individual is None else individual[i : i + 1],
            )
            for i, one in enumerate(generator)
        ]
        return torch.cat(parts)
    if common is None:
        common = randn_tensor((batch, channels, 1, height, width), generator=generator, device=device, dtype=dtype)
    if individual is None:
        individual = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    common = common.to(device=individual.device, dtype=individual.dtype)
    # Same arithmetic as the original (weights as tensors of the noise dtype), so given noise reproduces it bit for bit.
    weight = torch.tensor(w_ind_noise, device=individual.device, dtype=individual.dtype)
    return torch.sqrt(1 - weight) * common + torch.sqrt(weight) * individual


def add_condition_prior(
    noise: torch.Tensor, condition_latents: torch.Tensor, img_weight: float = IMG_WEIGHT
) -> torch.Tensor:
    """Mix the time-averaged condition latent ``(B, C, n, h, w)`` into ``noise`` ``(B, C, T, h, w)``."""
    prior = condition_latents.to(device=noise.device, dtype=noise.dtype).mean(dim=2, keepdim=True)
    return img_weight**0.5 * prior + (1 - img_weight) ** 0.5 * noise


def initial_video_noise(
    shape: tuple[int, int, int, int, int],
    condition_latents: torch.Tensor | None,
    *,
    w_ind_noise: float = W_IND_NOISE,
    img_weight: float = IMG_WEIGHT,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The original's noise recipe before scaling by ``init_noise_sigma``: video fusion noise, plus the condition
    prior when a condition latent is given (``img_weight = 0`` turns the prior off)."""
    noise = video_fusion_noise(shape, w_ind_noise=w_ind_noise, generator=generator, device=device, dtype=dtype)
    if condition_latents is not None and img_weight > 0:
        noise = add_condition_prior(noise, condition_latents, img_weight)
    return noise
