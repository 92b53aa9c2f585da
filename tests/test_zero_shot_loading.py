"""Loading the zero-shot pipeline from the weights layout: strict keys, the single-file ControlNet route, dtypes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.errors import MissingWeightsError, StrictLoadError, WeightsError
from helpers.pipelines.zero_shot_pose import configs, load_zero_shot_pipeline, native_size
from helpers.pipelines.zero_shot_pose.loading import (
    BASE_768_ROLE,
    convert_original_controlnet,
    load_controlnet_single_file,
)
from helpers.testing.zero_shot import (
    original_controlnet_name,
    write_tiny_controlnet_single_file,
    write_tiny_zero_shot_packs,
)


@pytest.fixture
def packs():
    """Tiny packs written where ``weights.resolve`` looks: ``$HV_ROOT/models/...`` (set per test by conftest)."""
    return write_tiny_zero_shot_packs(os.environ["HV_ROOT"])


def test_loads_from_the_weights_layout_with_the_base_models_scheduler(packs):
    pipe = load_zero_shot_pipeline(base_role=BASE_768_ROLE)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert native_size(pipe) == pipe.unet.config.sample_size * 2
    assert load_zero_shot_pipeline().scheduler.config.prediction_type == "epsilon"  # sd21/base: SD2.1-base


def test_a_pndm_base_folder_still_denoises_with_ddim_and_its_own_prediction_type(packs):
    config_file = packs["base"] / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config.update({"_class_name": "PNDMScheduler", "prediction_type": "epsilon", "skip_prk_steps": True})
    config_file.write_text(json.dumps(config))
    pipe = load_zero_shot_pipeline(base_dir=packs["base"], controlnet_path=packs["controlnet"])
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.prediction_type == "epsilon"


def test_missing_packs_say_how_to_fetch_them():
    with pytest.raises(MissingWeightsError, match="sd21"):
        load_zero_shot_pipeline()


def test_a_controlnet_with_a_missing_tensor_is_refused_by_name(packs):
    weights_file = packs["controlnet"] / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights_file))
    tensors.pop("controlnet_mid_block.weight")
    save_file(tensors, str(weights_file), metadata={"format": "pt"})
    with pytest.raises(StrictLoadError, match="controlnet_mid_block.weight"):
        load_zero_shot_pipeline(base_dir=packs["base"], controlnet_path=packs["controlnet"])


def test_a_controlnet_for_another_base_is_refused(packs, tmp_path):
    from helpers.testing import common

    other = common.write_controlnet(tmp_path / "sd15_like", cross_attention_dim=16, linear_projection=True)
    with pytest.raises(WeightsError, match="does not fit this base model"):
        load_zero_shot_pipeline(base_dir=packs["base"], controlnet_path=other)


def test_fp16_loading_gives_fp16_models(packs):
    pipe = load_zero_shot_pipeline(dtype=torch.float16)
    assert {pipe.unet.dtype, pipe.controlnet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float16}


@pytest.mark.parametrize("prefix", ["control_model.", "", "state_dict.control_model."])
def test_single_file_controlnet_converts_to_the_same_weights(tmp_path, prefix):
    path, config, expected = write_tiny_controlnet_single_file(tmp_path / "control_sd21_openpose.safetensors",
                                                               prefix=prefix)
    model = load_controlnet_single_file(path, torch.float32, config=config)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_single_file_controlnet_with_a_missing_tensor_or_a_pickle_is_refused(tmp_path):
    path, config, _ = write_tiny_controlnet_single_file(tmp_path / "control.safetensors")
    tensors = load_file(str(path))
    tensors.pop("control_model.zero_convs.1.0.weight")
    save_file(tensors, str(path))
    with pytest.raises(StrictLoadError, match="controlnet_down_blocks.1.weight"):
        load_controlnet_single_file(path, torch.float32, config=config)
    with pytest.raises(WeightsError, match="safetensors"):
        load_controlnet_single_file(Path(tmp_path / "control.ckpt"), torch.float32, config=config)


def test_full_size_configs_build_the_published_models():
    """On the meta device (no memory): SD2.1's UNet and the SD VAE have their published parameter counts, the
    ControlNet is the UNet's encoder plus its own layers (728 MB in fp16), and an original-layout SD2.1 ControlNet
    checkpoint converts onto it with every key placed."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**configs.SD21_UNET_768)
        controlnet = ControlNetModel(**configs.SD21_CONTROLNET)
        vae = AutoencoderKL(**configs.SD_VAE)

    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(unet) == 865_910_724 and count(vae) == 83_653_863
    assert round(count(controlnet) * 2 / 1e6) == 728
    unet_state, control_state = unet.state_dict(), controlnet.state_dict()
    assert all(control_state[k].shape == unet_state[k].shape for k in control_state if k in unet_state)
    assert {k.split(".")[0] for k in control_state if k not in unet_state} == {
        "controlnet_cond_embedding", "controlnet_down_blocks", "controlnet_mid_block"}
    original = {"control_model." + original_controlnet_name(k, configs.SD21_CONTROLNET["layers_per_block"]): v
                for k, v in control_state.items()}
    assert "control_model.input_blocks.11.0.out_layers.3.weight" in original  # 12 input blocks, as in ControlLDM
    assert "control_model.input_hint_block.14.weight" in original
    converted = convert_original_controlnet(original, controlnet, configs.SD21_CONTROLNET, "SD2.1 ControlNet")
    assert converted.keys() == control_state.keys()
