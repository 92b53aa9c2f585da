"""The ID-preserving video task's weights: where they are (tiny packs written on first use in SMOKE mode), the
library notices kept quiet while they load, what they were made from (the sidecar's ``weights``), and what makes
one run the same as another (the key of its saved progress, :mod:`helpers.resume`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from helpers.tasks.base import weights_root


def packs_root(smoke: bool) -> Path | None:
    """The weights root (:func:`~helpers.tasks.base.weights_root`); in SMOKE mode the tiny packs are written first."""
    root = weights_root(smoke)
    if smoke:
        ensure_smoke_packs(root, sketch=False)
    return root


class _DropTokenizerNotice(logging.Filter):
    """The tokenizer's over-length notice: the task says it in its own words (``plan().notes``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token indices sequence length is longer" not in record.getMessage()


@contextmanager
def quiet_libraries() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers.tokenization_utils_base")
    notice = _DropTokenizerNotice()
    logger.addFilter(notice)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" while SMOKE packs are written
    try:
        yield
    finally:
        logger.removeFilter(notice)
        if bars:
            hf_logging.enable_progress_bar()


def ensure_smoke_packs(root: Path, *, sketch: bool) -> None:
    """Write the tiny random-weight packs into the SMOKE root once (the animator file is written last)."""
    from helpers.testing import id_animator as tiny

    models = root / "models"
    controlnet = models / "sparsectrl_scribble" / "controlnet"
    with quiet_libraries():
        if not (models / "id_animator" / "animator" / "animator.ckpt").is_file():
            tiny.write_tiny_id_animator_packs(root, sketch=False)
        if sketch and not (controlnet / "config.json").is_file():
            tiny.write_tiny_sparsectrl(controlnet)


def provenance(roles: Sequence[tuple[str, str]], root: Path | None, *, base_model_file: Path | None,
               detector: bool, smoke: bool) -> list[dict]:
    """What each weight role of the run was made from (:func:`helpers.weights.provenance`), the user's own base model
    file (path and size: hashing a 2 GB file is not worth the wait) and the face detector when it ran."""
    from helpers import weights

    found = [weights.provenance(pack, role, root) for pack, role in roles]
    if base_model_file is not None:
        source = f"file chosen by the user: {base_model_file}"
        if smoke:
            source += " (SMOKE: the tiny community model ran instead)"
        found.append({"pack": None, "role": "base_model", "source": source,
                      "size_bytes": base_model_file.stat().st_size})
    if detector:
        found.append(weights.provenance("insightface", "detector"))
    return found


def run_identity(weights: list[dict], base_model: str, face_paths: Sequence[Path], sketches: Sequence[np.ndarray],
                 memory) -> dict:
    """What besides the parameters decides a run's numbers (:func:`helpers.resume.run_key`): the weights, the base
    model (a file: its path and modification time), the face photos' and the sketches' contents, and the memory plan
    (device, dtype, decode chunk)."""
    from helpers import resume

    drawn = hashlib.sha256(b"".join(np.ascontiguousarray(s).tobytes() for s in sketches)).hexdigest()
    return {"weights": weights, "base_model": base_model, "faces": [resume.file_identity(p) for p in face_paths],
            "sketches": drawn if len(sketches) else None, "memory_plan": memory.as_dict()}
