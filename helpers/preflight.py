"""Pre-flight check after a download: is each checkpoint the file its method needs?

For every checkpoint role of the packs just fetched, the keys and shapes of the file (read from the safetensors
header; pickles are checked through the fp16 safetensors ``weights.resolve`` converts them to) go through the same
checks the loader runs, on the meta device: nothing is loaded into memory and no weight is read. A file that would
not load is reported with what is wrong and what to fetch instead, before any task notebook opens it. Entries a load
would leave out (as the originals do) are listed as notes.

>>> findings = check(["pose_to_dance"])
>>> print(format_findings(findings))
controlnext_svd_v1/controlnext: controlnet.fp16.safetensors is a v2 pose encoder, not v1 — delete it and fetch …
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import load_policy, registry
from helpers.errors import HelpersError, MissingWeightsError, StrictLoadError


class WrongFile(HelpersError):
    """The file is a different checkpoint than the role needs (the message says which)."""


@dataclass(frozen=True)
class Finding:
    """One checked file: ``problem`` is empty when it loads; ``notes`` lists entries a load would leave out."""

    pack: str
    role: str
    file: Path
    problem: str = ""
    fix: str = ""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problem

    def line(self) -> str:
        if self.ok:
            extra = f" ({'; '.join(self.notes)})" if self.notes else ""
            return f"{self.pack}/{self.role}: {self.file.name} fits{extra}"
        return f"{self.pack}/{self.role}: {self.file.name} {self.problem} — {self.fix}"


def file_shapes(path: Path) -> dict[str, tuple]:
    """``{key: shape}`` of a safetensors file from its header alone."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}


def on_meta(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in shapes.items()}


def _source(pack: str, role: str) -> str:
    candidate = registry.PACKS[pack].roles[role].candidates[0]
    where = getattr(candidate, "label", "")
    what = getattr(candidate, "entry", "") or ", ".join(getattr(candidate, "files", ()))
    return f"{what} from {where}" if what else where


def _fix(pack: str, role: str) -> str:
    return (f"delete it and fetch {_source(pack, role)} again: weights.download(['{pack}/{role}'], recheck=True) "
            f"(or the setup notebook)")


# -- per-role checks: each raises StrictLoadError (with the reason) where the loader would refuse the file ----------
def _controlnext_unet(pack: str, path: Path, root) -> None:
    from helpers import weights
    from helpers.pipelines.controlnext_svd.loading import SVD_XT_UNET_CONFIG, unet_config, unet_from_state_dict

    try:
        config = unet_config(weights.resolve("svd_xt_1_1", "components", root))
    except MissingWeightsError:
        config = dict(SVD_XT_UNET_CONFIG)
    unet_from_state_dict(on_meta(file_shapes(path)), config, torch.float16, what=f"{pack} UNet {path.name}")


def _controlnext_encoder(pack: str, path: Path, root) -> None:
    from helpers.pipelines.controlnext_svd.encoder import ControlNeXtEncoder, config_from_state_dict, detect_version

    version = pack.rsplit("_", 1)[-1]
    tensors = on_meta(file_shapes(path))
    found = detect_version(tensors)
    if found != version:
        raise WrongFile(f"is a {found} pose encoder, not the {version} one this pack needs (its keys and shapes are "
                        f"the {found} ones)")
    config = config_from_state_dict(tensors, f"{pack} pose encoder {path.name}")
    with torch.device("meta"):
        expected = ControlNeXtEncoder(**config).state_dict()
    load_policy.enforce(f"{pack} pose encoder {path.name}", expected, tensors)


def _musev_unet(_pack: str, path: Path, _root) -> None:
    from helpers.pipelines.musev import loading
    from helpers.pipelines.musev.unet import MuseVUNet3DConditionModel

    file = loading._find_file(path, loading.WEIGHT_FILE_NAMES, "unet", "MuseV UNet")
    shapes = file_shapes(file)
    config, variant = loading._unet_config(file, None, shapes)
    with torch.device("meta"):
        expected = loading._shapes(MuseVUNet3DConditionModel(**config))
    loading._strict_check(f"MuseV UNet {file.name} ({variant})", expected, shapes, ignore_unexpected=True)


def _musev_referencenet(_pack: str, path: Path, _root) -> None:
    from helpers.pipelines.musev import loading
    from helpers.pipelines.musev.referencenet import MuseVReferenceNet

    file = loading._find_file(path, loading.WEIGHT_FILE_NAMES, "referencenet", "MuseV ReferenceNet")
    raw = loading._read_json(file.parent / "config.json")
    with torch.device("meta"):
        model = MuseVReferenceNet.from_musev_config(raw) if raw else MuseVReferenceNet(**loading.REFERENCENET_SD15_CONFIG)
    loading._strict_check(f"MuseV ReferenceNet {file.name}", loading._shapes(model), file_shapes(file))


def _musev_image_projection(_pack: str, path: Path, _root) -> None:
    from helpers.pipelines.musev import loading
    from helpers.pipelines.musev.ip_adapter import (
        build_image_projection,
        convert_image_projection_state_dict,
        image_projection_dims,
    )

    file = loading._find_file(path, loading.IMAGE_PROJ_FILE_NAMES, None, "IP-Adapter image projection")
    state = convert_image_projection_state_dict(on_meta(file_shapes(file)))
    try:
        dims = image_projection_dims(state)
    except KeyError as err:
        raise StrictLoadError(f"IP-Adapter image projection {file.name}", missing=[str(err)]) from err
    with torch.device("meta"):
        expected = build_image_projection(*dims).state_dict()
    load_policy.enforce(f"IP-Adapter image projection {file.name}", expected, state)


def _id_animator(_pack: str, path: Path, root) -> None:
    import json

    from diffusers import UNet2DConditionModel

    from helpers import weights
    from helpers.pipelines.id_animator.convert import convert_animator_checkpoint, face_adapter_targets

    sd15 = weights.resolve("sd15", "base", root)  # MissingWeightsError: checked once sd15 is there
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(sd15), subfolder="unet"))
    try:
        encoder = weights.resolve("id_animator", "image_encoder", root)
        embed_dim = json.loads((Path(encoder) / "config.json").read_text())["hidden_size"]
    except (MissingWeightsError, OSError, KeyError):
        embed_dim = 1280  # CLIP ViT-H/14, what the original uses
    convert_animator_checkpoint(on_meta(file_shapes(path)), face_adapter_targets(unet), embed_dim)


CHECKS: dict[tuple[str, str], Callable[[str, Path, object], None]] = {
    ("controlnext_svd_v2", "unet"): _controlnext_unet,
    ("controlnext_svd_v1", "unet"): _controlnext_unet,
    ("controlnext_svd_v2", "controlnext"): _controlnext_encoder,
    ("controlnext_svd_v1", "controlnext"): _controlnext_encoder,
    ("musev", "unet_musev"): _musev_unet,
    ("musev", "unet_referencenet"): _musev_unet,
    ("musev", "unet_referencenet_pose"): _musev_unet,
    ("musev", "referencenet"): _musev_referencenet,
    ("musev", "ip_adapter_image_proj"): _musev_image_projection,
    ("musev", "ip_adapter_image_proj_pose"): _musev_image_projection,
    ("id_animator", "animator"): _id_animator,
}
"""The checkpoint roles checked here. Diffusers/transformers folders carry their own config.json, which the stock
``from_pretrained`` checks against the weights when a task loads them."""


def check_role(pack: str, role: str, root=None) -> Finding | None:
    """Check one role's file (None when the role has no check or is not on disk)."""
    from helpers import weights

    checker = CHECKS.get((pack, role))
    if checker is None:
        return None
    try:
        path = Path(weights.resolve(pack, role, root))
    except MissingWeightsError:
        return None
    saved = load_policy.notes()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", load_policy.IgnoredKeysWarning)
            checker(pack, path, root)
    except WrongFile as error:
        return Finding(pack, role, path, str(error), _fix(pack, role))
    except StrictLoadError as error:
        lines = str(error).split("\n")
        detail = "; ".join(line.strip() for line in lines[1:]) or lines[0]
        return Finding(pack, role, path, f"does not fit what the loader builds: {detail}", _fix(pack, role))
    except MissingWeightsError:
        return None  # a role it depends on is not there yet
    except (HelpersError, OSError, ValueError) as error:
        return Finding(pack, role, path, f"cannot be read ({error})", _fix(pack, role))
    finally:
        load_policy._NOTES.clear()
        load_policy._NOTES.update(saved)
    notes = tuple(str(w.message).split(": ", 1)[-1] for w in caught
                  if issubclass(w.category, load_policy.IgnoredKeysWarning))
    return Finding(pack, role, path, notes=notes)


def check(selection: Iterable[str] | str, root=None) -> list[Finding]:
    """Check every checkpoint role in ``selection`` (tasks, packs or "pack/role", as ``weights.download`` takes)."""
    from helpers import weights

    findings = []
    for pack, role in weights.selection(selection):
        finding = check_role(pack, role, root)
        if finding is not None:
            findings.append(finding)
    return findings


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per checked file; problems first."""
    findings = sorted(findings, key=lambda f: f.ok)
    return "\n".join(f.line() for f in findings)


def problems(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok]


class PreflightWarning(UserWarning):
    """A downloaded checkpoint would not load: the message names the file and what to fetch instead."""


last_findings: list[Finding] = []
"""What the last :func:`after_download` found (the setup form shows it)."""


def after_download(selection: Iterable[str] | str, root=None) -> list[Finding]:
    """Check what a download just finished; warn once per file that would not load. Never raises: the files stay
    where they are, and the warning says what to do."""
    global last_findings
    try:
        findings = check(selection, root)
    except Exception as error:  # noqa: BLE001  (a failing check must not turn a finished download into an error)
        warnings.warn(f"the check of the downloaded checkpoints could not run ({error})", PreflightWarning,
                      stacklevel=2)
        findings = []
    for finding in problems(findings):
        warnings.warn(finding.line(), PreflightWarning, stacklevel=2)
    last_findings = findings
    return findings
