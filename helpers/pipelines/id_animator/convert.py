"""Checkpoint conversion for ID-Animator onto stock diffusers.

``animator.ckpt`` (the face adapter) becomes the stock IP-Adapter-Plus format (the Resampler unchanged, the face
key/value projections renamed ``to_k_ip``/``to_v_ip``) plus a PEFT LoRA on the spatial cross-attentions; the
original AnimateDiff motion-module checkpoint (``mm_sd_v15_v2.ckpt`` naming) becomes ``MotionAdapter`` naming.
Every tensor is counted and shape-checked; a missing or mis-shaped tensor, or an unknown key inside the original's
three entries (``image_proj``, ``face_adapter``, ``state_dict``), raises ``StrictLoadError``. Other top-level entries
(a ``global_step``, optimizer state…) are ignored as the original ignores them, with a warning and a sidecar note
(``helpers.load_policy``).

>>> targets = face_adapter_targets(unet)                       # the 16 spatial cross-attentions, original order
>>> weights = convert_animator_checkpoint(flat_state_dict, targets, image_embed_dim=1280)
>>> weights.save(cache_dir)                                    # ip_adapter.safetensors + lora.safetensors
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import load_policy
from helpers.errors import StrictLoadError

# Constants the original hard-codes (face_adapter.py / resampler.py of ID-Animator).
NUM_FACE_TOKENS = 16
RESAMPLER_DEPTH = 4
RESAMPLER_HEADS = 12
RESAMPLER_DIM_HEAD = 64
RESAMPLER_FF_MULT = 4
LORA_RANK = 128
LORA_ADAPTER_NAME = "id_animator"

# Flattened container layouts the original loader accepts (nested dicts joined with "."), key prefix -> part.
ANIMATOR_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("image_proj.", "image_proj", "nested"),
    ("face_adapter.", "face_adapter", "nested"),
    ("state_dict.module.image_proj_model.", "image_proj", "state_dict"),
    ("state_dict.module.adapter_modules.", "face_adapter", "state_dict"),
    ("state_dict.image_proj_model.", "image_proj", "state_dict"),
    ("state_dict.adapter_modules.", "face_adapter", "state_dict"),
)

# The top-level entries of animator.ckpt the original reads; it ignores every other one.
ANIMATOR_ENTRIES = ("image_proj", "face_adapter", "state_dict")

# Original LoRA layer name -> the attention sub-module it adapts (diffusers ``Attention`` naming).
LORA_TARGETS = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}


@dataclass(frozen=True)
class FaceAdapterTarget:
    """One spatial cross-attention that receives face attention + LoRA.

    ``index`` is its position in the original UNet's attention-processor list (odd: ``attn2``), which is the key
    prefix used in ``animator.ckpt`` and by diffusers' IP-Adapter loader alike.
    """

    index: int
    module_path: str
    hidden_size: int
    cross_attention_dim: int


@dataclass
class FaceAdapterWeights:
    """The converted face adapter: a stock IP-Adapter-Plus state dict and a PEFT LoRA state dict.

    ``ip_adapter`` keys: ``image_proj.<resampler key>`` and ``ip_adapter.<i>.to_k_ip.weight``/``to_v_ip``;
    ``lora`` keys: ``unet.<module>.<to_q|to_k|to_v|to_out.0>.lora_A.weight``/``lora_B`` (rank 128, no alpha).
    """

    ip_adapter: dict[str, torch.Tensor]
    lora: dict[str, torch.Tensor]

    IP_ADAPTER_FILE = "ip_adapter.safetensors"
    LORA_FILE = "lora.safetensors"

    def ip_adapter_parts(self) -> dict[str, dict[str, torch.Tensor]]:
        """The nested ``{"image_proj": ..., "ip_adapter": ...}`` dict that ``load_ip_adapter`` accepts."""
        parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in self.ip_adapter.items():
            part, rest = key.split(".", 1)
            parts[part][rest] = value
        return parts

    def save(self, folder: Path) -> tuple[Path, Path]:
        """Write both state dicts as safetensors into ``folder``; returns (ip_adapter path, lora path)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / self.IP_ADAPTER_FILE, folder / self.LORA_FILE
        for path, tensors in zip(paths, (self.ip_adapter, self.lora)):
            tmp = path.with_name(path.name + ".tmp")
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
            tmp.replace(path)
        return paths

    @classmethod
    def load(cls, folder: Path) -> FaceAdapterWeights:
        """Read the two files written by ``save``."""
        from safetensors.torch import load_file

        folder = Path(folder)
        return cls(load_file(str(folder / cls.IP_ADAPTER_FILE)), load_file(str(folder / cls.LORA_FILE)))


# -- where the face adapter goes -----------------------------------------------------------------------------------
def face_adapter_targets(unet: torch.nn.Module) -> list[FaceAdapterTarget]:
    """The spatial cross-attentions of a ``UNet2DConditionModel`` or ``UNetMotionModel``, in the original's order.

    The original numbers every spatial attention processor (motion modules excluded) in registration order —
    down blocks, up blocks, mid block last — and gives face layers to the ``attn2`` ones (odd numbers). Works on
    the meta device, so full-size tables cost nothing.
    """
    blocks = ("down_blocks.", "mid_block.", "up_blocks.")
    spatial = [name for name in unet.attn_processors if name.startswith(blocks) and "motion_modules" not in name]
    targets = []
    for position, name in enumerate(spatial):
        module_path = name.removesuffix(".processor")
        is_cross = module_path.endswith("attn2")
        if is_cross != (position % 2 == 1):
            raise ValueError(f"unexpected attention layout at {name}: self- and cross-attention do not alternate")
        if is_cross:
            attention = unet.get_submodule(module_path)
            targets.append(FaceAdapterTarget(position, module_path, attention.to_q.out_features,
                                             attention.to_k.in_features))
    return targets


# -- expected tables -----------------------------------------------------------------------------------------------
def expected_resampler_shapes(cross_attention_dim: int, image_embed_dim: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the original Resampler (IP-Adapter-Plus SD1.5 layout) in ``animator.ckpt`` naming."""
    dim, inner = cross_attention_dim, RESAMPLER_HEADS * RESAMPLER_DIM_HEAD
    shapes: dict[str, tuple[int, ...]] = {
        "latents": (1, NUM_FACE_TOKENS, dim),
        "proj_in.weight": (dim, image_embed_dim), "proj_in.bias": (dim,),
        "proj_out.weight": (dim, dim), "proj_out.bias": (dim,),
        "norm_out.weight": (dim,), "norm_out.bias": (dim,),
    }
    for layer in range(RESAMPLER_DEPTH):
        attn, ff = f"layers.{layer}.0", f"layers.{layer}.1"
        shapes.update({
            f"{attn}.norm1.weight": (dim,), f"{attn}.norm1.bias": (dim,),
            f"{attn}.norm2.weight": (dim,), f"{attn}.norm2.bias": (dim,),
            f"{attn}.to_q.weight": (inner, dim), f"{attn}.to_kv.weight": (2 * inner, dim),
            f"{attn}.to_out.weight": (dim, inner),
            f"{ff}.0.weight": (dim,), f"{ff}.0.bias": (dim,),
            f"{ff}.1.weight": (RESAMPLER_FF_MULT * dim, dim), f"{ff}.3.weight": (dim, RESAMPLER_FF_MULT * dim),
        })
    return shapes


def expected_face_layer_shapes(targets: Sequence[FaceAdapterTarget], rank: int = LORA_RANK) -> dict[str, tuple]:
    """Key -> shape of the face attention processors (LoRA + face projections) in ``animator.ckpt`` naming."""
    shapes: dict[str, tuple[int, ...]] = {}
    for t in targets:
        h, c, i = t.hidden_size, t.cross_attention_dim, t.index
        inputs = {"to_q_lora": h, "to_k_lora": c, "to_v_lora": c, "to_out_lora": h}
        for name, in_features in inputs.items():
            shapes[f"{i}.{name}.down.weight"] = (rank, in_features)
            shapes[f"{i}.{name}.up.weight"] = (h, rank)
        shapes[f"{i}.to_k_face.weight"] = (h, c)
        shapes[f"{i}.to_v_face.weight"] = (h, c)
    return shapes


# -- animator.ckpt -------------------------------------------------------------------------------------------------
def flatten_state_dict(obj: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> one flat dict with ``.``-joined keys (the layout of the fp16 safetensors copy)."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_state_dict(value, name))
        elif isinstance(value, torch.Tensor):
            flat[name] = value
        else:
            raise StrictLoadError(f"animator checkpoint: '{name}' is a {type(value).__name__}, not a tensor")
    return flat


def split_animator_checkpoint(flat: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Strip the container prefixes of any accepted layout -> (resampler dict, face-layer dict).

    Accepted (flattened): ``image_proj.*`` + ``face_adapter.*``; or ``state_dict.`` followed per key by
    ``module.image_proj_model.``, ``module.adapter_modules.``, ``image_proj_model.`` or ``adapter_modules.``.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "face_adapter": {}}
    unexpected, duplicated = [], []
    containers: dict[str, list[str]] = {}
    flat = _known_entries(flat)
    for key, value in flat.items():
        for prefix, part, container in ANIMATOR_PREFIXES:
            if key.startswith(prefix):
                rest = key[len(prefix):]
                if rest in parts[part]:
                    duplicated.append(key)
                parts[part][rest] = value
                containers.setdefault(container, []).append(key)
                break
        else:
            unexpected.append(key)
    if len(containers) > 1:
        raise StrictLoadError("animator checkpoint mixes the nested and the state_dict layouts",
                              unexpected=containers["state_dict"])
    if unexpected or duplicated:
        raise StrictLoadError("animator checkpoint", unexpected=unexpected + [f"{k} (twice)" for k in duplicated])
    return parts["image_proj"], parts["face_adapter"]


def _known_entries(flat: Mapping[str, object], what: str = "animator checkpoint") -> dict:
    """``flat`` without the top-level entries the original does not read (recorded by the load policy)."""
    ignored = [k for k in flat if k.split(".", 1)[0] not in ANIMATOR_ENTRIES]
    load_policy.record_ignored(what, ignored, "the original reads only the image_proj, face_adapter and state_dict "
                                              "entries of animator.ckpt")
    skip = set(ignored)
    return {k: v for k, v in flat.items() if k not in skip}


def _check_shapes(what: str, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, tuple]) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k])}" for k in set(expected) & set(tensors)
                        if tuple(tensors[k].shape) != tuple(expected[k]))
    if missing or unexpected or mismatched:
        raise StrictLoadError(what, missing, unexpected, mismatched)


def convert_animator_checkpoint(flat: Mapping[str, torch.Tensor], targets: Sequence[FaceAdapterTarget],
                                image_embed_dim: int) -> FaceAdapterWeights:
    """``animator.ckpt`` (flattened, any accepted layout) -> stock IP-Adapter-Plus + PEFT LoRA state dicts.

    ``targets`` come from ``face_adapter_targets(unet)``; ``image_embed_dim`` is the CLIP vision hidden size
    (1280 for ViT-H/14). The Resampler passes unchanged (diffusers' IP-Adapter-Plus loader renames it); face
    projections keep their index; LoRA ``down``/``up`` become PEFT ``lora_A``/``lora_B``. The LoRA is kept out of
    the IP-Adapter dict on purpose: diffusers would otherwise index it over all processors, motion modules included.
    """
    if not targets:
        raise ValueError("no spatial cross-attention found in the UNet")
    resampler, face_layers = split_animator_checkpoint(flat)
    cross_attention_dim = targets[0].cross_attention_dim
    _check_shapes("animator checkpoint (image_proj)", resampler,
                  expected_resampler_shapes(cross_attention_dim, image_embed_dim))
    _check_shapes("animator checkpoint (face_adapter)", face_layers, expected_face_layer_shapes(targets))

    ip_adapter = {f"image_proj.{k}": v for k, v in resampler.items()}
    lora: dict[str, torch.Tensor] = {}
    for t in targets:
        ip_adapter[f"ip_adapter.{t.index}.to_k_ip.weight"] = face_layers[f"{t.index}.to_k_face.weight"]
        ip_adapter[f"ip_adapter.{t.index}.to_v_ip.weight"] = face_layers[f"{t.index}.to_v_face.weight"]
        for name, submodule in LORA_TARGETS.items():
            base = f"unet.{t.module_path}.{submodule}"
            lora[f"{base}.lora_A.weight"] = face_layers[f"{t.index}.{name}.down.weight"]
            lora[f"{base}.lora_B.weight"] = face_layers[f"{t.index}.{name}.up.weight"]
    # every source tensor lands exactly once
    assert len(ip_adapter) + len(lora) == len(resampler) + len(face_layers), "face adapter conversion lost tensors"
    return FaceAdapterWeights(ip_adapter, lora)


def animator_checkpoint_template(targets: Sequence[FaceAdapterTarget], image_embed_dim: int,
                                 device: str | torch.device = "meta") -> dict[str, torch.Tensor]:
    """An ``animator.ckpt``-shaped flat state dict (nested layout) of empty tensors: the full key/shape table.

    On the meta device by default (no memory), e.g. to derive the converted table or to check a manifest.
    """
    resampler = expected_resampler_shapes(targets[0].cross_attention_dim, image_embed_dim)
    face_layers = expected_face_layer_shapes(targets)
    return {f"{part}.{k}": torch.empty(shape, device=device)
            for part, table in (("image_proj", resampler), ("face_adapter", face_layers)) for k, shape in table.items()}


def check_converted_face_adapter(weights: FaceAdapterWeights, targets: Sequence[FaceAdapterTarget],
                                 image_embed_dim: int) -> None:
    """Raise ``StrictLoadError`` unless ``weights`` holds exactly the converted keys and shapes for ``targets``."""
    template = convert_animator_checkpoint(animator_checkpoint_template(targets, image_embed_dim), targets,
                                           image_embed_dim)
    _check_shapes("converted face adapter (IP-Adapter part)", weights.ip_adapter,
                  {k: tuple(v.shape) for k, v in template.ip_adapter.items()})
    _check_shapes("converted face adapter (LoRA part)", weights.lora, {k: tuple(v.shape) for k, v in template.lora.items()})


def note_ignored_entries(path: Path) -> None:
    """Record the entries of a safetensors ``animator`` file that conversion leaves out (read from its header only),
    for runs that reuse a cached conversion and so never read the file."""
    from safetensors import safe_open

    if Path(path).suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            _known_entries(dict.fromkeys(handle.keys()), f"animator checkpoint {Path(path).name}")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A flat state dict from safetensors, or from a torch pickle (``weights_only``; nested dicts flattened)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _known_entries(load_file(str(path)), f"animator checkpoint {path.name}")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping):  # entries the original never reads may be anything (a step counter, …)
        loaded = _known_entries(loaded, f"animator checkpoint {path.name}")
    return flatten_state_dict(loaded)


# -- motion module -------------------------------------------------------------------------------------------------
_MOTION_RENAMES = ((".temporal_transformer.", "."), (".attention_blocks.0.", ".attn1."),
                   (".attention_blocks.1.", ".attn2."), (".norms.0.", ".norm1."), (".norms.1.", ".norm2."),
                   (".ff_norm.", ".norm3."))


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_meta or b.is_meta:  # shape tables without data
        return a.shape == b.shape
    return a.shape == b.shape and torch.equal(a, b)


def convert_motion_module_checkpoint(flat: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AnimateDiff motion-module keys (``mm_sd_v15_v2.ckpt``) -> diffusers ``MotionAdapter`` keys.

    Accepts the flat dict or the same wrapped in ``state_dict.``. The two copies of the sinusoidal positional
    table per block (one per temporal attention) must agree; they become the block's single ``pos_embed.pe``.
    Keys outside the motion modules raise ``StrictLoadError``.
    """
    converted: dict[str, torch.Tensor] = {}
    unexpected, conflicting = [], []
    for key, value in flat.items():
        name = key.removeprefix("state_dict.")
        if "motion_modules." not in name:
            unexpected.append(key)
            continue
        if name.endswith(".pos_encoder.pe"):
            # ...transformer_blocks.0.attention_blocks.{0,1}.pos_encoder.pe -> ...transformer_blocks.0.pos_embed.pe
            block = name.replace(".temporal_transformer.", ".").rsplit(".attention_blocks.", 1)[0]
            target = f"{block}.pos_embed.pe"
            if target in converted and not _same_values(converted[target], value):
                conflicting.append(key)
            converted[target] = value
            continue
        for old, new in _MOTION_RENAMES:
            name = name.replace(old, new)
        converted[name] = value
    if unexpected or conflicting:
        raise StrictLoadError("motion module checkpoint",
                              unexpected=unexpected + [f"{k} (differs from its sibling table)" for k in conflicting])
    return converted
