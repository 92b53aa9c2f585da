"""Loading ID-Animator strictly from the weights on disk, and assembling the pipeline from stock parts.

Every component loads through stock ``from_pretrained`` / ``from_single_file`` / ``load_ip_adapter`` /
``load_lora_weights``; after each load the keys are compared with the model: a missing or mis-shaped tensor raises
``StrictLoadError``, an extra one is handled as the original handles it (``helpers.load_policy``).

>>> pipe = load_id_animator_pipeline()                                  # RealisticVision V6.0 B1 (the original's)
>>> pipe = load_id_animator_pipeline(base_model="sd15")                 # plain SD1.5 weights
>>> pipe = load_id_animator_pipeline(base_model="/content/my_sd15_model.safetensors")
>>> pipe = load_id_animator_pipeline(plan=runtime.memory_plan())        # dtype, offload, chunking from the GPU
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from helpers import load_policy
from helpers.errors import InputError, MissingWeightsError, StrictLoadError, check_strict_load

from .convert import (
    LORA_ADAPTER_NAME,
    FaceAdapterWeights,
    check_converted_face_adapter,
    convert_animator_checkpoint,
    face_adapter_targets,
    note_ignored_entries,
    read_checkpoint,
)
from .modules import IdentityMixing, install_face_token_mixer, make_ddim_scheduler, set_motion_groupnorm
from .pipeline import IDAnimatorPipeline

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
BASE_MODEL_CHOICES = ("community", "sd15")
# Deterministic buffers some files omit or carry: the sinusoidal motion table, CLIP's position ids.
COMPUTED_BUFFERS = (r"\.pos_embed\.pe$", r"position_ids$")


class _EmptyFloat32List(logging.Filter):
    """diffusers logs "modules that should be kept in float32: []" whenever a model is cast with ``to(dtype)``, even
    when there is nothing to keep; ``from_single_file`` and ``load_ip_adapter`` cast internally after loading in the
    right dtype. A non-empty list is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


@contextmanager
def _no_empty_float32_notice() -> Iterator[None]:
    logger = logging.getLogger("diffusers.models.modeling_utils")
    quiet = _EmptyFloat32List()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


# -- strict loading of folders -------------------------------------------------------------------------------------
def _weight_variant(folder: Path) -> str | None:
    """``"fp16"`` when the folder only has ``*.fp16.*`` weight files (the weights manager keeps one variant)."""
    files = [p.name for p in folder.glob("*") if p.suffix in (".safetensors", ".bin")]
    if files and all(".fp16." in name for name in files):
        return "fp16"
    return None


def _drop(keys: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return [k for k in keys if not any(re.search(p, k) for p in patterns)]


def load_pretrained_strict(cls, folder: Path, *, subfolder: str | None = None, dtype: torch.dtype,
                           what: str, allow_missing: Sequence[str] = (), allow_unexpected: Sequence[str] = (),
                           ignore_unexpected: bool = True):
    """``cls.from_pretrained`` from a local folder under the load policy (:mod:`helpers.load_policy`): a missing or
    mis-shaped key stops the load; an extra one is loaded past, as stock ``from_pretrained`` (what the original
    uses) does, with a warning and a sidecar note.

    ``allow_missing``/``allow_unexpected`` are regexes for deterministic buffers that files may omit or carry (not
    even noted). ``ignore_unexpected=False`` refuses extra keys too (where the original refuses them).
    """
    folder = Path(folder)
    location = folder / subfolder if subfolder else folder
    if not (location / "config.json").is_file():
        raise MissingWeightsError(f"{what}: no config.json in {location}: run notebooks/00_setup.ipynb to fetch it.")
    kwargs = {"dtype": dtype} if cls.__module__.startswith("transformers") else {"torch_dtype": dtype}
    if subfolder:
        kwargs["subfolder"] = subfolder
    model, info = cls.from_pretrained(str(folder), variant=_weight_variant(location), local_files_only=True,
                                      output_loading_info=True, **kwargs)
    info = {**info, "missing_keys": _drop(list(info.get("missing_keys", ())), allow_missing),
            "unexpected_keys": _drop(list(info.get("unexpected_keys", ())), allow_unexpected)}
    load_policy.enforce_loading_info(f"{what} ({location})", info, ignore_unexpected=ignore_unexpected)
    return model.eval()


def load_motion_adapter(folder: Path, dtype: torch.dtype) -> MotionAdapter:
    """The AnimateDiff v2 ``MotionAdapter`` (diffusers folder); only its computed positional tables may be absent.
    Extra keys are refused: the original asserts that the motion-module load leaves none unexpected."""
    return load_pretrained_strict(MotionAdapter, folder, dtype=dtype, what="AnimateDiff motion adapter",
                                  allow_missing=COMPUTED_BUFFERS, ignore_unexpected=False)


def load_image_encoder(folder: Path, dtype: torch.dtype) -> CLIPVisionModelWithProjection:
    """The CLIP ViT-H/14 image encoder (transformers folder with ``config.json``)."""
    return load_pretrained_strict(CLIPVisionModelWithProjection, folder, dtype=dtype, what="CLIP image encoder",
                                  allow_unexpected=COMPUTED_BUFFERS)


def load_sd15_components(folder: Path, dtype: torch.dtype) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """UNet, VAE and text encoder from an SD1.5 diffusers folder."""
    unet = load_pretrained_strict(UNet2DConditionModel, folder, subfolder="unet", dtype=dtype, what="SD1.5 UNet")
    vae = load_pretrained_strict(AutoencoderKL, folder, subfolder="vae", dtype=dtype, what="SD1.5 VAE")
    text_encoder = load_pretrained_strict(CLIPTextModel, folder, subfolder="text_encoder", dtype=dtype,
                                          what="SD1.5 text encoder", allow_unexpected=COMPUTED_BUFFERS)
    return unet, vae, text_encoder


# -- single-file community models ----------------------------------------------------------------------------------
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."
LDM_TEXT_PREFIX = "cond_stage_model.transformer."


def check_single_file_model(path: str | Path) -> Path:
    """Validate a community model path before anything loads (``InputError`` with the fix)."""
    path = Path(path).expanduser()
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise InputError(f"Unknown base model file '{path.name}': give an SD1.5 single-file checkpoint "
                         f"(.safetensors or .ckpt), or one of {', '.join(BASE_MODEL_CHOICES)}.")
    if not path.is_file():
        raise InputError(f"Base model file not found: {path}: check the path (on Colab, under /content/drive).")
    return path


def _unused_keys(checkpoint: dict, prefix: str, converted: dict, ignore: Sequence[str] = ()) -> list[str]:
    """Checkpoint keys under ``prefix`` that the stock conversion did not carry over (matched by storage)."""
    used = {t.data_ptr() for t in converted.values() if isinstance(t, torch.Tensor)}
    return sorted(k for k, t in checkpoint.items()
                  if k.startswith(prefix) and t.data_ptr() not in used and not any(re.search(p, k) for p in ignore))


def load_single_file_components(path: str | Path, sd15_folder: Path, dtype: torch.dtype):
    """UNet, VAE and text encoder of an SD1.5 single-file (LDM) checkpoint, with configs from the local SD1.5
    folder (no hub). Loaded with stock ``from_single_file``; the stock key conversion is checked to cover the
    model exactly; UNet/VAE/text-encoder tensors it leaves unused are listed (warning + sidecar note).
    """
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        create_diffusers_clip_model_from_ldm,
        load_single_file_checkpoint,
    )

    path = check_single_file_model(path)
    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    unet_config = UNet2DConditionModel.load_config(str(sd15_folder), subfolder="unet")
    probe = f"{LDM_UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    if probe not in checkpoint:
        raise InputError(f"'{path.name}' is not a Stable Diffusion 1.x checkpoint (no LDM UNet keys): use an SD1.5 "
                         f"model, e.g. a .safetensors from a model site marked 'SD 1.5'.")
    if checkpoint[probe].shape[-1] != unet_config["cross_attention_dim"]:
        raise InputError(f"'{path.name}' has text width {checkpoint[probe].shape[-1]}, SD1.5 has "
                         f"{unet_config['cross_attention_dim']}: it is an SD2/SDXL model; use an SD1.5 one.")

    common = {"config": str(sd15_folder), "torch_dtype": dtype, "local_files_only": True}
    with _no_empty_float32_notice():  # loaded in ``dtype``; the library's cast afterwards changes nothing
        unet = UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **common)
        vae = AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **common)
    text_encoder = create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, subfolder="text_encoder",
                                                        config=str(sd15_folder), torch_dtype=dtype,
                                                        local_files_only=True)
    vae_config = AutoencoderKL.load_config(str(sd15_folder), subfolder="vae")
    unet_sd = convert_ldm_unet_checkpoint(checkpoint, unet_config)
    vae_sd = convert_ldm_vae_checkpoint(checkpoint, vae_config)
    text_sd = convert_ldm_clip_checkpoint(checkpoint)
    if not hasattr(text_encoder, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        text_sd = {k.removeprefix("text_model."): v for k, v in text_sd.items()}
    text_sd = {k: v for k, v in text_sd.items() if not k.endswith("position_ids")}
    for what, model, converted, prefix in ((f"UNet of {path.name}", unet, unet_sd, LDM_UNET_PREFIX),
                                           (f"VAE of {path.name}", vae, vae_sd, LDM_VAE_PREFIX),
                                           (f"text encoder of {path.name}", text_encoder, text_sd, LDM_TEXT_PREFIX)):
        # the original converts the same way and loads with strict=False: tensors with no place are left out
        found = load_policy.compare(model.state_dict(), converted)
        if found.missing or found.mismatched:
            raise StrictLoadError(what, found.missing, mismatched=found.mismatched)
        unused = _unused_keys(checkpoint, prefix, converted, ignore=COMPUTED_BUFFERS)
        load_policy.record_ignored(what, [*found.unexpected, *unused],
                                   "the original converts this checkpoint and loads it with strict=False")
    return unet.eval(), vae.eval(), text_encoder.eval()


# -- assembly ------------------------------------------------------------------------------------------------------
def motion_unet(unet2d: UNet2DConditionModel, motion_adapter: MotionAdapter) -> UNetMotionModel:
    """Stock ``UNetMotionModel`` holding the SD UNet's weights and the motion modules, loaded strictly (every
    parameter comes from one of the two; no random initialisation)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet = UNetMotionModel.from_unet2d(unet2d, motion_adapter, load_weights=False)
    state = {**unet2d.state_dict(), **motion_adapter.state_dict()}
    check_strict_load("UNet + motion adapter", unet, state)
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval()


def load_face_adapter(pipe, weights: FaceAdapterWeights) -> None:
    """Load the converted face adapter with the stock loaders, then check every tensor arrived.

    IP-Adapter-Plus part: ``load_ip_adapter`` (strict ``load_state_dict`` per processor and for the Resampler);
    LoRA: ``load_lora_weights`` under the adapter name ``id_animator`` (rank from shapes, scale 1.0).
    """
    with _no_empty_float32_notice():  # the UNet is cast to its own dtype once the projection is attached
        pipe.load_ip_adapter(weights.ip_adapter_parts(), subfolder="", weight_name="", image_encoder_folder=None,
                             low_cpu_mem_usage=False)
    # The file has UNet keys only; diffusers would warn that the text encoder got none, which is by design here.
    text_encoder_log = logging.getLogger("diffusers.loaders.lora_base")
    level = text_encoder_log.level
    text_encoder_log.setLevel(logging.ERROR)
    try:
        pipe.load_lora_weights(dict(weights.lora), adapter_name=LORA_ADAPTER_NAME)
    finally:
        text_encoder_log.setLevel(level)
    verify_face_adapter(pipe.unet, weights)


def verify_face_adapter(unet: torch.nn.Module, weights: FaceAdapterWeights) -> None:
    """Raise ``StrictLoadError`` unless every face-adapter tensor sits, unchanged, where it belongs."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    missing, mismatched = [], []
    processors = unet.attn_processors
    for t in face_adapter_targets(unet):
        processor = processors[f"{t.module_path}.processor"]
        for name in ("to_k_ip", "to_v_ip"):
            key = f"ip_adapter.{t.index}.{name}.weight"
            if not isinstance(processor, IPAdapterAttnProcessor2_0):
                missing.append(key)
            elif not torch.equal(getattr(processor, name)[0].weight.cpu(), weights.ip_adapter[key].to(unet.dtype)):
                mismatched.append(f"{key} (values differ from the file)")
    for key, tensor in weights.lora.items():
        module_path, kind = key.removeprefix("unet.").rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        module = unet.get_submodule(module_path)
        layers = getattr(module, kind, {})
        if LORA_ADAPTER_NAME not in layers:
            missing.append(key)
        elif not torch.equal(layers[LORA_ADAPTER_NAME].weight.cpu(), tensor.to(layers[LORA_ADAPTER_NAME].weight.dtype)):
            mismatched.append(f"{key} (values differ from the file)")
        elif module.scaling[LORA_ADAPTER_NAME] != 1.0:
            mismatched.append(f"{key} (LoRA scale {module.scaling[LORA_ADAPTER_NAME]}, expected 1.0)")
    projection_params = sum(p.numel() for p in unet.encoder_hid_proj.parameters())
    expected_params = sum(v.numel() for k, v in weights.ip_adapter.items() if k.startswith("image_proj."))
    if projection_params != expected_params:
        mismatched.append(f"image projection: {projection_params} parameters loaded, {expected_params} in the file")
    if missing or mismatched:
        raise StrictLoadError("ID-Animator face adapter after loading", missing=missing, mismatched=mismatched)


def assemble_id_animator_pipeline(
    *,
    unet: UNet2DConditionModel,
    motion_adapter: MotionAdapter,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel | None,
    tokenizer: CLIPTokenizer | None,
    image_encoder: CLIPVisionModelWithProjection,
    face_adapter: FaceAdapterWeights,
    per_frame_groupnorm: bool = True,
    identity_mixing: IdentityMixing = "mean",
    pipeline_class=IDAnimatorPipeline,
    **extra_components,
):
    """Stock parts + converted face adapter -> a ready pipeline (faithfulness switches applied).

    ``per_frame_groupnorm``: motion modules normalise each frame on its own, as original AnimateDiff does.
    ``identity_mixing``: "mean" averages several references' face tokens (ID-Animator), "concat" is diffusers'.
    ``extra_components`` go to the pipeline constructor (e.g. ``controlnet=`` for the sketch pipeline).
    """
    pipe = pipeline_class(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=motion_unet(unet, motion_adapter),
        motion_adapter=motion_adapter, scheduler=make_ddim_scheduler(), feature_extractor=CLIPImageProcessor(),
        image_encoder=image_encoder, **extra_components,
    )
    load_face_adapter(pipe, face_adapter)
    for model in (pipe.unet, extra_components.get("controlnet")):
        if model is not None:
            set_motion_groupnorm(model, per_frame=per_frame_groupnorm)
    install_face_token_mixer(pipe.unet, identity_mixing)
    return pipe


# -- from the weights packs ----------------------------------------------------------------------------------------
def converted_face_adapter(animator_path: Path, unet: torch.nn.Module, image_embed_dim: int,
                           cache_dir: Path | None = None) -> FaceAdapterWeights:
    """The face adapter converted for diffusers, cached as two safetensors in ``<stem>_diffusers/`` beside the
    checkpoint. The cache is rebuilt when the checkpoint is newer or its keys/shapes are not exactly the expected
    ones."""
    animator_path = Path(animator_path)
    cache_dir = Path(cache_dir or animator_path.with_name(animator_path.name.split(".")[0] + "_diffusers"))
    targets = face_adapter_targets(unet)
    cached = [cache_dir / FaceAdapterWeights.IP_ADAPTER_FILE, cache_dir / FaceAdapterWeights.LORA_FILE]
    if all(p.is_file() and p.stat().st_mtime >= animator_path.stat().st_mtime for p in cached):
        weights = FaceAdapterWeights.load(cache_dir)
        try:
            check_converted_face_adapter(weights, targets, image_embed_dim)
            note_ignored_entries(animator_path)
            return weights
        except StrictLoadError:
            pass  # stale or foreign cache: convert again
    weights = convert_animator_checkpoint(read_checkpoint(animator_path), targets, image_embed_dim)
    weights.save(cache_dir)
    return weights


def resolve_base_model(base_model: str | Path) -> str | Path:
    """``"community"`` / ``"sd15"`` or a path to a single-file SD1.5 checkpoint; checked before loading."""
    if isinstance(base_model, str) and base_model in BASE_MODEL_CHOICES:
        return base_model
    return check_single_file_model(base_model)


def required_roles(base_model: str | Path, sketch: bool) -> list[tuple[str, str]]:
    """The (pack, role) pairs :func:`load_id_animator_pipeline` reads for this base model (a single-file path needs
    no community model) and sketch setting."""
    roles = [("sd15", "base"), ("animatediff_v2", "motion_adapter"), ("id_animator", "animator"),
             ("id_animator", "image_encoder")]
    if base_model == "community":
        roles.append(("id_animator", "community_model"))
    if sketch:
        roles.append(("sparsectrl_scribble", "controlnet"))
    return roles


def load_id_animator_pipeline(
    *,
    base_model: str | Path = "community",
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    per_frame_groupnorm: bool = True,
    identity_mixing: IdentityMixing = "mean",
    sketch: bool = False,
    root: Path | str | None = None,
    plan=None,
):
    """ID-Animator from the weights packs (``sd15``, ``animatediff_v2``, ``id_animator``; ``sparsectrl_scribble``
    when ``sketch=True``), loaded strictly. fp16 on CUDA, fp32 on CPU unless ``dtype`` says otherwise.

    ``base_model``: "community" (RealisticVision V6.0 B1, as the original), "sd15", or a single-file SD1.5 path.
    ``plan``: a ``runtime.MemoryPlan`` giving dtype and device, then applied (:func:`apply_memory_plan`).
    """
    from helpers import weights

    if plan is not None:  # offloading plans load on the CPU; the offload hooks then move each model when it runs
        dtype, device = plan.dtype, "cpu" if _offload(plan) != "none" else plan.device
    base_model = resolve_base_model(base_model)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    sd15 = weights.resolve("sd15", "base", root)
    paths = {
        "motion_adapter": weights.resolve("animatediff_v2", "motion_adapter", root),
        "animator": weights.resolve("id_animator", "animator", root),
        "image_encoder": weights.resolve("id_animator", "image_encoder", root),
    }
    if base_model == "community":
        base_model = weights.resolve("id_animator", "community_model", root)
    controlnet_dir = weights.resolve("sparsectrl_scribble", "controlnet", root) if sketch else None

    if base_model == "sd15":
        unet, vae, text_encoder = load_sd15_components(sd15, dtype)
    else:
        unet, vae, text_encoder = load_single_file_components(base_model, sd15, dtype)
    tokenizer = CLIPTokenizer.from_pretrained(str(sd15), subfolder="tokenizer", local_files_only=True)
    image_encoder = load_image_encoder(paths["image_encoder"], dtype)
    face_adapter = converted_face_adapter(paths["animator"], unet, image_encoder.config.hidden_size)
    extra = {}
    pipeline_class = IDAnimatorPipeline
    if sketch:
        from diffusers import SparseControlNetModel

        from .sketch import IDAnimatorSketchPipeline

        extra["controlnet"] = load_pretrained_strict(SparseControlNetModel, controlnet_dir, dtype=dtype,
                                                     what="SparseCtrl scribble ControlNet",
                                                     allow_missing=COMPUTED_BUFFERS)
        pipeline_class = IDAnimatorSketchPipeline
    pipe = assemble_id_animator_pipeline(
        unet=unet, motion_adapter=load_motion_adapter(paths["motion_adapter"], dtype), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder, face_adapter=face_adapter,
        per_frame_groupnorm=per_frame_groupnorm, identity_mixing=identity_mixing, pipeline_class=pipeline_class,
        **extra)
    pipe = pipe.to(device)
    if plan is not None:
        apply_memory_plan(pipe, plan)
    return pipe


def _offload(plan) -> str:
    return plan.offload if plan.device == "cuda" else "none"


def apply_memory_plan(pipe, plan) -> None:
    """Place the pipeline as ``plan`` (``runtime.MemoryPlan``) says: model or sequential CPU offload on CUDA (enabled
    once the face adapter is loaded), else moved to ``plan.device``; the UNet's feed-forward layers chunked over
    tokens (dim 1) when ``plan.ff_chunk`` is set. The VAE chunk is a call argument (``decode_chunk_size``)."""
    offload = _offload(plan)
    if offload == "model":
        pipe.enable_model_cpu_offload()
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(plan.device)
    if plan.ff_chunk:
        pipe.unet.enable_forward_chunking(chunk_size=plan.ff_chunk, dim=1)
