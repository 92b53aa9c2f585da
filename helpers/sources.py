"""Fetching files from the candidate sources of ``helpers.registry``: the Hugging Face Hub and plain URLs.

``helpers.weights`` decides what to fetch and keeps the lock manifest; this module talks to the outside world:

>>> commit, remote = sources.list_hub(source, ["main"], token)    # {"path": {"size", "sha256", "blob_id"}}
>>> files = sources.select(source, list(remote))                  # the files this role takes from the repo
>>> digest = sources.fetch_hub_file(source, commit, folder, "vae/config.json", remote["vae/config.json"], token)
>>> names = sources.fetch_url(url_source, folder)                 # gdown; unpacks zip members

Errors are one line: ``SourceGone`` (404 or removed: try the next candidate) or ``helpers.errors.WeightsError``
(gated repo, rejected token, network). Tokens are passed on, never printed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from helpers.errors import WeightsError
from helpers.registry import HubSource, UrlSource

HASH_CHUNK = 8 * 2**20
URL_RETRIES = 3  # gdown retries (with backoff) a dropped or refused connection this many times, resuming
_WEIGHT_RANKS = {(True, "safetensors"): 0, (False, "safetensors"): 1, (True, "bin"): 2, (False, "bin"): 3}


class SourceGone(Exception):
    """This candidate does not have the files (404, removed): the next candidate is tried."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (multi-GB files stay out of memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _endpoint() -> str | None:
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, at import.
    return os.environ.get("HF_ENDPOINT") or None


def list_hub(source: HubSource, revisions: list[str], token: str | None) -> tuple[str, dict[str, dict]]:
    """The commit and files (size, LFS sha256, git blob id) of ``source`` at the first of ``revisions`` that exists."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    api = HfApi(endpoint=_endpoint(), token=token)
    for revision in revisions:
        try:
            info = api.repo_info(source.repo_id, repo_type=source.repo_type, revision=revision, files_metadata=True)
        except RevisionNotFoundError:
            continue
        except Exception as err:
            mapped = hub_error(err, source, token)
            if mapped is err:  # not a Hub or network error: a bug, shown as it is
                raise
            raise mapped from err
        remote = {s.rfilename: {"size": s.size, "sha256": s.lfs.sha256 if s.lfs else None, "blob_id": s.blob_id}
                  for s in info.siblings or []}
        return info.sha, remote
    raise SourceGone(f"revision {revisions[-1]} not found")


def hub_error(err: Exception, source: HubSource, token: str | None) -> Exception:
    """Map a huggingface_hub/httpx error to ``SourceGone`` (next candidate) or a one-line ``WeightsError``."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    status_code = getattr(getattr(err, "response", None), "status_code", None)
    if token and status_code == 401 and "Invalid credentials" in str(err):
        return WeightsError("The Hugging Face token was rejected (invalid or expired): create one at "
                            "https://huggingface.co/settings/tokens, store it as HF_TOKEN in Colab secrets, re-run.")
    # The Hub answers 401 both for gated repos without a token and for repos that do not exist.
    gated = isinstance(err, GatedRepoError) or status_code == 403 or (status_code == 401 and source.licence.gated)
    if gated or (status_code == 401 and not isinstance(err, RepositoryNotFoundError)):
        who = "the token given has no access" if token else "no Hugging Face token was given"
        return WeightsError(f"{source.label} is gated and {who}: accept the licence at {source.licence.url} "
                            f"(logged in to Hugging Face), then add HF_TOKEN to Colab secrets and re-run.")
    if isinstance(err, RepositoryNotFoundError) or status_code == 404:
        return SourceGone("not found")
    if isinstance(err, HfHubHTTPError) and status_code is not None:
        return WeightsError(f"The Hub answered {status_code} for {source.label}: try again in a few minutes.")
    if not _network_error(err):
        return err  # e.g. a TypeError from an incompatible huggingface_hub: never blamed on the connection
    return WeightsError(f"Could not download from {source.label} ({type(err).__name__}): check the internet "
                        f"connection and re-run; finished files are kept and not fetched again.")


def _network_error(err: Exception) -> bool:
    """A failure of the connection (socket, DNS, timeout, dropped transfer; requests and huggingface_hub's offline
    errors are OSErrors) rather than of the code."""
    if isinstance(err, OSError):
        return True
    try:
        import httpx
    except ImportError:
        return False
    return isinstance(err, httpx.TransportError)


def select(source: HubSource, listing: list[str]) -> list[str]:
    """The files of ``source`` in ``listing``. In folder roles keep one weight format per folder, the best of
    ``.fp16.safetensors`` > ``.safetensors`` > ``.fp16.bin`` > ``.bin`` (shards stay together); other variants
    (``non_ema``, ``ema``) are dropped when a plain or fp16 file is there.

    >>> select(sd15_source, ["unet/config.json", "unet/diffusion_pytorch_model.bin",
    ...                      "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.non_ema.bin"])
    ['unet/config.json', 'unet/diffusion_pytorch_model.fp16.safetensors']
    """
    if source.files:
        return [f for f in source.files if f in listing]
    from huggingface_hub.utils import filter_repo_objects

    chosen = list(filter_repo_objects(listing, allow_patterns=list(source.allow_patterns) or None,
                                      ignore_patterns=list(source.ignore_patterns) or None))
    if not source.one_variant:
        return chosen
    by_folder: dict[str, dict[str, int | None]] = {}
    for path in chosen:
        by_folder.setdefault(path.rpartition("/")[0], {})[path] = _weight_rank(path)
    keep = set()
    for ranks in by_folder.values():
        usable = [r for r in ranks.values() if r is not None and r >= 0]
        best = min(usable) if usable else -1
        keep |= {p for p, r in ranks.items() if r is None or r == best}
    return [p for p in chosen if p in keep]


def _weight_rank(path: str) -> int | None:
    """None for a non-weight file, -1 for an unwanted variant (``non_ema``...), else its preference rank."""
    stem, dot, suffix = path.rpartition("/")[2].rpartition(".")
    if not dot or suffix not in ("safetensors", "bin"):
        return None
    parts = stem.split(".")
    variant = parts[-1] if len(parts) > 1 and "-of-" not in parts[-1] else None
    if variant not in (None, "fp16"):
        return -1
    return _WEIGHT_RANKS[(variant == "fp16", suffix)]


def fetch_hub_file(source: HubSource, commit: str, folder: Path, rel: str, remote: dict, token: str | None,
                   progress: bool = True) -> str:
    """Download ``rel`` into ``folder`` (its repo path kept) and verify it against the Hub's size and hash.

    Returns the file's sha256. A copy that fails verification is deleted and fetched once more. Weight files (LFS)
    go through :func:`fetch_resumable`: a run killed part-way (a Colab disconnect) leaves a partial file that the
    next run continues with an HTTP range. Within one call a dropped transfer is resumed too; a small file finished
    by an earlier, interrupted run is recognised from its local download metadata and not fetched again.
    """
    from huggingface_hub import hf_hub_download

    path = folder / rel
    for _attempt in (1, 2):
        try:
            if remote["sha256"]:  # weights (LFS): continued by the next run after a kill; a finished copy is hashed
                if not path.is_file():
                    fetch_resumable(source, commit, folder, rel, remote, token, progress)
            else:
                _quiet_call(hf_hub_download, source.repo_id, rel, repo_type=source.repo_type, revision=commit,
                            local_dir=folder, token=token, endpoint=_endpoint(), progress=progress)
        except Exception as err:
            mapped = hub_error(err, source, token)
            if mapped is err:
                raise
            raise (SourceGone(f"{rel} not found") if isinstance(mapped, SourceGone) else mapped) from err
        if remote["sha256"] or path.stat().st_size > 10 * 2**20:
            if path.stat().st_size > 10**9:
                say(progress, f"{rel}: checking its sha256")
            digest = sha256_file(path)
            intact = remote["sha256"] in (None, digest)
        else:  # small files live in git, not LFS: the Hub gives their git blob id
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            intact = remote["blob_id"] in (None, hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
        if intact and remote["size"] in (None, path.stat().st_size):
            return digest
        path.unlink()  # e.g. a damaged file that the local download metadata still calls finished
        say(progress, f"{rel}: damaged copy deleted, fetching it again")
    raise WeightsError(f"{rel} from {source.label} arrives damaged (size or hash mismatch): re-run the download "
                       f"later; if it persists the file changed upstream.")


DOWNLOAD_DIR = Path(".cache") / "huggingface" / "download"  # huggingface_hub's metadata folder inside local_dir


def partial_path(folder: Path, rel: str, remote: dict) -> Path:
    """Where the unfinished download of ``rel`` is kept between runs; the name holds the content hash, so a file
    that changed upstream never continues an old partial copy."""
    key = (remote.get("sha256") or remote.get("blob_id") or "unknown")[:16]
    return folder / DOWNLOAD_DIR / f"{rel}.{key}.partial"


def unfinished_files(folder: Path) -> list[Path]:
    """Partial downloads in a role folder: ours (continued by the next run) and ``*.incomplete`` files that a killed
    ``huggingface_hub`` download leaves behind (never reused by it; removed when that file is fetched again)."""
    base = folder / DOWNLOAD_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob("*") if p.is_file() and p.suffix in (".partial", ".incomplete"))


def fetch_resumable(source: HubSource, commit: str, folder: Path, rel: str, remote: dict, token: str | None,
                    progress: bool = True) -> None:
    """Download ``rel`` into ``folder / rel`` through a partial file that outlives the process: a later call (after
    a kill, a disconnect, a restarted runtime) asks the Hub for the remaining bytes only. Holds huggingface_hub's
    per-file lock, so two processes never write one partial file, and removes the orphans of killed
    ``huggingface_hub`` downloads of this file."""
    from filelock import FileLock
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    partial = partial_path(folder, rel, remote)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / DOWNLOAD_DIR / f"{rel}.lock")):
        for orphan in partial.parent.glob(f"{Path(rel).name}.*.incomplete"):
            orphan.unlink(missing_ok=True)
        for stale in partial.parent.glob(f"{Path(rel).name}.*.partial"):  # an older upstream version of the file
            if stale != partial:
                stale.unlink(missing_ok=True)
        done = partial.stat().st_size if partial.is_file() else 0
        if remote.get("size") is not None and done > remote["size"]:
            partial.unlink()
            done = 0
        if done:
            say(progress, f"{rel}: continuing the earlier download at {done / 1e6:.0f} MB")
        url = hf_hub_url(source.repo_id, rel, repo_type=source.repo_type, revision=commit, endpoint=_endpoint())
        with open(partial, "ab") as out:
            _quiet_call(http_get, url, out, resume_size=done, headers=build_hf_headers(token=token),
                        expected_size=remote.get("size"), displayed_filename=Path(rel).name, progress=progress)
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, folder / rel)


def _quiet_call(download, *args, progress: bool, **kwargs):
    """Call a huggingface_hub download function (``hf_hub_download``, ``http_get``), quiet when ``progress`` is
    False. Older huggingface_hub releases (0.34 among them) have no ``tqdm_class`` argument: there the library's
    progress bars are switched off for the call instead."""
    import inspect

    if "tqdm_class" in inspect.signature(download).parameters:
        return download(*args, tqdm_class=None if progress else QuietTqdm, **kwargs)
    if progress:
        return download(*args, **kwargs)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        return download(*args, **kwargs)
    finally:
        if not was_disabled:
            enable_progress_bars()


def fetch_url(source: UrlSource, folder: Path, progress: bool = True) -> list[str]:
    """Download a file published outside the Hub with gdown (a partial file is resumed), unpacking zip members
    into ``folder``. Returns the names of the files placed in ``folder``."""
    import gdown
    import requests

    staging = folder / ".download"
    staging.mkdir(parents=True, exist_ok=True)
    target = staging / source.filename
    try:
        gdown.download(url=source.url, output=str(target), quiet=not progress, resume=True, retries=URL_RETRIES,
                       timeout=(30, 120), use_cookies="drive.google.com" in source.url)
    except requests.HTTPError as err:
        if err.response is not None and err.response.status_code in (404, 410):
            raise SourceGone("not found") from err
        raise WeightsError(f"Could not download {source.url} ({err}): re-run later to resume.") from err
    except Exception as err:  # gdown: Google Drive quota or permission pages, dropped connections
        cause = err.__cause__ if isinstance(err, gdown.exceptions.DownloadError) else err
        if isinstance(cause, (requests.ConnectionError, requests.Timeout)):
            # One host being unreachable (GitHub, Google Drive) is no reason to give up on a mirror elsewhere;
            # the partial file stays and is resumed when this source is used again.
            raise SourceGone(f"unreachable: {type(cause).__name__}") from err
        raise WeightsError(f"Could not download {source.url} ({type(err).__name__}): re-run to resume, or try "
                           f"again later.") from err
    if not source.extract:
        os.replace(target, folder / source.filename)
        shutil.rmtree(staging, ignore_errors=True)
        return [source.filename]
    with zipfile.ZipFile(target) as archive:
        for wanted in source.extract:
            member = next((m for m in archive.namelist() if m == wanted or m.rpartition("/")[2] == wanted), None)
            if member is None:
                raise WeightsError(f"{source.filename} from {source.url} has no {wanted}: the archive changed; see "
                                   f"docs/models.md.")
            with archive.open(member) as packed, open(folder / wanted, "wb") as out:
                shutil.copyfileobj(packed, out, HASH_CHUNK)
    shutil.rmtree(staging, ignore_errors=True)
    return list(source.extract)


def say(progress: bool, message: str) -> None:
    """One status line for the person watching the notebook (nothing when ``progress`` is off)."""
    if progress:
        print(message, flush=True)


class QuietTqdm(tqdm):
    """A progress bar that never shows (``progress=False``)."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
