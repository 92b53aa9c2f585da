"""weights without a network: pickle conversion, resolve/status on disk, selections, and the registry's data."""

from __future__ import annotations

import dataclasses
import json
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import registry, sources, weights
from helpers.errors import InputError, MissingWeightsError, WeightsError
from helpers.registry import HubSource, UrlSource

# The pack ids and role names other modules resolve (the contract in docs/architecture.md and docs/models.md).
FIXED_ROLES = {
    "dwpose": {"detector", "pose_model"},
    "controlnext_svd_v2": {"unet", "controlnext"},
    "controlnext_svd_v1": {"unet", "controlnext"},
    "svd_xt_1_1": {"components"},
    "sd15": {"base"},
    "animatediff_v2": {"motion_adapter"},
    "id_animator": {"animator", "image_encoder", "community_model"},
    "sparsectrl_scribble": {"controlnet"},
    "insightface": {"detector"},
    "musev": {"unet_musev", "unet_referencenet", "referencenet", "ip_adapter_image_proj", "base_model",
              "image_encoder"},
    "sd21": {"base"},
    "controlnet_sd21_openpose": {"controlnet"},
}


# -- conversion ----------------------------------------------------------------------------------------------------
def test_conversion_flattens_nested_dicts_to_fp16(tmp_path):
    proj = torch.randn(8, 4)
    torch.save({"image_proj": {"proj.weight": proj, "norm": {"bias": torch.ones(4, dtype=torch.float64)}},
                "position_ids": torch.arange(5), "epoch": 3}, tmp_path / "animator.ckpt")

    out = weights.convert_to_fp16_safetensors(tmp_path / "animator.ckpt")

    assert out == tmp_path / "animator.fp16.safetensors"
    tensors = load_file(out)
    assert sorted(tensors) == ["image_proj.norm.bias", "image_proj.proj.weight", "position_ids"]
    assert tensors["image_proj.proj.weight"].dtype == torch.float16
    assert torch.equal(tensors["image_proj.proj.weight"], proj.half())
    assert tensors["image_proj.norm.bias"].dtype == torch.float16 and tensors["position_ids"].dtype == torch.int64
    with safe_open(out, "pt") as f:
        assert json.loads(f.metadata()["scalars"]) == {"epoch": 3}  # bookkeeping kept as metadata, not weights


def test_conversion_keeps_tied_tensors_apart(tmp_path):
    shared = torch.randn(3, 3, dtype=torch.float16)
    torch.save({"encoder.weight": shared, "decoder.weight": shared}, tmp_path / "tied.bin")

    tensors = load_file(weights.convert_to_fp16_safetensors(tmp_path / "tied.bin"))

    assert torch.equal(tensors["encoder.weight"], tensors["decoder.weight"])


def test_conversion_reads_legacy_non_zip_pickles(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "old.bin", _use_new_zipfile_serialization=False)

    assert load_file(weights.convert_to_fp16_safetensors(tmp_path / "old.bin"))["w"].dtype == torch.float16


def test_conversion_refuses_a_list_inside_the_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}, "optimizer": [torch.ones(1)]}, tmp_path / "train.ckpt")

    with pytest.raises(WeightsError, match=r"'optimizer' is a list, not a tensor"):
        weights.convert_to_fp16_safetensors(tmp_path / "train.ckpt")
    assert not (tmp_path / "train.fp16.safetensors").exists()


@dataclasses.dataclass
class TrainingState:  # an arbitrary Python object, as training checkpoints pickle them
    step: int


def test_conversion_refuses_pickled_python_objects(tmp_path):
    torch.save({"w": torch.ones(2), "state": TrainingState(3)}, tmp_path / "unsafe.bin")

    with pytest.raises(WeightsError, match="Python objects other than tensors"):
        weights.convert_to_fp16_safetensors(tmp_path / "unsafe.bin")


def test_conversion_refuses_a_file_without_tensors(tmp_path):
    torch.save({"epoch": 1}, tmp_path / "empty.bin")

    with pytest.raises(WeightsError, match="holds no tensors"):
        weights.convert_to_fp16_safetensors(tmp_path / "empty.bin")


# -- resolve and status on disk ------------------------------------------------------------------------------------
def test_resolve_when_missing_says_how_to_download(tmp_path):
    with pytest.raises(MissingWeightsError) as error:
        weights.resolve("dwpose", "detector", root=tmp_path)
    message = str(error.value)
    assert "dwpose/detector" in message and "weights.download(['dwpose'])" in message and "00_setup" in message
    assert [r.state for r in weights.status(["dwpose"], root=tmp_path)] == ["missing", "missing"]


def test_hand_placed_files_resolve_without_a_manifest(tmp_path):
    folder = weights.role_dir("controlnext_svd_v2", "controlnext", tmp_path) / "ControlNeXt-SVD/v2"
    folder.mkdir(parents=True)
    torch.save({"embedding.0.weight": torch.randn(4, 3, 3, 3)}, folder / "controlnet.bin")
    base = weights.role_dir("sd15", "base", tmp_path)
    (base / "unet").mkdir(parents=True)
    (base / "model_index.json").write_text("{}")

    assert weights.status(["controlnext_svd_v2/controlnext"], root=tmp_path)[0].state == "unrecorded"
    path = weights.resolve("controlnext_svd_v2", "controlnext", root=tmp_path)

    assert path == folder / "controlnet.fp16.safetensors"
    assert load_file(path)["embedding.0.weight"].dtype == torch.float16
    assert weights.resolve("sd15", "base", root=tmp_path) == base
    assert weights.provenance("sd15", "base", root=tmp_path)["source"].startswith("unrecorded")


def test_resolve_reports_a_recorded_role_with_a_missing_file_as_incomplete(tmp_path):
    folder = weights.role_dir("dwpose", "detector", tmp_path)
    folder.mkdir(parents=True)
    (folder / ".source.json").write_text(json.dumps({
        "resolved": "yolox_l.onnx", "source": {"label": "yzd-v/DWPose"}, "convert": {}, "converted": {},
        "files": {"yolox_l.onnx": {"size": 3, "sha256": "0" * 64, "mtime_ns": 0}}}))

    with pytest.raises(MissingWeightsError, match="incomplete"):
        weights.resolve("dwpose", "detector", root=tmp_path)
    assert weights.status(["dwpose/detector"], root=tmp_path)[0].state == "incomplete"


def test_an_interrupted_first_download_is_not_taken_for_hand_placed_files(tmp_path):
    folder = weights.role_dir("sd15", "base", tmp_path)
    (folder / ".cache/huggingface/download").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")  # one of several files arrived before the run stopped

    with pytest.raises(MissingWeightsError, match="incomplete"):
        weights.resolve("sd15", "base", root=tmp_path)
    assert weights.status(["sd15"], root=tmp_path)[0].state == "incomplete"


def test_root_is_hv_root_else_the_runtime_drive_root(monkeypatch, tmp_path):
    from helpers import runtime

    monkeypatch.setenv("HV_ROOT", str(tmp_path / "drive"))
    assert weights.root() == tmp_path / "drive"
    assert weights.role_dir("sd21", "base") == tmp_path / "drive/models/sd21/base"
    monkeypatch.delenv("HV_ROOT")
    monkeypatch.setattr(runtime, "drive_root", lambda: tmp_path / "MyDrive/human-video")
    assert weights.root() == tmp_path / "MyDrive/human-video"


# -- selections ----------------------------------------------------------------------------------------------------
def test_selection_expands_tasks_packs_and_single_roles():
    pairs = weights.selection(["pose_to_dance", "dwpose", "musev/unet_referencenet_pose"])

    assert pairs[:3] == [("dwpose", "detector"), ("dwpose", "pose_model"), ("svd_xt_1_1", "components")]
    assert pairs.count(("dwpose", "detector")) == 1 and pairs[-1] == ("musev", "unet_referencenet_pose")
    assert ("musev", "unet_referencenet_pose") not in weights.selection("musev")  # optional: only by name
    with pytest.raises(InputError, match="Unknown model pack 'svd'"):
        weights.selection(["svd"])
    with pytest.raises(InputError, match="no role 'vae'"):
        weights.selection(["sd15/vae"])


def test_folder_roles_take_one_weight_format_per_folder():
    listing = ["model_index.json", "v2-1_768-ema-pruned.safetensors", "unet/config.json",
               "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin",
               "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
               "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_flax_model.msgpack",
               "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin", "vae/config.json",
               "vae/diffusion_pytorch_model.bin", "tokenizer/vocab.json", "README.md"]

    chosen = sources.select(registry.PACKS["sd21"].roles["base"].candidates[0], listing)

    assert chosen == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
                      "text_encoder/model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.bin",
                      "tokenizer/vocab.json"]


def test_sharded_weights_stay_together():
    source = HubSource("org/big", registry.MIT_SD_VAE, allow_patterns=("unet/*",))
    listing = ["unet/diffusion_pytorch_model-00001-of-00002.safetensors",
               "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
               "unet/diffusion_pytorch_model.safetensors.index.json", "unet/diffusion_pytorch_model.bin"]

    assert sources.select(source, listing) == listing[:3]


# -- the registry's data -------------------------------------------------------------------------------------------
def test_registry_has_the_fixed_packs_and_roles():
    for pack, roles in FIXED_ROLES.items():
        assert roles <= set(registry.PACKS[pack].roles), pack
        assert all(not registry.PACKS[pack].roles[r].optional for r in roles), pack


def test_every_source_is_consistent_and_licensed():
    for pack in registry.PACKS.values():
        for role in pack.roles.values():
            assert role.what and role.candidates, (pack.id, role.name)
            for source in role.candidates:
                where = (pack.id, role.name, source.label)
                assert source.licence.name and source.licence.url.startswith("https://"), where
                assert source.approx_bytes > 0, where
                if isinstance(source, UrlSource):
                    assert source.entry in (source.extract or (source.filename,)), where
                    continue
                assert source.repo_type in ("model", "space"), where
                assert bool(source.files) != bool(source.allow_patterns), where
                if source.files:
                    assert source.entry in source.files and set(source.sizes) == set(source.files), where
                else:  # the entry folder is where the patterns point
                    assert all(p.startswith(source.entry) for p in source.allow_patterns), where
                for pickle in source.convert:
                    assert Path(pickle).suffix in (".bin", ".ckpt"), where
                    assert pickle in source.files or any(fnmatch(pickle, p) for p in source.allow_patterns), where
                    assert source.convert[pickle] in ("fp32", "fp16"), where


def test_gated_sources_are_marked_and_tasks_name_real_packs():
    gated = {s.label for p in registry.PACKS.values() for r in p.roles.values() for s in r.candidates
             if s.licence.gated}
    assert gated == {"stabilityai/stable-video-diffusion-img2vid-xt-1-1"}
    assert set(registry.TASK_EXTRAS) <= set(registry.TASKS)
    for task, spec in registry.TASKS.items():
        assert weights.selection(spec.packs), task
        if task in registry.TASK_EXTRAS:  # a task may have no extras
            assert weights.selection(registry.TASK_EXTRAS[task]), task


def test_models_doc_describes_every_pack_and_role():
    text = (Path(__file__).resolve().parents[1] / "docs/models.md").read_text()
    sections = {part.partition("`")[0]: part for part in text.split("\n### `")[1:]}
    for pack in registry.PACKS.values():
        assert pack.id in sections, pack.id
        for role in pack.roles:
            assert f"| `{role}`" in sections[pack.id], (pack.id, role)
