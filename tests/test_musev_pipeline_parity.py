"""MuseV pipeline parity with the original's recorded denoising loops (goldens e1 ``pipeline_musev`` and e2
``pipeline_referencenet``), at the tolerances of the golden set's ``config.json``.

Two levels:

- *loop replay*: the UNet and ReferenceNet are stand-ins that return the outputs the original recorded at step 0,
  so everything the pipeline itself computes (noise, condition/reference latents, IP tokens, windows, UNet inputs,
  averaging, guidance, the Euler step) is compared, independently of the models;
- *full run*: the real MuseV models loaded with the golden weights, every step and the decoded video.
"""

from __future__ import annotations

import fnmatch
from types import SimpleNamespace

import pytest
import torch
from golden import golden_params, load_config
from safetensors.torch import load_file

from helpers.pipelines.musev.noise import add_condition_prior, video_fusion_noise
from helpers.pipelines.musev.pipeline import MuseVPipeline

VARIANTS = {  # config section -> golden file of the loop
    "pipeline_musev": "golden_pipeline_musev.safetensors",
    "pipeline_referencenet": "golden_pipeline_referencenet.safetensors",
}





# ------------------------------------------------------------------------------------------------- golden helpers


def tolerance(table: dict, name: str) -> tuple[float, float]:
    """(atol, rtol) for tensor ``name`` from a tolerance table whose keys look like
    ``"intermediate.step*.latents_in|latents_out, output.latents"`` (``|`` swaps the last dotted part, or the last
    two: ``"x.down_block_refer_embs.*|mid_block_refer_emb"`` also names ``x.mid_block_refer_emb``)."""
    for key, value in table.items():
        for alternative in key.split(", "):
            head, *swaps = alternative.split("|")
            stems = [head.rsplit(".", k)[0] for k in (1, 2) if head.count(".") >= k]
            patterns = [head] + [f"{stem}.{swap}" for swap in swaps for stem in stems]
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                return float(value["atol"]), float(value["rtol"])
    raise KeyError(f"no tolerance for {name} in {sorted(table)}")


def assert_golden(name: str, actual, expected: torch.Tensor, table: dict) -> None:
    """The golden criterion: max|actual - expected| <= atol + rtol * max|expected|."""
    atol, rtol = tolerance(table, name)
    actual = torch.as_tensor(actual).detach().double().cpu()
    expected = expected.double()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual - expected).abs().max().item()
    bound = atol + rtol * expected.abs().max().item()
    assert error <= bound, f"{name}: max error {error:.3g} > {bound:.3g} (atol {atol}, rtol {rtol})"


def strip_prefix(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


class Golden:
    """One golden loop: its config section, its tensors and the shared model weights."""

    def __init__(self, golden_dir, section: str):
        self.dir = golden_dir
        self.config = load_config(golden_dir)
        self.section = section
        self.spec = self.config[section]
        self.call = self.spec["call"]
        self.table = self.config["tolerances"][section]
        self.tensors = load_file(str(golden_dir / VARIANTS[section]))
        self.referencenet = section == "pipeline_referencenet"

    def weights(self, file: str, prefix: str) -> dict:
        return strip_prefix(load_file(str(self.dir / file)), prefix)

    def vae(self):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL(**self.spec["vae_config"]).eval()
        prefix = self.config["pipeline_musev"]["vae_weights_prefix"]
        vae.load_state_dict(self.weights(VARIANTS["pipeline_musev"], prefix), strict=True)
        return vae

    def scheduler(self):
        import diffusers

        return getattr(diffusers, self.spec["scheduler"]).from_config(self.spec["scheduler_config"])

    def image_proj(self):
        from helpers.pipelines.musev.ip_adapter import build_image_projection, convert_image_projection_state_dict

        conf = self.config["unet_referencenet"]["image_proj_config"]
        proj = build_image_projection(conf["clip_embeddings_dim"], conf["cross_attention_dim"],
                                      conf["clip_extra_context_tokens"]).eval()
        prefix = self.config["unet_referencenet"]["weights_prefix"]["image_proj"]
        proj.load_state_dict(convert_image_projection_state_dict(
            self.weights("golden_unet_referencenet.safetensors", prefix)), strict=True)
        return proj

    def initial_noise(self, condition_latent: torch.Tensor) -> torch.Tensor:
        """The original's recipe on the recorded draws (unscaled; the pipeline scales by init_noise_sigma)."""
        noise = video_fusion_noise(tuple(self.tensors["input.noise_individual"].shape),
                                   w_ind_noise=self.call["w_ind_noise"], common=self.tensors["input.noise_common"],
                                   individual=self.tensors["input.noise_individual"])
        return add_condition_prior(noise, condition_latent, self.call["img_weight"])

    def call_kwargs(self) -> dict:
        t = self.tensors
        kwargs = dict(
            prompt_embeds=t["input.prompt_embeds"], negative_prompt_embeds=t["input.negative_prompt_embeds"],
            height=self.call["height"], width=self.call["width"], time_size=self.call["video_length"],
            num_inference_steps=self.call["num_inference_steps"], guidance_scale=self.call["guidance_scale"],
            motion_speed=self.call["motion_speed"], context_frames=self.call["context_frames"],
            context_overlap=self.call["context_overlap"], context_schedule=self.call["context_schedule"],
            w_ind_noise=self.call["w_ind_noise"], img_weight=self.call["img_weight"], output_type="pt",
        )
        if self.referencenet:
            image = t["input.image"]
            assert torch.equal(image, image.round()), "the golden condition image must hold integer pixel values"
            kwargs.update(image=image, clip_image_embeds=t["input.clip_image_embeds"],
                          ip_adapter_scale=self.call["ip_adapter_scale"])
            condition_latent = t["intermediate.cond_latent"]
        else:
            kwargs.update(condition_latents=t["input.cond_latent"])
            condition_latent = t["input.cond_latent"]
        kwargs["latents"] = self.initial_noise(condition_latent)
        return kwargs


# ------------------------------------------------------------------------------------------------- stand-ins


class _StandIn(torch.nn.Module):
    """Records its calls; reports the device/dtype a pipeline asks its components for."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []
        self.dtype, self.device = torch.float32, torch.device("cpu")


class ReplayUNet(_StandIn):
    """Returns, call by call, the UNet outputs the original recorded at step 0."""

    def __init__(self, outputs: list[torch.Tensor], is_referencenet_variant: bool):
        super().__init__()
        self.outputs = outputs
        self.is_referencenet_variant = is_referencenet_variant

    def forward(self, sample, timestep, encoder_hidden_states, **kwargs):
        self.calls.append(dict(sample=sample.clone(), timestep=timestep, text=encoder_hidden_states, **kwargs))
        return SimpleNamespace(sample=self.outputs[len(self.calls) - 1].clone())


class ReplayReferenceNet(_StandIn):
    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, sample, timestep, encoder_hidden_states):
        self.calls.append(dict(sample=sample, timestep=timestep, encoder_hidden_states=encoder_hidden_states))
        return self.features


class _StopAfterFirstStep(Exception):
    pass


def _stop_after_first_step(pipe, step, timestep, tensors):
    raise _StopAfterFirstStep


def _recorded_features(tensors: dict):
    down = [tensors[f"intermediate.referencenet.down_block_refer_embs.{i}"] for i in range(12)]
    return SimpleNamespace(down_block_refer_embs=down, mid_block_refer_emb=tensors[
        "intermediate.referencenet.mid_block_refer_emb"])


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parity
@pytest.mark.parametrize("section", list(VARIANTS))
@pytest.mark.parametrize("golden_dir", golden_params("musev"))
def test_first_step_of_the_loop_matches_the_original(golden_dir, section):
    golden = Golden(golden_dir, section)
    t = golden.tensors
    windows = [window for batch in golden.spec["windows"] for window in batch]
    unet = ReplayUNet([t[f"intermediate.step0.window{k}.unet_out"] for k in range(len(windows))],
                      golden.referencenet)
    referencenet = ReplayReferenceNet(_recorded_features(t)) if golden.referencenet else None
    pipe = MuseVPipeline(vae=golden.vae(), text_encoder=None, tokenizer=None, unet=unet, scheduler=golden.scheduler(),
                         referencenet=referencenet, image_proj=golden.image_proj() if golden.referencenet else None)
    seen: dict = {}
    with pytest.raises(_StopAfterFirstStep):
        pipe(**golden.call_kwargs(), callback_on_step_end=_stop_after_first_step,
             trace=lambda name, value: seen.__setitem__(name, value))

    assert_golden("intermediate.sigmas", seen["sigmas"], t["intermediate.sigmas"], golden.table)
    assert_golden("intermediate.step0.timestep", seen["step0.timestep"], t["intermediate.step0.timestep"],
                  golden.table)
    assert seen["step0.timestep"].item() == golden.spec["timesteps"][0]
    assert_golden("intermediate.latents_init", seen["latents_init"], t["intermediate.latents_init"], golden.table)
    assert len(unet.calls) == golden.spec["unet_calls_per_step"] == len(windows)
    text = torch.cat([t["input.negative_prompt_embeds"], t["input.prompt_embeds"]])
    for k, (call, window) in enumerate(zip(unet.calls, windows)):
        name = f"intermediate.step0.window{k}"
        assert_golden(f"{name}.unet_sample", call["sample"], t[f"{name}.unet_sample"], golden.table)
        # the noisy frames sit at positions 1..n behind the condition frame (the original's sample_index)
        positions = torch.arange(1, call["sample"].shape[2])
        assert torch.equal(positions, t[f"{name}.sample_index"]) and len(window) == len(positions)
        assert call["condition_frame_index"] == [0]
        assert call["motion_speed"] == golden.call["motion_speed"]
        assert torch.equal(call["text"], text)
        assert float(call["timestep"]) == golden.spec["timesteps"][0]
        if golden.referencenet:
            assert call["down_block_refer_embs"] is referencenet.features.down_block_refer_embs
            assert call["ip_adapter_scale"] == golden.call["ip_adapter_scale"]
            assert_golden("intermediate.ip_tokens", call["ip_hidden_states"], t["intermediate.ip_tokens"],
                          golden.table)
        else:
            assert "down_block_refer_embs" not in call and "ip_hidden_states" not in call
    assert_golden("intermediate.step0.guided_noise_pred", seen["step0.guided_noise_pred"],
                  t["intermediate.step0.guided_noise_pred"], golden.table)
    assert_golden("intermediate.step0.latents_out", seen["step0.latents_out"], t["intermediate.step0.latents_out"],
                  golden.table)

    if golden.referencenet:
        for name in ("cond_latent", "refer_latent", "ip_tokens"):
            assert_golden(f"intermediate.{name}", seen[name], t[f"intermediate.{name}"], golden.table)
        (ref_call,) = referencenet.calls
        assert float(ref_call["timestep"]) == float(t["intermediate.referencenet.timestep"])
        assert_golden("intermediate.refer_latent", ref_call["sample"], t["intermediate.refer_latent"], golden.table)
        assert_golden("intermediate.ip_tokens", ref_call["encoder_hidden_states"], t["intermediate.ip_tokens"],
                      golden.table)


@pytest.mark.parity
@pytest.mark.parametrize("section", list(VARIANTS))
@pytest.mark.parametrize("golden_dir", golden_params("musev"))
def test_decoding_matches_the_original(golden_dir, section):
    golden = Golden(golden_dir, section)
    pipe = MuseVPipeline(vae=golden.vae(), text_encoder=None, tokenizer=None, unet=None, scheduler=None)
    latents = golden.tensors["output.latents"]
    chunk = max(1, latents.shape[2] // 3)  # several chunks, the last one partial
    video = torch.cat(list(pipe.decode_latents(latents, chunk_size=chunk)), dim=2)
    assert_golden("output.video", video, golden.tensors["output.video"], golden.table)


# ------------------------------------------------------------------------------------------------- full run


def _real_models(golden: Golden):
    """The MuseV models with the golden weights (skips while the model code is not importable)."""
    try:
        from helpers.pipelines.musev.referencenet import MuseVReferenceNet
        from helpers.pipelines.musev.unet import MuseVUNet3DConditionModel
        from helpers.pipelines.musev.unet_config import parse_musev_unet_config
    except ImportError as exc:  # the model code lands separately
        pytest.skip(f"MuseV model code not importable yet: {exc}")
    key = "unet_referencenet" if golden.referencenet else "unet_musev"
    file = f"golden_{key}.safetensors"
    prefixes = golden.config[key]["weights_prefix"]
    unet = MuseVUNet3DConditionModel(**parse_musev_unet_config(golden.config[key]["config"])).eval()
    unet.load_state_dict(golden.weights(file, prefixes if isinstance(prefixes, str) else prefixes["unet"]),
                         strict=True)
    referencenet = None
    if golden.referencenet:
        referencenet = MuseVReferenceNet.from_musev_config(golden.config[key]["referencenet_config"]).eval()
        referencenet.load_state_dict(golden.weights(file, prefixes["referencenet"]), strict=True)
    return unet, referencenet


_RUNS: dict = {}


def _run_real(golden: Golden, teacher_forced: bool = False):
    """Run the pipeline with the real models (once per golden loop and mode; tests share the result).
    Teacher-forced: each step restarts from the original's latents."""
    key = (str(golden.dir), golden.section, teacher_forced)
    if key not in _RUNS:
        _RUNS[key] = _run_real_uncached(golden, teacher_forced)
    return _RUNS[key]


def _run_real_uncached(golden: Golden, teacher_forced: bool):
    unet, referencenet = _real_models(golden)
    pipe = MuseVPipeline(vae=golden.vae(), text_encoder=None, tokenizer=None, unet=unet, scheduler=golden.scheduler(),
                         referencenet=referencenet, image_proj=golden.image_proj() if golden.referencenet else None)
    seen: dict = {}

    def restart_from_original(pipe, step, timestep, tensors):
        return {"latents": golden.tensors[f"intermediate.step{step}.latents_out"].clone()}

    kwargs = {**golden.call_kwargs(), "output_type": "latent" if teacher_forced else "pt"}
    out = pipe(**kwargs, decode_chunk_size=3, trace=lambda name, value: seen.__setitem__(name, value),
               callback_on_step_end=restart_from_original if teacher_forced else None)
    return out, seen


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("section", list(VARIANTS))
@pytest.mark.parametrize("golden_dir", golden_params("musev"))
def test_full_run_matches_the_original(golden_dir, section):
    """Free-running: features, initial noise, step-0 windows, every step's latents and guided prediction, final
    latents and video."""
    golden = Golden(golden_dir, section)
    t = golden.tensors
    out, seen = _run_real(golden)
    if golden.referencenet:
        features = seen["referencenet"]
        for i, feature in enumerate(features.down_block_refer_embs):
            name = f"intermediate.referencenet.down_block_refer_embs.{i}"
            assert_golden(name, feature, t[name], golden.table)
        name = "intermediate.referencenet.mid_block_refer_emb"
        assert_golden(name, features.mid_block_refer_emb, t[name], golden.table)
    assert_golden("intermediate.latents_init", seen["latents_init"], t["intermediate.latents_init"], golden.table)
    windows = [window for batch in golden.spec["windows"] for window in batch]
    for k in range(len(windows)):
        for what in ("unet_sample", "unet_out"):
            name = f"intermediate.step0.window{k}.{what}"
            assert_golden(name, seen[f"step0.window{k}.{what}"], t[name], golden.table)
    for step in range(golden.spec["n_steps"]):
        for what in ("timestep", "latents_in", "guided_noise_pred", "latents_out"):
            name = f"intermediate.step{step}.{what}"
            assert_golden(name, seen[f"step{step}.{what}"], t[name], golden.table)
    assert_golden("output.latents", out.latents, t["output.latents"], golden.table)
    assert_golden("output.video", out.frames, t["output.video"], golden.table)


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize("section", list(VARIANTS))
@pytest.mark.parametrize("golden_dir", golden_params("musev"))
def test_every_step_matches_from_the_original_latents(golden_dir, section):
    """Teacher-forced: each step starts from the original's latents, so its guided prediction and its result are
    compared without the drift of earlier steps."""
    golden = Golden(golden_dir, section)
    _, seen = _run_real(golden, teacher_forced=True)
    for step in range(golden.spec["n_steps"]):
        for what in ("latents_in", "guided_noise_pred", "latents_out"):
            name = f"intermediate.step{step}.{what}"
            assert_golden(name, seen[f"step{step}.{what}"], golden.tensors[name], golden.table)
