"""Every official key of the zero-shot method, at full size, through its production loaders.

The manifests (``tests/manifests/zero_shot_*.json``, written by ``scripts/zero_shot_manifests.py`` from the published
configs and the original ControlNet architecture) list each weight file's keys, shapes and dtypes. Folders in the
real on-disk layout are written with the published ``config.json`` files and empty weight files; the safetensors
reader is replaced by one that serves the manifest's tensors for those files at zero cost (zero-stride views, no
memory), so ``load_zero_shot_pipeline`` runs unchanged: the stock ``from_pretrained`` of diffusers and transformers,
the key renaming of old files, the single-file ControlNet conversion and the load policy. Beside the clean loads: an
extra entry (loaded past with one warning and a sidecar note, as the original loads past it), a missing key and a
wrong shape (refused, naming the key).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import load_policy
from helpers.errors import StrictLoadError, WeightsError
from helpers.pipelines.zero_shot_pose import load_zero_shot_pipeline, native_size
from helpers.pipelines.zero_shot_pose.loading import (
    BASE_768_ROLE,
    BASE_ROLE,
    load_controlnet_single_file,
    load_diffusers_model,
    load_transformers_model,
)

MANIFESTS = Path(__file__).parent / "manifests"
SD21 = json.loads((MANIFESTS / "zero_shot_sd21.json").read_text())
CONTROLNET = json.loads((MANIFESTS / "zero_shot_controlnet_sd21_openpose.json").read_text())
DTYPES = {"float16": torch.float16, "float32": torch.float32, "int64": torch.int64}
SAFETENSORS_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}
BASE_PARTS = ("unet", "vae", "text_encoder")
# the stock VAE renames the attention of files saved before 2023 (diffusers' "deprecated attention blocks")
OLD_VAE_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


class ManifestFiles:
    """Stands in for the safetensors reader: the tensors of each registered (empty) file, served from its table."""

    def __init__(self):
        self.tables: dict[str, dict[str, tuple[tuple, torch.dtype]]] = {}

    def place(self, path: Path, shapes: dict, dtype: torch.dtype, non_float: dict | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # the loaders look for files on disk; their contents come from here
        non_float = non_float or {}
        self.tables[str(path)] = {k: (tuple(v), DTYPES.get(non_float.get(k), dtype)) for k, v in shapes.items()}
        return path

    def tensors(self, path) -> dict[str, torch.Tensor]:
        # uninitialised and never written: the allocator reserves the address space, no page is touched
        return {k: torch.empty(shape, dtype=dtype) for k, (shape, dtype) in self.tables[str(path)].items()}


class _Slice:
    def __init__(self, tensor):
        self.tensor = tensor

    def get_shape(self):
        return list(self.tensor.shape)

    def get_dtype(self):
        return SAFETENSORS_DTYPES[self.tensor.dtype]

    def __getitem__(self, index):
        return self.tensor[index]


@pytest.fixture
def files(monkeypatch):
    import safetensors.torch
    import transformers.modeling_utils

    served = ManifestFiles()

    def load_file(path, device="cpu"):
        return served.tensors(path)

    class SafeOpen:
        def __init__(self, path, framework="pt", device="cpu", **_):
            self.data = served.tensors(path)

        def __enter__(self):
            return self

        def __exit__(self, *_):
            return False

        def keys(self):
            return list(self.data)

        def metadata(self):
            return {"format": "pt"}

        def get_slice(self, key):
            return _Slice(self.data[key])

    monkeypatch.setattr(safetensors.torch, "load_file", load_file)
    monkeypatch.setattr(transformers.modeling_utils, "safe_open", SafeOpen)
    return served


@pytest.fixture(autouse=True)
def _fresh_notes():
    load_policy.clear()
    yield
    load_policy.clear()


def weight_file(part: str, dtype: str) -> str:
    return next(name for name, file_dtype in SD21[part]["files"].items() if file_dtype == dtype)


def write_base(files: ManifestFiles, folder: Path, role: str, *, dtype: str = "float16",
               change: dict[str, dict] | None = None) -> Path:
    """A full-size SD2.1 pipeline folder: published configs, tokenizer, weights served from the manifest.
    ``change`` maps a part to the shape table its file holds instead of the official one."""
    from helpers.testing import common

    change = change or {}
    for part in BASE_PARTS:
        (folder / part).mkdir(parents=True, exist_ok=True)
        (folder / part / "config.json").write_text(json.dumps(SD21[part]["configs"][role]))
        files.place(folder / part / weight_file(part, dtype), change.get(part, SD21[part]["keys"]), DTYPES[dtype],
                    SD21[part].get("non_float"))
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD21["scheduler"]["configs"][role]))
    common.write_clip_tokenizer(folder / "tokenizer")  # the tokenizer holds no weights: a small stand-in
    return folder


def write_controlnet(files: ManifestFiles, folder: Path, shapes: dict | None = None) -> Path:
    table = CONTROLNET["diffusers"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(table["config"]))
    name, dtype = next(iter(table["files"].items()))
    files.place(folder / name, shapes or table["keys"], DTYPES[dtype])
    return folder


def state_shapes(model) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def unnested(key: str) -> str:
    return key.removeprefix("text_model.")


def first_weight(shapes: dict) -> str:
    return next(k for k, v in shapes.items() if k.endswith(".weight") and len(v) >= 2)


def damaged(shapes: dict, case: str, key: str | None = None) -> tuple[dict, str]:
    shapes, key = dict(shapes), key or first_weight(shapes)
    if case == "missing":
        del shapes[key]
    else:
        shapes[key] = [shapes[key][0] + 1, *shapes[key][1:]]
    return shapes, key


# -- the manifests themselves ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", [SD21["unet"], SD21["vae"], SD21["text_encoder"], CONTROLNET["diffusers"],
                                   CONTROLNET["original"]])
def test_manifests_agree_with_the_published_file_sizes(table):
    """Parameter count × bytes per value is the published size (the Hub rounds to 3 digits; headers are small)."""
    count = sum(math.prod(shape) for shape in table["keys"].values())
    for name, published in table["published_bytes"].items():
        assert abs(count * DTYPES[table["files"][name]].itemsize - published) <= 0.004 * published, name


def test_the_original_controlnet_layout_is_the_diffusers_one_renamed():
    """Two independent tables (original architecture; stock diffusers class) hold the same tensors."""
    original, diffusers_keys = CONTROLNET["original"]["keys"], CONTROLNET["diffusers"]["keys"]
    assert len(original) == len(diffusers_keys) == 340
    assert sorted(map(tuple, original.values())) == sorted(map(tuple, diffusers_keys.values()))


# -- SD2.1 folders + the diffusers ControlNet: load_zero_shot_pipeline end to end ----------------------------------
@pytest.mark.parametrize(("role", "size"), [(BASE_ROLE, 512), (BASE_768_ROLE, 768)])
def test_full_size_pipeline_loads_from_the_published_fp16_folders(files, tmp_path, role, size):
    base = write_base(files, tmp_path / role, role)
    controlnet = write_controlnet(files, tmp_path / "controlnet")
    pipe = load_zero_shot_pipeline(base_dir=base, controlnet_path=controlnet, device="cpu", dtype=torch.float16)
    assert state_shapes(pipe.unet) == {k: tuple(v) for k, v in SD21["unet"]["keys"].items()}
    assert state_shapes(pipe.vae) == {k: tuple(v) for k, v in SD21["vae"]["keys"].items()}
    assert state_shapes(pipe.controlnet) == {k: tuple(v) for k, v in CONTROLNET["diffusers"]["keys"].items()}
    # transformers 5 keeps the text transformer one level up; the published file nests it under "text_model."
    text = {unnested(k): tuple(v) for k, v in SD21["text_encoder"]["keys"].items()
            if k not in SD21["text_encoder"]["non_float"]}
    assert {unnested(k): v for k, v in state_shapes(pipe.text_encoder).items()} == text
    for model in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.controlnet):
        assert {p.dtype for p in model.parameters()} == {torch.float16}
        assert not any(p.is_meta for p in model.parameters())
    assert native_size(pipe) == size
    assert pipe.scheduler.config.prediction_type == SD21["scheduler"]["configs"][role]["prediction_type"]
    # nothing is left out but, at most, the text encoder file's position ids (a buffer transformers no longer saves)
    ignored = [k for note in load_policy.notes().values() for k in note["ignored_keys"]]
    assert set(ignored) <= set(SD21["text_encoder"]["non_float"])


def load_part(folder: Path, part: str, dtype: torch.dtype = torch.float16):
    """One part through the function ``load_zero_shot_pipeline`` loads it with (the fp32-only ControlNet in fp32:
    a cast would write its 0.7 GB here, and the pipeline test covers it)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    if part == "text_encoder":
        return load_transformers_model(CLIPTextModel, folder / part, dtype, f"SD2.1 {part}")
    cls = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "controlnet": ControlNetModel}[part]
    dtype = torch.float32 if part == "controlnet" else dtype
    return load_diffusers_model(cls, folder if part == "controlnet" else folder / part, dtype, f"SD2.1 {part}")


def write_part(files: ManifestFiles, tmp_path: Path, part: str, shapes: dict) -> Path:
    if part == "controlnet":
        return write_controlnet(files, tmp_path / "controlnet", shapes)
    return write_base(files, tmp_path / "base", BASE_ROLE, change={part: shapes})


def official(part: str) -> dict:
    return CONTROLNET["diffusers"]["keys"] if part == "controlnet" else SD21[part]["keys"]


def test_the_fp32_vae_with_the_pre_2023_attention_names_loads_too(files, tmp_path):
    vae = {}
    for key, shape in SD21["vae"]["keys"].items():
        for new, old in OLD_VAE_ATTENTION_NAMES.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        vae[key] = shape
    assert len(set(vae) - set(SD21["vae"]["keys"])) == 16  # q, k, v, out (weight and bias) in encoder and decoder
    base = write_base(files, tmp_path / "base", BASE_ROLE, dtype="float32", change={"vae": vae})
    model = load_part(base, "vae", torch.float32)
    assert state_shapes(model) == {k: tuple(v) for k, v in SD21["vae"]["keys"].items()}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not load_policy.notes()


@pytest.mark.parametrize("part", [*BASE_PARTS, "controlnet"])
def test_an_extra_entry_is_loaded_past_with_a_warning_and_a_note(files, tmp_path, part):
    folder = write_part(files, tmp_path, part, {**official(part), "extra_buffer.num_batches_tracked": []})
    with pytest.warns(load_policy.IgnoredKeysWarning, match="extra_buffer.num_batches_tracked"):
        model = load_part(folder, part)
    assert "extra_buffer.num_batches_tracked" not in model.state_dict()
    assert "extra_buffer.num_batches_tracked" in load_policy.notes()[f"SD2.1 {part}"]["ignored_keys"]


@pytest.mark.parametrize("case", ["missing", "shape"])
@pytest.mark.parametrize("part", [*BASE_PARTS, "controlnet"])
def test_a_missing_or_mis_shaped_tensor_is_refused_by_name(files, tmp_path, part, case):
    broken, key = damaged(official(part), case)
    folder = write_part(files, tmp_path, part, broken)
    # diffusers stops a mis-shaped tensor itself (its message names key and shapes; ours adds what to fetch)
    refusal = WeightsError if case == "shape" and part != "text_encoder" else StrictLoadError
    with pytest.raises(refusal, match=unnested(key).replace(".", r"\.")) as refused:
        load_part(folder, part)
    if case == "shape":
        assert str(official(part)[key][0] + 1) in str(refused.value)  # the file's shape is named too


# -- the original single-file ControlNet: load_controlnet_single_file -----------------------------------------------
def single_file(files: ManifestFiles, tmp_path: Path, prefix: str, shapes: dict | None = None) -> Path:
    shapes = CONTROLNET["original"]["keys"] if shapes is None else shapes
    name, dtype = next(iter(CONTROLNET["original"]["files"].items()))
    return files.place(tmp_path / prefix.replace(".", "_") / name, {prefix + k: v for k, v in shapes.items()},
                       DTYPES[dtype])


@pytest.mark.parametrize("prefix", ["control_model.", "", "state_dict.control_model."])
def test_the_original_single_file_converts_onto_the_diffusers_layout(files, tmp_path, prefix):
    model = load_controlnet_single_file(single_file(files, tmp_path, prefix), torch.float16)
    assert state_shapes(model) == {k: tuple(v) for k, v in CONTROLNET["diffusers"]["keys"].items()}
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    assert not load_policy.notes()


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_the_single_file_loads_past_an_extra_entry_and_refuses_a_missing_or_mis_shaped_one(files, tmp_path, prefix):
    shapes = CONTROLNET["original"]["keys"]
    with pytest.warns(load_policy.IgnoredKeysWarning, match="extra_buffer.num_batches_tracked"):
        load_controlnet_single_file(single_file(files, tmp_path / "extra", prefix,
                                                {**shapes, "extra_buffer.num_batches_tracked": []}), torch.float16)
    assert [note["ignored_keys"] for note in load_policy.notes().values()] == [
        [f"{prefix}extra_buffer.num_batches_tracked"]]
    # a zero convolution (controlnet_down_blocks.3) and an attention weight deep in the encoder
    for key, diffusers_key in (("zero_convs.3.0.weight", "controlnet_down_blocks.3.weight"),
                               ("input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
                                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight")):
        for case in ("missing", "shape"):
            broken, _ = damaged(shapes, case, key)
            path = single_file(files, tmp_path / f"{case}{len(key)}", prefix, broken)
            with pytest.raises(StrictLoadError, match=diffusers_key.replace(".", r"\.")):
                load_controlnet_single_file(path, torch.float16)


def test_a_whole_controlldm_checkpoint_keeps_the_controlnet_and_says_what_it_left_out(files, tmp_path):
    """The .ckpt route (flattened by the weights manager): the ControlNet is taken, the rest is listed once."""
    others = {"model.diffusion_model.out.2.weight": [4, 320, 3, 3], "first_stage_model.quant_conv.weight":
              [8, 8, 1, 1], "cond_stage_model.model.positional_embedding": [77, 1024], "betas": [1000]}
    path = single_file(files, tmp_path, "state_dict.control_model.")
    files.tables[str(path)].update({f"state_dict.{k}": (tuple(v), torch.float16) for k, v in others.items()})
    with pytest.warns(load_policy.IgnoredKeysWarning, match="betas"):
        model = load_controlnet_single_file(path, torch.float16)
    assert state_shapes(model) == {k: tuple(v) for k, v in CONTROLNET["diffusers"]["keys"].items()}
    assert sorted(k for note in load_policy.notes().values() for k in note["ignored_keys"]) == sorted(others)
