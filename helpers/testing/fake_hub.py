"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1, for offline download tests.

It speaks the parts of the Hub protocol that ``huggingface_hub`` uses to download files:

- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}`` (``/spaces/...`` and ``/datasets/...`` too) with ``ETag``,
  ``X-Repo-Commit``, ``Content-Length`` and ``Range`` (206 + ``Content-Range``);
- ``GET /api/{models|spaces|datasets}/{repo}[/revision/{revision}]`` (``repo_info``; ``?blobs=True`` adds sizes,
  blob ids and LFS sha256 to the siblings);
- ``GET /api/{type}s/{repo}/tree/{revision}[/{path}]?recursive=...`` (``list_repo_tree``, used by ``snapshot_download``);
- the Hub's error codes (``X-Error-Code``: ``RepoNotFound``, ``EntryNotFound``, ``RevisionNotFound``, ``GatedRepo``);
- plain files at ``/files/{name}`` for URL sources (archives such as GitHub release zips).

Faults can be injected: drop the connection part-way through a file once, or answer 401 for unknown repos (as the real
Hub does for anonymous requests).

>>> with FakeHub() as hub:
...     hub.add_repo("org/model", {"config.json": b"{}", "weights.safetensors": b"..."})
...     with hub.activated():                 # HF_ENDPOINT -> this server, offline mode off (in this process)
...         path = hf_hub_download("org/model", "config.json", local_dir=tmp)

``FakeHub.from_folder(folder)`` serves a folder of tiny files as repos: every ``folder/<owner>/<name>/`` is a model
repo and every ``folder/spaces/<owner>/<name>/`` a Space. ``hub.env()`` gives the environment variables a notebook
kernel (a subprocess) needs to download from this server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files stored with Git LFS on the real Hub: their ETag is the sha256 of the content and listings carry LFS info.
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".zip", ".msgpack", ".h5")
REPO_TYPES = {"models": "model", "spaces": "space", "datasets": "dataset"}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file (what the Hub reports as ``blobId`` / ETag for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    files: dict[str, bytes]
    gated: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            digest = hashlib.sha1()
            for path in sorted(self.files):
                digest.update(path.encode() + b"\0" + self.files[path])
            self.commit = digest.hexdigest()

    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_sha1(data)

    def describe(self, path: str) -> dict:
        """One file as the Hub's listings describe it (``blobId``/``oid``, size, LFS pointer info)."""
        data = self.files[path]
        info: dict = {"size": len(data), "oid": git_blob_sha1(data)}
        if self.is_lfs(path):
            info["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return info


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass
class _Faults:
    drop_after: dict[tuple[str, str], int] = field(default_factory=dict)  # (repo_id, path) -> bytes before the drop
    hold_after: dict[tuple[str, str], int] = field(default_factory=dict)  # (repo_id, path) -> bytes before a stall
    released: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    """A threaded HTTP server that serves in-memory repos the way the Hub does. Use it as a context manager."""

    def __init__(self, *, tokens: tuple[str, ...] = ("hf_test_token",), missing_repo_status: int = 404):
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.plain_files: dict[str, bytes] = {}
        self.tokens = set(tokens)
        self.missing_repo_status = missing_repo_status
        self.requests: list[RequestRecord] = []
        self._faults = _Faults()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content ------------------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Mapping[str, bytes | str], *, repo_type: str = "model",
                 gated: bool = False) -> FakeRepo:
        """Serve ``files`` (path in repo -> content) as ``repo_id``. Returns the repo (its ``commit`` is fixed)."""
        contents = {path: data.encode() if isinstance(data, str) else bytes(data) for path, data in files.items()}
        repo = FakeRepo(repo_id, repo_type, contents, gated=gated)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def add_repo_folder(self, repo_id: str, folder: Path, **kwargs) -> FakeRepo:
        """Serve every file under ``folder`` (hidden files excepted) as ``repo_id``."""
        folder = Path(folder)
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        }
        return self.add_repo(repo_id, files, **kwargs)

    @classmethod
    def from_folder(cls, folder: Path, **kwargs) -> FakeHub:
        """A hub serving ``folder/<owner>/<name>/`` as model repos and ``folder/spaces/<owner>/<name>/`` as Spaces.

        >>> hub = FakeHub.from_folder(tmp / "hub").start()   # e.g. tmp/hub/yzd-v/DWPose/yolox_l.onnx
        """
        hub = cls(**kwargs)
        folder = Path(folder)
        for owner in sorted(p for p in folder.iterdir() if p.is_dir()):
            is_space_tree = owner.name == "spaces"
            owners = sorted(p for p in owner.iterdir() if p.is_dir()) if is_space_tree else [owner]
            for real_owner in owners:
                for repo in sorted(p for p in real_owner.iterdir() if p.is_dir()):
                    hub.add_repo_folder(f"{real_owner.name}/{repo.name}", repo,
                                        repo_type="space" if is_space_tree else "model")
        return hub

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at a plain URL (no Hub headers); returns the URL."""
        self.plain_files[name] = bytes(data)
        return f"{self.endpoint}/files/{name}"

    def drop_connection_once(self, repo_id: str, path: str, after_bytes: int) -> None:
        """The next GET of this file sends ``after_bytes`` bytes of the body, then closes the connection."""
        self._faults.drop_after[(repo_id, path)] = after_bytes

    def hold_after(self, repo_id: str, path: str, after_bytes: int) -> None:
        """The next GET of this file sends ``after_bytes`` bytes of the body, then stalls (as a dead connection does)
        until the hub stops: a client can be killed part-way through a download."""
        self._faults.hold_after[(repo_id, path)] = after_bytes

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_HubRequestHandler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._faults.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- pointing huggingface_hub at this server ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (e.g. a notebook kernel) that should download from this server."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_XET": "1"}

    @contextlib.contextmanager
    def activated(self) -> Iterator[FakeHub]:
        """Point this process at the server: sets the variables of ``env()`` and patches the values huggingface_hub
        read from them at import time (``constants.ENDPOINT`` and ``constants.HF_HUB_OFFLINE``)."""
        from huggingface_hub import constants

        saved_env = {key: os.environ.get(key) for key in self.env()}
        saved = {name: getattr(constants, name) for name in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE",
                                                             "HF_HUB_OFFLINE", "HF_HUB_DISABLE_XET")}
        os.environ.update(self.env())
        constants.ENDPOINT = self.endpoint
        constants.HUGGINGFACE_CO_URL_TEMPLATE = self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        constants.HF_HUB_OFFLINE = False
        constants.HF_HUB_DISABLE_XET = True
        # huggingface_hub 0.x builds file URLs from its own import-time copy of the template
        from huggingface_hub import file_download

        saved_template = getattr(file_download, "HUGGINGFACE_CO_URL_TEMPLATE", None)
        if saved_template is not None:
            file_download.HUGGINGFACE_CO_URL_TEMPLATE = constants.HUGGINGFACE_CO_URL_TEMPLATE
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(constants, name, value)
            if saved_template is not None:
                file_download.HUGGINGFACE_CO_URL_TEMPLATE = saved_template
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # -- inspection ---------------------------------------------------------------------------------------------
    def downloads(self, path_suffix: str = "") -> list[RequestRecord]:
        """GET requests of repo files (``/resolve/``) whose path ends with ``path_suffix``."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path
                    and r.path.endswith(path_suffix)]


class _HubRequestHandler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[len("Bearer "):] in self.fake_hub.tokens

    def _record(self) -> None:
        record = RequestRecord(self.command, unquote(urlsplit(self.path).path), self.headers.get("Range"),
                               self._authorized())
        with self.fake_hub._lock:
            self.fake_hub.requests.append(record)

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, extra: Mapping[str, str] | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        headers.update(extra or {})
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _json(self, payload) -> None:
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _repo(self, repo_type: str, repo_id: str) -> FakeRepo | None:
        repo = self.fake_hub.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(self.fake_hub.missing_repo_status, "RepoNotFound", "Repository not found")
        return repo

    def _revision_ok(self, repo: FakeRepo, revision: str) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return False

    # -- routes -------------------------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._record()
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if parts[:1] == ["files"] and len(parts) == 2:
            return self._plain_file(parts[1])
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in REPO_TYPES:
            return self._api(REPO_TYPES[parts[1]], parts[2:], query)
        repo_type = "model"
        if parts and parts[0] in ("spaces", "datasets"):
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        self._error(404, "NotFound", "Unknown route")

    def _plain_file(self, name: str) -> None:
        data = self.fake_hub.plain_files.get(name)
        if data is None:
            return self._error(404, "NotFound", "No such file")
        self._send_body(data, {"Content-Type": "application/octet-stream"})

    def _api(self, repo_type: str, parts: list[str], query: dict) -> None:
        repo = self._repo(repo_type, f"{parts[0]}/{parts[1]}")
        if repo is None:
            return
        rest = parts[2:]
        if not rest or rest[0] == "revision":
            if rest and not self._revision_ok(repo, rest[1] if len(rest) > 1 else "main"):
                return
            with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for path in sorted(repo.files):
                sibling = {"rfilename": path}
                if with_blobs:
                    info = repo.describe(path)
                    sibling.update(size=info["size"], blobId=info["oid"])
                    if "lfs" in info:
                        sibling["lfs"] = {"sha256": info["lfs"]["oid"], "size": info["size"], "pointerSize": 134}
                siblings.append(sibling)
            return self._json({"id": repo.repo_id, "sha": repo.commit, "private": False,
                               "gated": "manual" if repo.gated else False, "siblings": siblings})
        if rest[0] == "tree" and len(rest) >= 2:
            if not self._revision_ok(repo, rest[1]):
                return
            return self._json(self._tree(repo, "/".join(rest[2:]),
                                         query.get("recursive", ["false"])[0].lower() == "true"))
        self._error(404, "NotFound", "Unknown API route")

    @staticmethod
    def _tree(repo: FakeRepo, prefix: str, recursive: bool) -> list[dict]:
        base = prefix.rstrip("/") + "/" if prefix else ""
        entries, folders = [], set()
        for path in sorted(repo.files):
            if not path.startswith(base):
                continue
            rest = path[len(base):].split("/")
            for depth in range(1, len(rest)):
                if recursive or depth == 1:
                    folders.add(base + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                entries.append({"type": "file", "path": path, **repo.describe(path)})
        entries += [{"type": "directory", "path": folder, "oid": "0" * 40, "size": 0} for folder in sorted(folders)]
        return entries

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_type, repo_id)
        if repo is None or not self._revision_ok(repo, revision):
            return
        if repo.gated and not self._authorized():
            status = 403 if self.headers.get("Authorization") else 401
            return self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted.")
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": repo.commit})
        headers = {"ETag": f'"{repo.etag(path)}"', "X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        drop_after = hold_after = None
        if self.command == "GET":
            drop_after = self.fake_hub._faults.drop_after.pop((repo_id, path), None)
            hold_after = self.fake_hub._faults.hold_after.pop((repo_id, path), None)
        self._send_body(repo.files[path], headers, drop_after=drop_after if hold_after is None else hold_after,
                        hold=hold_after is not None)

    def _send_body(self, data: bytes, headers: dict[str, str], drop_after: int | None = None,
                   hold: bool = False) -> None:
        """Send ``data`` honouring ``Range: bytes=N-``; with ``drop_after``, close the socket mid-body (``hold``: stall
        there until the hub stops, then close)."""
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and self.command == "GET":
            first, _, last = range_header[len("bytes="):].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(data) - 1
            body = data[start:end + 1]
            headers = {**headers, "Content-Range": f"bytes {start}-{start + len(body) - 1}/{len(data)}"}
            status = 206
        else:
            body, status = data, 200
        if drop_after is None:
            return self._send(status, body, headers)
        # Announce the full length, send only part of it, then hang up: the client sees a truncated body.
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:drop_after])
        self.wfile.flush()
        if hold:
            self.fake_hub._faults.released.wait(timeout=120)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)
