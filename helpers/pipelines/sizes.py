"""Which frame sizes a loaded pipeline accepts, read from its models' configurations (never from a constant).

The VAE halves the picture once per level after the first; a UNet that cannot resize its skip connections halves
the latents once per down block that down-samples, so its inputs must divide by both.

>>> size_multiple(pipe.vae, pipe.unet)       # SVD-XT: 8 × 8 = 64; a two-level test UNet: 8 × 2 = 16
"""

from __future__ import annotations


def vae_scale_factor(vae) -> int:
    """Pixels per latent cell of a VAE (8 for every released SD/SVD VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def unet_downsampling(unet) -> int:
    """How many times the UNet's down path halves the latents (8 for four levels)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def size_multiple(vae, unet=None) -> int:
    """The multiple every height and width must be: the VAE's scale factor, times the UNet's down-sampling factor
    when ``unet`` is given (for UNets whose up path needs the latents to divide evenly)."""
    return vae_scale_factor(vae) * (unet_downsampling(unet) if unet is not None else 1)
