"""Discovery of golden sets (outputs of the original implementations on tiny random weights).

The root is ``$HV_GOLDEN_ROOT`` (default: ``../shared/reference`` next to the repository). A golden set of format
``<fmt>`` is any folder named ``<fmt>`` holding a ``config.json``, directly under the root or up to two levels below
it, so several sets of the same format can live side by side. Tests must read every size and case from the set's own
``config.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "reference"


def golden_root() -> Path:
    return Path(os.environ.get("HV_GOLDEN_ROOT", DEFAULT_ROOT)).expanduser()


def golden_dirs(fmt: str) -> list[Path]:
    """All golden folders of format ``fmt`` under the root (sorted, possibly empty)."""
    root = golden_root()
    if not root.is_dir():
        return []
    found = set()
    for pattern in (fmt, f"*/{fmt}", f"*/*/{fmt}"):
        for d in root.glob(pattern):
            if (d / "config.json").is_file():
                found.add(d.resolve())
    if root.name == fmt and (root / "config.json").is_file():
        found.add(root.resolve())
    return sorted(found)


def golden_params(fmt: str):
    """``pytest.mark.parametrize`` values over the golden sets of ``fmt``; a single skip when there are none."""
    dirs = golden_dirs(fmt)
    if not dirs:
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(
                    reason=f"no '{fmt}' golden set under {golden_root()} (set HV_GOLDEN_ROOT to a folder of goldens)"
                ),
                id=f"{fmt}-missing",
            )
        ]
    return [pytest.param(d, id=f"{fmt}-{d.parent.name}") for d in dirs]


def load_config(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "config.json").read_text())
