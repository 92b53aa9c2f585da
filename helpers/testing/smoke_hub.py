"""Serve tiny random-weight packs from a local fake Hub, so SMOKE mode downloads like a real run.

The tiny writers (``helpers.testing.<method>``) lay files out as the weights manager would after a download:
``<root>/models/<pack>/<role>/<path in repo>``. ``repos_from_packs`` turns that back into repositories (the first
candidate source of each role), and ``start_smoke_hub`` serves them on 127.0.0.1 and points huggingface_hub at it.

>>> hub = start_smoke_hub(["dwpose"])          # then: weights.download(["dwpose"]) fetches the tiny files
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from helpers import registry
from helpers.testing.fake_hub import FakeHub


def _write_tiny(pack: str, staging: Path) -> None:
    if pack == "dwpose":
        from helpers.testing.pose import write_tiny_dwpose_pack

        write_tiny_dwpose_pack(staging)
    elif pack in ("controlnext_svd_v2", "controlnext_svd_v1"):
        from helpers.testing.controlnext import write_tiny_controlnext_packs

        write_tiny_controlnext_packs(staging, version=pack.rsplit("_", 1)[1])
    else:
        raise ValueError(f"no tiny writer for pack {pack!r} in SMOKE downloads")


def repos_from_packs(staging: Path, hub_folder: Path) -> Path:
    """Copy every role folder found in ``staging`` into ``hub_folder/<owner>/<name>/`` (``spaces/`` for Spaces), skipping
    the manifest and fp16 files converted from a pickle that is present (the download converts them again)."""
    for pack in registry.PACKS:
        for role_name, role in registry.PACKS[pack].roles.items():
            folder = staging / "models" / pack / role_name
            if not folder.is_dir():
                continue
            source = role.candidates[0]
            if not isinstance(source, registry.HubSource):
                continue
            repo = hub_folder / ("spaces" if source.repo_type == "space" else "") / source.repo_id
            for path in folder.rglob("*"):
                rel = path.relative_to(folder)
                if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if path.name.endswith(".fp16.safetensors"):
                    stem = path.name[: -len(".fp16.safetensors")]
                    if any((path.parent / f"{stem}{ext}").exists() for ext in (".bin", ".ckpt")):
                        continue
                target = repo / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return hub_folder


def start_smoke_hub(packs: Iterable[str], work: Path | None = None) -> FakeHub:
    """Write tiny versions of ``packs``, serve them as Hub repos and point this process at the server."""
    from helpers.tasks.base import smoke_root

    packs = list(packs)
    work = Path(work) if work else smoke_root() / "hub"
    staging, hub_folder = work / "staging", work / "repos"
    shutil.rmtree(work, ignore_errors=True)
    for pack in packs:
        _write_tiny(pack, staging)
    repos_from_packs(staging, hub_folder)
    hub = FakeHub.from_folder(hub_folder).start()
    hub._activation = hub.activated()  # kept open for the life of the kernel
    hub._activation.__enter__()
    return hub
