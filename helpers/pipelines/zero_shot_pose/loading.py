"""Loading the zero-shot pipeline from the weights folder, strictly (a mismatch lists its keys and stops).

Weights come from two packs (``helpers.registry``), in the layout ``<root>/models/<pack>/<role>/``:

- ``sd21`` / ``base``: the Stable Diffusion 2.1-*base* pipeline folder (unet/, vae/, text_encoder/, tokenizer/,
  scheduler/): 512 px, epsilon prediction, the model the ControlNet was trained on (the default).
  ``sd21`` / ``base_768`` (optional): SD2.1-768, v-prediction, what the original scripts loaded;
  ``base_role=BASE_768_ROLE`` picks it.
- ``controlnet_sd21_openpose`` / ``controlnet``: thibaud's SD2.1 OpenPose ControlNet, either as a diffusers folder
  (config.json + weights) or as one original-format checkpoint file (``.safetensors``, or a ``.ckpt`` converted by
  the weights manager), converted on load with the SD2.1 ControlNet config of :mod:`.configs`.

Which base? thibaud's model card does not say. The ControlNet repository's SD2.1 training route (its
``tool_add_control_sd21.py`` starting from ``v2-1_512-ema-pruned.ckpt`` and the ``cldm_v21.yaml`` config, which has
no v-prediction setting and 512-px data) builds on SD2.1-*base*, an epsilon model; the original conversion config of
the zero-shot repository is that same epsilon config. An epsilon-trained ControlNet steering a v-prediction UNet
works (the residuals are features, not predictions) but is off its training distribution, so SD2.1-base at 512×512
is the better-founded pairing; SD2.1-768 at 768×768 is what the original scripts loaded (at 512, which that model
was not trained for). :func:`native_size` gives the size each base was trained at.

>>> pipe = load_zero_shot_pipeline()                          # CUDA → fp16, CPU → fp32
>>> native_size(pipe)
512
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

from helpers import load_policy
from helpers.errors import MissingWeightsError, WeightsError, check_strict_load

from .configs import SD21_CONTROLNET
from .pipeline import ZeroShotPosePipeline

BASE_PACK, BASE_ROLE, BASE_768_ROLE = "sd21", "base", "base_768"
CONTROLNET_PACK, CONTROLNET_ROLE = "controlnet_sd21_openpose", "controlnet"
SINGLE_FILE_SUFFIXES = (".safetensors",)


def resolve_weights(pack: str, role: str) -> Path:
    """The local path of a pack role (``weights.resolve``); raises :class:`MissingWeightsError` when absent."""
    from helpers import weights

    return Path(weights.resolve(pack, role))


def default_device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """fp16 on CUDA, fp32 on the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def load_zero_shot_pipeline(*, base_role: str = BASE_ROLE, base_dir: str | Path | None = None,
                            controlnet_path: str | Path | None = None, device: str | torch.device | None = None,
                            dtype: torch.dtype | None = None) -> ZeroShotPosePipeline:
    """Build :class:`ZeroShotPosePipeline` from the weights folder (or explicit paths), moved to ``device``.

    Every model is checked key by key against its checkpoint; the UNet and the ControlNet must agree on their
    channels and text width. The scheduler is DDIM built from the base model's own scheduler config (prediction type
    and betas included), whatever scheduler class that folder names.
    """
    default_device, default_dtype = default_device_and_dtype()
    device = torch.device(device) if device is not None else default_device
    dtype = dtype or (default_dtype if device.type == default_device.type else torch.float32)
    base = Path(base_dir) if base_dir is not None else resolve_weights(BASE_PACK, base_role)
    controlnet_source = Path(controlnet_path) if controlnet_path is not None else resolve_weights(
        CONTROLNET_PACK, CONTROLNET_ROLE)
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (base / sub).is_dir():
            raise MissingWeightsError(f"{base} has no {sub}/ folder: it is not a Stable Diffusion 2.1 pipeline folder "
                                      f"— fetch the '{BASE_PACK}' pack again in the setup notebook")

    from transformers import CLIPTextModel, CLIPTokenizer

    unet = load_diffusers_model(UNet2DConditionModel, base / "unet", dtype, "SD2.1 UNet")
    vae = load_diffusers_model(AutoencoderKL, base / "vae", dtype, "SD2.1 VAE")
    text_encoder = load_transformers_model(CLIPTextModel, base / "text_encoder", dtype, "SD2.1 text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(str(base / "tokenizer"))
    scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(str(base / "scheduler")))
    if controlnet_source.is_file():
        controlnet = load_controlnet_single_file(controlnet_source, dtype)
    else:
        controlnet = load_diffusers_model(ControlNetModel, controlnet_source, dtype, "SD2.1 OpenPose ControlNet")
    check_compatible(unet, controlnet, text_encoder)
    pipe = ZeroShotPosePipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                controlnet=controlnet, scheduler=scheduler)
    return pipe.to(device)


def native_size(pipe: ZeroShotPosePipeline) -> int:
    """The image size the base model was trained at (768 for SD2.1-768, 512 for SD2.1-base)."""
    return int(pipe.unet.config.sample_size) * pipe.vae_scale_factor


def _variant(folder: Path) -> str | None:
    """``"fp16"`` when the folder only holds ``*.fp16.safetensors`` weights (a download of the fp16 variant)."""
    weights = [p.name for p in folder.glob("*.safetensors")] + [p.name for p in folder.glob("*.bin")]
    if weights and all(".fp16." in name for name in weights):
        return "fp16"
    return None


def _dtype_keyword(library: str) -> str:
    """diffusers ≥ 0.40 and transformers ≥ 5 take ``dtype=``; older versions only ``torch_dtype=`` (and diffusers
    ≤ 0.39 silently ignores ``dtype=``, loading fp32)."""
    import importlib

    from packaging.version import Version

    version = Version(importlib.import_module(library).__version__)
    threshold = Version("0.40") if library == "diffusers" else Version("5.0")
    return "dtype" if version >= threshold else "torch_dtype"


def _raise_on_mismatch(what: str, info: dict, shape_lines: list[str] = ()) -> None:
    """The load policy (:mod:`helpers.load_policy`) for a stock ``from_pretrained`` load, as the original loads these
    models: missing or mis-shaped keys stop it, extra keys are loaded past with a warning and a sidecar note."""
    load_policy.enforce_loading_info(what, info, shape_lines=shape_lines)


def load_diffusers_model(cls, folder: Path, dtype: torch.dtype, what: str):
    """``cls.from_pretrained(folder)`` in ``dtype``; raises :class:`StrictLoadError` on any key mismatch."""
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"{what}: no config.json in {folder} — fetch the model pack again")
    try:
        model, info = cls.from_pretrained(str(folder), variant=_variant(folder), output_loading_info=True,
                                          **{_dtype_keyword("diffusers"): dtype})
    except (OSError, ValueError, RuntimeError) as error:
        raise WeightsError(f"{what}: cannot load {folder} ({type(error).__name__}: {str(error).splitlines()[0]}) — "
                           "fetch the model pack again") from error
    _raise_on_mismatch(what, info)
    return _in_dtype(model, dtype)


def _in_dtype(model, dtype: torch.dtype):
    """Cast only when loading did not already give ``dtype`` (older diffusers ignore ``dtype=``)."""
    return (model if model.dtype == dtype else model.to(dtype)).eval()


def load_transformers_model(cls, folder: Path, dtype: torch.dtype, what: str):
    """Same as :func:`load_diffusers_model` for a transformers model folder."""
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"{what}: no config.json in {folder} — fetch the model pack again")
    # the variant: a folder holding only model.fp16.safetensors; mismatched sizes go into ``info`` (named there)
    # instead of a bare RuntimeError, and the policy refuses them
    try:
        with load_policy.transformers_shape_lines() as shape_lines:  # transformers 4.x logs the shapes
            model, info = cls.from_pretrained(str(folder), variant=_variant(folder), output_loading_info=True,
                                              ignore_mismatched_sizes=True, **{_dtype_keyword("transformers"): dtype})
    except (OSError, ValueError) as error:
        raise WeightsError(f"{what}: cannot load {folder} ({type(error).__name__}: {str(error).splitlines()[0]}) — "
                           "fetch the model pack again") from error
    _raise_on_mismatch(what, info, shape_lines)
    return _in_dtype(model, dtype)


def load_controlnet_single_file(path: Path, dtype: torch.dtype, *, config: dict | None = None) -> ControlNetModel:
    """A ControlNet from one original-format checkpoint, converted with an explicit local config (default:
    :data:`.configs.SD21_CONTROLNET`) — never a config fetched from the Hub. See :func:`convert_original_controlnet`."""
    from safetensors.torch import load_file

    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise WeightsError(f"{path.name}: a single-file ControlNet must be .safetensors (the weights manager converts "
                           ".ckpt pickles to <name>.fp16.safetensors) — run the setup notebook again")
    config = dict(config or SD21_CONTROLNET)
    with torch.device("meta"):  # no second copy of the weights in memory: loading assigns the file's tensors
        model = ControlNetModel(**config)
    converted = convert_original_controlnet(load_file(str(path)), model, config, f"ControlNet {path.name}")
    model.load_state_dict(converted, strict=True, assign=True)
    return _in_dtype(model, dtype)


def convert_original_controlnet(checkpoint: dict, model: ControlNetModel, config: dict, what: str) -> dict:
    """Original (ControlLDM) key names → diffusers names, checked strictly against ``model``.

    Accepts a ControlNet-only file (``time_embed.0.weight``, ``input_blocks.…``, ``zero_convs.…``,
    ``input_hint_block.…``), a whole ControlLDM checkpoint (the ControlNet under ``control_model.``), and a pickle
    flattened by the weights manager (everything under ``state_dict.``). Raises :class:`StrictLoadError` when a model
    tensor is missing or has another shape. Checkpoint entries the conversion does not read (the rest of a
    ControlLDM, a stray buffer) are left out as the original conversion leaves them out, listed once in a warning
    and recorded for the sidecar (:mod:`helpers.load_policy`).
    """
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    checkpoint = {key.removeprefix("state_dict."): tensor for key, tensor in checkpoint.items()}
    converted = convert_controlnet_checkpoint(checkpoint, config)
    converted = {key: tensor for key, tensor in converted.items() if tensor is not None}
    check_strict_load(what, model, converted)
    placed = {id(tensor) for tensor in converted.values()}  # the conversion moves tensors, it never copies them
    load_policy.record_ignored(what, [k for k, tensor in checkpoint.items() if id(tensor) not in placed],
                               "the original conversion reads only the ControlNet's own tensors")
    return converted


def check_compatible(unet, controlnet, text_encoder) -> None:
    """The three models must agree on channels and text width, else the ControlNet is for another base model."""
    problems = []
    if list(unet.config.block_out_channels) != list(controlnet.config.block_out_channels):
        problems.append(f"channels {list(controlnet.config.block_out_channels)} vs the UNet's "
                        f"{list(unet.config.block_out_channels)}")
    if unet.config.cross_attention_dim != controlnet.config.cross_attention_dim:
        problems.append(f"text width {controlnet.config.cross_attention_dim} vs the UNet's "
                        f"{unet.config.cross_attention_dim}")
    if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
        problems.append(f"text encoder width {text_encoder.config.hidden_size} vs the UNet's "
                        f"{unet.config.cross_attention_dim}")
    if problems:
        raise WeightsError("the ControlNet does not fit this base model (" + "; ".join(problems) + "): use an SD2.1 "
                           "ControlNet with an SD2.1 base")
