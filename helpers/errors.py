"""Errors meant for the person at the keyboard: one line that says what to do next."""

from __future__ import annotations


class HelpersError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(HelpersError, ValueError):
    """Bad user input (file, parameter, prompt). Raised before any model loads."""


class OutputError(HelpersError, OSError):
    """A result could not be written (full disk, read-only folder); no partial file is left behind."""


class MissingWeightsError(HelpersError, FileNotFoundError):
    """A model pack is not on disk; the message names the pack and how to fetch it."""


class WeightsError(HelpersError, RuntimeError):
    """A download, verification or conversion failed; the message says what to do."""


class StrictLoadError(HelpersError, RuntimeError):
    """A checkpoint does not match the model: lists missing and unexpected keys."""

    def __init__(self, what: str, missing=(), unexpected=(), mismatched=(), limit: int = 12):
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)

        def show(name, keys):
            if not keys:
                return ""
            more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
            return f"\n  {name} ({len(keys)}): " + ", ".join(map(str, keys[:limit])) + more

        super().__init__(
            f"{what}: the checkpoint does not match the model (is it the right file for this method/version?)"
            + show("missing", self.missing)
            + show("unexpected", self.unexpected)
            + show("shape mismatch", self.mismatched)
        )


def check_strict_load(what: str, model, state_dict: dict) -> None:
    """Compare a state dict with ``model.state_dict()`` (names and shapes); raise ``StrictLoadError`` on mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        raise StrictLoadError(what, missing, unexpected, mismatched)
