"""Tiny random-weight ID-Animator packs in the real on-disk layout, and a fake face detector.

The packs keep the real structure (SD1.5 block layout, so the 16 face layers are numbered 1..31 as in
``animator.ckpt``; a 257-token CLIP vision tower; rank-128 LoRA; AnimateDiff v2 motion modules) at tiny widths, so
the real loaders and converters run on them: the weights manager converts ``animator.ckpt`` to fp16 safetensors, the
ID-Animator loader converts that to IP-Adapter + LoRA, and the community model is an LDM single file.

>>> from helpers.testing.id_animator import write_tiny_id_animator_packs, FakeFaceDetector, synthetic_face_photo
>>> write_tiny_id_animator_packs(weights.root())
>>> pipe = load_id_animator_pipeline(base_model="community")
>>> crop = face.prepare_face(synthetic_face_photo(), detector=FakeFaceDetector()).image
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers.face import ARCFACE_TEMPLATE_112, DetectedFace
from helpers.testing import common

# Tiny widths with the SD1.5 block layout (4 blocks, 2 layers each, 32 norm groups as motion modules require).
UNET_CONFIG = {
    "block_out_channels": (32, 32, 64, 64), "layers_per_block": 2, "cross_attention_dim": 32,
    "attention_head_dim": 8, "norm_num_groups": 32, "sample_size": 8,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
VAE_CONFIG = {
    "block_out_channels": (32, 32, 32, 32), "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 32,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4, "sample_size": 64,
}
MOTION_CONFIG = {
    "block_out_channels": (32, 32, 64, 64), "motion_layers_per_block": 2, "motion_num_attention_heads": 8,
    "motion_norm_num_groups": 32, "motion_max_seq_length": 32, "use_motion_mid_block": True,
}
# Full-size configurations of the official models (SD1.5, AnimateDiff v2, CLIP ViT-H/14): shape tables on the meta
# device and random-weight benchmarks.
SD15_UNET_CONFIG = {"block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
                    "layers_per_block": 2, "sample_size": 64}
SD15_VAE_CONFIG = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
                   "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
                   "sample_size": 512}
SD15_TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                    "projection_dim": 768}
MOTION_V2_CONFIG = {"block_out_channels": (320, 640, 1280, 1280), "motion_layers_per_block": 2,
                    "motion_num_attention_heads": 8, "motion_norm_num_groups": 32, "motion_max_seq_length": 32,
                    "use_motion_mid_block": True}
VIT_H_CONFIG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
                "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu",
                "layer_norm_eps": 1e-5}
VISION_HIDDEN = 48  # CLIP vision width; 224 px images with 14 px patches keep the real 257 tokens
COMMUNITY_FILE = "realisticVisionV60B1_v51VAE.safetensors"


def _seeded(seed: int):
    torch.manual_seed(seed)
    return seed


def _randomize_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Small random values everywhere, norm gains near 1: zero-initialised outputs (motion ``proj_out``, ControlNet
    zero convs) would otherwise make the module a no-op and the tests blind to it."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * scale
            is_norm_gain = param.ndim == 1 and name.endswith("weight")
            param.copy_(1.0 + noise if is_norm_gain else noise)
    return module


# -- component writers ---------------------------------------------------------------------------------------------
def tiny_sd15_parts(seed: int = 0):
    """(unet, vae, text_encoder) with the SD1.5 layout at tiny widths."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    _seeded(seed)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval()
    vae = AutoencoderKL(**VAE_CONFIG).eval()
    text_encoder = common.tiny_text_encoder(UNET_CONFIG["cross_attention_dim"], seed=seed)
    return unet, vae, text_encoder


def write_tiny_sd15_folder(folder: Path, seed: int = 0) -> Path:
    """An SD1.5-layout diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    scheduler/, feature_extractor/)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    unet, vae, text_encoder = tiny_sd15_parts(seed)
    tokenizer = common.load_clip_tokenizer(common.write_clip_tokenizer(folder / "tokenizer"))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                            ).save_pretrained(folder, safe_serialization=True)
    common.write_clip_tokenizer(folder / "tokenizer")  # keep the portable vocab/merges beside tokenizer.json
    common.write_image_processor(folder / "feature_extractor", 224)
    return folder


def write_tiny_motion_adapter(folder: Path, seed: int = 1) -> Path:
    """A ``MotionAdapter`` (AnimateDiff v2 layout: motion modules in all blocks + mid block) for the tiny UNet."""
    from diffusers import MotionAdapter

    _seeded(seed)
    adapter = _randomize_(MotionAdapter(**MOTION_CONFIG), seed)
    adapter.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def write_tiny_image_encoder(folder: Path, seed: int = 2) -> Path:
    """A CLIP vision tower with projection: 224 px input, 14 px patches (257 tokens), width 48."""
    return common.write_clip_vision(folder, hidden_size=VISION_HIDDEN, projection_dim=32, image_size=224,
                                    patch_size=14, seed=seed)


def tiny_animator_checkpoint(seed: int = 3, layout: str = "nested") -> dict:
    """``animator.ckpt`` contents with the real naming and relative shapes for the tiny UNet (rank-128 LoRA,
    12x64 Resampler heads, 16 queries). ``layout``: "nested", "state_dict_ddp" or "state_dict"."""
    from diffusers import UNet2DConditionModel

    from helpers.pipelines.id_animator.convert import animator_checkpoint_template, face_adapter_targets

    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_CONFIG)
    template = animator_checkpoint_template(face_adapter_targets(unet), VISION_HIDDEN)
    generator = torch.Generator().manual_seed(seed)
    nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "face_adapter": {}}
    for key, empty in template.items():
        part, rest = key.split(".", 1)
        value = torch.randn(empty.shape, generator=generator) * 0.1
        if rest.endswith(("norm1.weight", "norm2.weight", "norm_out.weight", ".0.weight")) and value.ndim == 1:
            value += 1.0  # LayerNorm gains near 1
        nested[part][rest] = value
    if layout == "nested":
        return nested
    prefixes = {"state_dict_ddp": ("module.image_proj_model.", "module.adapter_modules."),
                "state_dict": ("image_proj_model.", "adapter_modules.")}[layout]
    flat = {f"{prefixes[0]}{k}": v for k, v in nested["image_proj"].items()}
    flat.update({f"{prefixes[1]}{k}": v for k, v in nested["face_adapter"].items()})
    return {"state_dict": flat}


def write_tiny_sparsectrl(folder: Path, seed: int = 4) -> Path:
    """A SparseCtrl scribble ControlNet (RGB condition + mask channel) matching the tiny UNet."""
    from diffusers import SparseControlNetModel

    _seeded(seed)
    model = SparseControlNetModel(
        block_out_channels=UNET_CONFIG["block_out_channels"], layers_per_block=2, cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32, conditioning_channels=3, use_simplified_condition_embedding=False,
        concat_conditioning_mask=True, conditioning_embedding_out_channels=(16, 32, 32, 32),
        motion_num_attention_heads=8, motion_max_seq_length=32)
    _randomize_(model, seed).save_pretrained(folder, safe_serialization=True)
    return Path(folder)


# -- LDM single-file checkpoints -----------------------------------------------------------------------------------
_RESNET_TO_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key_to_ldm(key: str, layers: int, up_has_attention: list[bool]) -> str:
    """Diffusers ``UNet2DConditionModel`` key -> original LDM key (SD1.x layout, ``layers`` per block)."""
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    module, param = key.rsplit(".", 1)
    if module in simple:
        return f"{simple[module]}.{param}"
    parts = key.split(".")
    if parts[0] == "mid_block":
        index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
        rest = parts[3:]
        block = f"middle_block.{index}"
    else:
        block_id, kind, layer = int(parts[1]), parts[2], int(parts[3])
        rest = parts[4:]
        if parts[0] == "down_blocks":
            if kind == "downsamplers":
                block = f"input_blocks.{(block_id + 1) * (layers + 1)}.0.op"
                rest = rest[1:]  # drop ".conv"
            else:
                block = f"input_blocks.{1 + block_id * (layers + 1) + layer}.{0 if kind == 'resnets' else 1}"
        else:
            if kind == "upsamplers":
                block = f"output_blocks.{block_id * (layers + 1) + layers}.{2 if up_has_attention[block_id] else 1}"
            else:
                block = f"output_blocks.{block_id * (layers + 1) + layer}.{0 if kind == 'resnets' else 1}"
    name = ".".join(rest)
    if ".resnets." in key:
        first = name.split(".")[0]
        name = name.replace(first, _RESNET_TO_LDM[first], 1)
    return f"{block}.{name}"


def _vae_key_to_ldm(key: str, num_blocks: int) -> tuple[str, bool]:
    """Diffusers ``AutoencoderKL`` key -> (LDM key, whether it is an attention matrix stored as a 1x1 conv)."""
    parts = key.split(".")
    side = parts[0]
    if side in ("quant_conv", "post_quant_conv"):
        return key, False
    rest = parts[1:]
    if rest[0] == "conv_norm_out":
        return f"{side}.norm_out.{rest[1]}", False
    if rest[0] in ("conv_in", "conv_out"):
        return key, False
    if rest[0] == "mid_block":
        if rest[1] == "resnets":
            name = ".".join(rest[3:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(rest[2]) + 1}.{name}", False
        module, param = ".".join(rest[3:]).rsplit(".", 1)
        return f"{side}.mid.attn_1.{_VAE_ATTENTION_TO_LDM[module]}.{param}", param == "weight" and module != "group_norm"
    block_id = int(rest[1])
    level = block_id if side == "encoder" else num_blocks - 1 - block_id
    stage = "down" if side == "encoder" else "up"
    if rest[2] in ("downsamplers", "upsamplers"):
        sampler = "downsample" if side == "encoder" else "upsample"
        return f"{side}.{stage}.{level}.{sampler}.conv.{rest[-1]}", False
    name = ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
    return f"{side}.{stage}.{level}.block.{rest[3]}.{name}", False


def ldm_checkpoint(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """An original-format (LDM) SD1.x single-file state dict built from diffusers/transformers components."""
    layers = unet.config.layers_per_block
    up_has_attention = [hasattr(block, "attentions") for block in unet.up_blocks]
    checkpoint = {f"model.diffusion_model.{_unet_key_to_ldm(k, layers, up_has_attention)}": v.clone()
                  for k, v in unet.state_dict().items()}
    num_blocks = len(vae.config.block_out_channels)
    for key, value in vae.state_dict().items():
        ldm_key, is_conv = _vae_key_to_ldm(key, num_blocks)
        checkpoint[f"first_stage_model.{ldm_key}"] = value.clone()[..., None, None] if is_conv else value.clone()
    for key, value in text_encoder.state_dict().items():
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        checkpoint[f"cond_stage_model.transformer.{name}"] = value.clone()
    # real SD1.x files carry CLIP's position ids and the training schedule; loaders must ignore both
    positions = text_encoder.config.max_position_embeddings
    checkpoint["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    checkpoint["alphas_cumprod"] = torch.linspace(0.99, 0.01, 1000)
    return checkpoint


def write_tiny_community_model(path: Path, seed: int = 5) -> Path:
    """A single-file SD1.5 checkpoint (LDM keys, baked VAE) with the tiny layout: the community-model stand-in."""
    from safetensors.torch import save_file

    unet, vae, text_encoder = tiny_sd15_parts(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ldm_checkpoint(unet, vae, text_encoder).items()}, str(path))
    return path


# -- everything, in the weights manager's layout -------------------------------------------------------------------
def write_tiny_id_animator_packs(root: Path, *, sketch: bool = True) -> dict[str, Path]:
    """Write the packs ID-Animator loads under ``<root>/models/<pack>/<role>/`` (files at their repo paths):
    sd15/base, animatediff_v2/motion_adapter, id_animator/{animator,image_encoder,community_model} and, with
    ``sketch``, sparsectrl_scribble/controlnet. Returns the role folders/files written."""
    models = Path(root) / "models"
    paths = {
        "sd15/base": write_tiny_sd15_folder(models / "sd15" / "base"),
        "animatediff_v2/motion_adapter": write_tiny_motion_adapter(models / "animatediff_v2" / "motion_adapter"),
        # the ID-Animator Space keeps the encoder in image_encoder/ (the registry's first candidate)
        "id_animator/image_encoder": write_tiny_image_encoder(models / "id_animator" / "image_encoder" / "image_encoder"),
        "id_animator/community_model": write_tiny_community_model(models / "id_animator" / "community_model"
                                                                  / COMMUNITY_FILE),
    }
    animator = models / "id_animator" / "animator" / "animator.ckpt"
    animator.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_animator_checkpoint(), animator)
    paths["id_animator/animator"] = animator
    if sketch:
        paths["sparsectrl_scribble/controlnet"] = write_tiny_sparsectrl(models / "sparsectrl_scribble" / "controlnet")
    return paths


# -- faces and sketches --------------------------------------------------------------------------------------------
class FakeFaceDetector:
    """Stands in for insightface: returns the faces it was given, or one face centred in any image.

    >>> FakeFaceDetector().detect(np.zeros((240, 320, 3), np.uint8))[0].box
    """

    def __init__(self, faces: list[DetectedFace] | None = None, face_fraction: float = 0.6):
        self.faces = faces
        self.face_fraction = face_fraction

    def detect(self, image_bgr: np.ndarray) -> list[DetectedFace]:
        if self.faces is not None:
            return list(self.faces)
        height, width = image_bgr.shape[:2]
        return [centred_face(width, height, self.face_fraction)]


def centred_face(width: int, height: int, face_fraction: float = 0.6, score: float = 0.9) -> DetectedFace:
    """A face whose box covers ``face_fraction`` of the shorter image side, keypoints on the ArcFace template."""
    side = min(width, height) * face_fraction
    left, top = (width - side) / 2, (height - side) / 2
    keypoints = (ARCFACE_TEMPLATE_112 / 112.0 * side + [left, top]).astype(np.float32)
    return DetectedFace((left, top, left + side, top + side), keypoints, score)


def synthetic_face_photo(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """An RGB "photo" with a face-like pattern in the middle (skin disc, eyes, mouth) over noise."""
    import cv2

    rng = np.random.default_rng(seed)
    image = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    face = centred_face(width, height)
    x1, y1, x2, y2 = face.box
    centre = (int((x1 + x2) / 2), int((y1 + y2) / 2))
    cv2.ellipse(image, centre, (int((x2 - x1) / 2.4), int((y2 - y1) / 1.9)), 0, 0, 360, (205, 160, 130), -1)
    for x, y in face.keypoints[:2]:
        cv2.circle(image, (int(x), int(y)), max(2, int((x2 - x1) / 18)), (30, 30, 30), -1)
    mouth = face.keypoints[3:].astype(int)
    cv2.line(image, tuple(mouth[0]), tuple(mouth[1]), (120, 40, 40), max(1, int((x2 - x1) / 30)))
    return image


def synthetic_sketch(width: int = 64, height: int = 64, phase: float = 0.0):
    """A scribble (white strokes on black) as a PIL image: a stick figure whose arm angle follows ``phase``."""
    import cv2
    import PIL.Image

    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    cx, top = width // 2, height // 5
    thickness = max(1, width // 64)
    cv2.circle(canvas, (cx, top), max(2, height // 10), (255, 255, 255), thickness)
    cv2.line(canvas, (cx, top + height // 10), (cx, height * 2 // 3), (255, 255, 255), thickness)
    arm = (int(cx + width / 4 * np.cos(phase)), int(height / 2 - height / 5 * np.sin(phase)))
    cv2.line(canvas, (cx, height * 2 // 5), arm, (255, 255, 255), thickness)
    return PIL.Image.fromarray(canvas)
