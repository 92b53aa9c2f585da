"""Tiny random-weight parts written in the real on-disk layout (diffusers/transformers folders).

Used by the tests and by SMOKE mode so the real loaders (``from_pretrained`` on the folders the weights manager
produces) run without any real weights. Every writer seeds torch, so the same call writes the same weights.

>>> from helpers.testing import common
>>> common.write_sd_folder(root / "models/sd15/base")            # SD1.5-style pipeline folder
>>> common.write_sd_folder(root / "models/sd21/base", v_prediction=True, linear_projection=True)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# A vocabulary small enough to write by hand; ids stay below the tiny text encoders' vocab_size.
TINY_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
              "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]
TINY_MERGES = ["#version: 0.2", "l o", "lo w</w>", "e r</w>"]
TEXT_VOCAB_SIZE = 1000


def write_clip_tokenizer(folder: Path, *, max_length: int = 77) -> Path:
    """An offline CLIP BPE tokenizer (vocab.json + merges.txt + config) that ``CLIPTokenizer.from_pretrained`` reads
    with transformers 4 and 5."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TINY_VOCAB)}))
    (folder / "merges.txt").write_text("\n".join(TINY_MERGES) + "\n")
    config = {"model_max_length": max_length, "unk_token": "<unk>", "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer",
              "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("unk_token", "bos_token", "eos_token", "pad_token")}, indent=2))
    return folder


def load_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), unk_token="<unk>", model_max_length=77)


def tiny_text_encoder(hidden_size: int = 32, *, projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=hidden_size, intermediate_size=37,
                            layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, pad_token_id=1,
                            vocab_size=TEXT_VOCAB_SIZE, projection_dim=hidden_size)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def write_clip_vision(folder: Path, *, hidden_size: int = 32, projection_dim: int = 32, image_size: int = 32,
                      patch_size: int = 4, seed: int = 0) -> Path:
    """A tiny ``CLIPVisionModelWithProjection`` + ``CLIPImageProcessor`` config in one folder (the layout of an
    ``image_encoder/`` folder; the processor file doubles as ``feature_extractor/``)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=hidden_size, projection_dim=projection_dim, num_hidden_layers=2,
                              num_attention_heads=4, image_size=image_size, intermediate_size=37,
                              patch_size=patch_size)
    folder = Path(folder)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    write_image_processor(folder, image_size)
    return folder


def write_image_processor(folder: Path, image_size: int) -> Path:
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(crop_size={"height": image_size, "width": image_size},
                       size={"shortest_edge": image_size}).save_pretrained(folder)
    return Path(folder)


def tiny_unet2d(*, cross_attention_dim: int = 32, linear_projection: bool = False, attention_head_dim=2,
                in_channels: int = 4, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=4, attention_head_dim=attention_head_dim,
        use_linear_projection=linear_projection,
    ).eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4, sample_size=32).eval()


def write_sd_folder(folder: Path, *, cross_attention_dim: int = 32, v_prediction: bool = False,
                    linear_projection: bool = False, scheduler: str = "DDIMScheduler", seed: int = 0) -> Path:
    """A Stable Diffusion pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).

    SD1.5 style by default; ``v_prediction=True, linear_projection=True`` gives the SD2.1 (768-v) layout. The VAE
    downsamples by 2 (two blocks), so latents are half the image size.
    """
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

    folder = Path(folder)
    scheduler_cls = {"DDIMScheduler": DDIMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler}[scheduler]
    sched = scheduler_cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1,
                          prediction_type="v_prediction" if v_prediction else "epsilon") \
        if scheduler == "DDIMScheduler" else scheduler_cls(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            prediction_type="v_prediction" if v_prediction else "epsilon")
    tokenizer_dir = write_clip_tokenizer(folder / "tokenizer")
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(cross_attention_dim, seed=seed),
        tokenizer=load_clip_tokenizer(tokenizer_dir),
        unet=tiny_unet2d(cross_attention_dim=cross_attention_dim, linear_projection=linear_projection, seed=seed),
        scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    # save_pretrained writes tokenizer.json only; keep the portable vocab/merges files beside it
    write_clip_tokenizer(folder / "tokenizer")
    return folder


def write_controlnet(folder: Path, *, cross_attention_dim: int = 32, linear_projection: bool = False,
                     seed: int = 0) -> Path:
    """A tiny ``ControlNetModel`` matching ``tiny_unet2d`` (same blocks, channels and attention layout)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    model = ControlNetModel(
        block_out_channels=(8, 16), layers_per_block=1, in_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=cross_attention_dim,
        conditioning_embedding_out_channels=(8, 8), norm_num_groups=4, attention_head_dim=2,
        use_linear_projection=linear_projection,
    ).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def write_motion_adapter(folder: Path, *, seed: int = 0) -> Path:
    """A tiny AnimateDiff ``MotionAdapter`` matching ``tiny_unet2d`` channels (8, 16)."""
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=4,
                            motion_num_attention_heads=2, motion_max_seq_length=32)
    adapter.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def write_svd_components(folder: Path, *, image_size: int = 32, seed: int = 0) -> Path:
    """The SVD-XT folder without its UNet: vae/ (temporal decoder), image_encoder/, feature_extractor/, scheduler/,
    model_index.json — the layout the weights manager downloads."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler

    folder = Path(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                                       down_block_types=("DownEncoderBlock2D",) * 2, latent_channels=4,
                                       layers_per_block=1)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    write_clip_vision(folder / "image_encoder", hidden_size=32, projection_dim=16, image_size=image_size, seed=seed)
    write_image_processor(folder / "feature_extractor", 224)
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           interpolation_type="linear", num_train_timesteps=1000, prediction_type="v_prediction",
                           sigma_max=700.0, sigma_min=0.002, steps_offset=1, timestep_spacing="leading",
                           timestep_type="continuous", use_karras_sigmas=True).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
    }, indent=2))
    return folder
