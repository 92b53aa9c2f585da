"""MuseV video-to-video / pose-to-video parity with the original (golden sets of format ``musev_v2v``).

- g3 ``unet_controlnet_residuals``: the stock ControlNet on the recorded input, and the pose UNet with / without its
  residuals (four cases), the skips and the mid output the up path consumes;
- g1 ``pipeline_pose_video_middle`` (``musev_referencenet_pose`` + ReferenceNet + IP-Adapter + ControlNet, control
  frames only) and g2 ``pipeline_musev_video`` (``musev`` + ControlNet, the RGB video encoded and noised): the first
  step with a UNet stand-in replaying the original's outputs (what the pipeline itself computes: initial latents,
  window inputs, control frame indices, ControlNet residuals, guidance, the Euler step), then full runs with the real
  models, free-running (every step, the final latents and the decoded video) and teacher-forced.

Every size, call argument, case and tolerance comes from the set's ``config.json``.
"""

from __future__ import annotations

import pytest
import torch
from golden import golden_params, load_config
from safetensors.torch import load_file
from test_musev_pipeline_parity import ReplayReferenceNet, ReplayUNet, assert_golden, strip_prefix

from helpers.pipelines.musev.controlnet import MuseVControlNetPipeline
from helpers.pipelines.musev.noise import add_condition_prior, video_fusion_noise

GOLDEN_SETS = golden_params("musev_v2v")
LOOPS = ("pipeline_pose_video_middle", "pipeline_musev_video")


def _weights_file(spec_text: str) -> tuple[str, str]:
    """``"golden_x.safetensors weights.unet.*"`` -> (file, prefix)."""
    file, pattern = spec_text.split()[:2]
    return file, pattern.rstrip("*")


class V2VGolden:
    """One golden set of format ``musev_v2v``: config, lazily loaded files and models built from the config."""

    def __init__(self, golden_dir):
        self.dir = golden_dir
        self.config = load_config(golden_dir)
        self.models = self.config["models"]
        self._files: dict = {}

    def file(self, name: str) -> dict:
        if name not in self._files:
            self._files[name] = load_file(str(self.dir / name))
        return self._files[name]

    def weights(self, spec_text: str) -> dict:
        file, prefix = _weights_file(spec_text)
        return strip_prefix(self.file(file), prefix)

    def unet(self, key: str, spec_text: str):
        from helpers.pipelines.musev.unet import MuseVUNet3DConditionModel
        from helpers.pipelines.musev.unet_config import parse_musev_unet_config

        unet = MuseVUNet3DConditionModel(**parse_musev_unet_config(self.models[key]["config"])).eval()
        unet.load_state_dict(self.weights(spec_text), strict=True)
        return unet

    def controlnet(self, spec_text: str):
        from diffusers import ControlNetModel

        model = ControlNetModel.from_config(self.models["controlnet"]["config"]).eval()
        model.load_state_dict(self.weights(spec_text), strict=True)
        return model

    def vae(self, spec_text: str):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_config(self.models["vae"]["config"]).eval()
        vae.load_state_dict(self.weights(spec_text), strict=True)
        return vae

    def referencenet(self, spec_text: str):
        from helpers.pipelines.musev.referencenet import MuseVReferenceNet

        model = MuseVReferenceNet.from_musev_config(self.models["referencenet"]["config"]).eval()
        model.load_state_dict(self.weights(spec_text), strict=True)
        return model

    def image_proj(self, spec_text: str):
        from helpers.pipelines.musev.ip_adapter import build_image_projection, convert_image_projection_state_dict

        conf = self.models["image_proj"]["config"]
        proj = build_image_projection(conf["clip_embeddings_dim"], conf["cross_attention_dim"],
                                      conf["clip_extra_context_tokens"]).eval()
        proj.load_state_dict(convert_image_projection_state_dict(self.weights(spec_text)), strict=True)
        return proj


def _frames(x: torch.Tensor):
    """Golden images ``(1, 3, T, H, W)`` uint8 -> ``(T, H, W, 3)`` uint8 arrays (what the task hands over)."""
    return x[0].permute(1, 2, 3, 0).contiguous().numpy()


class Loop:
    """A golden pipeline loop (g1 or g2): its tensors, call and the pipeline built on its weights."""

    def __init__(self, golden: V2VGolden, section: str):
        if section not in golden.config:
            pytest.skip(f"{golden.dir} has no '{section}' golden")
        self.golden, self.section = golden, section
        self.spec = golden.config[section]
        self.call = self.spec["pipeline_call"]
        self.table = golden.config["tolerances"][section]
        self.t = golden.file(self.spec["file"])
        self.reference = "referencenet" in self.spec["weights"]
        self.video_mode = self.call["image"] is not None

    def pipeline(self, unet, referencenet) -> MuseVControlNetPipeline:
        import diffusers

        w = self.spec["weights"]
        scheduler_class = getattr(diffusers, self.spec["scheduler"].split()[0])
        return MuseVControlNetPipeline(
            vae=self.golden.vae(w["vae"]), text_encoder=None, tokenizer=None, unet=unet,
            scheduler=scheduler_class.from_config(self.spec["scheduler_config"]),
            controlnet=self.golden.controlnet(w["controlnet"]), referencenet=referencenet,
            image_proj=self.golden.image_proj(w["image_proj"]) if self.reference else None)

    def real_models(self):
        w = self.spec["weights"]
        unet = self.golden.unet(self.spec["unet"], w["unet"])
        return unet, self.golden.referencenet(w["referencenet"]) if self.reference else None

    def kwargs(self) -> dict:
        t, call = self.t, self.call
        control = torch.cat([t["input.controlnet_condition_image"], t["input.control_image"]], dim=2)
        noise = video_fusion_noise(tuple(t["input.noise_individual"].shape), w_ind_noise=call["w_ind_noise"],
                                   common=t["input.noise_common"], individual=t["input.noise_individual"])
        if not self.video_mode and call["need_img_based_video_noise"]:
            noise = add_condition_prior(noise, t["intermediate.cond_latent"], call["img_weight"])
        kwargs = dict(
            image=t["input.condition_image"], control_frames=_frames(control),
            video=_frames(t["input.video"]) if self.video_mode else None,
            prompt_embeds=t["input.prompt_embeds"], negative_prompt_embeds=t["input.negative_prompt_embeds"],
            height=call["height"], width=call["width"], time_size=call["video_length"],
            num_inference_steps=call["num_inference_steps"], guidance_scale=call["guidance_scale"],
            motion_speed=call["motion_speed"], context_frames=call["context_frames"],
            context_overlap=call["context_overlap"], context_schedule=call["context_schedule"],
            w_ind_noise=call["w_ind_noise"], img_weight=call["img_weight"], latents=noise,
            controlnet_conditioning_scale=call["controlnet_conditioning_scale"],
            control_guidance_start=call["control_guidance_start"], control_guidance_end=call["control_guidance_end"],
            output_type="pt",
        )
        if self.reference:
            kwargs.update(clip_image_embeds=t["input.clip_image_embeds"], ip_adapter_scale=call["ip_adapter_scale"])
        return kwargs

    def windows(self) -> list[list[int]]:
        return [window for batch in self.spec["windows"] for window in batch]

    def check(self, name: str, seen: dict) -> None:
        assert_golden(f"intermediate.{name}", seen[name], self.t[f"intermediate.{name}"], self.table)


class _Stop(Exception):
    pass


def _stop(pipe, step, timestep, tensors):
    raise _Stop


# ------------------------------------------------------------------------------------------------------ g3: the UNet


@pytest.mark.parity
@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_controlnet_residuals_enter_the_unet_like_the_original(golden_dir):
    golden = V2VGolden(golden_dir)
    if "unet_controlnet_residuals" not in golden.config:
        pytest.skip(f"{golden_dir} has no 'unet_controlnet_residuals' golden")
    spec = golden.config["unet_controlnet_residuals"]
    table = golden.config["tolerances"]["unet_controlnet_residuals"]
    t = golden.file(spec["file"])
    pose = golden.config["pipeline_pose_video_middle"]["weights"]
    controlnet = golden.controlnet(pose["controlnet"])
    unet = golden.unet("unet_pose", pose["unet"])

    control = t["input.controlnet.control_frames"].float()
    batch = t["input.main.sample"].shape[0]
    with torch.no_grad():
        down, mid = controlnet(t["input.controlnet.sample"], t["input.controlnet.timestep"],
                               encoder_hidden_states=t["input.controlnet.encoder_hidden_states"],
                               controlnet_cond=torch.cat([control] * batch) / 255.0,
                               conditioning_scale=spec["controlnet_call"]["conditioning_scale"],
                               guess_mode=spec["controlnet_call"]["guess_mode"], return_dict=False)
    assert len(down) == 12
    for i, residual in enumerate(down):
        assert_golden(f"output.controlnet.down_block_res_samples.{i}", residual,
                      t[f"output.controlnet.down_block_res_samples.{i}"], table)
    assert_golden("output.controlnet.mid_block_res_sample", mid, t["output.controlnet.mid_block_res_sample"], table)
    # the ControlNet input is the UNet input flattened to frames (rows b*T + t), the text repeated per frame
    frames = t["input.main.sample"].shape[2]
    assert torch.equal(t["input.controlnet.sample"],
                       t["input.main.sample"].permute(0, 2, 1, 3, 4).reshape(-1, *t["input.controlnet.sample"].shape[1:]))
    assert torch.equal(t["input.controlnet.encoder_hidden_states"],
                       t["input.main.encoder_hidden_states"].repeat_interleave(frames, 0))

    # the IP tokens and ReferenceNet features the UNet receives, recomputed
    from helpers.pipelines.musev.ip_adapter import image_prompt_tokens

    uncond, cond = image_prompt_tokens(golden.image_proj(pose["image_proj"]), t["input.clip_image_embeds"])
    assert_golden("input.ip_tokens (recomputed)", torch.cat([uncond, cond]), t["input.ip_tokens"], table)
    with torch.no_grad():
        features = golden.referencenet(pose["referencenet"])(t["input.referencenet.sample"],
                                                            t["input.referencenet.timestep"],
                                                            encoder_hidden_states=t["input.ip_tokens"])
    for i, feature in enumerate(features.down_block_refer_embs):
        assert_golden("input.main.down_block_refer_embs.* (recomputed)", feature,
                      t[f"input.main.down_block_refer_embs.{i}"], table)
    assert_golden("input.main.mid_block_refer_emb (recomputed)", features.mid_block_refer_emb,
                  t["input.main.mid_block_refer_emb"], table)

    call = spec["unet_common_call"]
    recorded = [t[f"output.controlnet.down_block_res_samples.{i}"] for i in range(12)]
    residuals = {"main": (recorded, t["output.controlnet.mid_block_res_sample"]), "down_only": (recorded, None),
                 "mid_only": (None, t["output.controlnet.mid_block_res_sample"]), "no_residuals": (None, None)}
    assert set(spec["cases"]) == set(residuals)
    consumed: dict = {}

    def record(module, args):
        consumed.setdefault("blocks", []).append((args[0], args[1]))

    hooks = [block.register_forward_pre_hook(record) for block in unet.up_blocks]
    for case, (down_res, mid_res) in residuals.items():
        consumed.clear()
        with torch.no_grad():
            out = unet(t["input.main.sample"], t["input.main.timestep"], t["input.main.encoder_hidden_states"],
                       condition_frame_index=t["input.main.vision_conditon_frames_sample_index"].tolist(),
                       motion_speed=call["sample_frame_rate"],
                       down_block_refer_embs=[t[f"input.main.down_block_refer_embs.{i}"] for i in range(12)],
                       mid_block_refer_emb=t["input.main.mid_block_refer_emb"], ip_hidden_states=t["input.ip_tokens"],
                       ip_adapter_scale=call["ip_adapter_scale"], down_block_additional_residuals=down_res,
                       mid_block_additional_residual=mid_res).sample
        assert_golden(f"output.{case}.sample", out, t[f"output.{case}.sample"], table)
        if case == "main":  # the tensors the up path consumed: skips + residuals, mid output + residual
            assert_golden("intermediate.main.mid_out", consumed["blocks"][0][0], t["intermediate.main.mid_out"],
                          table)
            skips = [s for _, block_skips in reversed(consumed["blocks"]) for s in block_skips]
            assert len(skips) == 12
            for i, skip in enumerate(skips):
                assert_golden(f"intermediate.main.skip.{i}", skip, t[f"intermediate.main.skip.{i}"], table)
    for hook in hooks:
        hook.remove()


# ------------------------------------------------------------------------------------------ g1, g2: the loop itself


@pytest.mark.parity
@pytest.mark.parametrize("section", LOOPS)
@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_first_step_of_the_controlnet_loop_matches_the_original(golden_dir, section):
    loop = Loop(V2VGolden(golden_dir), section)
    t = loop.t
    windows = loop.windows()
    unet = ReplayUNet([t[f"intermediate.step0.window{k}.unet_out"] for k in range(len(windows))], loop.reference)
    referencenet = None
    if loop.reference:
        referencenet = ReplayReferenceNet(type("Features", (), dict(
            down_block_refer_embs=[t[f"intermediate.referencenet.down_block_refer_embs.{i}"] for i in range(12)],
            mid_block_refer_emb=t["intermediate.referencenet.mid_block_refer_emb"]))())
    pipe = loop.pipeline(unet, referencenet)
    seen: dict = {}
    with pytest.raises(_Stop):
        pipe(**loop.kwargs(), callback_on_step_end=_stop, trace=lambda name, value: seen.__setitem__(name, value))

    assert_golden("intermediate.sigmas", seen["sigmas"], t["intermediate.sigmas"], loop.table)
    assert seen["step0.timestep"].item() == loop.spec["timesteps"][0]
    loop.check("step0.timestep", seen)
    loop.check("latents_init", seen)
    if loop.video_mode:
        loop.check("video_latents", seen)
    else:
        loop.check("cond_latent", seen)
    assert len(unet.calls) == loop.spec["unet_calls_per_step"] == loop.spec["controlnet_calls_per_step"]
    for k, (call, window) in enumerate(zip(unet.calls, windows)):
        name = f"step0.window{k}"
        loop.check(f"{name}.unet_sample", {f"{name}.unet_sample": call["sample"]})
        assert torch.equal(torch.arange(1, call["sample"].shape[2]), t[f"intermediate.{name}.sample_index"])
        assert call["sample"].shape[2] == 1 + len(window)
        assert torch.equal(seen[f"{name}.control_frame_index"], t[f"intermediate.{name}.control_frame_index"])
        assert call["motion_speed"] == loop.call["motion_speed"] and call["condition_frame_index"] == [0]
        down, mid = call["down_block_additional_residuals"], call["mid_block_additional_residual"]
        assert len(down) == 12 and mid.shape[0] == call["sample"].shape[0] * call["sample"].shape[2]
        if k == 0 and "intermediate.step0.window0.controlnet.mid_block_res_sample" in t:
            for i, residual in enumerate(down):
                loop.check(f"step0.window0.controlnet.down_block_res_samples.{i}",
                           {f"step0.window0.controlnet.down_block_res_samples.{i}": residual})
            loop.check("step0.window0.controlnet.mid_block_res_sample",
                       {"step0.window0.controlnet.mid_block_res_sample": mid})
    loop.check("step0.guided_noise_pred", seen)
    loop.check("step0.latents_out", seen)
    if loop.reference:
        for name in ("refer_latent", "ip_tokens"):
            loop.check(name, seen)


def run_real(loop: Loop, teacher_forced: bool = False):
    """The loop with the real models, every intermediate traced; teacher-forced: each step restarts from the
    original's latents (no decoding)."""
    pipe = loop.pipeline(*loop.real_models())
    seen: dict = {}

    def restart_from_original(pipe, step, timestep, tensors):
        return {"latents": loop.t[f"intermediate.step{step}.latents_out"].clone()}

    kwargs = {**loop.kwargs(), "output_type": "latent" if teacher_forced else "pt"}
    out = pipe(**kwargs, decode_chunk_size=2, trace=lambda name, value: seen.__setitem__(name, value),
               callback_on_step_end=restart_from_original if teacher_forced else None)
    return out, seen


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("section", LOOPS)
@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_full_controlnet_run_matches_the_original(golden_dir, section):
    loop = Loop(V2VGolden(golden_dir), section)
    out, seen = run_real(loop)
    if loop.reference:
        for i, feature in enumerate(seen["referencenet"].down_block_refer_embs):
            loop.check(f"referencenet.down_block_refer_embs.{i}",
                       {f"referencenet.down_block_refer_embs.{i}": feature})
        loop.check("referencenet.mid_block_refer_emb",
                   {"referencenet.mid_block_refer_emb": seen["referencenet"].mid_block_refer_emb})
    loop.check("latents_init", seen)
    for k in range(len(loop.windows())):
        for what in ("unet_sample", "unet_out"):
            loop.check(f"step0.window{k}.{what}", seen)
    if "intermediate.step0.window0.controlnet.mid_block_res_sample" in loop.t:
        loop.check("step0.window0.controlnet.mid_block_res_sample", seen)
        for i in range(12):
            loop.check(f"step0.window0.controlnet.down_block_res_samples.{i}", seen)
    for step in range(loop.spec["n_steps"]):
        for what in ("timestep", "latents_in", "guided_noise_pred", "latents_out"):
            loop.check(f"step{step}.{what}", seen)
    assert_golden("output.latents", out.latents, loop.t["output.latents"], loop.table)
    assert_golden("output.video", out.frames, loop.t["output.video"], loop.table)


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("section", LOOPS)
@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_every_controlnet_step_matches_from_the_original_latents(golden_dir, section):
    """Each step from the original's latents: its guided prediction and result without earlier steps' drift."""
    loop = Loop(V2VGolden(golden_dir), section)
    _, seen = run_real(loop, teacher_forced=True)
    for step in range(loop.spec["n_steps"]):
        for what in ("latents_in", "guided_noise_pred", "latents_out"):
            loop.check(f"step{step}.{what}", seen)
