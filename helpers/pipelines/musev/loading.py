"""Strict loading of the MuseV models from the official files, and full-size builds on the meta device.

    >>> from helpers import weights
    >>> unet = load_musev_unet(weights.resolve("musev", "unet_musev"), base_model=weights.resolve("musev", "base_model"))
    >>> referencenet = load_referencenet(weights.resolve("musev", "referencenet"))
    >>> image_proj = load_image_projection(weights.resolve("musev", "ip_adapter_image_proj"))

The video UNet is loaded like the original does it: first the MuseV file (temporal layers, frame embedding, fusion and
IP-Adapter layers, and a copy of SD1.5 spatial weights), then the spatial weights of the chosen SD1.5 base model
(a diffusers folder, its ``unet`` folder, or a single file in diffusers or original LDM layout, an LDM ``.ckpt``
with its weights under ``state_dict`` included) replace the copy.
Only the tensors that end up in the model are read. A missing or mis-shaped tensor raises
``helpers.errors.StrictLoadError`` listing the keys; entries the video UNet has no place for are left out,
as the original's ``strict=False`` load does, with a warning and a sidecar note (``helpers.load_policy``). Models are built on the meta device and receive their tensors
directly, so no random initialisation runs and no memory is spent twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.models.embeddings import ImageProjection
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from helpers import load_policy
from helpers.errors import StrictLoadError, WeightsError

from .ip_adapter import build_image_projection, convert_image_projection_state_dict, image_projection_dims
from .referencenet import MuseVReferenceNet
from .unet import MuseVUNet3DConditionModel
from .unet_config import MUSEV_VARIANTS, SD15_LAYOUT, musev_unet_config, parse_musev_unet_config

logger = logging.getLogger(__name__)

PathLike = str | Path
WEIGHT_FILE_NAMES = (  # preference order inside a model folder
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
)
IMAGE_PROJ_FILE_NAMES = ("ip_adapter_image_proj.fp16.safetensors", "ip_adapter_image_proj.safetensors",
                         "ip_adapter_image_proj.bin")
LDM_UNET_PREFIX = "model.diffusion_model."

# ReferenceNet = SD1.5 UNet (its decoder is dropped); used when no config.json lies beside the weights.
REFERENCENET_SD15_CONFIG: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
}


# ------------------------------------------------------------------------------------------------ devices, files
def default_device_and_dtype(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.device, torch.dtype]:
    """CUDA + fp16 when a GPU is there, else CPU + fp32; explicit arguments win."""
    resolved = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.float16 if resolved.type == "cuda" else torch.float32
    return resolved, dtype


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)


class _Checkpoint:
    """Lazy access to the tensors of one weights file (safetensors read per key; pickles memory-mapped)."""

    def __init__(self, path: Path):
        self.path = path
        self._pickled: dict[str, torch.Tensor] | None = None
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                self.shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
        else:
            self._pickled = _load_pickle(path)
            self.shapes = {k: tuple(v.shape) for k, v in self._pickled.items()}

    def read(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        if self._pickled is not None:
            return {k: self._pickled[k] for k in keys}
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in keys}


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a pickle, nested dicts flattened with ``.``. An original (LDM) ``.ckpt`` keeps its weights
    under a top-level ``state_dict`` (beside ``global_step`` and the like): that container is what is read."""
    from helpers.weights import load_pickle_safely

    obj = load_pickle_safely(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    tensors: dict[str, torch.Tensor] = {}
    _flatten(obj, "", tensors)
    return tensors


def _find_file(path: PathLike, names: tuple[str, ...], leaf: str | None, what: str) -> Path:
    """The weights file at ``path``: the file itself, or the preferred of ``names`` in the folder or below it.

    Below the folder, only folders called ``leaf`` are considered (when given); several matches are an error, since
    guessing could silently load the wrong model.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"{what}: {path} does not exist")

    def best_in(folder: Path) -> Path | None:
        return next((folder / n for n in names if (folder / n).is_file()), None)

    found = best_in(path)
    if found is not None:
        return found
    folders = sorted({p.parent for n in names for p in path.rglob(n) if leaf is None or p.parent.name == leaf})
    if len(folders) == 1:
        return best_in(folders[0])
    if not folders:
        raise WeightsError(f"{what}: no {' / '.join(names)} under {path}")
    listing = ", ".join(str(f.relative_to(path)) for f in folders)
    raise WeightsError(f"{what}: several candidates under {path} ({listing}); pass the exact folder")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _strict_check(what: str, expected: Mapping[str, tuple], found: Mapping[str, tuple],
                  may_be_missing: Iterable[str] = (), ignore_unexpected: bool = False) -> list[str]:
    """Names and shapes of ``found`` against ``expected`` (:func:`helpers.load_policy.enforce`); keys in
    ``may_be_missing`` need not be present. ``ignore_unexpected``: the original loads this model non-strictly, so
    extra entries are left out (warned about, recorded for the sidecar) and returned."""
    return load_policy.enforce(what, expected, found, may_be_missing=may_be_missing,
                               ignore_unexpected=ignore_unexpected,
                               why="the original MuseV loader loads this model with strict=False")


def _shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _assign(model: torch.nn.Module, tensors: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype):
    """Move the complete state dict onto ``model`` (built on meta), cast, eval mode, no gradients."""
    cast = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in tensors.items()}
    model.load_state_dict(cast, strict=True, assign=True)
    # on the meta device (full-size key checks without memory) every tensor is meta by design
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta and device.type != "meta"]
    if leftovers:
        raise StrictLoadError(f"{type(model).__name__}: tensors without values", missing=leftovers)
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ meta builds
def build_musev_unet_on_meta(variant: str = "musev", **overrides: Any) -> MuseVUNet3DConditionModel:
    """A full-size (or ``overrides``-sized) MuseV UNet without memory: for key/shape checks and strict loading."""
    with torch.device("meta"):
        return MuseVUNet3DConditionModel(**musev_unet_config(variant, **overrides))


def build_referencenet_on_meta(**overrides: Any) -> MuseVReferenceNet:
    """A full-size ReferenceNet (SD1.5 encoder) on the meta device."""
    with torch.device("meta"):
        return MuseVReferenceNet(**{**REFERENCENET_SD15_CONFIG, **overrides})


def build_image_projection_on_meta(
    clip_embeddings_dim: int = 1024, cross_attention_dim: int = 768, num_tokens: int = 4
) -> ImageProjection:
    """The IP-Adapter projection (CLIP ViT-H -> 4 SD1.5 tokens) on the meta device."""
    with torch.device("meta"):
        return build_image_projection(clip_embeddings_dim, cross_attention_dim, num_tokens)


def spatial_unet_config(unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """Config of the stock SD ``UNet2DConditionModel`` whose weights form the spatial part of a MuseV UNet."""
    keys = ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "downsample_padding",
            "mid_block_scale_factor", "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim")
    config = {k: unet_config[k] for k in keys if k in unet_config}
    config["down_block_types"] = tuple(n.replace("3D", "2D") for n in unet_config["down_block_types"])
    config["up_block_types"] = tuple(n.replace("3D", "2D") for n in unet_config["up_block_types"])
    return config


def spatial_keys(unet_config: Mapping[str, Any]) -> dict[str, tuple]:
    """Names and shapes of the SD1.5 spatial weights inside a MuseV UNet (what the base model provides)."""
    with torch.device("meta"):
        return _shapes(UNet2DConditionModel(**spatial_unet_config(unet_config)))


# ------------------------------------------------------------------------------------------------ video UNet
def _unet_config(weights_file: Path, variant: str | None, shapes: Mapping[str, tuple]) -> tuple[dict, str]:
    raw = _read_json(weights_file.parent / "config.json")
    if variant is None:
        # the fusion modules exist only in the referencenet variants; both have identical key sets
        variant = "musev_referencenet" if "first_refer_emb_attns.to_q.weight" in shapes else "musev"
    if variant not in MUSEV_VARIANTS:
        raise ValueError(f"unknown MuseV UNet variant {variant!r}; choose one of {sorted(MUSEV_VARIANTS)}")
    if raw is None:
        return musev_unet_config(variant), variant
    config = parse_musev_unet_config(raw)
    # as in the original loader, the variant's flags override what config.json says
    flags = {k: v for k, v in MUSEV_VARIANTS[variant].items() if k not in SD15_LAYOUT}
    return {**config, **flags}, variant


def read_base_unet_state_dict(base_model: PathLike, unet_config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The SD1.5 UNet weights of a base model, in diffusers names.

    ``base_model``: a diffusers pipeline folder (``unet/`` inside), a UNet folder, or a single file holding either
    diffusers UNet keys or a whole original (LDM) checkpoint with ``model.diffusion_model.*`` keys.
    """
    path = Path(base_model).expanduser()
    if path.is_dir() and (path / "unet").is_dir():
        path = path / "unet"
    file = _find_file(path, WEIGHT_FILE_NAMES, "unet", "SD1.5 base model")
    checkpoint = _Checkpoint(file)
    if any(k.startswith(LDM_UNET_PREFIX) for k in checkpoint.shapes):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        ldm = checkpoint.read(k for k in checkpoint.shapes if k.startswith(LDM_UNET_PREFIX))
        ldm_config = {"layers_per_block": unet_config["layers_per_block"], "num_class_embeds": None}
        return convert_ldm_unet_checkpoint(ldm, ldm_config)
    return checkpoint.read(checkpoint.shapes)


def load_musev_unet(
    unet_path: PathLike,
    base_model: PathLike | None = None,
    *,
    variant: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    fold_temporal_weights: bool = False,
) -> MuseVUNet3DConditionModel:
    """Load a MuseV video UNet strictly: the MuseV file, then the spatial weights of ``base_model``.

    Args:
        unet_path: the UNet folder (``config.json`` + ``diffusion_pytorch_model.*``), a folder above it holding
            exactly one ``unet`` folder, or the weights file (its folder's ``config.json`` is used when present).
        base_model: SD1.5 base model whose UNet replaces the spatial weights (see ``read_base_unet_state_dict``);
            None keeps the copy inside the MuseV file.
        variant: ``"musev"``, ``"musev_referencenet"`` or ``"musev_referencenet_pose"``; its flags override
            config.json, as in the original loader. Default: recognised from the checkpoint's keys.
        device, dtype: default CUDA + fp16 when available, else CPU + fp32.
        fold_temporal_weights: multiply every ``|temporal_weight|`` into its layer's last projection.

    Raises ``StrictLoadError`` when the MuseV file or the base model does not match the model.
    """
    device, dtype = default_device_and_dtype(device, dtype)
    weights_file = _find_file(unet_path, WEIGHT_FILE_NAMES, "unet", "MuseV UNet")
    checkpoint = _Checkpoint(weights_file)
    config, variant = _unet_config(weights_file, variant, checkpoint.shapes)
    with torch.device("meta"):
        model = MuseVUNet3DConditionModel(**config)
    expected = _shapes(model)
    spatial = spatial_keys(config)
    not_in_model = sorted(k for k in spatial if k not in expected)
    if not_in_model:  # would be a bug in the model definition, not in the files
        raise StrictLoadError("MuseV UNet definition lacks SD1.5 keys", missing=not_in_model)

    from_base = spatial if base_model is not None else {}
    _strict_check(f"MuseV UNet {weights_file} ({variant})", expected, checkpoint.shapes, may_be_missing=from_base,
                  ignore_unexpected=True)
    tensors = checkpoint.read(k for k in expected if k not in from_base)
    if base_model is not None:
        base = read_base_unet_state_dict(base_model, config)
        _strict_check(f"SD1.5 base model {base_model}", spatial, {k: tuple(v.shape) for k, v in base.items()})
        tensors.update(base)
    logger.info("MuseV UNet %s: %d tensors from %s, %d from the base model", variant, len(expected) - len(from_base),
                weights_file, len(from_base))
    model = _assign(model, tensors, device, dtype)
    if fold_temporal_weights:
        model.fold_temporal_weights()
    return model


# ------------------------------------------------------------------------------------------------ ReferenceNet, IP
def load_referencenet(
    path: PathLike, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> MuseVReferenceNet:
    """Load the ReferenceNet strictly (298 SD1.5 encoder keys at full size); the file is used whole.

    ``path``: the ``referencenet`` folder (``config.json`` + weights), a folder above it, or the weights file.
    """
    device, dtype = default_device_and_dtype(device, dtype)
    weights_file = _find_file(path, WEIGHT_FILE_NAMES, "referencenet", "MuseV ReferenceNet")
    raw = _read_json(weights_file.parent / "config.json")
    with torch.device("meta"):
        model = MuseVReferenceNet.from_musev_config(raw) if raw else MuseVReferenceNet(**REFERENCENET_SD15_CONFIG)
    checkpoint = _Checkpoint(weights_file)
    _strict_check(f"MuseV ReferenceNet {weights_file}", _shapes(model), checkpoint.shapes)
    return _assign(model, checkpoint.read(checkpoint.shapes), device, dtype)


def load_image_projection(
    path: PathLike, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> ImageProjection:
    """Load the IP-Adapter image projection (``ip_adapter_image_proj.bin`` or its fp16 safetensors copy) strictly.

    The sizes (CLIP width, token width, token count) are read from the file.
    """
    device, dtype = default_device_and_dtype(device, dtype)
    weights_file = _find_file(path, IMAGE_PROJ_FILE_NAMES, None, "IP-Adapter image projection")
    checkpoint = _Checkpoint(weights_file)
    state_dict = convert_image_projection_state_dict(checkpoint.read(checkpoint.shapes))
    try:
        dims = image_projection_dims(state_dict)
    except KeyError as err:
        raise StrictLoadError(f"IP-Adapter image projection {weights_file}", missing=[str(err)],
                              unexpected=sorted(state_dict)) from err
    with torch.device("meta"):
        model = build_image_projection(*dims)
    _strict_check(f"IP-Adapter image projection {weights_file}", _shapes(model),
                  {k: tuple(v.shape) for k, v in state_dict.items()})
    return _assign(model, state_dict, device, dtype)


BASE_MODEL_PARTS = ("unet", "text_encoder", "scheduler", "vae")  # the parts an SD1.5 base model can give the pipeline


def base_model_parts(base_model: Path | str | None) -> tuple[str, ...]:
    """The parts an own SD1.5 base model gives the pipeline (the rest comes from the ``musev`` pack's majicmix).

    Always the UNet's spatial weights; from a diffusers pipeline folder also the text encoder with its tokenizer,
    the scheduler config and the VAE (used only when ``sd-vae-ft-mse`` is absent), each when it is there. A single
    file, or a UNet folder, gives the UNet only. ``None`` (majicmix itself) gives every part.

    >>> base_model_parts("my_model.safetensors")
    ('unet',)
    """
    if base_model is None:
        return BASE_MODEL_PARTS
    folder = Path(base_model).expanduser()
    if not (folder / "unet").is_dir():
        return ("unet",)
    present = {
        "text_encoder": (folder / "text_encoder" / "config.json").is_file() and (folder / "tokenizer").is_dir(),
        "scheduler": (folder / "scheduler" / "scheduler_config.json").is_file(),
        "vae": (folder / "vae" / "config.json").is_file(),
    }
    return ("unet", *(part for part, found in present.items() if found))


# ------------------------------------------------------------------------------------------------- the pipeline

UNET_ROLES = {"musev": "unet_musev", "musev_referencenet": "unet_referencenet",
              "musev_referencenet_pose": "unet_referencenet_pose"}

IMAGE_PROJ_ROLES = {"musev_referencenet": "ip_adapter_image_proj", "musev_referencenet_pose": "ip_adapter_image_proj_pose"}


def load_musev_pipeline(variant: str = "musev", *, controlnet=None, root=None, base_model: Path | str | None = None,
                        device=None, dtype: torch.dtype | None = None, offload: str = "none"):
    """Assemble the pipeline from the ``musev`` pack on disk (``helpers.weights`` layout under ``root``).

    ``controlnet`` (video-to-video): a role of the ``musev`` pack (``"controlnet_openpose"``), the path of a
    diffusers ``ControlNetModel`` folder, or a loaded model; the result is then a ``MuseVControlNetPipeline``
    (``controlnet.py``). ``musev_referencenet_pose`` is the pose-to-video model: it needs one.

    The video UNet gets the spatial weights of the SD1.5 base model, as in the original: ``base_model`` (a diffusers
    folder, a UNet folder, or one ``.safetensors``/``.ckpt`` file in diffusers or original LDM layout), else the
    pack's majicmixRealv6Fp16. Text encoder, tokenizer and scheduler config come from the base model when it is a
    diffusers folder that has them, else from the pack's majicmix (see :func:`base_model_parts`), which is then the
    only reason to read it. The ReferenceNet is MuseV's own (the original never overwrites it). The VAE is
    ``sd-vae-ft-mse`` (the base model's own VAE when that role is absent); the scheduler is Euler built from the
    base model's scheduler config; the textual-inversion negatives are loaded when present. ``offload``:
    ``"none"``, ``"model"`` or ``"sequential"`` (accelerate CPU offload, for small GPUs; see
    ``runtime.MemoryPlan``).

    >>> pipe = load_musev_pipeline("musev_referencenet", offload=runtime.memory_plan().offload)
    >>> pipe = load_musev_pipeline("musev", base_model="/content/drive/MyDrive/models/realisticVision_v51")
    """
    from diffusers import AutoencoderKL, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    from helpers import weights
    from helpers.errors import InputError, MissingWeightsError
    from helpers.pipelines.musev.pipeline import MuseVPipeline
    from helpers.pipelines.musev.prompts import load_negative_embeddings

    if variant not in UNET_ROLES:
        raise InputError(f"unknown MuseV model {variant!r}: use one of {', '.join(UNET_ROLES)}")
    if variant == "musev_referencenet_pose" and controlnet is None:
        raise InputError("musev_referencenet_pose is the pose-to-video model: give it a pose control video and a "
                         "ControlNet (controlnet='controlnet_openpose'), or use musev_referencenet")
    if offload not in ("none", "model", "sequential"):
        raise InputError(f"offload {offload!r}: use 'none', 'model' or 'sequential'")
    device, dtype = default_device_and_dtype(device, dtype)
    load_device = torch.device("cpu") if offload != "none" else device  # offload hooks move models on demand

    def resolve(role: str):
        return weights.resolve("musev", role, root)

    own = Path(base_model).expanduser() if base_model is not None else None
    if own is not None and not own.exists():
        raise InputError(f"base model not found: {own} — give the path of an SD1.5 model folder or file, or None "
                         "for the pack's majicmix")
    parts = base_model_parts(own)
    pack_base = None

    def source(part: str):
        """The folder that supplies ``part``: the own base model when it has it, else the pack's majicmix."""
        nonlocal pack_base
        if part in parts and own is not None:
            return own
        if pack_base is None:
            pack_base = resolve("base_model")
        return pack_base

    unet = load_musev_unet(resolve(UNET_ROLES[variant]), base_model=source("unet"), variant=variant,
                           device=load_device, dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(str(source("text_encoder")), subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(str(source("text_encoder")), subfolder="text_encoder")
    try:
        vae = AutoencoderKL.from_pretrained(str(resolve("vae")), torch_dtype=dtype)
    except MissingWeightsError:
        logger.warning("sd-vae-ft-mse not found: using the base model's own VAE")
        vae = AutoencoderKL.from_pretrained(str(source("vae")), subfolder="vae", torch_dtype=dtype)
    scheduler_config = EulerDiscreteScheduler.load_config(str(source("scheduler")), subfolder="scheduler")
    scheduler = EulerDiscreteScheduler.from_config(scheduler_config)
    extras: dict = {}
    if variant in IMAGE_PROJ_ROLES:
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(resolve("image_encoder")))
        size = image_encoder.config.image_size
        extras = dict(
            referencenet=load_referencenet(resolve("referencenet"), device=load_device, dtype=dtype),
            image_encoder=image_encoder.to(device=load_device, dtype=dtype).eval(),
            # the original uses a default CLIPImageProcessor (shortest side 224, centre crop 224) = the model's size
            feature_extractor=CLIPImageProcessor(size={"shortest_edge": size},
                                                 crop_size={"height": size, "width": size}),
            image_proj=load_image_projection(resolve(IMAGE_PROJ_ROLES[variant]), device=device, dtype=dtype),
        )
    pipe_class = MuseVPipeline
    if controlnet is not None:
        from helpers.pipelines.musev.controlnet import MuseVControlNetPipeline, load_controlnet

        extras["controlnet"] = load_controlnet(controlnet, root=root, device=load_device, dtype=dtype)
        pipe_class = MuseVControlNetPipeline
    pipe = pipe_class(vae=vae.to(device=load_device, dtype=dtype).eval(),
                         text_encoder=text_encoder.to(device=load_device, dtype=dtype).eval(),
                         tokenizer=tokenizer, unet=unet, scheduler=scheduler, **extras)
    for name in ("vae", "text_encoder", "unet", "referencenet", "image_encoder", "controlnet"):  # some ignore dtype=
        component = getattr(pipe, name, None)
        if component is not None and component.dtype != dtype:
            raise RuntimeError(f"{name} loaded as {component.dtype}, expected {dtype}")
    try:
        embeddings = resolve("negative_embeddings")
    except MissingWeightsError:
        embeddings = None
    loaded = load_negative_embeddings(pipe, embeddings)
    logger.info("MuseV %s on %s/%s; base model %s; textual-inversion negatives: %s", variant, device, dtype,
                own or "majicmix (pack)", loaded or "none")
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    return pipe
