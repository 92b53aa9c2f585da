"""Latent arithmetic of the zero-shot pose-video method, each operation at a stated noise level.

Latents at timestep ``t`` are ``√ᾱₜ·x₀ + √(1 − ᾱₜ)·ε``. Everything here keeps to that: references mixed into the
denoising loop are brought to the level of the latents they join, and ``level=None`` means clean (t = 0, after the
last step).

>>> import torch
>>> from diffusers import DDIMScheduler
>>> scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
>>> noise = initial_noise(3, (4, 8, 8), mode="shared", generator=torch.Generator().manual_seed(0))
>>> bool((noise[0] == noise[2]).all())
True
>>> round(signal_weight(scheduler, 661), 3)      # after step 15 of 50: a third signal, the rest noise
0.33
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def initial_noise(
    num_frames: int,
    latent_shape: tuple[int, int, int],
    *,
    mode: str,
    independence: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Unit-variance starting noise for a clip, ``[num_frames, C, h, w]`` float32 on the generator's device.

    ``mode="independent"``: one draw per frame. ``mode="shared"``: one draw repeated; with ``independence = w > 0``
    each frame gets ``√(1 − w)·shared + √w·own`` (still unit variance). The shared draw comes first from the
    generator, so a given seed gives the same shared noise whatever ``w`` is.
    """
    device = generator.device if generator is not None else torch.device("cpu")

    def draw(count: int) -> torch.Tensor:
        return torch.randn((count, *latent_shape), generator=generator, device=device, dtype=torch.float32)

    if mode == "independent":
        return draw(num_frames)
    if mode != "shared":
        raise ValueError(f"unknown noise mode {mode!r}")
    shared = draw(1).expand(num_frames, *latent_shape)
    if independence == 0.0:
        return shared.clone()
    return math.sqrt(1.0 - independence) * shared + math.sqrt(independence) * draw(num_frames)


def signal_weight(scheduler, level: int | torch.Tensor | None) -> float:
    """√ᾱ at a timestep: how much of the clean latent a latent at that level holds (1.0 for ``level=None``)."""
    if level is None:
        return 1.0
    return float(scheduler.alphas_cumprod[int(level)].sqrt())


def noised_to_level(scheduler, clean: torch.Tensor, noise: torch.Tensor, level: int | torch.Tensor | None) -> torch.Tensor:
    """``clean`` latents brought to noise level ``level`` with ``scheduler.add_noise`` (unchanged for ``None``)."""
    if level is None:
        return clean
    timesteps = torch.full((clean.shape[0],), int(level), dtype=torch.long, device=clean.device)
    return scheduler.add_noise(clean, noise.to(clean), timesteps)


def pull_towards(latents: torch.Tensor, reference: torch.Tensor, strength: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``x + s·m·(r − x)``: strength ``s`` everywhere, or only where the per-frame mask ``m`` (``[F, 1, h, w]`` in
    [0, 1]) is set. ``s = 1`` without a mask copies ``reference``."""
    if strength == 1.0 and mask is None:
        return reference.clone()
    weight = strength if mask is None else strength * mask
    return latents + weight * (reference - latents)


def source_inside(reference: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``m·source + (1 − m)·reference``: the source latents inside the mask, the reference outside (the original's
    masked reference)."""
    return reference + mask * (source - reference)


def pull_towards_previous(latents: torch.Tensor, strength: float, mask: torch.Tensor | None = None,
                          source: torch.Tensor | None = None) -> torch.Tensor:
    """Frame k pulled towards frame k−1 *after* k−1's own pull: a scan along the clip.

    At ``s = 1`` every frame becomes frame 0. Below 1, frame j's own latents reach frame k with weight
    ``(1 − s)·s^(k−j)`` and frame 0's with ``s^k``: an exponential moving average along the clip.
    With ``source`` (and ``mask``), the reference is :func:`source_inside` of the previous frame and the frame's own
    source latents, frame 0's being itself outside the mask.
    """
    if source is not None:
        pulled = [pull_towards(latents[0], source_inside(latents[0], source[0], mask[0]), strength)]
    else:
        pulled = [latents[0]]
    for k in range(1, latents.shape[0]):
        if source is not None:
            pulled.append(pull_towards(latents[k], source_inside(pulled[k - 1], source[k], mask[k]), strength))
        else:
            frame_mask = None if mask is None else mask[k]
            pulled.append(pull_towards(latents[k], pulled[k - 1], strength, frame_mask))
    return torch.stack(pulled)


def motion_reference(first_frame: torch.Tensor, source_latents: torch.Tensor, weight: float) -> torch.Tensor:
    """Frame 0's latents moved by the source video's motion: ``x₀ + w·(z_k − z_0)`` for every frame k.

    A clean difference joins latents at level t with ``w = √ᾱₜ`` (shifting x₀ by Δ shifts the noisy latent by
    √ᾱₜ·Δ when the noise is the same). Frame 0 gets Δ = 0, i.e. itself.
    """
    difference = source_latents - source_latents[:1]
    return first_frame.unsqueeze(0) + weight * difference


def masks_to_latent_grid(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-frame masks ``[F, H, W]`` in [0, 1] → ``[F, 1, h, w]`` by area averaging (soft edges, no aliasing)."""
    return F.interpolate(masks.unsqueeze(1).float(), size=size, mode="area").clamp(0.0, 1.0)
