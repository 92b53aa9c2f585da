"""Damaged weights named in one line: which pack, which file, how to repair it.

A truncated or overwritten checkpoint, or a ``config.json`` that is no longer JSON, makes onnxruntime, safetensors or
diffusers fail with a traceback that names no pack. ``weights.resolve`` notes every role a run asks for; when a load
watched by :func:`explain_damage` fails, those roles are checked (against their lock manifest: only
files whose size or timestamp changed are hashed; without a manifest, JSON files must parse and safetensors headers
must read) and a damaged one turns the failure into a ``WeightsError`` that says how to repair it.

>>> with weight_damage.explain_damage():
...     pipe = load_pipeline(paths)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import weights
from helpers.errors import HelpersError, WeightsError


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "is not valid JSON"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "is cut off"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return "is cut off or overwritten (its header runs past the end)"
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "is overwritten (its header is not readable)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and 8 + length + max(ends) > size:
        return "is cut off (shorter than its header says)"
    return None


def _shape_problems(folder: Path) -> list[tuple[str, str]]:
    """Checks that need no manifest: JSON files parse, safetensors headers read (cheap: no tensor is loaded)."""
    files = [folder] if folder.is_file() else sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    found = []
    for path in files:
        check = {".json": _json_problem, ".safetensors": _safetensors_problem}.get(path.suffix)
        problem = check(path) if check else None
        if problem:
            found.append((path.relative_to(folder).as_posix() if folder.is_dir() else path.name, problem))
    return found


def damaged_files(folder: Path) -> list[tuple[str, str]]:
    """``(file, what is wrong)`` for each damaged file of one role folder (empty when it looks intact)."""
    check = weights._check_role(folder, hash_changed=True)
    if check.manifest is not None:
        found = [(rel, "is missing or differs from the file downloaded (size or sha256)") for rel in check.fetch]
        found += [(rel, "has a missing or damaged fp16 copy") for rel in check.reconvert]
        if found:
            return found
    return _shape_problems(folder) if folder.exists() else []


@contextmanager
def explain_damage() -> Iterator[None]:
    """If the block fails and a role resolved in this run (``weights.resolved_log``, newest first) is damaged, raise
    a one-line ``WeightsError`` naming the pack, the file and the repair instead of the loader's traceback (kept as
    the cause). Other failures pass through unchanged."""
    try:
        yield
    except HelpersError:
        raise
    except Exception as exc:
        for pack, role, folder in reversed(list(weights.resolved_log)):
            found = damaged_files(folder)
            if found:
                rel, problem = found[0]
                more = f" (and {len(found) - 1} more file(s))" if len(found) > 1 else ""
                raise WeightsError(
                    f"Weights '{pack}/{role}' are damaged: {rel} {problem}{more}. Repair them with "
                    f"weights.download(['{pack}']) ({weights.SETUP_HINT} and tick {pack}): damaged files are "
                    f"fetched again.") from exc
        raise
