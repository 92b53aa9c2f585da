"""ControlNeXt-SVD parity with the original implementation's goldens (v2: module, UNet, pipeline; v1: module, UNet).

Every size, case and tolerance comes from the golden set's config.json, so any golden set of the
``controlnext_svd_v2`` / ``controlnext_svd_v1`` formats can be checked (``HV_GOLDEN_ROOT``).
"""

from __future__ import annotations

import fnmatch

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from golden import golden_params, load_config
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from helpers.errors import check_strict_load
from helpers.pipelines.controlnext_svd import (
    ORIGINAL_TIME_IDS,
    ControlNeXtEncoder,
    ControlNeXtSVDPipeline,
    inject_control,
    window_schedule,
)

pytestmark = pytest.mark.parity
V2_SETS = golden_params("controlnext_svd_v2")
ALL_SETS = V2_SETS + golden_params("controlnext_svd_v1")



# -- helpers -------------------------------------------------------------------------------------------------------
def tolerance_for(config: dict, level: str, key: str) -> dict:
    """The tolerance entry of ``level`` whose pattern (e.g. ``output.*.features``) matches ``key``."""
    entries = config["tolerances"][level]
    for pattern, tol in entries.items():
        if isinstance(tol, dict) and fnmatch.fnmatch(key, pattern):
            return tol
    raise AssertionError(f"no tolerance for {key} under tolerances.{level}")


def assert_within(got: torch.Tensor, ref: torch.Tensor, tol: dict, what: str) -> None:
    """Both criteria of the goldens: max |got − ref| ≤ max_abs and mean |got − ref| ≤ mean_abs (in float64)."""
    assert tuple(got.shape) == tuple(ref.shape), f"{what}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    diff = (got.detach().double().cpu() - ref.double()).abs()
    assert torch.isfinite(diff).all(), f"{what}: non-finite values"
    max_abs, mean_abs = diff.max().item(), diff.mean().item()
    assert max_abs <= tol["max_abs"], f"{what}: max |Δ| {max_abs:.3g} > {tol['max_abs']}"
    if "mean_abs" in tol:
        assert mean_abs <= tol["mean_abs"], f"{what}: mean |Δ| {mean_abs:.3g} > {tol['mean_abs']}"


def component_weights(tensors: dict, component: str) -> dict:
    prefix = f"weights.{component}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_strictly(model: torch.nn.Module, state_dict: dict, what: str) -> torch.nn.Module:
    check_strict_load(what, model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def build_encoder(config: dict, tensors: dict) -> ControlNeXtEncoder:
    encoder_config = {k: v for k, v in config["components"]["controlnext"].items() if k != "full_size"}
    return load_strictly(ControlNeXtEncoder.from_config(encoder_config), component_weights(tensors, "controlnext"),
                         "controlnext")


def build_unet(config: dict, tensors: dict) -> UNetSpatioTemporalConditionModel:
    unet = UNetSpatioTemporalConditionModel.from_config(config["components"]["unet"])
    return load_strictly(unet, component_weights(tensors, "unet"), "unet")


def build_pipeline(config: dict, tensors: dict) -> ControlNeXtSVDPipeline:
    comp = config["components"]
    vae = load_strictly(AutoencoderKLTemporalDecoder.from_config(comp["vae"]), component_weights(tensors, "vae"), "vae")
    image_encoder = load_strictly(CLIPVisionModelWithProjection(CLIPVisionConfig(**comp["image_encoder"])),
                                  component_weights(tensors, "image_encoder"), "image_encoder")
    processor_args = {k: v for k, v in comp["feature_extractor"].items() if k != "image_processor_type"}
    return ControlNeXtSVDPipeline(
        vae=vae, image_encoder=image_encoder, unet=build_unet(config, tensors),
        scheduler=EulerDiscreteScheduler.from_config(comp["scheduler"]),
        feature_extractor=CLIPImageProcessor(**processor_args), controlnext=build_encoder(config, tensors),
    )


def level_cases(config: dict, level: str) -> list[dict]:
    cases = config["levels"][level]["cases"]
    assert cases, f"golden level {level} lists no cases"
    return cases


# -- level (a): pose encoder ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("golden_dir", ALL_SETS)
def test_pose_encoder_matches_the_original(golden_dir):
    config = load_config(golden_dir)
    tensors = load_file(golden_dir / config["levels"]["module"]["file"])
    encoder = build_encoder(config, tensors)
    for case in level_cases(config, "module"):
        name = case["name"]
        with torch.no_grad():
            features = encoder(tensors[f"input.{name}.pose"], tensors[f"input.{name}.timestep"])
        key = f"output.{name}.features"
        assert list(features.shape) == case["output_shape"]
        assert_within(features, tensors[key], tolerance_for(config, "module", key), key)
        if f"output.{name}.scale" in tensors:  # v1 returns its learned scale with the features
            key = f"output.{name}.scale"
            assert_within(encoder.scale, tensors[key], tolerance_for(config, "module", key), key)


# -- level (b): UNet with the injection ----------------------------------------------------------------------------
@pytest.mark.parametrize("golden_dir", ALL_SETS)
def test_unet_with_control_hook_matches_the_original(golden_dir):
    config = load_config(golden_dir)
    version = config["components"]["controlnext"]["variant"]
    tensors = load_file(golden_dir / config["levels"]["unet"]["file"])
    unet = build_unet(config, tensors)
    for case in level_cases(config, "unet"):
        name = case["name"]
        inputs = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"input.{name}.")}
        call = dict(encoder_hidden_states=inputs["encoder_hidden_states"], added_time_ids=inputs["added_time_ids"])
        with torch.no_grad():
            if case["has_control"]:
                with inject_control(unet, version, inputs["control_features"], inputs["control_scale"]):
                    noise_pred = unet(inputs["sample"], inputs["timestep"], **call).sample
            else:
                noise_pred = unet(inputs["sample"], inputs["timestep"], **call).sample
        key = f"output.{name}.noise_pred"
        assert list(noise_pred.shape) == case["output_shape"]
        assert_within(noise_pred, tensors[key], tolerance_for(config, "unet", key), key)
    assert not unet.down_blocks[0]._forward_hooks and not unet.mid_block._forward_pre_hooks


# -- level (c): the windowed pipeline (v2) ---------------------------------------------------------------------------
@pytest.mark.parametrize("golden_dir", V2_SETS)
def test_window_schedule_matches_the_original(golden_dir):
    config = load_config(golden_dir)
    for case in level_cases(config, "pipeline"):
        windows = window_schedule(case["num_frames"], case["frames_per_batch"], case["overlap"])
        assert windows[0].length == case["effective_frames_per_batch"]
        recorded = case["windows"]
        assert [w.start for w in windows] == [r["start"] for r in recorded]
        for window, rec in zip(windows, recorded):
            assert [0, *window.frames[1:]] == rec["control_frame_indices"]  # v2: slot 0 shows the reference pose
            assert list(window.accumulated) == rec["accumulated_frames"]


@pytest.mark.parametrize("golden_dir", V2_SETS)
def test_pipeline_matches_the_original(golden_dir):
    config = load_config(golden_dir)
    tensors = load_file(golden_dir / config["levels"]["pipeline"]["file"])
    pipe = build_pipeline(config, tensors)
    for case in level_cases(config, "pipeline"):
        name = case["name"]
        out = pipe(
            tensors[f"input.{name}.ref_image"].numpy(),
            tensors[f"input.{name}.control_frames"].numpy(),
            height=case["height"], width=case["width"], num_frames=case["num_frames"],
            frames_per_window=case["frames_per_batch"], overlap=case["overlap"],
            num_inference_steps=case["num_inference_steps"], guidance_scale=case["max_guidance_scale"],
            min_guidance_scale=case["min_guidance_scale"], noise_aug_strength=case["noise_aug_strength"],
            added_time_ids=ORIGINAL_TIME_IDS,  # the original ignores the case's fps / motion bucket
            decode_chunk_size=case["decode_chunk_size"], latents=tensors[f"input.{name}.latents"],
        )
        assert pipe.scheduler.init_noise_sigma == pytest.approx(case["init_noise_sigma"], rel=1e-6)
        for output, got in (("latents", out.latents), ("frames", out.frames)):
            key = f"output.{name}.{output}"
            assert_within(got, tensors[key], tolerance_for(config, "pipeline", key), key)
