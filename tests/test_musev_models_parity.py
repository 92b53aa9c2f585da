"""MuseV models against the goldens of the original implementation: video UNet (both variants, every case and the
block-level intermediates), ReferenceNet and IP-Adapter projection.

The golden weights are written to a temporary folder in the official layout (MuseV UNet pickle + config.json, an SD1.5
base-model folder holding the spatial weights, the ReferenceNet folder, ``ip_adapter_image_proj.bin``) and loaded with
the real loaders. Every size, case, argument and tolerance comes from the golden set's ``config.json``.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import torch
from golden import golden_params, load_config
from safetensors.torch import load_file, save_file

from helpers.pipelines.musev.loading import load_image_projection, load_musev_unet, load_referencenet, spatial_keys
from helpers.pipelines.musev.unet_config import parse_musev_unet_config

GOLDEN_SETS = golden_params("musev")
UNET_SECTIONS = {"unet_musev": "musev", "unet_referencenet": "musev_referencenet"}
CPU = dict(device="cpu", dtype=torch.float32)



# -- golden access ---------------------------------------------------------------------------------------------------
class Golden:
    """One golden file of a set: tensors, the set's config section and its tolerances."""

    def __init__(self, golden_dir: Path, section: str):
        self.config = load_config(golden_dir)
        if section not in self.config:
            pytest.skip(f"{golden_dir} has no '{section}' golden")
        self.section = self.config[section]
        file = golden_dir / self.section.get("file", f"golden_{section}.safetensors")
        self.tensors = load_file(str(file))
        self.tolerances = self.config["tolerances"][section]

    def weights(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def ref(self, text: str) -> torch.Tensor:
        """A tensor named by a config entry (its first word; the rest is a comment)."""
        return self.tensors[text.split()[0]]

    def tensor_list(self, text: str) -> list[torch.Tensor]:
        """``"output.x.0 .. .11 (list of 12)"`` -> the tensors ``output.x.<i>`` in index order."""
        prefix = text.split()[0].rsplit(".", 1)[0] + "."
        found = {int(k[len(prefix):]): v for k, v in self.tensors.items()
                 if k.startswith(prefix) and k[len(prefix):].isdigit()}
        return [found[i] for i in range(len(found))]

    def tolerance(self, name: str) -> tuple[float, float]:
        """``(atol, rtol)`` of the most specific pattern of the tolerance table matching ``name``."""
        matches = [(pattern.split()[0], tol) for pattern, tol in self.tolerances.items()
                   if fnmatch.fnmatchcase(name, pattern.split()[0])]
        if not matches:
            raise KeyError(f"no tolerance for {name} in {sorted(self.tolerances)}")
        _, tol = max(matches, key=lambda m: len(m[0].replace("*", "")))
        return tol["atol"], tol["rtol"]

    def assert_close(self, name: str, actual: torch.Tensor, expected: torch.Tensor | None = None) -> None:
        """The README criterion: ``max|actual - expected| <= atol + rtol * max|expected|``."""
        expected = self.tensors[name] if expected is None else expected
        atol, rtol = self.tolerance(name)
        assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
        error = (actual.double() - expected.double()).abs().max().item()
        bound = atol + rtol * expected.double().abs().max().item()
        assert error <= bound, f"{name}: max abs error {error:.3e} > {bound:.3e} (atol {atol}, rtol {rtol})"


# -- the official on-disk layout, written from golden weights ---------------------------------------------------------
def _write_unet_folder(golden: Golden, root: Path, name: str) -> tuple[Path, Path]:
    """``motion/<name>/unet/{config.json, diffusion_pytorch_model.bin}`` and a base-model folder with the SD keys."""
    prefix = golden.section["weights_prefix"]
    prefix = prefix["unet"] if isinstance(prefix, dict) else prefix
    weights = {k: v.contiguous() for k, v in golden.weights(prefix).items()}
    unet_dir = root / "motion" / name / "unet"
    unet_dir.mkdir(parents=True)
    (unet_dir / "config.json").write_text(json.dumps(golden.section["config"]))
    torch.save(weights, unet_dir / "diffusion_pytorch_model.bin")
    spatial = spatial_keys(parse_musev_unet_config(golden.section["config"]))
    base_unet = root / "base" / "unet"
    base_unet.mkdir(parents=True)
    save_file({k: weights[k] for k in spatial}, str(base_unet / "diffusion_pytorch_model.safetensors"))
    return unet_dir, root / "base"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Models loaded through the real loaders, cached per golden set and section."""
    cache: dict[tuple[Path, str], tuple[Golden, object]] = {}

    def get(golden_dir: Path, section: str):
        key = (golden_dir, section)
        if key not in cache:
            golden = Golden(golden_dir, section)
            root = tmp_path_factory.mktemp(section)
            unet_dir, base = _write_unet_folder(golden, root, UNET_SECTIONS[section])
            cache[key] = golden, load_musev_unet(unet_dir, base_model=base, variant=UNET_SECTIONS[section], **CPU)
        return cache[key]

    return get


# -- UNet cases -----------------------------------------------------------------------------------------------------
def _unet_kwargs(golden: Golden, call: dict) -> dict:
    """The original's forward arguments of a golden case, as this implementation's keyword arguments."""
    kwargs: dict = {"zero_condition_timestep_embedding": False}
    for name, value in call.items():
        if name in ("sample", "timestep", "encoder_hidden_states"):
            kwargs[name] = golden.ref(value) if isinstance(value, str) else value
        elif name == "vision_conditon_frames_sample_index":
            kwargs["condition_frame_index"] = None if value is None else golden.ref(value)
        elif name == "sample_index":
            # the original zeroes condition-frame time embeddings only when it also gets the noisy-frame indices
            kwargs["zero_condition_timestep_embedding"] = value is not None
        elif name == "sample_frame_rate":
            kwargs["motion_speed"] = float(value)
        elif name == "down_block_refer_embs":
            kwargs[name] = None if value is None else golden.tensor_list(value)
        elif name in ("mid_block_refer_emb", "vision_clip_emb"):
            target = "ip_hidden_states" if name == "vision_clip_emb" else name
            kwargs[target] = None if value is None else golden.ref(value)
        elif name in ("skip_temporal_layers", "ip_adapter_scale"):
            kwargs[name] = value
        elif name == "do_classifier_free_guidance":
            pass  # no effect in the original (its attn1 re-run is overwritten before use)
        else:
            raise AssertionError(f"golden call argument {name!r} is not understood by this test")
    return kwargs


def _case_calls(golden: Golden) -> dict[str, dict]:
    """Case name -> full call (cases written as "main with changes" are expanded)."""
    cases = golden.section["cases"]
    calls = {}
    for case, spec in cases.items():
        call = dict(spec["call"])
        changes = call.pop("cases_main_call_with", None)
        if changes is not None:
            call = {**cases["main"]["call"], **changes}
        calls[case] = call
    return calls


def _unet_params():
    """Every golden set x both UNet variants (the sets' skip marks carried over)."""
    return [pytest.param(p.values[0], section, marks=p.marks, id=f"{p.id}-{section}")
            for p in GOLDEN_SETS for section in UNET_SECTIONS]


@pytest.mark.parametrize("golden_dir,section", _unet_params())
def test_unet_cases_match_the_original(loaded, golden_dir, section):
    golden, unet = loaded(golden_dir, section)
    for case, call in _case_calls(golden).items():
        with torch.no_grad():
            out = unet(**_unet_kwargs(golden, call)).sample
        output_name = golden.section["cases"][case]["output"]
        golden.assert_close(output_name, out)


@pytest.mark.parametrize("golden_dir,section", _unet_params())
def test_unet_block_intermediates_match_the_original(loaded, golden_dir, section):
    """Every module output the golden recorded during case ``main`` (frames flattened into the batch)."""
    golden, unet = loaded(golden_dir, section)
    prefix = "intermediate.main."
    names = sorted(k[len(prefix):] for k in golden.tensors if k.startswith(prefix))
    assert names, "the golden set records no intermediates"
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:  # returns None: the output is left as it is
            seen.setdefault(name, output[0] if isinstance(output, tuple) else output)
        return hook

    hooks = [unet.get_submodule(name).register_forward_hook(record(name)) for name in names]
    try:
        with torch.no_grad():
            unet(**_unet_kwargs(golden, _case_calls(golden)["main"]))
    finally:
        for hook in hooks:
            hook.remove()
    for name in names:
        expected = golden.tensors[prefix + name]
        actual = seen[name]
        if actual.ndim == expected.ndim - 1:  # computed once for all batch items (frame embedding)
            actual = actual.expand_as(expected)
        golden.assert_close(prefix + name, actual)


# -- ReferenceNet and IP-Adapter projection ------------------------------------------------------------------------------
@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_referencenet_features_match_the_original(golden_dir, tmp_path):
    golden = Golden(golden_dir, "unet_referencenet")
    folder = tmp_path / "motion" / "musev_referencenet" / "referencenet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(golden.section["referencenet_config"]))
    weights = golden.weights(golden.section["weights_prefix"]["referencenet"])
    torch.save({k: v.contiguous() for k, v in weights.items()}, folder / "diffusion_pytorch_model.bin")
    referencenet = load_referencenet(tmp_path, **CPU)

    call = golden.section["referencenet_call"]
    with torch.no_grad():
        features = referencenet(golden.ref(call["sample"]), golden.ref(call["timestep"]),
                                encoder_hidden_states=golden.ref(call["encoder_hidden_states"]))
    expected = golden.tensor_list("output.referencenet.down_block_refer_embs.0")
    assert len(features.down_block_refer_embs) == len(expected)
    for i, feature in enumerate(features.down_block_refer_embs):
        golden.assert_close(f"output.referencenet.down_block_refer_embs.{i}", feature)
    golden.assert_close("output.referencenet.mid_block_refer_emb", features.mid_block_refer_emb)


def _write_image_proj(golden: Golden, prefix: str, path: Path) -> Path:
    """The official container: a pickle ``{"image_proj": state_dict}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"image_proj": {k: v.contiguous() for k, v in golden.weights(prefix).items()}}, path)
    return path


@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_image_projection_matches_the_original(golden_dir, tmp_path):
    golden = Golden(golden_dir, "ip_adapter_proj")
    proj = load_image_projection(_write_image_proj(golden, golden.section["weights_prefix"],
                                                   tmp_path / "ip_adapter_image_proj.bin"), **CPU)
    embeds = golden.tensors["input.image_embeds"]
    with torch.no_grad():
        golden.assert_close("output.image_prompt_tokens", proj(embeds))
        golden.assert_close("output.image_prompt_tokens", proj(embeds[:, None]))  # [N, 1, E] is accepted too
        zeros = torch.zeros(1, 1, embeds.shape[-1])
        golden.assert_close("output.uncond_image_prompt_tokens", proj(zeros))


@pytest.mark.parametrize("golden_dir", GOLDEN_SETS)
def test_ip_tokens_of_the_referencenet_golden_are_recomputed(golden_dir, tmp_path):
    """``input.ip_tokens`` = [proj(0), proj(clip)] with the set's projection weights."""
    from helpers.pipelines.musev.ip_adapter import image_prompt_tokens

    golden = Golden(golden_dir, "unet_referencenet")
    path = _write_image_proj(golden, golden.section["weights_prefix"]["image_proj"], tmp_path / "proj.bin")
    proj = load_image_projection(path, **CPU)
    with torch.no_grad():
        uncond, cond = image_prompt_tokens(proj, golden.tensors["input.clip_image_embeds"])
    golden.assert_close("input.ip_tokens", torch.cat([uncond, cond]))
