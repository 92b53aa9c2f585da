"""Tiny random-weight MuseV packs in the real on-disk layout (tests and SMOKE mode).

Writes, under ``<root>/models/musev/<role>/<path in the TMElyralab/MuseV repo>``:

- ``unet_musev`` / ``unet_referencenet``: ``motion/<model>/unet/config.json`` (the original's keys) and the UNet as
  an fp32 torch pickle ``diffusion_pytorch_model.bin``, like the release (``weights.resolve`` converts it to fp16
  safetensors on first use); the state dict holds the official key names, spatial SD1.5 copy included;
- ``referencenet``: ``motion/musev_referencenet/referencenet/`` config + pickle (SD1.5 encoder keys);
- ``ip_adapter_image_proj``: ``motion/musev_referencenet/ip_adapter_image_proj.bin`` = ``{"image_proj": ...}``;
- ``base_model``: an SD1.5 diffusers folder (UNet with the video UNet's spatial layout, VAE, CLIP text encoder,
  offline tokenizer, the SD1.5 scheduler config);
- ``vae``: the VAE folder (``vae/sd-vae-ft-mse``); ``image_encoder``: a CLIP vision model with projection at 224
  pixels (so the real CLIP preprocessing runs); ``negative_embeddings``: A1111-style textual-inversion files;
- with ``pose=True``: ``unet_referencenet_pose`` and ``ip_adapter_image_proj_pose`` (pose-to-video);
- ``controlnets=("controlnet_openpose", ...)``: stock diffusers ``ControlNetModel`` folders with the SD1.5 key set
  (``ControlNetModel.from_unet`` of the tiny spatial UNet, the official conditioning embedding widths).

Widths shrink (channels 32/64/32/32, text width 32, 8 heads) but the topology, the flags and the key names are the
released ones, so the real loaders run unchanged. Weights the original initialises to zero (last temporal
projections, fusion outputs) are drawn too, so no path is an identity.

>>> root = write_tiny_musev_packs(tmp_path)
>>> pipe = load_musev_pipeline("musev_referencenet", root=root, device="cpu", dtype=torch.float32)
>>> pipe("a girl", image, height=64, width=64, time_size=4, num_inference_steps=2, context_frames=4)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers import registry
from helpers.testing import common

PACK = "musev"
TINY_WIDTHS = dict(block_out_channels=(32, 64, 32, 32), cross_attention_dim=32, attention_head_dim=8,
                   norm_num_groups=32, layers_per_block=2)
TINY_CLIP_EMBEDDINGS = 32  # CLIP image_embeds width of the tiny image encoder (ViT-H: 1024)
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4, norm_num_groups=32,
                sample_size=64, scaling_factor=0.18215)
# SD1.5's scheduler_config.json (PNDM; the pipeline builds its Euler scheduler from it), except v-prediction:
# random weights never denoise, and with epsilon prediction the latents would stay at the noise scale (~15) and
# decode to saturated frames; with v-prediction they become O(1) after the first step.
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
                  "prediction_type": "v_prediction"}
UNET_ROLES = {"musev": "unet_musev", "musev_referencenet": "unet_referencenet"}
POSE_ROLES = {"musev_referencenet_pose": "unet_referencenet_pose"}
CONTROLNET_EMBEDDING_CHANNELS = (16, 32, 96, 256)  # the SD1.5 ControlNets' conditioning embedding (kept full size)


def _entry_path(root: Path, role: str) -> Path:
    """Where the first (official) candidate of a role puts its entry (file or folder)."""
    entry = registry.PACKS[PACK].roles[role].candidates[0].entry
    return root / "models" / PACK / role / entry


def _draw_zero_initialised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every all-zero tensor small random values and every ``temporal_weight`` 0.5 (not the 1e-5 init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("temporal_weight"):
                param.fill_(0.5)
            elif not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def _spatial_unet_kwargs() -> dict:
    widths = {k: v for k, v in TINY_WIDTHS.items()}
    return dict(
        in_channels=4, out_channels=4, sample_size=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        **widths,
    )


def _original_unet_config(variant: str) -> dict:
    """A MuseV UNet ``config.json`` in the original's vocabulary (2-D block names, MuseV flags)."""
    from helpers.pipelines.musev.unet_config import MUSEV_VARIANTS

    flags = {k: v for k, v in MUSEV_VARIANTS[variant].items() if k not in _spatial_unet_kwargs()}
    config = {"_class_name": "UNet3DConditionModel", "_diffusers_version": "0.21.0.dev0", **_spatial_unet_kwargs(),
              **flags, "temporal_conv_block": "TemporalConvLayer", "temporal_transformer": "TransformerTemporalModel"}
    config.pop("sample_size")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def write_tiny_unet(folder: Path, variant: str, seed: int = 0) -> Path:
    """``config.json`` + fp32 pickle of a tiny MuseV video UNet with the official key names."""
    from helpers.pipelines.musev.unet import MuseVUNet3DConditionModel
    from helpers.pipelines.musev.unet_config import musev_unet_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = MuseVUNet3DConditionModel(**musev_unet_config(variant, **TINY_WIDTHS))
    _draw_zero_initialised(model, seed)
    (folder / "config.json").write_text(json.dumps(_original_unet_config(variant), indent=2))
    torch.save(dict(model.state_dict()), folder / "diffusion_pytorch_model.bin")
    return folder


def write_tiny_referencenet(folder: Path, seed: int = 1) -> Path:
    from helpers.pipelines.musev.referencenet import MuseVReferenceNet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "ReferenceNet2D", **_spatial_unet_kwargs(), "need_block_embs": True,
              "need_self_attn_block_embs": False}
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    torch.manual_seed(seed)
    model = MuseVReferenceNet.from_musev_config(config)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(dict(model.state_dict()), folder / "diffusion_pytorch_model.bin")
    return folder


def write_tiny_image_projection(file: Path, seed: int = 2) -> Path:
    """``{"image_proj": {proj.*, norm.*}}`` as the official pickle (tencent-ailab key names)."""
    from helpers.pipelines.musev.ip_adapter import build_image_projection

    torch.manual_seed(seed)
    proj = build_image_projection(TINY_CLIP_EMBEDDINGS, TINY_WIDTHS["cross_attention_dim"], 4)
    official = {k.replace("image_embeds.", "proj.", 1): v for k, v in proj.state_dict().items()}
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"image_proj": official}, file)
    return file


def write_tiny_vae(folder: Path, seed: int = 3) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL(**TINY_VAE).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def write_tiny_base_model(folder: Path, seed: int = 4) -> Path:
    """An SD1.5 diffusers folder whose UNet has the tiny video UNet's spatial layout."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    torch.manual_seed(seed)
    UNet2DConditionModel(**_spatial_unet_kwargs()).save_pretrained(folder / "unet", safe_serialization=True)
    write_tiny_vae(folder / "vae", seed + 1)
    text_encoder = common.tiny_text_encoder(TINY_WIDTHS["cross_attention_dim"], seed=seed)
    with torch.no_grad():  # a trained CLIP's last LayerNorm has a bias, so its embeddings do not average to zero
        # (the prompt weighting divides by that average)
        text_encoder.get_submodule(_final_norm(text_encoder)).bias.normal_(0.2, 0.1, generator=torch.Generator().manual_seed(seed))
    text_encoder.save_pretrained(folder / "text_encoder")
    common.write_clip_tokenizer(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }, indent=2))
    return folder


def write_tiny_controlnet(folder: Path, seed: int = 6) -> Path:
    """A stock ``ControlNetModel`` folder (``config.json`` + safetensors) with the key set of an SD1.5 ControlNet
    such as ``lllyasviel/control_v11p_sd15_openpose``, at the tiny widths; its zero convolutions are drawn."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    model = ControlNetModel.from_unet(UNet2DConditionModel(**_spatial_unet_kwargs()),
                                      conditioning_embedding_out_channels=CONTROLNET_EMBEDDING_CHANNELS)
    _draw_zero_initialised(model, seed)
    model.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def write_tiny_negative_embeddings(folder: Path, seed: int = 5) -> Path:
    """The two textual-inversion files of the V2 negative prompt, A1111 layout, multi-vector like the real ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    width = TINY_WIDTHS["cross_attention_dim"]
    for name, vectors in (("badhandv4", 2), ("ng_deepnegative_v1_75t", 3)):
        embedding = torch.randn(vectors, width, generator=generator) * 0.02
        torch.save({"string_to_param": {"*": embedding}, "name": name, "step": 1000}, folder / f"{name}.pt")
    return folder


def write_tiny_musev_packs(root: Path | str, *, negative_embeddings: bool = True, pose: bool = False,
                           controlnets: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write every role of the ``musev`` pack that the two text/image-to-video variants use (skipping those already
    there). ``negative_embeddings=False`` leaves the textual-inversion files out; ``pose=True`` adds the
    ``musev_referencenet_pose`` UNet and IP projection, ``controlnets`` the named ControlNet roles. Returns ``root``."""
    root = Path(root)
    unets = {**UNET_ROLES, **(POSE_ROLES if pose else {})}
    for offset, (variant, role) in enumerate(unets.items()):
        folder = _entry_path(root, role)
        if not (folder / "diffusion_pytorch_model.bin").is_file():
            write_tiny_unet(folder, variant, seed=seed + offset)
    writers = {
        "referencenet": lambda path: write_tiny_referencenet(path, seed + 10),
        "ip_adapter_image_proj": lambda path: write_tiny_image_projection(path, seed + 11),
        "base_model": lambda path: write_tiny_base_model(path, seed + 12),
        "vae": lambda path: write_tiny_vae(path, seed + 13),
        "image_encoder": lambda path: common.write_clip_vision(
            path, hidden_size=32, projection_dim=TINY_CLIP_EMBEDDINGS, image_size=224, patch_size=32, seed=seed + 14),
    }
    if negative_embeddings:
        writers["negative_embeddings"] = lambda path: write_tiny_negative_embeddings(path, seed + 15)
    if pose:
        writers["ip_adapter_image_proj_pose"] = lambda path: write_tiny_image_projection(path, seed + 16)
    for offset, role in enumerate(controlnets):
        writers[role] = lambda path, offset=offset: write_tiny_controlnet(path, seed + 20 + offset)
    for role, write in writers.items():
        path = _entry_path(root, role)
        if not (path.is_file() or (path.is_dir() and any(path.iterdir()))):
            write(path)
    return root


def _final_norm(text_encoder) -> str:
    """Name of the CLIP text encoder's last LayerNorm (transformers 4 nests it under ``text_model``, 5 does not)."""
    names = [name for name, _ in text_encoder.named_modules() if name.endswith("final_layer_norm")]
    return names[0]
