"""Resumable runs: a task's progress kept on disk (on Colab: on Drive) so that an interrupted run continues.

A run folder sits next to the outputs, ``<output folder>/.resume/<task>-<key>/``, where ``key`` is a hash of
everything that decides the result: the task, every parameter (except the output folder and ``fresh_start``), the
weights' identities, the input files' contents and the versions of torch and diffusers. Another seed or any other
change gives another key, so runs never reuse each other's state.

Inside it:

- ``index.json``: which state files are current, with their sha256 (rewritten atomically after every save);
- one ``*.pt`` file per saved item: a loop's state (:class:`helpers.pipelines.loop_state.LoopState`), each decoded
  chunk, and finished sub-results (a zero-shot technique's frames, a finished MuseV shot).

Every file is written under a temporary name, flushed to disk and renamed into place, and only then named in the
index, so a kill at any moment leaves the last complete state. A file that is missing, cut short or altered is
found by its hash: the run starts over with a one-line note, never a crash.

Saving rule (:data:`SAVE_RATIO`): a loop's state is written after a denoising step when the computation since the
last write took at least ``SAVE_RATIO`` times as long as that write, so writing costs at most about 1/SAVE_RATIO of
the run's time. On a GPU a step takes seconds and a write a fraction of one, so every step is saved; when steps are
shorter than that (tiny sizes, fast cards), states are written every few steps. The state after the last step
(before decoding, the most memory-hungry stage) and every decoded chunk are always written.

The pipelines know nothing of files: they take ``resume_from`` and ``on_state`` (:mod:`helpers.pipelines.loop_state`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from helpers.pipelines.loop_state import LoopState

SAVE_RATIO = 10.0
"""Write a loop's state when the computation since the last write is at least this many times that write's time."""

STATE_FOLDER = ".resume"
NOT_IN_KEY = ("output_dir", "fresh_start")
"""Parameters that do not decide the result (where it goes; whether to discard saved progress)."""

_FORMAT = 1


class DamagedState(Exception):
    """A state file that cannot be trusted (missing, cut short, altered, unreadable)."""


# ------------------------------------------------------------------------------------------------------- identity


def file_identity(path: str | os.PathLike) -> dict:
    """What an input file or folder of frames is, by content: sizes and sha256 of every file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in files:
            digest.update(str(p.relative_to(path)).encode() + b"\0" + _sha256(p).encode())
        return {"folder": path.name, "files": len(files), "sha256": digest.hexdigest()}
    if path.is_file():
        return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}
    return {"missing": str(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_key(task: str, params, identity: Any = None) -> str:
    """The hash that decides whether two runs are "the same" (16 hex digits)."""
    from helpers.tasks.base import _jsonable

    values = _jsonable(params) if dataclasses.is_dataclass(params) else dict(params)
    values = {k: v for k, v in dict(values).items() if k not in NOT_IN_KEY}
    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except ImportError:  # pragma: no cover - every task needs diffusers
        diffusers_version = None
    blob = json.dumps({"format": _FORMAT, "task": task, "params": values, "identity": _jsonable(identity),
                       "torch": torch.__version__, "diffusers": diffusers_version},
                      sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------- files


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _state_dict(state: LoopState) -> dict:
    return {"step": state.step, "total": state.total, "latents": _cpu(state.latents), "scheduler": state.scheduler,
            "generators": [g.cpu() for g in state.generators], "extra": _cpu(state.extra)}


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_cpu(v) for v in value]
    return value


class RunState:
    """The run folder of one task run. Open it with :meth:`open`; get each loop's resume point and callback from
    :meth:`loop`; keep finished pieces with :meth:`save` / :meth:`saved`; :func:`helpers.tasks.base.finish` reuses
    the output names the run reserved and removes the folder once the sidecar is written."""

    def __init__(self, folder: Path, key: str, progress=None):
        self.folder = folder
        self.key = key
        self.progress = progress
        self.index: dict = {"format": _FORMAT, "key": key, "entries": {}, "stem": None}
        self.resumed: dict[str, dict] = {}
        self.reused: list[str] = []
        self.note: str | None = None

    # -- opening ---------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, task: str, params, *, identity: Any = None, progress=None, folder: Path | None = None) -> RunState:
        """The run folder for these settings; an earlier interrupted run's state is checked and kept, or discarded
        (``params.fresh_start``, or damage: one-line note)."""
        from helpers.tasks import base

        key = run_key(task, params, identity)
        parent = (folder if folder is not None else base.output_folder(task, params)) / STATE_FOLDER
        run = cls(parent / f"{task}-{key}", key, progress)
        if getattr(params, "fresh_start", False) and run.folder.exists():
            shutil.rmtree(run.folder, ignore_errors=True)
        run.folder.mkdir(parents=True, exist_ok=True)
        index_file = run.folder / "index.json"
        if index_file.exists():
            try:
                index = json.loads(index_file.read_text())
                if index.get("format") != _FORMAT or index.get("key") != key:
                    raise DamagedState("index of another format or run")
                for name in index["entries"]:
                    run._verify(index["entries"][name])
                run.index = index
            except (DamagedState, OSError, ValueError, KeyError, TypeError) as exc:
                run._start_over(f"{exc}")
        else:
            _write_atomic(run.folder / "run.json", json.dumps(
                {"task": task, "key": key, "params": base._jsonable(params), "identity": base._jsonable(identity)},
                indent=1, default=str).encode())
        run._clean_orphans()
        return run

    def _start_over(self, why: str) -> None:
        self.note = (f"the saved progress in {self.folder} could not be used ({why}); starting this run over")
        warnings.warn(self.note, UserWarning, stacklevel=3)
        for path in self.folder.glob("*.pt"):
            path.unlink(missing_ok=True)
        self.index = {"format": _FORMAT, "key": self.key, "entries": {}, "stem": self.index.get("stem")}
        self._write_index()

    def _clean_orphans(self) -> None:
        """Files a kill left between writing them and naming them in the index."""
        named = {entry["file"] for entry in self.index["entries"].values()}
        for path in self.folder.iterdir():
            if path.name.endswith(".partial") or (path.suffix == ".pt" and path.name not in named):
                path.unlink(missing_ok=True)

    # -- files -----------------------------------------------------------------------------------------------------
    def _verify(self, entry: dict) -> None:
        path = self.folder / entry["file"]
        if not path.is_file():
            raise DamagedState(f"{entry['file']} is missing")
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise DamagedState(f"{entry['file']} is cut short or altered")

    def _write_index(self) -> None:
        _write_atomic(self.folder / "index.json", json.dumps(self.index, indent=1).encode())

    def _put(self, name: str, obj: Any) -> float:
        """Write ``obj`` as entry ``name`` (new file, then the index, then the old file goes); returns seconds."""
        start = time.perf_counter()
        data = _to_bytes(obj)
        old = self.index["entries"].get(name)
        serial = int(old["serial"]) + 1 if old else 0
        file = f"{name}.{serial}.pt"
        _write_atomic(self.folder / file, data)
        self.index["entries"][name] = {"file": file, "serial": serial, "bytes": len(data),
                                       "sha256": hashlib.sha256(data).hexdigest()}
        self._write_index()
        if old and old["file"] != file:
            (self.folder / old["file"]).unlink(missing_ok=True)
        return time.perf_counter() - start

    def _drop(self, prefix: str, *, exact: str | None = None) -> None:
        """Remove the entries named ``prefix.*`` (and ``exact``, when given)."""
        names = [n for n in self.index["entries"] if n == exact or n.startswith(prefix + ".")]
        if not names:
            return
        entries = [self.index["entries"].pop(n) for n in names]
        self._write_index()
        for entry in entries:
            (self.folder / entry["file"]).unlink(missing_ok=True)

    def _get(self, name: str) -> Any:
        entry = self.index["entries"][name]
        self._verify(entry)
        try:
            return torch.load(self.folder / entry["file"], map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is damage
            raise DamagedState(f"{entry['file']} cannot be read ({type(exc).__name__})") from None

    # -- finished pieces -------------------------------------------------------------------------------------------
    def saved(self, name: str) -> Any | None:
        """A piece kept by :meth:`save` (tensors, numbers, lists, dicts), or None."""
        if name not in self.index["entries"]:
            return None
        try:
            value = self._get(name)
        except DamagedState as exc:
            self._start_over(str(exc))
            return None
        self.reused.append(name)
        return value

    def save(self, name: str, value: Any) -> None:
        """Keep a finished piece (e.g. one technique's frames) so that a resumed run never recomputes it."""
        self._put(name, _cpu(value))

    # -- loops -----------------------------------------------------------------------------------------------------
    def loop(self, name: str = "main", *, label: str | None = None) -> LoopRecorder:
        """The resume point (``.resume_from``) and the ``on_state`` callback of one denoising loop."""
        return LoopRecorder(self, name, label)

    # -- outputs ---------------------------------------------------------------------------------------------------
    @property
    def stem(self) -> str | None:
        return self.index.get("stem")

    def record_stem(self, stem: str) -> None:
        self.index["stem"] = stem
        self._write_index()

    def summary(self) -> dict:
        """For the sidecar: whether this run continued an interrupted one, and from where."""
        return {"resumed": bool(self.resumed or self.reused), "from": self.resumed, "reused": self.reused,
                "note": self.note}

    def close(self) -> None:
        """The run is finished (sidecar written): its state goes."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the .resume folder, when no other run is waiting there
        except OSError:
            pass


class LoopRecorder:
    """``resume_from`` for the pipeline and the ``on_state`` callback that writes by the saving rule."""

    def __init__(self, run: RunState, name: str, label: str | None):
        self.run = run
        self.name = name
        self.label = label
        self.writes: list[float] = []  # seconds per state write, for the docs' measurements
        self._last_write = 0.0
        self._last_end = time.perf_counter()
        self.resume_from = self._load()

    def _load(self) -> LoopState | None:
        entries = self.run.index["entries"]
        if self.name not in entries:
            return None
        try:
            saved = self.run._get(self.name)
            decoded = []
            count = sum(1 for n in entries if n.startswith(self.name + ".decoded."))
            for i in range(count):
                decoded.append(self.run._get(f"{self.name}.decoded.{i}"))
        except DamagedState as exc:
            self.run._start_over(str(exc))
            return None
        state = LoopState(step=saved["step"], total=saved["total"], latents=saved["latents"],
                          scheduler=saved["scheduler"], generators=saved["generators"], extra=saved["extra"],
                          decoded=decoded, phase="decode" if decoded else "denoise")
        where = (f"decoding, {len(decoded)} chunk{'' if len(decoded) == 1 else 's'} done" if state.phase == "decode"
                 else f"step {state.step} of {state.total}")
        self.run.resumed[self.name] = {"step": state.step, "of": state.total, "phase": state.phase,
                                       "decoded_chunks": len(decoded)}
        if self.run.progress is not None:
            what = f"resuming {self.label} from" if self.label else "resuming from"
            self.run.progress(f"{what} {where}", state.step, state.total)
        return state

    def __call__(self, state: LoopState) -> None:
        if state.phase == "decode":
            # The latents decoding starts from were saved after the last step (always written).
            index = len(state.decoded) - 1
            self.run._put(f"{self.name}.decoded.{index}", _cpu(state.decoded[index]))
            return
        computed = time.perf_counter() - self._last_end
        if state.step >= state.total or not self.writes or computed >= SAVE_RATIO * self._last_write:
            self._put_state(state)

    def _put_state(self, state: LoopState) -> None:
        """Write a denoising state (decode states add chunks only); chunks of an earlier decode no longer apply."""
        data = _state_dict(state)
        self.run._drop(f"{self.name}.decoded")
        seconds = self.run._put(self.name, data)
        self.writes.append(seconds)
        self._last_write = seconds
        self._last_end = time.perf_counter()

    def done(self) -> None:
        """The loop finished and its result is kept elsewhere (or written): drop its state (the loop's own
        entries only; pieces saved under other names stay)."""
        self.run._drop(f"{self.name}.decoded", exact=self.name)
