"""ControlNeXt-SVD models: full-size key manifests (meta device), version detection, strict loading, the hook."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNetSpatioTemporalConditionModel
from golden import golden_params

from helpers.errors import StrictLoadError, check_strict_load
from helpers.pipelines.controlnext_svd import (
    OFFICIAL_V1,
    OFFICIAL_V2,
    SVD_XT_UNET_CONFIG,
    ControlNeXtEncoder,
    config_from_state_dict,
    detect_version,
    inject_control,
    load_components,
    load_controlnext,
    load_unet,
)
from helpers.testing.controlnext import TINY_UNET_CONFIG, tiny_encoder_config, write_tiny_svd_components

OFFICIAL = {"v2": OFFICIAL_V2, "v1": OFFICIAL_V1}
MANIFEST_SETS = golden_params("controlnext_svd_v2") + golden_params("controlnext_svd_v1")



def _manifest(golden_dir) -> tuple[str, dict]:
    path = golden_dir / "keys_full.json"
    if not path.is_file():
        pytest.skip(f"{golden_dir} has no keys_full.json")
    version = json.loads((golden_dir / "config.json").read_text())["components"]["controlnext"]["variant"]
    return version, json.loads(path.read_text())


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _meta_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


# -- full-size manifests ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("golden_dir", MANIFEST_SETS)
def test_full_size_models_have_the_official_keys_and_shapes(golden_dir):
    version, manifest = _manifest(golden_dir)
    with init_empty_weights():
        unet = UNetSpatioTemporalConditionModel(**SVD_XT_UNET_CONFIG)
        encoder = ControlNeXtEncoder(**OFFICIAL[version])
    assert _shapes(unet) == manifest["unet"]
    assert list(_shapes(encoder).items()) == list(manifest["controlnext"].items())  # same order as the files, too


@pytest.mark.parametrize("golden_dir", MANIFEST_SETS)
def test_encoder_config_and_version_are_read_back_from_the_official_keys(golden_dir):
    version, manifest = _manifest(golden_dir)
    state_dict = _meta_state_dict(manifest["controlnext"])
    assert detect_version(state_dict) == version
    config = config_from_state_dict(state_dict)
    assert config == {k: tuple(v) if isinstance(v, list) else v for k, v in OFFICIAL[version].items()}
    with init_empty_weights():
        check_strict_load("controlnext", ControlNeXtEncoder(**config), state_dict)


def test_official_parameter_counts():
    with init_empty_weights():
        counts = {v: sum(p.numel() for p in ControlNeXtEncoder(**cfg).parameters()) for v, cfg in OFFICIAL.items()}
        unet_params = sum(p.numel() for p in UNetSpatioTemporalConditionModel(**SVD_XT_UNET_CONFIG).parameters())
    assert counts == {"v2": 3_526_400, "v1": 5_610_177}
    assert unet_params == 1_524_623_082


# -- strict loading --------------------------------------------------------------------------------------------------
def _tiny_encoder_file(tmp_path, version, edit=None):
    torch.manual_seed(0)
    state_dict = dict(ControlNeXtEncoder(**tiny_encoder_config(version)).state_dict())
    if edit:
        edit(state_dict)
    path = tmp_path / f"controlnet_{version}.bin"
    torch.save(state_dict, path)
    return path


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_encoder_loads_strictly_and_detects_its_version(tmp_path, version):
    encoder = load_controlnext(_tiny_encoder_file(tmp_path, version), expected_version=version)
    assert encoder.config.variant == version
    assert ("scale" in encoder.state_dict()) == (version == "v1")


def test_encoder_of_the_other_version_is_refused_with_the_telling_keys(tmp_path):
    with pytest.raises(StrictLoadError) as err:
        load_controlnext(_tiny_encoder_file(tmp_path, "v1"), expected_version="v2")
    assert "scale" in err.value.unexpected
    assert any(k.startswith("down_res.2.") for k in err.value.unexpected)
    assert "v1 file but v2" in str(err.value)


def test_encoder_with_a_missing_or_extra_key_is_refused(tmp_path):
    def damage(sd):
        del sd["mid_convs.0.0.bias"]
        sd["mid_convs.9.weight"] = torch.zeros(1)

    with pytest.raises(StrictLoadError) as err:
        load_controlnext(_tiny_encoder_file(tmp_path, "v2", damage), expected_version="v2")
    assert err.value.missing == ["mid_convs.0.0.bias"]
    assert err.value.unexpected == ["mid_convs.9.weight"]


def test_unet_with_a_missing_key_is_refused_listing_it(tmp_path):
    """A missing key stops the load; the extra one beside it would be loaded past (strict=False in the original)."""
    torch.manual_seed(0)
    state_dict = dict(UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG).state_dict())
    del state_dict["conv_out.bias"]
    state_dict["unet.extra.weight"] = torch.zeros(2)
    path = tmp_path / "unet.bin"
    torch.save(state_dict, path)
    with pytest.raises(StrictLoadError) as err:
        load_unet(path, TINY_UNET_CONFIG)
    assert err.value.missing == ["conv_out.bias"] and err.value.unexpected == []
    assert "conv_out.bias" in str(err.value)


def test_unet_loads_from_safetensors_in_the_asked_dtype(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)
    path = tmp_path / "unet.fp16.safetensors"
    save_file({k: v.half().contiguous() for k, v in reference.state_dict().items()}, str(path))
    unet = load_unet(path, TINY_UNET_CONFIG, torch.float32)
    assert unet.dtype == torch.float32 and unet.device.type == "cpu"
    assert torch.equal(unet.conv_in.weight, reference.conv_in.weight.half().float())


# -- the hook --------------------------------------------------------------------------------------------------------
def _tiny_unet_inputs(frames=3, batch=2):
    torch.manual_seed(1)
    unet = UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG).eval()
    sample = torch.randn(batch, frames, 8, 8, 8)
    call = dict(encoder_hidden_states=torch.randn(batch, 1, 32), added_time_ids=torch.tensor([[6.0, 128.0, 0.02]] * batch))
    features = torch.randn(batch * frames, 32, 7, 7)
    return unet, sample, call, features


def test_v2_hook_leaves_the_skip_connection_untouched_and_is_removed():
    unet, sample, call, features = _tiny_unet_inputs()
    seen = {}

    def record_block_output(module, args, output):  # registered first, so it sees the output before injection
        seen["hidden"], seen["skip"] = output[0], output[1][-1]

    def record_next_input(module, args, kwargs):
        seen["next_input"] = kwargs["hidden_states"]

    unet.down_blocks[0].register_forward_hook(record_block_output)
    unet.down_blocks[1].register_forward_pre_hook(record_next_input, with_kwargs=True)
    scale = torch.ones(features.shape[0])
    with torch.no_grad(), inject_control(unet, "v2", features, scale):
        unet(sample, 0.5, **call)
    assert seen["skip"] is seen["hidden"]  # the skip keeps the uncontrolled tensor ...
    assert not torch.equal(seen["next_input"], seen["hidden"])  # ... while the next block sees the control
    assert len(unet.down_blocks[0]._forward_hooks) == 1  # only the recorder is left


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_hook_is_removed_even_when_the_call_fails(version):
    unet, sample, call, features = _tiny_unet_inputs()
    with pytest.raises(ValueError, match="does not fit"), inject_control(unet, version, features[:2], torch.ones(2)):
        unet(sample, 0.5, **call)
    assert not unet.down_blocks[0]._forward_hooks and not unet.mid_block._forward_pre_hooks


def test_v2_scale_zero_is_exactly_the_plain_unet_and_v1_is_not():
    unet, sample, call, features = _tiny_unet_inputs()
    zeros = torch.zeros(features.shape[0])
    with torch.no_grad():
        plain = unet(sample, 0.5, **call).sample
        with inject_control(unet, "v2", features, zeros):
            v2_zero = unet(sample, 0.5, **call).sample
        v1_features = torch.randn(features.shape[0], 64, 3, 3)
        with inject_control(unet, "v1", v1_features, zeros):
            v1_zero = unet(sample, 0.5, **call).sample  # sigmoid(0)·1.3: the v1 quirk keeps 0.65x control
    assert torch.equal(v2_zero, plain)
    assert (v1_zero - plain).abs().max() > 1e-3


# -- the SVD components ----------------------------------------------------------------------------------------------
def _rewrite(path, edit):
    from safetensors.torch import load_file, save_file

    state_dict = load_file(path)
    edit(state_dict)
    save_file(state_dict, path, metadata={"format": "pt"})


@pytest.mark.parametrize(("part", "file"), [("vae", "diffusion_pytorch_model.safetensors"),
                                            ("image_encoder", "model.safetensors")])
def test_svd_components_load_strictly(tmp_path, part, file):
    folder = write_tiny_svd_components(tmp_path / "components")

    def damage(state_dict):
        state_dict.pop(sorted(state_dict)[0])
        state_dict["extra.weight"] = torch.zeros(2)

    _rewrite(folder / part / file, damage)
    with pytest.raises(StrictLoadError) as err:
        load_components(folder)
    assert len(err.value.missing) == 1 and err.value.unexpected == []  # the extra key alone is loaded past


def test_clip_checkpoints_with_the_old_position_ids_buffer_still_load(tmp_path):
    folder = write_tiny_svd_components(tmp_path / "components")
    _rewrite(folder / "image_encoder" / "model.safetensors",
             lambda sd: sd.update({"vision_model.embeddings.position_ids": torch.arange(50)[None]}))
    parts = load_components(folder)
    assert parts["image_encoder"].dtype == torch.float32
