"""Model weights on disk: download to the Drive root, verify, convert pickles to fp16 safetensors, resolve paths.

>>> from helpers import weights, runtime
>>> weights.download(["pose_to_dance"], token=runtime.hf_token())   # a task, pack ids, or "pack/role"
>>> weights.resolve("controlnext_svd_v2", "unet")                   # .../ControlNeXt-SVD/v2/unet.fp16.safetensors
>>> print(weights.format_status(weights.status()))

Layout: ``<root>/models/<pack>/<role>/<files at their path in the source repo>`` plus ``.source.json``, the lock
manifest (which candidate, commit, and each file's size and sha256, recorded on the first download and checked on
every later ``download``). Verified files are never fetched again, so ``download`` works offline once everything is
there. Files come through ``huggingface_hub`` (progress bars; an interrupted transfer resumes with HTTP ranges) or,
for files published outside the Hub, through ``gdown`` (resumable). Pickles (``.bin``/``.ckpt``) are read with
``torch.load(weights_only=True, mmap=True)`` and converted once to ``<stem>.fp16.safetensors`` beside them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import registry, sources
from helpers.errors import InputError, MissingWeightsError, WeightsError
from helpers.registry import Source, UrlSource
from helpers.sources import SourceGone, fetch_hub_file, fetch_url, list_hub, say, select, sha256_file

log = logging.getLogger(__name__)

MANIFEST = ".source.json"
DEFAULT_ROOT = Path("~/.cache/human-video")
SETUP_HINT = "run notebooks/00_setup.ipynb"
_DISK_MARGIN = 100 * 10**6  # headroom for metadata files and the filesystem's own rounding
# Drive's FUSE mount may report modification times at millisecond precision after a remount.
_MTIME_SLACK_NS = 2_000_000


# -- where ---------------------------------------------------------------------------------------------------------
def root() -> Path:
    """The Drive root: ``$HV_ROOT``, else ``runtime.drive_root()`` (Drive on Colab), else ``~/.cache/human-video``."""
    env = os.environ.get("HV_ROOT")
    if env:
        return Path(env).expanduser()
    try:
        from helpers import runtime
    except ImportError:
        return DEFAULT_ROOT.expanduser()
    return Path(runtime.drive_root())


def role_dir(pack: str, role: str, root_dir: Path | str | None = None) -> Path:
    """``<root>/models/<pack>/<role>``: where a role's files live (whether or not they are there)."""
    _role_spec(pack, role)
    return Path(root_dir or root()) / "models" / pack / role


def converted_path(pickle_path: Path) -> Path:
    """``unet.bin`` -> ``unet.fp16.safetensors`` (beside it)."""
    return pickle_path.with_name(pickle_path.stem + ".fp16.safetensors")


def _pack_spec(pack: str) -> registry.Pack:
    if pack not in registry.PACKS:
        raise InputError(f"Unknown model pack '{pack}': choose one of {', '.join(registry.PACKS)} "
                         f"(or a task: {', '.join(registry.TASKS)}).")
    return registry.PACKS[pack]


def _role_spec(pack: str, role: str) -> registry.Role:
    roles = _pack_spec(pack).roles
    if role not in roles:
        raise InputError(f"Pack '{pack}' has no role '{role}': its roles are {', '.join(roles)}.")
    return roles[role]


def selection(items: Iterable[str] | str) -> list[tuple[str, str]]:
    """Expand task names, pack ids and ``"pack/role"`` strings to (pack, role) pairs (optional roles only by name)."""
    out: list[tuple[str, str]] = []
    for item in [items] if isinstance(items, str) else items:
        if item in registry.TASKS:
            pairs = selection(registry.TASKS[item].packs)
        else:
            pack, _, role = item.partition("/")
            if role:
                _role_spec(pack, role)
                pairs = [(pack, role)]
            else:
                pairs = [(pack, r.name) for r in _pack_spec(pack).roles.values() if not r.optional]
        out += [pair for pair in pairs if pair not in out]
    return out


# -- the lock manifest and file checks -----------------------------------------------------------------------------
def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        log.warning("Ignoring an unreadable %s in %s", MANIFEST, folder)
        return None


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, folder / MANIFEST)  # atomic: a crash never leaves half a manifest


def _record(file: Path, sha256: str | None = None, **extra) -> dict:
    stat = file.stat()
    return {"size": stat.st_size, "sha256": sha256 or sha256_file(file), "mtime_ns": stat.st_mtime_ns, **extra}


def _file_state(path: Path, rec: dict, *, hash_changed: bool, rehash: bool = False) -> str:
    """"ok", "missing", "corrupt", or "changed" (modified since it was verified and not re-hashed).

    A file whose size and modification time equal the recorded ones was verified before and is not re-hashed
    (hashing 6 GB on Drive takes minutes) unless ``rehash``; any other file is hashed against the record.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if stat.st_size != rec["size"]:
        return "corrupt"
    if abs(stat.st_mtime_ns - rec.get("mtime_ns", -_MTIME_SLACK_NS)) < _MTIME_SLACK_NS and not rehash:
        return "ok"
    if not hash_changed:
        return "changed"
    if sha256_file(path) != rec["sha256"]:
        return "corrupt"
    rec["mtime_ns"] = stat.st_mtime_ns
    return "ok"


@dataclass
class _RoleCheck:
    manifest: dict | None
    fetch: list[str] = field(default_factory=list)  # source files to download again
    reconvert: list[str] = field(default_factory=list)  # verified pickles whose fp16 copy is missing or broken
    changed: bool = False

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not (self.fetch or self.reconvert or self.changed)


def _check_role(folder: Path, *, hash_changed: bool, rehash: bool = False) -> _RoleCheck:
    manifest = _read_manifest(folder)
    check = _RoleCheck(manifest)
    if manifest is None:
        return check
    converted = manifest.setdefault("converted", {})
    for rel, rec in manifest["files"].items():
        out = converted.get(rel)
        out_state = _file_state(folder / out["path"], out, hash_changed=hash_changed, rehash=rehash) if out else None
        if rec.get("removed"):  # pickle deleted after conversion: the fp16 copy stands for it
            if out_state in (None, "missing", "corrupt"):
                check.fetch.append(rel)
            check.changed |= out_state == "changed"
            continue
        state = _file_state(folder / rel, rec, hash_changed=hash_changed, rehash=rehash)
        if state in ("missing", "corrupt"):
            check.fetch.append(rel)
        elif rel in manifest.get("convert", {}) and out_state in (None, "missing", "corrupt"):
            check.reconvert.append(rel)
        check.changed |= "changed" in (state, out_state)
    return check


# Every role resolved since the current run began (tasks.base.check_params clears it): what helpers.weight_damage checks
resolved_log: dict[tuple[str, str, Path], None] = {}


# -- resolve and status --------------------------------------------------------------------------------------------
def resolve(pack: str, role: str, root: Path | str | None = None) -> Path:
    """The local path of a role: a file (a pickle's fp16 safetensors copy) or a folder mirroring its repo.

    Checks existence and sizes only (fast). Files placed by hand in the same layout, without a manifest, are
    accepted too (pickles among them are converted on first use).

    >>> weights.resolve("dwpose", "detector")
    PosixPath('/content/drive/MyDrive/human-video/models/dwpose/detector/yolox_l.onnx')
    """
    spec = _role_spec(pack, role)
    folder = role_dir(pack, role, root)
    if len(resolved_log) > 64:
        resolved_log.clear()
    resolved_log[(pack, role, folder)] = None
    manifest = _read_manifest(folder)
    incomplete = MissingWeightsError(f"Weights '{pack}/{role}' are incomplete in {folder}: {SETUP_HINT} or "
                                     f"weights.download(['{pack}']) to complete them.")
    if manifest is None:
        if _interrupted(folder):
            raise incomplete
        for source in spec.candidates:
            found = _unrecorded(folder, source, convert=True)
            if found is not None:
                return found
        raise MissingWeightsError(f"Weights '{pack}/{role}' are not on disk (expected in {folder}): {SETUP_HINT} "
                                  f"or weights.download(['{pack}']).")
    converted, changed = manifest.setdefault("converted", {}), False
    for rel, rec in manifest["files"].items():
        pickle_ok = not rec.get("removed") and _same_size(folder / rel, rec)
        if not rec.get("removed") and not pickle_ok:
            raise incomplete
        out = converted.get(rel)
        if rel in manifest.get("convert", {}) and (out is None or not _same_size(folder / out["path"], out)):
            if not pickle_ok:
                raise incomplete
            _convert_recorded(folder, manifest, rel, keep_pickles=True, progress=False)
            changed = True
    if changed:
        _write_manifest(folder, manifest)
    return folder / manifest["resolved"]


def _same_size(path: Path, rec: dict) -> bool:
    return path.is_file() and path.stat().st_size == rec["size"]


def _resolved_rel(source: Source) -> str:
    return converted_path(Path(source.entry)).as_posix() if source.entry in source.convert else source.entry


def _interrupted(folder: Path) -> bool:
    """Download metadata but no manifest: a first download stopped part-way (not files placed by hand)."""
    return (folder / ".cache" / "huggingface").is_dir() or (folder / ".download").is_dir()


def _unrecorded(folder: Path, source: Source, *, convert: bool) -> Path | None:
    """A role placed by hand in ``source``'s layout (no manifest), or None; ``convert`` converts its pickles."""
    for rel in source.convert:
        if convert and (folder / rel).is_file() and not converted_path(folder / rel).is_file():
            convert_to_fp16_safetensors(folder / rel)
    target = folder / _resolved_rel(source)
    if target.is_file() or (not convert and source.entry in source.convert and (folder / source.entry).is_file()):
        return target
    if target.is_dir() and any(not p.name.startswith(".") for p in target.iterdir()):
        return target
    return None


@dataclass(frozen=True)
class WeightStatus:
    """One role's state: ``verified`` (matches its lock manifest), ``changed`` (modified since it was verified:
    ``download`` re-checks it), ``incomplete``, ``unrecorded`` (placed by hand, no manifest) or ``missing``."""

    pack: str
    role: str
    state: str
    path: Path | None
    size_bytes: int
    expected_bytes: int
    source: str
    licence: str
    partial_bytes: int = 0  # unfinished downloads kept for the next run (not in size_bytes)

    @property
    def present(self) -> bool:
        return self.state in ("verified", "changed", "unrecorded")

    @property
    def verified(self) -> bool:
        return self.state == "verified"


def status(packs: Iterable[str] | str | None = None, root: Path | str | None = None) -> list[WeightStatus]:
    """State of each role (all packs by default; tasks, pack ids or "pack/role" as for ``download``) for a
    summary table. Fast: sizes and timestamps, no hashing."""
    rows = []
    for pack, role in selection(packs if packs is not None else list(registry.PACKS)):
        spec, folder = _role_spec(pack, role), role_dir(pack, role, root)
        first = spec.candidates[0]
        check = _check_role(folder, hash_changed=False)
        manifest = check.manifest
        if manifest is not None:
            state = "verified" if check.ok else ("changed" if not (check.fetch or check.reconvert) else "incomplete")
            on_disk = [folder / r for r, rec in manifest["files"].items() if not rec.get("removed")]
            on_disk += [folder / c["path"] for c in manifest.get("converted", {}).values()]
            path, source = folder / manifest["resolved"], manifest["source"]["label"]
            licence = manifest.get("licence", first.licence.name)
        elif _interrupted(folder):
            path, state, source, licence = None, "incomplete", first.label, first.licence.name
            on_disk = [p for p in folder.rglob("*") if p.is_file()]
        else:
            path = next((p for s in spec.candidates if (p := _unrecorded(folder, s, convert=False))), None)
            state, source, licence = ("unrecorded" if path else "missing"), first.label, first.licence.name
            on_disk = [p for p in folder.rglob("*") if p.is_file()] if path else []
        size = sum(p.stat().st_size for p in on_disk if p.is_file() and ".cache" not in p.parts)
        partial = sum(p.stat().st_size for p in sources.unfinished_files(folder))
        rows.append(WeightStatus(pack, role, state, path, size, first.approx_bytes, source, licence, partial))
    return rows


def format_status(rows: list[WeightStatus]) -> str:
    """A plain-text table of ``status()`` rows."""
    lines = [f"{'pack/role':42} {'state':11} {'on disk':>9} {'expected':>9}  source"]
    for r in rows:
        partial = f" (+{_human(r.partial_bytes)} partial download: re-run to continue it)" if r.partial_bytes else ""
        lines.append(f"{r.pack + '/' + r.role:42} {r.state:11} {_human(r.size_bytes):>9} "
                     f"{'~' + _human(r.expected_bytes):>9}  {r.source}{partial}")
    return "\n".join(lines)


def provenance(pack: str, role: str, root: Path | str | None = None) -> dict:
    """What a role was made from, for result sidecars: source, commit and the sha256 of each file."""
    manifest = _read_manifest(role_dir(pack, role, root))
    if manifest is None:
        return {"pack": pack, "role": role, "source": "unrecorded (placed by hand)"}
    files = {rel: rec["sha256"] for rel, rec in manifest["files"].items()}
    files.update({c["path"]: c["sha256"] for c in manifest.get("converted", {}).values()})
    return {"pack": pack, "role": role, "source": manifest["source"]["label"],
            "revision": manifest["source"].get("revision"), "commit": manifest["source"].get("commit"),
            "files": files}


def _human(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# -- conversion ----------------------------------------------------------------------------------------------------
def convert_to_fp16_safetensors(pickle_path: Path, out_path: Path | None = None) -> Path:
    """Convert a torch pickle of tensors to fp16 safetensors (``<stem>.fp16.safetensors`` beside it by default).

    Loads with ``weights_only=True`` (and ``mmap=True`` when the file is a zip archive, so a 6 GB checkpoint does
    not need 6 GB of RAM). Nested dicts are flattened with ``.`` (``{"image_proj": {"proj.weight": t}}`` ->
    ``image_proj.proj.weight``); floating tensors become fp16, others keep their dtype. Plain scalars (ints,
    floats, strings: bookkeeping such as an epoch) are kept in the file's metadata; anything else is refused.

    >>> convert_to_fp16_safetensors(Path("ControlNeXt-SVD/v2/unet.bin"))
    PosixPath('ControlNeXt-SVD/v2/unet.fp16.safetensors')
    """

    import torch
    from safetensors.torch import save_file

    pickle_path = Path(pickle_path)
    out_path = Path(out_path) if out_path else converted_path(pickle_path)
    obj = load_pickle_safely(pickle_path)
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, object] = {}
    _flatten(obj, "", tensors, scalars, pickle_path.name)
    if not tensors:
        raise WeightsError(f"{pickle_path.name} holds no tensors: it is not a checkpoint of weights.")
    overflow = []
    for key, tensor in tensors.items():
        if tensor.is_floating_point():
            # copy=True: never alias the memory-mapped source, and tied tensors become separate (safetensors needs it)
            half = tensor.detach().to(torch.float16, copy=True).contiguous()
            if torch.isinf(half).any() and not torch.isinf(tensor).any():
                overflow.append(key)
            tensors[key] = half
        else:
            tensors[key] = tensor.detach().clone().contiguous()
    if overflow:
        log.warning("%s: values beyond the fp16 range became inf in %d tensors (%s)", pickle_path.name,
                    len(overflow), ", ".join(overflow[:5]))
    metadata = {"format": "pt", "converted_from": pickle_path.name}
    if scalars:
        metadata["scalars"] = json.dumps(scalars)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, out_path)
    return out_path


def load_pickle_safely(path: Path):
    """``torch.load`` with ``weights_only=True`` (memory-mapped when the file is in zip format): tensors and plain
    containers only. A pickle with other Python objects raises ``WeightsError`` instead of running code."""
    import pickle

    import torch

    path = Path(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as err:
        raise WeightsError(f"{path.name} contains Python objects other than tensors, so it was not loaded "
                           f"(unsafe pickle): delete it and download the official file again.") from err


def _flatten(obj, prefix: str, tensors: dict, scalars: dict, name: str) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        if prefix in tensors:
            raise WeightsError(f"{name}: key '{prefix}' appears twice after flattening nested dicts.")
        tensors[prefix] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), tensors, scalars, name)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        scalars[prefix] = obj
    else:
        raise WeightsError(f"{name}: '{prefix or '<top level>'}' is a {type(obj).__name__}, not a tensor or a dict "
                           f"of tensors; refusing to convert it (is this a training checkpoint rather than weights?).")


# -- download ------------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    pack: str
    role: str
    folder: Path
    source: Source
    revision: str | None = None  # the commit, for Hub sources
    remote: dict[str, dict] = field(default_factory=dict)  # path -> {"size", "sha256" (LFS), "blob_id"}
    fetch: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # recorded files known to be missing or damaged
    keep: dict[str, dict] = field(default_factory=dict)  # verified records carried over from the old manifest
    previous: dict | None = None  # the role's manifest as checked just before (timestamps refreshed)
    tried: list[str] = field(default_factory=list)

    def download_bytes(self) -> int:
        """Bytes still to come: a partial copy left by an interrupted run is continued, not fetched again."""
        if isinstance(self.source, UrlSource):
            return self.source.approx_bytes
        total = 0
        for rel in self.fetch:
            remote, partial = self.remote[rel], sources.partial_path(self.folder, rel, self.remote[rel])
            total += max(0, (remote["size"] or 0) - (partial.stat().st_size if partial.is_file() else 0))
        return total


def download(packs: Iterable[str] | str, root: Path | str | None = None, token: str | None = None,
             progress: bool = True, *, keep_pickles: bool = False, recheck: bool = False) -> list[WeightStatus]:
    """Fetch, verify and convert the selected roles; returns their ``status`` rows.

    ``packs``: task names (``registry.TASKS``), pack ids (their non-optional roles) or ``"pack/role"``. Verified
    roles cost no network call. Free disk space is checked before anything is fetched. ``keep_pickles=False``
    deletes a ``.bin``/``.ckpt`` once its fp16 copy is written (it is fetched again only if that copy breaks).
    ``recheck=True`` re-hashes every file instead of trusting an unchanged size and timestamp. The token goes to
    the Hub only and is never printed.

    >>> weights.download(["dwpose", "musev/unet_referencenet_pose"], token=runtime.hf_token())
    """
    base = Path(root) if root else default_root()
    pairs = selection(packs)
    pending = []
    for pack, role in pairs:
        folder = role_dir(pack, role, base)
        check = _check_role(folder, hash_changed=True, rehash=recheck)
        if check.manifest is not None and not check.fetch:
            for rel in check.reconvert:
                _convert_recorded(folder, check.manifest, rel, keep_pickles, progress)
            _write_manifest(folder, check.manifest)  # keeps the refreshed timestamps of re-hashed files
            continue
        pending.append((pack, role, folder, check))
    if pending:
        if _offline():
            names = ", ".join(f"{p}/{r}" for p, r, _, _ in pending)
            raise WeightsError(f"Offline mode (HF_HUB_OFFLINE) is on and {names} are not complete on disk: "
                               f"unset HF_HUB_OFFLINE and re-run the download.")
        plans = [_plan(pack, role, folder, check, token, tried=[]) for pack, role, folder, check in pending]
        _check_disk(plans, base, keep_pickles)
        for plan in plans:
            while True:
                try:
                    _execute(plan, token, progress, keep_pickles)
                    break
                except SourceGone as gone:
                    check = _check_role(plan.folder, hash_changed=True)
                    plan = _plan(plan.pack, plan.role, plan.folder, check, token,
                                 tried=plan.tried + [f"{plan.source.label} ({gone})"])
    from helpers import preflight

    preflight.after_download([f"{p}/{r}" for p, r in pairs], base)  # each checkpoint vs what its loader builds
    return status([f"{p}/{r}" for p, r in pairs], root=base)


default_root = root  # ``download``/``resolve`` take a ``root`` argument that shadows the function


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _plan(pack: str, role: str, folder: Path, check: _RoleCheck, token: str | None, *, tried: list[str]) -> _Plan:
    """Pick the first candidate not yet tried that has the files, list them, and decide what to fetch."""
    tried_labels = {t.partition(" (")[0] for t in tried}
    candidates = [s for s in _role_spec(pack, role).candidates if s.label not in tried_labels]
    previous = check.manifest
    if previous is not None:  # repair from the source (and commit) the role came from while it is there
        candidates.sort(key=lambda s: s.label != previous["source"]["label"])
    for source in candidates:
        plan = _Plan(pack, role, folder, source, previous=previous, tried=tried)
        if isinstance(source, UrlSource):  # existence is only known by fetching; a 404 comes back as SourceGone
            plan.fetch = [source.filename]
            return plan
        same = previous is not None and previous["source"]["label"] == source.label
        try:
            revisions = [previous["source"]["commit"]] if same else []
            plan.revision, plan.remote = list_hub(source, revisions + [source.revision], token)
        except SourceGone as gone:
            tried.append(f"{source.label} ({gone})")
            continue
        wanted = select(source, list(plan.remote))
        absent = [f for f in source.files if f not in plan.remote]
        if absent or not wanted:
            tried.append(f"{source.label} (no {absent[0] if absent else 'matching files'})")
            continue
        if same and plan.revision == previous["source"]["commit"]:
            plan.keep = {rel: rec for rel, rec in previous["files"].items() if rel in wanted and rel not in check.fetch}
            plan.broken = [rel for rel in check.fetch if rel in wanted]
        plan.fetch = [rel for rel in wanted if rel not in plan.keep]
        return plan
    raise WeightsError(f"No source has '{pack}/{role}'; tried: {'; '.join(tried)}. The files may have moved: see "
                       f"docs/models.md and update helpers/registry.py.")


def _check_disk(plans: list[_Plan], base: Path, keep_pickles: bool) -> None:
    """Refuse, before fetching anything, when the peak disk use of these downloads + conversions exceeds free space."""
    running = peak = 0
    for plan in plans:
        running += plan.download_bytes()
        pickles = {rel: dtype for rel, dtype in plan.source.convert.items() if rel in plan.fetch}
        sizes = {rel: plan.remote.get(rel, {}).get("size") or plan.source.approx_bytes for rel in pickles}
        converted = sum(sizes[rel] // 2 if dtype == "fp32" else sizes[rel] for rel, dtype in pickles.items())
        peak = max(peak, running + converted)
        running += converted - (0 if keep_pickles else sum(sizes.values()))
    need, free = peak + _DISK_MARGIN, _free_bytes(base)
    if need > free:
        raise WeightsError(f"Not enough free disk space in {base}: these downloads need about {need / 1e9:.1f} GB "
                           f"and {free / 1e9:.1f} GB is free. Free some space or download fewer packs at a time.")


def _free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _execute(plan: _Plan, token: str | None, progress: bool, keep_pickles: bool) -> None:
    folder, source = plan.folder, plan.source
    folder.mkdir(parents=True, exist_ok=True)
    old = plan.previous
    if old is not None and old["source"]["label"] != source.label:
        for rel in list(old["files"]) + [c["path"] for c in old.get("converted", {}).values()]:
            (folder / rel).unlink(missing_ok=True)  # another candidate's layout: do not leave it lying around
    for rel in plan.broken:  # a damaged copy must not pass for a finished download
        (folder / rel).unlink(missing_ok=True)
    say(progress, f"{plan.pack}/{plan.role}: {len(plan.fetch)} file(s) from {source.label}")
    if isinstance(source, UrlSource):
        files = {name: _record(folder / name) for name in fetch_url(source, folder, progress)}
    else:
        files = {}
        for rel in plan.fetch:
            remote = plan.remote[rel]
            digest = fetch_hub_file(source, plan.revision, folder, rel, remote, token, progress)
            files[rel] = _record(folder / rel, digest, upstream_sha256=remote["sha256"])
    files.update(plan.keep)
    manifest = {
        "pack": plan.pack, "role": plan.role, "entry": source.entry, "resolved": _resolved_rel(source),
        "licence": source.licence.name, "licence_url": source.licence.url, "files": files,
        "convert": {rel: dtype for rel, dtype in source.convert.items() if rel in files}, "converted": {},
        "source": {"label": source.label, **({"kind": "url", "url": source.url} if isinstance(source, UrlSource)
                                              else {"kind": "hub", "repo_id": source.repo_id,
                                                    "repo_type": source.repo_type, "revision": source.revision,
                                                    "commit": plan.revision})},
    }
    for rel, out in (old or {}).get("converted", {}).items():  # fp16 copies of kept pickles stay if intact
        if rel in plan.keep and _file_state(folder / out["path"], out, hash_changed=True) == "ok":
            manifest["converted"][rel] = out
    for rel in manifest["convert"]:
        if rel not in manifest["converted"]:
            _convert_recorded(folder, manifest, rel, keep_pickles, progress)
    _write_manifest(folder, manifest)


def _convert_recorded(folder: Path, manifest: dict, rel: str, keep_pickles: bool, progress: bool) -> None:
    say(progress, f"converting {rel} to fp16 safetensors (once)")
    out = convert_to_fp16_safetensors(folder / rel)
    manifest.setdefault("converted", {})[rel] = _record(out, path=out.relative_to(folder).as_posix())
    if not keep_pickles:
        (folder / rel).unlink()
        manifest["files"][rel]["removed"] = True


