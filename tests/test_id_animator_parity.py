"""Parity of the stock-diffusers ID-Animator with the original implementation's goldens (every ``id_animator`` set).

The golden weights are in the original checkpoint namings, so the real converters run: the motion module through
``convert_motion_module_checkpoint``, the face adapter through ``convert_animator_checkpoint`` and the stock
IP-Adapter/LoRA loaders, the whole model through ``assemble_id_animator_pipeline``. Sizes, calls and tolerances
come from each set's config.json.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest
import torch
from golden import golden_params, load_config

pytestmark = pytest.mark.parity

PARAMS = golden_params("id_animator")


# -- building the model from a golden set --------------------------------------------------------------------------
def _part(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _strict(what, model, state_dict):
    from helpers.errors import check_strict_load

    check_strict_load(what, model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


class GoldenModel:
    """The golden set's tiny model assembled with the project's real conversion and loading code."""

    def __init__(self, golden_dir):
        from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
        from safetensors.torch import load_file
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        from helpers.pipelines.id_animator import (
            assemble_id_animator_pipeline,
            convert_animator_checkpoint,
            convert_motion_module_checkpoint,
            face_adapter_targets,
        )

        self.dir, self.config = golden_dir, load_config(golden_dir)
        cfg = self.config
        weights = load_file(str(golden_dir / "golden_weights.safetensors"))
        unet = _strict("unet", UNet2DConditionModel.from_config(cfg["unet_config_diffusers"]), _part(weights, "weights.unet."))
        motion = _strict("motion", MotionAdapter(**cfg["motion_adapter_equivalent"]),
                         convert_motion_module_checkpoint(_part(weights, "weights.motion.")))
        vae = _strict("vae", AutoencoderKL.from_config(cfg["vae_config_diffusers"]), _part(weights, "weights.vae."))
        vision_cfg = {k: v for k, v in cfg["image_encoder_config_transformers"].items() if k != "class"}
        image_encoder = _strict("image encoder", CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_cfg)),
                                _part(weights, "weights.image_encoder."))
        self.targets = face_adapter_targets(unet)
        # the nested animator.ckpt layout, flattened the way the weights manager stores it
        animator = {f"image_proj.{k}": v for k, v in _part(weights, "weights.animator.image_proj.").items()}
        animator.update({f"face_adapter.{k}": v for k, v in _part(weights, "weights.animator.face_adapter.").items()})
        face_adapter = convert_animator_checkpoint(animator, self.targets, vision_cfg["hidden_size"])
        self.pipe = assemble_id_animator_pipeline(unet=unet, motion_adapter=motion, vae=vae, text_encoder=None,
                                                  tokenizer=None, image_encoder=image_encoder,
                                                  face_adapter=face_adapter)
        scheduler_cfg = {k: v for k, v in cfg["scheduler"].items() if k not in ("class", "eta")}
        self.pipe.scheduler = DDIMScheduler(**scheduler_cfg)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.latent_scaling_factor = cfg["latent_scaling_factor_used_for_decode"]
        self.eta = cfg["scheduler"].get("eta", 0.0)

    def golden(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.dir / name))

    def tolerance(self, file: str, key: str, kind: str = "float32_implementation") -> dict:
        rules = self.config["tolerances"][kind][file]
        for pattern, rule in rules.items():
            if pattern == key or fnmatch.fnmatchcase(key, pattern):
                return rule
        raise KeyError(f"no tolerance for {file}:{key} in {self.dir}")

    def check(self, file: str, key: str, actual: torch.Tensor, expected: torch.Tensor, kind="float32_implementation"):
        rule = self.tolerance(file, key, kind)
        actual = actual.detach().cpu()
        if rule == "exact":
            assert torch.equal(actual.to(expected.dtype), expected), f"{key}: {actual.tolist()} != {expected.tolist()}"
            return
        torch.testing.assert_close(actual.to(expected.dtype), expected, atol=rule["atol"], rtol=rule["rtol"],
                                   msg=lambda m: f"{self.dir.parent.name}/{file}:{key}: {m}")


_MODELS: dict = {}


@pytest.fixture(params=PARAMS)
def model(request) -> GoldenModel:
    if request.param not in _MODELS:
        _MODELS.clear()  # keep one set's model in memory at a time
        _MODELS[request.param] = GoldenModel(request.param)
    return _MODELS[request.param]



# -- the face-adapter layout ---------------------------------------------------------------------------------------
def test_face_adapter_targets_match_the_original_numbering(model):
    from helpers.pipelines.id_animator import NUM_FACE_TOKENS
    from helpers.pipelines.id_animator.convert import (
        LORA_RANK,
        RESAMPLER_DEPTH,
        RESAMPLER_DIM_HEAD,
        RESAMPLER_FF_MULT,
        RESAMPLER_HEADS,
    )

    table = {str(t.index): t.module_path for t in model.targets}
    assert table == model.config["face_adapter_index_to_module"]
    resampler, adapter = model.config["resampler_config"], model.config["face_adapter_config"]
    assert (resampler["depth"], resampler["heads"], resampler["dim_head"], resampler["num_queries"],
            resampler["ff_mult"]) == (RESAMPLER_DEPTH, RESAMPLER_HEADS, RESAMPLER_DIM_HEAD, NUM_FACE_TOKENS,
                                      RESAMPLER_FF_MULT)
    assert (adapter["num_tokens"], adapter["lora_rank"], adapter["lora_scale"]) == (NUM_FACE_TOKENS, LORA_RANK, 1.0)


# -- golden a: face tokens -----------------------------------------------------------------------------------------
def test_resampler_matches(model):
    file = "golden_resampler.safetensors"
    g = model.golden(file)
    resampler = model.pipe.unet.encoder_hid_proj.image_projection_layers[0]
    with torch.no_grad():
        model.check(file, "output.face_tokens", resampler(g["input.clip_hidden_states"]), g["output.face_tokens"])
        resampler64 = resampler.double()
        try:
            tokens64 = resampler64(g["input.clip_hidden_states"].double())
        finally:
            resampler.float()
    model.check(file, "output_fp64.face_tokens", tokens64, g["output_fp64.face_tokens"], "float64_implementation")


def test_clip_features_and_face_tokens_from_images(model):
    file = "golden_resampler.safetensors"
    g = model.golden(file)
    pipe = model.pipe
    images = list(g["input.face_images"].numpy())
    pixel_values = pipe.feature_extractor(images, return_tensors="pt").pixel_values
    model.check(file, "output.pixel_values", pixel_values, g["output.pixel_values"])
    with torch.no_grad():
        faces, uncond = pipe.encode_faces(images)
        model.check(file, "output.clip_penultimate", faces, g["output.clip_penultimate"])
        model.check(file, "output.uncond_clip_penultimate", uncond, g["output.uncond_clip_penultimate"])
        tokens = torch.cat([pipe.face_tokens([image])[0] for image in images])
        model.check(file, "output.face_tokens_from_images", tokens, g["output.face_tokens_from_images"])
        model.check(file, "output.uncond_face_tokens", pipe.face_tokens(images[:1])[1], g["output.uncond_face_tokens"])


# -- golden b: one UNet forward ------------------------------------------------------------------------------------
class _GivenTokens(torch.nn.Module):
    """Stands in for the UNet's image projection when the face tokens are given directly."""

    def forward(self, image_embeds):
        return image_embeds


def _unet_forward(model: GoldenModel, g: dict, face_scale: float, dtype=torch.float32) -> torch.Tensor:
    from helpers.pipelines.id_animator import NUM_FACE_TOKENS

    unet = model.pipe.unet
    latents, context = g["input.latents"].to(dtype), g["input.encoder_hidden_states"].to(dtype)
    frames, text_tokens = latents.shape[2], context.shape[1] - NUM_FACE_TOKENS
    projection, unet.encoder_hid_proj = unet.encoder_hid_proj, _GivenTokens()
    model.pipe.set_ip_adapter_scale(face_scale)
    try:
        unet.to(dtype)
        with torch.no_grad():
            return unet(latents, g["input.timestep"], encoder_hidden_states=context[:, :text_tokens].repeat_interleave(
                frames, dim=0), added_cond_kwargs={"image_embeds": [context[:, text_tokens:]]}).sample
    finally:
        unet.encoder_hid_proj = projection
        unet.to(torch.float32)


def test_unet_forward_matches(model):
    file = "golden_unet.safetensors"
    g = model.golden(file)
    scale = float(g["input.face_scale"])
    model.check(file, "output.noise_pred", _unet_forward(model, g, scale), g["output.noise_pred"])
    model.check(file, "output.noise_pred_face_scale_0", _unet_forward(model, g, 0.0), g["output.noise_pred_face_scale_0"])


def test_unet_forward_matches_in_float64(model):
    file = "golden_unet.safetensors"
    g = model.golden(file)
    actual = _unet_forward(model, g, float(g["input.face_scale"]), torch.float64)
    model.check(file, "output_fp64.noise_pred", actual, g["output_fp64.noise_pred"], "float64_implementation")


def test_unet_stock_groupnorm_differs(model):
    """Sensitivity guard: diffusers' joint-frame GroupNorm must be told apart by the golden's tolerance."""
    from helpers.pipelines.id_animator import set_motion_groupnorm

    file = "golden_unet.safetensors"
    g = model.golden(file)
    set_motion_groupnorm(model.pipe.unet, per_frame=False)
    try:
        stock = _unet_forward(model, g, float(g["input.face_scale"]))
    finally:
        set_motion_groupnorm(model.pipe.unet, per_frame=True)
    rule = model.tolerance(file, "output.noise_pred")
    assert (stock - g["output.noise_pred"]).abs().max() > 10 * rule["atol"]


# -- golden c: the whole loop --------------------------------------------------------------------------------------
def test_generation_loop_matches(model):
    file = "golden_pipeline.safetensors"
    g = model.golden(file)
    call = model.config["golden_pipeline"]
    faces = [g["input.face_image_a"].numpy(), g["input.face_image_b"].numpy()]
    for case, num_references in call["num_references"].items():
        _check_generation(model, file, g, call, case, faces[:num_references])


def _check_generation(model: GoldenModel, file: str, g: dict, call: dict, case: str, references: list) -> None:
    steps: dict[str, list] = {"unet_output": [], "latents": []}

    def record(pipe, step, timestep, tensors):
        for name, tensor in tensors.items():
            steps[name].append(tensor.clone())
        return {}

    pipe = model.pipe
    out = pipe(references, prompt_embeds=g["input.text_embeds"], negative_prompt_embeds=g["input.negative_text_embeds"],
               face_scale=call["face_scale"], num_frames=call["frames"], height=call["height"], width=call["width"],
               num_inference_steps=call["steps"], guidance_scale=call["guidance"], eta=model.eta,
               latents=g["input.latents"].clone(), output_type="pt", callback_on_step_end=record,
               callback_on_step_end_tensor_inputs=["unet_output", "latents"])
    model.check(file, "output.timesteps", pipe.scheduler.timesteps, g["output.timesteps"])
    model.check(file, f"output.{case}.step_noise_pred", torch.stack(steps["unet_output"]), g[f"output.{case}.step_noise_pred"])
    model.check(file, f"output.{case}.step_latents", torch.stack(steps["latents"]), g[f"output.{case}.step_latents"])
    model.check(file, f"output.{case}.latents", steps["latents"][-1], g[f"output.{case}.latents"])
    model.check(file, f"output.{case}.frames", out.frames.permute(0, 2, 1, 3, 4), g[f"output.{case}.frames"])

    with torch.no_grad():
        tokens, uncond = pipe.face_tokens(references)
    text, negative = g["input.text_embeds"], g["input.negative_text_embeds"]
    model.check(file, f"output.{case}.prompt_embeds", torch.cat([text, tokens], 1), g[f"output.{case}.prompt_embeds"])
    model.check(file, f"output.{case}.negative_prompt_embeds", torch.cat([negative, uncond], 1),
                g[f"output.{case}.negative_prompt_embeds"])


def test_concatenated_identities_are_told_apart(model):
    """Sensitivity guard: diffusers' default (concatenate the references' tokens) must fail the two-face golden."""
    from helpers.pipelines.id_animator import install_face_token_mixer

    file = "golden_pipeline.safetensors"
    g = model.golden(file)
    call = model.config["golden_pipeline"]
    case = max(call["num_references"], key=call["num_references"].get)
    faces = [g["input.face_image_a"].numpy(), g["input.face_image_b"].numpy()][:call["num_references"][case]]
    install_face_token_mixer(model.pipe.unet, mode="concat")
    try:
        with pytest.raises(AssertionError, match="not close"):
            _check_generation(model, file, g, call, case, faces)
    finally:
        install_face_token_mixer(model.pipe.unet, mode="mean")


def test_face_tokens_of_each_reference(model):
    file = "golden_pipeline.safetensors"
    g = model.golden(file)
    with torch.no_grad():
        tokens_a, uncond = model.pipe.face_tokens([g["input.face_image_a"].numpy()])
        tokens_b, _ = model.pipe.face_tokens([g["input.face_image_b"].numpy()])
    model.check(file, "output.face_tokens_a", tokens_a, g["output.face_tokens_a"])
    model.check(file, "output.face_tokens_b", tokens_b, g["output.face_tokens_b"])
    model.check(file, "output.uncond_face_tokens", uncond, g["output.uncond_face_tokens"])


# -- golden d: face alignment --------------------------------------------------------------------------------------
@pytest.mark.parametrize("golden_dir", PARAMS)
def test_face_alignment_matches(golden_dir):
    from safetensors.numpy import load_file

    from helpers import face

    cfg = load_config(golden_dir)
    case_cfg, rules = cfg["golden_face_align"], cfg["tolerances"]["face_alignment"]
    g = load_file(str(golden_dir / "golden_face_align.safetensors"))
    np.testing.assert_allclose(face.ARCFACE_TEMPLATE_112 * case_cfg["crop_size"] / 112,
                               np.asarray(case_cfg["arcface_template_112"]) * case_cfg["crop_size"] / 112, atol=1e-4)
    assert len(case_cfg["cases"]) == g["input.kps"].shape[0]
    for i, case in enumerate(case_cfg["cases"]):
        crop, matrix = face.align_face(g["input.image_bgr"], g["input.kps"][i], case_cfg["crop_size"])
        rule = rules["output.matrix"]
        np.testing.assert_allclose(matrix, g["output.matrix"][i], atol=rule["atol"], rtol=rule["rtol"], err_msg=case)
        clip_image = np.asarray(face.crop_to_clip_image(crop, case_cfg["resize_to"]))
        for key, actual in (("output.crop_bgr_112", crop), ("output.face_rgb_224", clip_image)):
            diff = np.abs(actual.astype(np.int16) - g[key][i].astype(np.int16))
            rule = rules[key]
            assert diff.max() <= rule["max_abs_uint8"], f"{case} {key}: max {diff.max()}"
            assert diff.mean() <= rule["mean_abs_uint8"], f"{case} {key}: mean {diff.mean():.3f}"
