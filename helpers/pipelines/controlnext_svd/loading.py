"""Loading ControlNeXt-SVD from the on-disk packs: strict key checks, dtype/device, memory-plan knobs.

Three roles make a pipeline (``weights.resolve`` finds them under the Drive root):

- ``controlnext_svd_<version>/unet``: the complete retrained SVD-XT UNet (flat dict, diffusers key names), built as
  a stock ``UNetSpatioTemporalConditionModel`` — no base UNet download is needed;
- ``controlnext_svd_<version>/controlnext``: the pose encoder (its version is read from its keys);
- ``svd_xt_1_1/components``: the SVD-XT 1.1 folder without UNet weights (vae/, image_encoder/, scheduler/,
  feature_extractor/, and unet/config.json when present).

>>> from helpers import runtime
>>> pipe = load_pipeline(version="v2", plan=runtime.memory_plan())     # fp16 on CUDA, fp32 on CPU
>>> pipe = load_pipeline(ControlNeXtPaths(unet=..., controlnext=..., components=...), dtype=torch.float32,
...                      device="cpu")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from helpers import load_policy
from helpers.errors import InputError, StrictLoadError

from .encoder import OFFICIAL_V1, OFFICIAL_V2, ControlNeXtEncoder, detect_version
from .pipeline import ControlNeXtSVDPipeline

VERSIONS = ("v2", "v1")

# The SVD-XT(-1.1) UNet configuration, used when the components folder has no unet/config.json.
SVD_XT_UNET_CONFIG = dict(
    sample_size=96, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(320, 640, 1280, 1280), addition_time_embed_dim=256, projection_class_embeddings_input_dim=768,
    layers_per_block=2, cross_attention_dim=1024, transformer_layers_per_block=1, num_attention_heads=(5, 10, 20, 20),
    num_frames=25,
)
OFFICIAL_ENCODERS = {"v2": OFFICIAL_V2, "v1": OFFICIAL_V1}


@dataclass(frozen=True)
class ControlNeXtPaths:
    """Where the three parts are: the UNet weights file, the pose-encoder file and the SVD components folder."""

    unet: Path
    controlnext: Path
    components: Path

    @classmethod
    def from_packs(cls, version: str = "v2", root: Path | str | None = None) -> ControlNeXtPaths:
        """Resolve the packs under ``root`` (default: the Drive root); raises ``MissingWeightsError`` if absent."""
        from helpers import weights

        if version not in VERSIONS:
            raise InputError(f"unknown ControlNeXt-SVD version {version!r}: use 'v2' or 'v1'")
        pack = f"controlnext_svd_{version}"
        return cls(
            unet=Path(weights.resolve(pack, "unet", root)),
            controlnext=Path(weights.resolve(pack, "controlnext", root)),
            components=Path(weights.resolve("svd_xt_1_1", "components", root)),
        )


def read_state_dict(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A flat tensor dict from ``.safetensors`` or a torch pickle (``weights_only``), floats cast to ``dtype``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                tensors[key] = _cast(f.get_tensor(key), dtype)
        return tensors
    loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise StrictLoadError(f"{path.name}", unexpected=["<not a flat dict of tensors>"])
    return {k: _cast(v, dtype) for k, v in loaded.items()}


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def load_controlnext(path: Path, expected_version: str | None = None) -> ControlNeXtEncoder:
    """The pose encoder from a checkpoint, loaded strictly (float32, CPU) as the original does. A file of the other
    version raises ``StrictLoadError`` listing the keys that tell the versions apart."""
    return controlnext_from_state_dict(read_state_dict(path), expected_version, f"ControlNeXt pose encoder {Path(path).name}")


def controlnext_from_state_dict(state_dict: dict[str, torch.Tensor], expected_version: str | None = None,
                                what: str = "ControlNeXt pose encoder") -> ControlNeXtEncoder:
    """:func:`load_controlnext` after the file is read."""
    found = detect_version(state_dict)
    if expected_version is not None and found != expected_version:
        expected_keys = set(ControlNeXtEncoder(**OFFICIAL_ENCODERS[expected_version]).state_dict())
        raise StrictLoadError(
            f"{what} is a {found} file but {expected_version} was asked for",
            missing=sorted(expected_keys - set(state_dict)),
            unexpected=sorted(set(state_dict) - expected_keys),
        )
    return ControlNeXtEncoder.from_state_dict(state_dict, what=what)


def unet_config(components: Path) -> dict:
    """The UNet config: ``components/unet/config.json`` when the folder has it, else the SVD-XT one."""
    config_file = Path(components) / "unet" / "config.json"
    if config_file.is_file():
        return {k: v for k, v in json.loads(config_file.read_text()).items() if not k.startswith("_")}
    return dict(SVD_XT_UNET_CONFIG)


def load_unet(path: Path, config: dict, dtype: torch.dtype = torch.float32) -> UNetSpatioTemporalConditionModel:
    """A stock SVD UNet built without allocating weights, then filled from ``path`` in ``dtype``.

    As in the original (``strict=False`` over the UNet), entries the UNet has no place for are left out, with a
    warning and a note in the sidecar (:mod:`helpers.load_policy`); missing or mis-shaped tensors stop the load.
    """
    return unet_from_state_dict(read_state_dict(path, dtype), config, dtype,
                                what=f"ControlNeXt-SVD UNet {Path(path).name}")


def unet_from_state_dict(state_dict: dict[str, torch.Tensor], config: dict, dtype: torch.dtype = torch.float32,
                         what: str = "ControlNeXt-SVD UNet") -> UNetSpatioTemporalConditionModel:
    """:func:`load_unet` after the file is read (tensors on the meta device give a full-size model without memory)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet = UNetSpatioTemporalConditionModel.from_config(config)
    ignored = set(load_policy.enforce(what, unet.state_dict(), state_dict, ignore_unexpected=True,
                                      why="the original loads the UNet with strict=False"))
    state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
    unet.load_state_dict(state_dict, strict=True, assign=True)
    return in_dtype(unet, dtype).eval()


def in_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` with floating parameters in ``dtype`` (cast only when needed: some library versions ignore a
    requested dtype, and casting an already-right model only adds warnings)."""
    if any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype)
    return model


def _weight_variant(folder: Path, stem: str) -> str | None:
    """'fp16' when a folder holds only the fp16 variant of its weights (what the downloads keep)."""
    has_plain = (folder / f"{stem}.safetensors").is_file() or (folder / f"{stem}.bin").is_file()
    has_fp16 = (folder / f"{stem}.fp16.safetensors").is_file() or (folder / f"{stem}.fp16.bin").is_file()
    return "fp16" if has_fp16 and not has_plain else None


def load_components(components: Path, dtype: torch.dtype = torch.float32) -> dict:
    """VAE, CLIP image encoder, scheduler and feature extractor from an SVD-XT folder (in ``dtype``; the load policy
    of :mod:`helpers.load_policy`)."""
    components = Path(components)
    vae, info = AutoencoderKLTemporalDecoder.from_pretrained(
        components, subfolder="vae", torch_dtype=dtype, output_loading_info=True,
        variant=_weight_variant(components / "vae", "diffusion_pytorch_model"),
    )
    load_policy.enforce_loading_info("SVD temporal VAE", info)
    image_encoder, info = CLIPVisionModelWithProjection.from_pretrained(
        components / "image_encoder", dtype=dtype, output_loading_info=True,
        variant=_weight_variant(components / "image_encoder", "model"),
    )
    load_policy.enforce_loading_info("SVD CLIP image encoder", info)
    return dict(
        vae=in_dtype(vae, dtype).eval(),
        image_encoder=in_dtype(image_encoder, dtype).eval(),
        scheduler=EulerDiscreteScheduler.from_pretrained(components, subfolder="scheduler"),
        feature_extractor=CLIPImageProcessor.from_pretrained(components, subfolder="feature_extractor"),
    )


def load_pipeline(
    paths: ControlNeXtPaths | Path | str | None = None,
    *,
    version: str = "v2",
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    plan=None,
) -> ControlNeXtSVDPipeline:
    """Load the whole pipeline and apply a memory plan.

    ``paths``: explicit ``ControlNeXtPaths``, or a Drive root (folder holding ``models/``), or None for the default
    root. ``plan``: a ``helpers.runtime.MemoryPlan`` (default: the plan for this machine); it gives the dtype and
    device unless they are passed, and its knobs are applied: ``offload`` ("model": accelerate model CPU offload,
    "sequential": layer-by-layer offload, "none"), ``ff_chunk`` (UNet feed-forward chunking) and
    ``vae_decode_chunk`` (an upper bound on frames decoded at once).
    """
    from helpers import runtime

    if version not in VERSIONS:
        raise InputError(f"unknown ControlNeXt-SVD version {version!r}: use 'v2' or 'v1'")
    if not isinstance(paths, ControlNeXtPaths):
        paths = ControlNeXtPaths.from_packs(version, paths)
    plan = plan if plan is not None else runtime.memory_plan()
    device = torch.device(device if device is not None else plan.device)
    if dtype is None:
        dtype = plan.dtype
        if device.type == "cpu" and plan.device != "cpu" and dtype in (torch.float16, torch.bfloat16):
            dtype = torch.float32  # a GPU plan placed on the CPU: half precision is slow there (asked for: kept)

    controlnext = load_controlnext(paths.controlnext, expected_version=version)
    unet = load_unet(paths.unet, unet_config(paths.components), dtype)
    widths = unet.config.block_out_channels
    needed = widths[0] if version == "v2" else widths[-1]
    if controlnext.config.output_channels != needed:
        raise StrictLoadError(
            f"ControlNeXt {version} pose encoder vs UNet",
            mismatched=[f"mid_convs.1.weight gives {controlnext.config.output_channels} channels, the UNet's "
                        f"injection site has {needed}"],
        )
    pipe = ControlNeXtSVDPipeline(unet=unet, controlnext=in_dtype(controlnext, dtype).eval(),
                                  **load_components(paths.components, dtype))
    apply_memory_plan(pipe, plan, device)
    return pipe


def apply_memory_plan(pipe: ControlNeXtSVDPipeline, plan, device: torch.device) -> None:
    """Place the pipeline on ``device`` according to ``plan.offload`` and set the chunking knobs."""
    offload = getattr(plan, "offload", "none") if device.type == "cuda" else "none"
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    ff_chunk = getattr(plan, "ff_chunk", None)
    if ff_chunk:
        # dim 0 = one frame at a time in the spatial blocks (the temporal blocks always chunk over frames).
        pipe.unet.enable_forward_chunking(chunk_size=ff_chunk, dim=0)
    pipe.max_decode_chunk = getattr(plan, "vae_decode_chunk", None)
