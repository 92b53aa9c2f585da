"""What every loader does when a checkpoint and a model disagree: one policy, stated once.

- A tensor the model needs and the file lacks (**missing**) stops the load, naming the keys.
- A tensor whose shape differs from the model's (**shape mismatch**) stops the load, naming key and shapes.
- A tensor the model has no place for (**unexpected**) stops the load too, unless the original implementation would
  load past it (its UNets load with ``strict=False``; stock ``from_pretrained`` ignores extra keys; ID-Animator reads
  only three top-level entries of ``animator.ckpt``). Then it is left out, listed once in an
  :class:`IgnoredKeysWarning`, and recorded here: :func:`notes` goes into every result's JSON sidecar
  (``ignored_checkpoint_keys``). Nothing is ever skipped silently.

>>> ignored = enforce("ControlNeXt-SVD UNet unet.fp16.safetensors", expected_shapes, file_shapes, ignore_unexpected=True)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from helpers.errors import StrictLoadError

_NOTES: dict[str, dict] = {}
SHOWN_IN_WARNING = 12


class IgnoredKeysWarning(UserWarning):
    """A checkpoint held entries the model has no place for; the original loads past them, and so do we."""


@dataclass(frozen=True)
class KeyComparison:
    """How a checkpoint's key set and shapes compare with a model's."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def shapes_of(tensors: Mapping) -> dict[str, tuple]:
    """``{key: shape}`` of a state dict (tensors) or of a shape table (tuples/lists) alike."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in tensors.items()}


def compare(expected: Mapping, found: Mapping, may_be_missing: Iterable[str] = ()) -> KeyComparison:
    """Compare two state dicts or shape tables; keys in ``may_be_missing`` need not be present in ``found``."""
    expected, found = shapes_of(expected), shapes_of(found)
    allowed = set(may_be_missing)
    return KeyComparison(
        missing=sorted(k for k in expected if k not in found and k not in allowed),
        unexpected=sorted(k for k in found if k not in expected),
        mismatched=sorted(f"{k} {found[k]} vs {expected[k]}" for k in found if k in expected and found[k] != expected[k]),
    )


def enforce(what: str, expected: Mapping, found: Mapping, *, may_be_missing: Iterable[str] = (),
            ignore_unexpected: bool | Callable[[str], bool] = False,
            why: str = "the original loads this model non-strictly") -> list[str]:
    """Apply the policy; returns the unexpected keys that were ignored (already warned about and recorded).

    ``ignore_unexpected``: True where the original loads past any extra key, or a predicate for the keys it loads past.
    Raises :class:`StrictLoadError` for missing keys, shape mismatches and unexpected keys that may not be ignored.
    """
    result = compare(expected, found, may_be_missing)
    ignorable = ignore_unexpected if callable(ignore_unexpected) else (lambda _key: bool(ignore_unexpected))
    ignored = [k for k in result.unexpected if ignorable(k)]
    refused = [k for k in result.unexpected if not ignorable(k)]
    if result.missing or refused or result.mismatched:
        raise StrictLoadError(what, result.missing, refused, result.mismatched)
    record_ignored(what, ignored, why)
    return ignored


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().splitlines())


@contextlib.contextmanager
def transformers_shape_lines() -> Iterator[list[str]]:
    """Collect what transformers' ``from_pretrained`` logs about mis-shaped tensors, without printing it.

    transformers 4.x gives mis-shaped keys in ``output_loading_info`` by name only and logs their shapes
    ("- key: found shape ... in the checkpoint and ... in the model instantiated"); 5.x puts the shapes in the info.
    Pass the lines to :func:`enforce_loading_info` (``shape_lines``) so the refusal names the shapes either way."""
    logger = logging.getLogger("transformers.modeling_utils")
    handler = _Lines()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _with_shapes(entry, shape_lines: Iterable[str]) -> str:
    """A mis-shaped entry as text, with its shapes taken from ``shape_lines`` when the entry is a bare key."""
    if isinstance(entry, str):
        for line in shape_lines:
            if line.strip().startswith(f"- {entry}: "):
                return line.strip()[2:]
    return str(entry)


def enforce_loading_info(what: str, info: Mapping, *, ignore_unexpected: bool = True,
                         allow_missing: Callable[[str], bool] = lambda _key: False,
                         why: str = "stock from_pretrained loads past extra keys",
                         shape_lines: Iterable[str] = ()) -> list[str]:
    """The policy for the ``output_loading_info`` of a stock ``from_pretrained`` load (which has already loaded past
    any extra key): missing and mis-shaped keys raise, unexpected ones are recorded or raise. ``shape_lines``: see
    :func:`transformers_shape_lines`."""
    missing = sorted(k for k in info.get("missing_keys", ()) if not allow_missing(k))
    unexpected = sorted(info.get("unexpected_keys", ()))
    shape_lines = list(shape_lines)
    mismatched = [_with_shapes(m, shape_lines) for m in info.get("mismatched_keys", ())]
    if missing or mismatched or (unexpected and not ignore_unexpected):
        raise StrictLoadError(what, missing, [] if ignore_unexpected else unexpected, mismatched)
    record_ignored(what, unexpected, why)
    return unexpected


def record_ignored(what: str, keys: Iterable[str], why: str) -> None:
    """Warn once about ``keys`` left out of ``what`` and keep them for the result sidecar (nothing when empty)."""
    keys = sorted(keys)
    if not keys:
        return
    shown = ", ".join(keys[:SHOWN_IN_WARNING]) + (f" … and {len(keys) - SHOWN_IN_WARNING} more"
                                                   if len(keys) > SHOWN_IN_WARNING else "")
    warnings.warn(f"{what}: left out {len(keys)} checkpoint entr{'y' if len(keys) == 1 else 'ies'} the model has no "
                  f"place for ({why}): {shown}", IgnoredKeysWarning, stacklevel=3)
    _NOTES[what] = {"ignored_keys": keys, "why": why}


def notes() -> dict[str, dict]:
    """What the loads since the last :func:`clear` left out, per loaded file (for the sidecar)."""
    return {what: {"ignored_keys": list(n["ignored_keys"]), "why": n["why"]} for what, n in _NOTES.items()}


def clear() -> None:
    """Forget the notes (the model cache calls this when it frees the models they describe)."""
    _NOTES.clear()
