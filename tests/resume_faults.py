"""Fault injection for the resume tests: stop a task run at a chosen point, as a disconnect would."""

from __future__ import annotations

import contextlib

from helpers.tasks import base


class Killed(BaseException):
    """Raised to stop a run (a BaseException, like KeyboardInterrupt: no ``except Exception`` swallows it)."""


class KillAt:
    """A ``progress`` callable that raises :class:`Killed` the first time ``stage`` (a prefix) reaches ``done``;
    it records every call (``calls``) so tests can read the "resuming from ..." line."""

    def __init__(self, stage: str | None = None, done: int | None = None):
        self.stage, self.done = stage, done
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.calls.append((stage, done, total))
        if self.stage is not None and stage.startswith(self.stage) and done == self.done:
            self.stage = None
            raise Killed(f"{stage} {done}/{total}")

    def resumed_lines(self) -> list[str]:
        return [stage for stage, _, _ in self.calls if stage.startswith("resuming")]


@contextlib.contextmanager
def kill_before_sidecar(monkeypatch):
    """Stop a run after its mp4 is written but before its sidecar."""
    original = base.write_json

    def killing(path, data):
        if str(path).endswith(".json") and "task" in data:
            monkeypatch.setattr(base, "write_json", original)
            raise Killed("before the sidecar")
        return original(path, data)

    monkeypatch.setattr(base, "write_json", killing)
    yield
    monkeypatch.setattr(base, "write_json", original)


def state_folders(output_dir) -> list:
    """The run folders waiting in an output folder."""
    from pathlib import Path

    root = Path(output_dir) / ".resume"
    return sorted(p for p in root.iterdir()) if root.exists() else []
