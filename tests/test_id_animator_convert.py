"""ID-Animator checkpoint conversion: full-size key/shape tables (meta device) and strict refusals."""

from __future__ import annotations

import json

import pytest
import torch
from golden import golden_params

from helpers.errors import StrictLoadError
from helpers.pipelines.id_animator import (
    animator_checkpoint_template,
    convert_animator_checkpoint,
    convert_motion_module_checkpoint,
    face_adapter_targets,
)
from helpers.pipelines.id_animator.convert import LORA_RANK, NUM_FACE_TOKENS, flatten_state_dict
from helpers.testing import id_animator as tiny


def _meta(shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(tuple(v), device="meta") for k, v in shapes.items()}


@pytest.fixture(scope="module")
def full_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**tiny.SD15_UNET_CONFIG)


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**tiny.UNET_CONFIG)


# -- full size, against the manifest of the official files ---------------------------------------------------------
@pytest.mark.parametrize("golden_dir", golden_params("id_animator"))
def test_full_size_tables_match_the_official_manifest(golden_dir, full_unet):
    manifest = json.loads((golden_dir / "keys_full.json").read_text())
    spatial = manifest["unet_spatial_diffusers_naming"]["keys"]
    assert {k: tuple(v.shape) for k, v in full_unet.state_dict().items()} == {k: tuple(v) for k, v in spatial.items()}

    targets = face_adapter_targets(full_unet)
    assert {str(t.index): t.module_path for t in targets} == manifest["face_adapter_index_to_module"]
    order = manifest["processor_order_all"]
    assert all(order[str(t.index)] == t.module_path for t in targets) and len(order) == 2 * len(targets)

    animator = manifest["animator.ckpt"]
    expected = {k: tuple(v.shape) for k, v in animator_checkpoint_template(targets, tiny.VIT_H_CONFIG["hidden_size"]).items()}
    nested = {f"{part}.{k}": tuple(v) for part, table in animator["layouts"]["nested"].items() for k, v in table.items()}
    assert expected == nested
    counts = animator["num_tensors"]
    assert sum(k.startswith("image_proj.") for k in expected) == counts["image_proj"]
    assert sum(k.startswith("face_adapter.") for k in expected) == counts["face_adapter"]


@pytest.mark.parametrize("golden_dir", golden_params("id_animator"))
def test_every_official_layout_converts_to_stock_shapes(golden_dir, full_unet):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    manifest = json.loads((golden_dir / "keys_full.json").read_text())
    animator = manifest["animator.ckpt"]
    targets = face_adapter_targets(full_unet)
    embed_dim = tiny.VIT_H_CONFIG["hidden_size"]
    results = []
    for name, layout in animator["layouts"].items():
        flat = {k: torch.empty(tuple(shape), device="meta") for k, shape in _flatten_shapes(layout).items()}
        weights = convert_animator_checkpoint(flat, targets, embed_dim)
        counts = animator["num_tensors"]
        assert len(weights.lora) == 8 * len(targets) == counts["face_adapter"] - 2 * len(targets), name
        assert len(weights.ip_adapter) == counts["image_proj"] + 2 * len(targets), name
        assert sum(v.numel() for v in weights.lora.values()) == animator["num_params"]["face_adapter_lora_only"]
        results.append({k: tuple(v.shape) for k, v in {**weights.ip_adapter, **weights.lora}.items()})
    assert all(r == results[0] for r in results), "layouts convert differently"

    # the IP-Adapter part fits the stock Resampler (through diffusers' own renaming) and stock processors
    parts = weights.ip_adapter_parts()
    projection = full_unet._convert_ip_adapter_image_proj_to_diffusers(parts["image_proj"], low_cpu_mem_usage=True)
    with torch.device("meta"):
        reference = IPAdapterPlusImageProjection(embed_dims=embed_dim, output_dims=768, hidden_dims=768, heads=12,
                                                 num_queries=NUM_FACE_TOKENS)
    assert {k: v.shape for k, v in projection.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    for t in targets:
        with torch.device("meta"):
            processor = IPAdapterAttnProcessor2_0(t.hidden_size, t.cross_attention_dim, num_tokens=(NUM_FACE_TOKENS,))
        assert parts["ip_adapter"][f"{t.index}.to_k_ip.weight"].shape == processor.to_k_ip[0].weight.shape
        attention = full_unet.get_submodule(t.module_path)
        for sub in ("to_q", "to_k", "to_v", "to_out.0"):
            linear = attention.get_submodule(sub)
            assert weights.lora[f"unet.{t.module_path}.{sub}.lora_A.weight"].shape == (LORA_RANK, linear.in_features)
            assert weights.lora[f"unet.{t.module_path}.{sub}.lora_B.weight"].shape == (linear.out_features, LORA_RANK)


def _flatten_shapes(layout: dict, prefix: str = "") -> dict[str, list]:
    flat = {}
    for key, value in layout.items():
        name = f"{prefix}.{key}" if prefix else key
        flat.update(_flatten_shapes(value, name) if isinstance(value, dict) else {name: value})
    return flat


@pytest.mark.parametrize("golden_dir", golden_params("id_animator"))
def test_full_size_motion_module_converts_to_motion_adapter(golden_dir):
    from diffusers import MotionAdapter

    manifest = json.loads((golden_dir / "keys_full.json").read_text())["mm_sd_v15_v2.ckpt"]
    for wrapped in (False, True):
        keys = {("state_dict." if wrapped else "") + k: v for k, v in manifest["keys"].items()}
        converted = convert_motion_module_checkpoint(_meta(keys))
        with torch.device("meta"):
            adapter = MotionAdapter(**tiny.MOTION_V2_CONFIG)
        assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in adapter.state_dict().items()}
    params = sum(v.numel() for k, v in converted.items() if not k.endswith("pos_embed.pe"))
    assert params == int(manifest["num_params_excluding_pe"])


# -- strict refusals -----------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_checkpoint():
    return flatten_state_dict(tiny.tiny_animator_checkpoint())


def test_all_container_layouts_give_the_same_weights(tiny_unet):
    targets = face_adapter_targets(tiny_unet)
    converted = [convert_animator_checkpoint(flatten_state_dict(tiny.tiny_animator_checkpoint(layout=layout)), targets,
                                             tiny.VISION_HIDDEN)
                 for layout in ("nested", "state_dict_ddp", "state_dict")]
    for other in converted[1:]:
        assert other.ip_adapter.keys() == converted[0].ip_adapter.keys()
        assert all(torch.equal(other.lora[k], v) for k, v in converted[0].lora.items())
    # LoRA keys never reach the IP-Adapter dict (diffusers would spread them over the motion modules)
    assert not any("lora" in k for k in converted[0].ip_adapter)


def test_unexpected_key_is_refused(tiny_unet, tiny_checkpoint):
    tiny_checkpoint["face_adapter.33.to_k_face.weight"] = torch.zeros(64, 32)
    with pytest.raises(StrictLoadError, match="(?s)face_adapter.*33.to_k_face") as info:
        convert_animator_checkpoint(tiny_checkpoint, face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)
    assert info.value.unexpected == ["33.to_k_face.weight"]


def test_foreign_top_level_entry_is_loaded_past_and_recorded(tiny_unet, tiny_checkpoint):
    """The original reads only image_proj / face_adapter / state_dict of animator.ckpt; anything else at the top
    (a training step counter) is ignored, never silently."""
    from helpers import load_policy

    load_policy.clear()
    expected = convert_animator_checkpoint(dict(tiny_checkpoint), face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)
    tiny_checkpoint["global_step"] = torch.tensor(1000)
    tiny_checkpoint["optimizer.step"] = torch.zeros(1)
    with pytest.warns(load_policy.IgnoredKeysWarning, match="global_step, optimizer.step"):
        got = convert_animator_checkpoint(tiny_checkpoint, face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)
    assert sorted(got.ip_adapter) == sorted(expected.ip_adapter) and sorted(got.lora) == sorted(expected.lora)
    assert load_policy.notes()["animator checkpoint"]["ignored_keys"] == ["global_step", "optimizer.step"]


def test_pickled_checkpoint_with_a_step_counter_reads_its_three_entries(tmp_path):
    """A plain int beside the weights (what training scripts save) is no tensor: it is left out, with a warning."""
    from helpers import load_policy
    from helpers.pipelines.id_animator.convert import read_checkpoint

    path = tmp_path / "animator.ckpt"
    torch.save({**tiny.tiny_animator_checkpoint(), "global_step": 1000, "epoch": 3}, path)
    with pytest.warns(load_policy.IgnoredKeysWarning, match="epoch, global_step"):
        flat = read_checkpoint(path)
    assert flat.keys() == flatten_state_dict(tiny.tiny_animator_checkpoint()).keys()


def test_foreign_key_inside_the_state_dict_entry_is_refused(tiny_unet, tiny_checkpoint):
    """Inside ``state_dict`` the original stops at an unknown key (it loads nothing), so we refuse it."""
    layout = {f"state_dict.module.image_proj_model.{k.removeprefix('image_proj.')}" if k.startswith("image_proj.")
              else f"state_dict.module.adapter_modules.{k.removeprefix('face_adapter.')}": v
              for k, v in tiny_checkpoint.items()}
    layout["state_dict.optimizer.step"] = torch.zeros(1)
    with pytest.raises(StrictLoadError, match="optimizer.step"):
        convert_animator_checkpoint(layout, face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)


def test_wrong_shape_is_refused(tiny_unet, tiny_checkpoint):
    tiny_checkpoint["face_adapter.5.to_q_lora.down.weight"] = torch.zeros(64, 32)  # rank 64 instead of 128
    with pytest.raises(StrictLoadError, match="5.to_q_lora.down.weight") as info:
        convert_animator_checkpoint(tiny_checkpoint, face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)
    assert len(info.value.mismatched) == 1


def test_missing_key_is_refused(tiny_unet, tiny_checkpoint):
    del tiny_checkpoint["image_proj.layers.3.0.to_kv.weight"]
    with pytest.raises(StrictLoadError) as info:
        convert_animator_checkpoint(tiny_checkpoint, face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)
    assert info.value.missing == ["layers.3.0.to_kv.weight"]


def test_mixed_layouts_are_refused(tiny_unet, tiny_checkpoint):
    value = tiny_checkpoint.pop("image_proj.latents")
    tiny_checkpoint["state_dict.image_proj_model.latents"] = value
    with pytest.raises(StrictLoadError, match="mixes"):
        convert_animator_checkpoint(tiny_checkpoint, face_adapter_targets(tiny_unet), tiny.VISION_HIDDEN)


def test_motion_checkpoint_with_other_keys_is_refused():
    with pytest.raises(StrictLoadError, match="conv_in.weight"):
        convert_motion_module_checkpoint({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight":
                                          torch.ones(4), "conv_in.weight": torch.ones(4)})


def test_motion_positional_tables_must_agree():
    base = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks"
    tables = {f"{base}.0.pos_encoder.pe": torch.zeros(1, 32, 8), f"{base}.1.pos_encoder.pe": torch.ones(1, 32, 8)}
    with pytest.raises(StrictLoadError, match="sibling"):
        convert_motion_module_checkpoint(tables)
