"""Every official key, at full size, through the production load functions of each method.

The manifests in ``tests/manifests/`` list each official file's keys and shapes. Their tensors are built on the meta
device (no memory, no time), fed to the same functions a real load runs, and the models come out on the meta device.
Beside the clean load: an injected extra entry (loaded past with one warning and a sidecar note where the original
loads past it, refused where it does not), a missing key and a wrong shape (always refused, naming the key).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import load_policy
from helpers.errors import StrictLoadError

MANIFESTS = Path(__file__).parent / "manifests"


def manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def meta(shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.empty(tuple(v), device="meta") for k, v in shapes.items()}


def zeros(shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(tuple(v)) for k, v in shapes.items()}


def first_weight(shapes: dict) -> str:
    return next(k for k, v in shapes.items() if k.endswith(".weight") and len(v) >= 2)


def damaged(tensors: dict, case: str, key: str | None = None) -> tuple[dict, str]:
    """``tensors`` with one key (default: the first weight) removed or its shape changed; returns it and the key."""
    tensors, key = dict(tensors), key or first_weight(tensors)
    if case == "missing":
        del tensors[key]
    else:
        shape = list(tensors[key].shape)
        tensors[key] = torch.empty([shape[0] + 1, *shape[1:]], device=tensors[key].device)
    return tensors, key


@pytest.fixture(autouse=True)
def _fresh_notes():
    load_policy.clear()
    yield
    load_policy.clear()


def assert_full_size(model: torch.nn.Module, shapes: dict, dtype: torch.dtype) -> None:
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v) for k, v in shapes.items()}
    assert all(v.dtype == dtype for v in state.values() if v.is_floating_point())


# -- ControlNeXt-SVD -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v2", "v1"])
def test_controlnext_unet_full_size(version):
    from helpers.pipelines.controlnext_svd.loading import SVD_XT_UNET_CONFIG, unet_from_state_dict

    shapes = manifest(f"controlnext_svd_{version}")["unet"]
    unet = unet_from_state_dict(meta(shapes), SVD_XT_UNET_CONFIG, torch.float16)
    assert_full_size(unet, shapes, torch.float16)
    assert all(p.is_meta for p in unet.parameters())

    with pytest.warns(load_policy.IgnoredKeysWarning, match="num_batches_tracked") as seen:
        extra = {**meta(shapes), "conv_norm_out.num_batches_tracked": torch.empty((), device="meta")}
        unet = unet_from_state_dict(extra, SVD_XT_UNET_CONFIG, torch.float16, what="UNet with an extra buffer")
    assert len(seen) == 1 and "num_batches_tracked" not in unet.state_dict()
    assert load_policy.notes()["UNet with an extra buffer"]["ignored_keys"] == ["conv_norm_out.num_batches_tracked"]

    for case in ("missing", "shape"):
        broken, key = damaged(meta(shapes), case)
        with pytest.raises(StrictLoadError, match=key.replace(".", r"\.")):
            unet_from_state_dict(broken, SVD_XT_UNET_CONFIG, torch.float16)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_controlnext_pose_encoder_full_size(version):
    """The 3.5M-parameter encoder is small: real zero tensors (the original loads it strictly, so do we)."""
    from helpers.pipelines.controlnext_svd.loading import controlnext_from_state_dict

    shapes = manifest(f"controlnext_svd_{version}")["controlnext"]
    encoder = controlnext_from_state_dict(zeros(shapes), expected_version=version)
    assert_full_size(encoder, shapes, torch.float32)
    for extra in ({"extra.weight": torch.zeros(1)},):
        with pytest.raises(StrictLoadError, match="extra.weight"):
            controlnext_from_state_dict({**zeros(shapes), **extra}, expected_version=version)
    other = "v1" if version == "v2" else "v2"
    with pytest.raises(StrictLoadError, match=f"is a {version} file but {other} was asked for"):
        controlnext_from_state_dict(zeros(shapes), expected_version=other)
    for case in ("missing", "shape"):
        # a weight the widths are not read from (those are checked through the widths they give)
        broken, key = damaged(zeros(shapes), case, "down_res.0.conv2.weight")
        with pytest.raises(StrictLoadError, match=key.replace(".", r"\.")):
            controlnext_from_state_dict(broken, expected_version=version)


# -- MuseV ---------------------------------------------------------------------------------------------------------
class _ManifestCheckpoint:
    """Stands in for the file reader of ``musev.loading``: serves the shapes registered for a path as meta tensors."""

    tables: dict[str, dict] = {}

    def __init__(self, path: Path):
        self.path = path
        self.shapes = {k: tuple(v) for k, v in self.tables[str(path)].items()}

    def read(self, keys):
        return {k: torch.empty(self.shapes[k], device="meta") for k in keys}


@pytest.fixture
def musev_files(tmp_path, monkeypatch):
    from helpers.pipelines.musev import loading

    monkeypatch.setattr(loading, "_Checkpoint", _ManifestCheckpoint)
    monkeypatch.setattr(_ManifestCheckpoint, "tables", {})

    def place(name: str, shapes: dict, file: str = "diffusion_pytorch_model.safetensors") -> Path:
        path = tmp_path / name / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # the loaders find files on disk; their tensors come from the manifest
        _ManifestCheckpoint.tables[str(path)] = shapes
        return path

    return place


@pytest.mark.parametrize(("section", "variant"), [("musev_unet", "musev"),
                                                  ("musev_referencenet_unet", "musev_referencenet")])
def test_musev_unet_full_size_with_and_without_the_base_model(musev_files, section, variant):
    from helpers.pipelines.musev.loading import load_musev_unet

    tables = manifest("musev")
    shapes, sd15 = tables[section]["keys"], tables["sd15_unet_reference"]["keys"]
    unet_file = musev_files(f"{variant}/unet", shapes)
    base = musev_files("sd15/unet", sd15)
    for base_model in (None, base):
        unet = load_musev_unet(unet_file, base_model, variant=variant, device="meta", dtype=torch.float16)
        assert_full_size(unet, shapes, torch.float16)

    musev_files(f"{variant}/extra", {**shapes, "global_step": ()})
    with pytest.warns(load_policy.IgnoredKeysWarning, match="global_step"):
        load_musev_unet(unet_file.parent.parent / "extra" / unet_file.name, variant=variant, device="meta")
    for case in ("missing", "shape"):
        broken, key = damaged(meta(shapes), case)
        path = musev_files(f"{variant}/{case}", {k: tuple(v.shape) for k, v in broken.items()})
        with pytest.raises(StrictLoadError, match=key.replace(".", r"\.")):
            load_musev_unet(path, variant=variant, device="meta")


def test_musev_referencenet_and_image_projection_full_size(musev_files):
    from helpers.pipelines.musev.loading import load_image_projection, load_referencenet

    tables = manifest("musev")
    shapes = tables["referencenet"]["keys"]
    referencenet = load_referencenet(musev_files("referencenet", shapes), device="meta", dtype=torch.float16)
    assert_full_size(referencenet, shapes, torch.float16)
    projection_shapes = {f"image_proj.{k}": v for k, v in tables["ip_adapter_image_proj"]["keys"].items()}
    projection = load_image_projection(musev_files("ip", projection_shapes, "ip_adapter_image_proj.safetensors"),
                                       device="meta", dtype=torch.float16)
    assert sum(p.numel() for p in projection.parameters()) == tables["ip_adapter_image_proj"]["n_params"]
    # the original loads these two strictly: an extra entry is refused, as are missing keys and wrong shapes
    with pytest.raises(StrictLoadError, match="extra.weight"):
        load_referencenet(musev_files("referencenet_extra", {**shapes, "extra.weight": (1,)}), device="meta")
    for case in ("missing", "shape"):
        broken, key = damaged(meta(shapes), case)
        path = musev_files(f"referencenet_{case}", {k: tuple(v.shape) for k, v in broken.items()})
        with pytest.raises(StrictLoadError, match=key.replace(".", r"\.")):
            load_referencenet(path, device="meta")


# -- ID-Animator ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def id_animator_parts():
    """The full-size SD1.5 UNet (official spatial keys assigned) and motion adapter, on meta."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    from helpers.pipelines.id_animator import convert_motion_module_checkpoint
    from helpers.testing import id_animator as tiny

    tables = manifest("id_animator")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**tiny.SD15_UNET_CONFIG)
        adapter = MotionAdapter(**tiny.MOTION_V2_CONFIG)
    unet.load_state_dict(meta(tables["unet_spatial_diffusers_naming"]["keys"]), strict=True, assign=True)
    adapter.load_state_dict(convert_motion_module_checkpoint(meta(tables["mm_sd_v15_v2.ckpt"]["keys"])), strict=True,
                            assign=True)
    return tables, unet, adapter, tiny.VIT_H_CONFIG["hidden_size"]


def test_id_animator_full_size_assembly(id_animator_parts):
    from helpers.pipelines.id_animator import convert_animator_checkpoint, face_adapter_targets
    from helpers.pipelines.id_animator.loading import motion_unet

    tables, unet2d, adapter, embed_dim = id_animator_parts
    combined = motion_unet(unet2d, adapter)
    assert len(combined.state_dict()) == len(unet2d.state_dict()) + len(adapter.state_dict())
    targets = face_adapter_targets(unet2d)
    animator = tables["animator.ckpt"]
    nested = {f"{part}.{k}": v for part, table in animator["layouts"]["nested"].items() for k, v in table.items()}
    weights = convert_animator_checkpoint(meta(nested), targets, embed_dim)
    assert len(weights.ip_adapter) + len(weights.lora) == sum(animator["num_tensors"].values())

    with pytest.warns(load_policy.IgnoredKeysWarning, match="global_step"):
        again = convert_animator_checkpoint({**meta(nested), "global_step": torch.empty((), device="meta")},
                                            targets, embed_dim)
    assert sorted(again.lora) == sorted(weights.lora)
    for case in ("missing", "shape"):
        broken, key = damaged(meta(nested), case)
        with pytest.raises(StrictLoadError, match=key.split(".", 1)[1].replace(".", r"\.")):
            convert_animator_checkpoint(broken, targets, embed_dim)

