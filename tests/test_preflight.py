"""Pre-flight after a download: each checkpoint against what its loader builds, the file and the fix named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import preflight, registry, setup_ui, weights
from helpers.testing.controlnext import write_tiny_controlnext_packs

MANIFESTS = Path(__file__).parent / "manifests"


def _official_encoder(version: str) -> dict[str, torch.Tensor]:
    shapes = json.loads((MANIFESTS / f"controlnext_svd_{version}.json").read_text())["controlnext"]
    return {k: torch.zeros(tuple(v), dtype=torch.float16) for k, v in shapes.items()}


def _pickle_entry(root: Path, pack: str, role: str) -> Path:
    return root / "models" / pack / role / registry.PACKS[pack].roles[role].candidates[0].entry


def _replace_pickle(path: Path, tensors: dict) -> None:
    torch.save(tensors, path)
    path.with_name(path.name.split(".")[0] + ".fp16.safetensors").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    write_tiny_controlnext_packs(root, "v2")
    write_tiny_controlnext_packs(root, "v1")
    return root


def test_files_that_load_pass(tiny_root):
    findings = preflight.check(["controlnext_svd_v2", "controlnext_svd_v1"], tiny_root)
    assert {(f.pack, f.role) for f in findings} == {(p, r) for p in ("controlnext_svd_v2", "controlnext_svd_v1")
                                                   for r in ("unet", "controlnext")}
    assert all(f.ok for f in findings), preflight.format_findings(findings)


def test_v1_encoder_served_with_v2_shapes_is_named_with_what_to_fetch(tmp_path):
    """The known report: ``finetune/controlnet.bin`` of v1 once held the v2 encoder (full-size shapes here)."""
    write_tiny_controlnext_packs(tmp_path, "v1")
    _replace_pickle(_pickle_entry(tmp_path, "controlnext_svd_v1", "controlnext"), _official_encoder("v2"))
    (finding,) = preflight.check(["controlnext_svd_v1/controlnext"], tmp_path)
    assert not finding.ok and finding.file.name == "controlnet.fp16.safetensors"
    assert "is a v2 pose encoder, not the v1 one" in finding.problem
    assert "ControlNeXt-SVD/finetune/controlnet.bin from Pbihao/ControlNeXt" in finding.fix
    assert "weights.download(['controlnext_svd_v1/controlnext'], recheck=True)" in finding.fix


def test_full_size_official_encoders_fit_their_own_pack(tmp_path):
    for version in ("v1", "v2"):
        write_tiny_controlnext_packs(tmp_path, version)
        _replace_pickle(_pickle_entry(tmp_path, f"controlnext_svd_{version}", "controlnext"), _official_encoder(version))
        (finding,) = preflight.check([f"controlnext_svd_{version}/controlnext"], tmp_path)
        assert finding.ok, finding.line()


def test_unet_with_a_missing_key_is_refused_and_an_extra_one_noted(tmp_path):
    write_tiny_controlnext_packs(tmp_path, "v2")
    unet_file = _pickle_entry(tmp_path, "controlnext_svd_v2", "unet")
    state = torch.load(unet_file, weights_only=True)
    extra = {**state, "conv_norm_out.num_batches_tracked": torch.tensor(0)}
    _replace_pickle(unet_file, extra)
    (finding,) = preflight.check(["controlnext_svd_v2/unet"], tmp_path)
    assert finding.ok and "conv_norm_out.num_batches_tracked" in finding.line()
    del state["conv_out.bias"]
    _replace_pickle(unet_file, state)
    (finding,) = preflight.check(["controlnext_svd_v2/unet"], tmp_path)
    assert not finding.ok and "missing (1): conv_out.bias" in finding.problem
    assert "ControlNeXt-SVD/v2/unet.bin from Pbihao/ControlNeXt" in finding.fix


def test_download_ends_with_the_check_and_the_setup_form_shows_it(tmp_path):
    """The whole setup path: a hub serving the mixed-up v1 file, ``weights.download``, then the form's message."""
    from helpers.testing.fake_hub import FakeHub
    from helpers.testing.smoke_hub import repos_from_packs

    staging = tmp_path / "staging"
    write_tiny_controlnext_packs(staging, "v1")
    _replace_pickle(_pickle_entry(staging, "controlnext_svd_v1", "controlnext"), _official_encoder("v2"))
    hub = FakeHub.from_folder(repos_from_packs(staging, tmp_path / "repos")).start()
    try:
        with hub.activated(), pytest.warns(preflight.PreflightWarning, match="is a v2 pose encoder"):
            weights.download(["controlnext_svd_v1", "svd_xt_1_1"], root=tmp_path / "root", progress=False)
    finally:
        hub.stop()
    message = setup_ui.preflight_html(preflight.last_findings)
    assert "1 file(s) are not what the method needs" in message and "controlnext_svd_v1/controlnext" in message
    assert setup_ui.preflight_html([f for f in preflight.last_findings if f.ok]) == ""
