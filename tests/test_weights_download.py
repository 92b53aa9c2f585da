"""weights.download against a fake Hub on 127.0.0.1: fresh download, resume, repair, gating, fallbacks, offline."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from helpers import registry, sources, weights
from helpers.errors import WeightsError
from helpers.registry import HubSource, Licence, Pack, Role, Task, UrlSource
from helpers.testing.fake_hub import FakeHub

TOKEN = "hf_test_token"
OPEN = Licence("Apache-2.0", "https://example.org/licence")
GATED = Licence("Test community licence", "https://huggingface.co/org/gated", gated=True)


def _pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


ONNX = os.urandom(200_000)
UNET_FP16 = os.urandom(3_000)
CKPT = _pickle_bytes({"image_proj": {"proj.weight": torch.randn(4, 3)}, "step": torch.tensor([7])})

PACKS = {p.id: p for p in (
    Pack("single", "", {"detector": Role("detector", "", (
        HubSource("org/model", OPEN, files=("det.onnx",), entry="det.onnx"),))}),
    Pack("folder", "", {"base": Role("base", "", (
        HubSource("org/pipe", OPEN, allow_patterns=("model_index.json", "unet/*")),))}),
    Pack("pickle", "", {"proj": Role("proj", "", (
        HubSource("org/ckpt", OPEN, files=("sub/proj.bin",), entry="sub/proj.bin", convert={"sub/proj.bin": "fp32"}),
    ))}),
    Pack("moved", "", {"detector": Role("detector", "", (
        HubSource("gone/repo", OPEN, files=("det.onnx",), entry="det.onnx"),
        HubSource("org/model", OPEN, files=("det.onnx",), entry="det.onnx"),
    ))}),
    Pack("gated", "", {"weights": Role("weights", "", (
        HubSource("org/gated", GATED, files=("w.safetensors",), entry="w.safetensors"),))}),
)}


@pytest.fixture
def hub(monkeypatch):
    """A fake Hub with the test repos, this process pointed at it, and the test packs in the registry."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "PACKS", PACKS)
    monkeypatch.setattr(registry, "TASKS", {"demo": Task("demo", ("single", "folder"))})
    with FakeHub(tokens=(TOKEN,)) as fake, fake.activated():
        fake.add_repo("org/model", {"det.onnx": ONNX, "README.md": "# model"})
        fake.add_repo("org/pipe", {
            "model_index.json": '{"_class_name": "Pipe"}',
            "unet/config.json": '{"in_channels": 4}',
            "unet/diffusion_pytorch_model.fp16.safetensors": UNET_FP16,
            "unet/diffusion_pytorch_model.bin": b"fp32 pickle that must not be fetched",
            "unet/diffusion_pytorch_model.non_ema.bin": b"non-ema weights that must not be fetched",
            "text_encoder/model.safetensors": b"outside the patterns",
        })
        fake.add_repo("org/ckpt", {"sub/proj.bin": CKPT})
        fake.add_repo("org/gated", {"w.safetensors": b"gated weights"}, gated=True)
        yield fake


def _manifest(root, pack, role) -> dict:
    return json.loads((root / "models" / pack / role / ".source.json").read_text())


def test_fresh_download_verifies_records_and_resolves(hub, tmp_path):
    rows = weights.download(["demo"], root=tmp_path, progress=False)

    assert [(r.pack, r.role, r.state) for r in rows] == [("single", "detector", "verified"),
                                                         ("folder", "base", "verified")]
    detector = weights.resolve("single", "detector", root=tmp_path)
    assert detector == tmp_path / "models/single/detector/det.onnx"
    assert detector.read_bytes() == ONNX
    folder = weights.resolve("folder", "base", root=tmp_path)
    assert folder == tmp_path / "models/folder/base"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and not p.relative_to(folder).as_posix().startswith("."))
    assert files == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"]
    manifest = _manifest(tmp_path, "single", "detector")
    assert manifest["source"]["commit"] == hub.repos[("model", "org/model")].commit
    assert manifest["files"]["det.onnx"]["sha256"] == hashlib.sha256(ONNX).hexdigest()
    assert manifest["files"]["det.onnx"]["upstream_sha256"] == hashlib.sha256(ONNX).hexdigest()


def test_dropped_connection_resumes_with_a_range_request(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)  # so the bytes before the drop reach the disk
    hub.drop_connection_once("org/model", "det.onnx", after_bytes=50_000)

    weights.download(["single"], root=tmp_path, progress=False)

    assert weights.resolve("single", "detector", root=tmp_path).read_bytes() == ONNX
    gets = hub.downloads("det.onnx")
    assert [g.range is None for g in gets] == [True, False]
    resumed_from = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= 50_000


def test_corrupted_file_is_detected_and_fetched_again(hub, tmp_path):
    weights.download(["demo"], root=tmp_path, progress=False)
    detector = weights.resolve("single", "detector", root=tmp_path)
    written = detector.stat().st_mtime_ns
    detector.write_bytes(bytes(len(ONNX)))  # same size, different content, a later timestamp
    os.utime(detector, ns=(written, written + 10**9))
    assert weights.status(["single"], root=tmp_path)[0].state == "changed"
    hub.requests.clear()

    rows = weights.download(["demo"], root=tmp_path, progress=False)

    assert detector.read_bytes() == ONNX
    assert [r.state for r in rows] == ["verified", "verified"]
    assert [r.path.rpartition("/")[2] for r in hub.downloads()] == ["det.onnx"]  # the folder role was not touched


def test_silent_bit_rot_is_found_by_recheck(hub, tmp_path):
    weights.download(["single"], root=tmp_path, progress=False)
    detector = weights.resolve("single", "detector", root=tmp_path)
    stat = detector.stat()
    detector.write_bytes(b"\0" + ONNX[1:])
    os.utime(detector, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and timestamp unchanged

    weights.download(["single"], root=tmp_path, progress=False)
    assert detector.read_bytes() != ONNX  # trusted: same size and timestamp as when it was verified
    weights.download(["single"], root=tmp_path, progress=False, recheck=True)
    assert detector.read_bytes() == ONNX


def test_gated_repo_without_token_says_where_to_accept_the_licence(hub, tmp_path):
    with pytest.raises(WeightsError) as error:
        weights.download(["gated"], root=tmp_path, progress=False)
    message = str(error.value)
    assert GATED.url in message and "HF_TOKEN" in message and "no Hugging Face token" in message
    assert "\n" not in message


def test_gated_repo_downloads_with_a_token_that_is_never_shown(hub, tmp_path, capsys, caplog):
    with pytest.raises(WeightsError) as error:
        weights.download(["gated"], root=tmp_path, token="hf_wrong_secret")
    assert "has no access" in str(error.value) and "hf_wrong_secret" not in str(error.value)

    weights.download(["gated"], root=tmp_path, token=TOKEN)

    assert weights.resolve("gated", "weights", root=tmp_path).read_bytes() == b"gated weights"
    shown = capsys.readouterr()
    for text in (shown.out, shown.err, caplog.text, (tmp_path / "models/gated/weights/.source.json").read_text()):
        assert TOKEN not in text and "hf_wrong_secret" not in text


@pytest.mark.parametrize("missing_status", [404, 401])  # the real Hub answers 401 for unknown repos when anonymous
def test_missing_repo_falls_back_to_the_next_candidate(hub, tmp_path, missing_status):
    hub.missing_repo_status = missing_status

    weights.download(["moved"], root=tmp_path, progress=False)

    assert _manifest(tmp_path, "moved", "detector")["source"]["label"] == "org/model"
    assert weights.resolve("moved", "detector", root=tmp_path).read_bytes() == ONNX


def test_no_candidate_left_lists_what_was_tried(hub, tmp_path, monkeypatch):
    role = Role("detector", "", (HubSource("gone/repo", OPEN, files=("det.onnx",), entry="det.onnx"),
                                 HubSource("org/model", OPEN, files=("old_name.onnx",), entry="old_name.onnx")))
    monkeypatch.setitem(registry.PACKS, "lost", Pack("lost", "", {"detector": role}))

    with pytest.raises(WeightsError, match=r"tried: gone/repo \(not found\); org/model \(no old_name.onnx\)"):
        weights.download(["lost"], root=tmp_path, progress=False)


def test_offline_with_verified_files_makes_no_network_call(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    weights.download(["demo"], root=tmp_path, progress=False)
    hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)

    rows = weights.download(["demo"], root=tmp_path, progress=False)

    assert all(r.verified for r in rows) and len(hub.requests) == before
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE"):
        weights.download(["pickle"], root=tmp_path, progress=False)


def test_pickle_is_converted_once_and_removed(hub, tmp_path):
    weights.download(["pickle"], root=tmp_path, progress=False)

    path = weights.resolve("pickle", "proj", root=tmp_path)
    assert path == tmp_path / "models/pickle/proj/sub/proj.fp16.safetensors"
    tensors = load_file(path)
    assert tensors["image_proj.proj.weight"].dtype == torch.float16 and tensors["step"].dtype == torch.int64
    assert not (path.parent / "proj.bin").exists()
    assert _manifest(tmp_path, "pickle", "proj")["files"]["sub/proj.bin"]["removed"] is True
    stamp = path.stat().st_mtime_ns
    hub.requests.clear()

    assert weights.download(["pickle"], root=tmp_path, progress=False)[0].verified
    assert hub.downloads() == [] and path.stat().st_mtime_ns == stamp  # not fetched, not converted again


def test_broken_converted_copy_brings_the_pickle_back(hub, tmp_path):
    weights.download(["pickle"], root=tmp_path, progress=False)
    path = weights.resolve("pickle", "proj", root=tmp_path)
    path.unlink()

    weights.download(["pickle"], root=tmp_path, progress=False, keep_pickles=True)

    assert load_file(path)["image_proj.proj.weight"].shape == (4, 3)
    assert (path.parent / "proj.bin").read_bytes() == CKPT


def test_disk_space_is_checked_before_anything_is_fetched(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "_free_bytes", lambda path: 50 * 10**6)

    with pytest.raises(WeightsError, match=r"need about 0\.1 GB and 0\.1 GB is free"):
        weights.download(["demo"], root=tmp_path, progress=False)
    assert hub.downloads() == []


def test_url_source_zip_member_is_unpacked(hub, tmp_path, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("det_10g.onnx", b"scrfd weights")
        zf.writestr("w600k_r50.onnx", b"not needed")
    url = hub.add_file("buffalo_l.zip", archive.getvalue())
    role = Role("detector", "", (
        UrlSource(hub.endpoint + "/files/missing.zip", "missing.zip", OPEN, entry="det_10g.onnx",
                  extract=("det_10g.onnx",)),
        UrlSource(url, "buffalo_l.zip", OPEN, entry="det_10g.onnx", extract=("det_10g.onnx",)),
    ))
    monkeypatch.setitem(registry.PACKS, "faces", Pack("faces", "", {"detector": role}))

    weights.download(["faces"], root=tmp_path, progress=False)

    folder = tmp_path / "models/faces/detector"
    assert weights.resolve("faces", "detector", root=tmp_path).read_bytes() == b"scrfd weights"
    assert sorted(p.name for p in folder.iterdir()) == [".source.json", "det_10g.onnx"]
    assert _manifest(tmp_path, "faces", "detector")["source"] == {"kind": "url", "label": url, "url": url}


def test_unreachable_url_source_falls_back_to_a_hub_mirror(hub, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a local port that nothing listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setattr(sources, "URL_RETRIES", 0)
    role = Role("detector", "", (
        UrlSource(f"http://127.0.0.1:{closed_port}/buffalo_l.zip", "buffalo_l.zip", OPEN, entry="det.onnx",
                  extract=("det.onnx",)),
        HubSource("org/model", OPEN, files=("det.onnx",), entry="det.onnx"),
    ))
    monkeypatch.setitem(registry.PACKS, "faces", Pack("faces", "", {"detector": role}))

    weights.download(["faces"], root=tmp_path, progress=False)

    assert weights.resolve("faces", "detector", root=tmp_path).read_bytes() == ONNX
    assert _manifest(tmp_path, "faces", "detector")["source"]["label"] == "org/model"


def test_fake_hub_serves_a_folder_of_repos_to_snapshot_download(tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "hub/yzd-v/DWPose").mkdir(parents=True)
    (tmp_path / "hub/yzd-v/DWPose/yolox_l.onnx").write_bytes(b"tiny detector")
    (tmp_path / "hub/spaces/ID-Animator/ID-Animator/image_encoder").mkdir(parents=True)
    (tmp_path / "hub/spaces/ID-Animator/ID-Animator/image_encoder/config.json").write_text("{}")

    with FakeHub.from_folder(tmp_path / "hub") as fake, fake.activated():
        model = snapshot_download("yzd-v/DWPose", local_dir=tmp_path / "a")
        space = snapshot_download("ID-Animator/ID-Animator", repo_type="space", local_dir=tmp_path / "b")

    assert (tmp_path / "a/yolox_l.onnx").read_bytes() == b"tiny detector" and model == str(tmp_path / "a")
    assert (tmp_path / "b/image_encoder/config.json").read_text() == "{}" and space == str(tmp_path / "b")


_CHILD = """
import json, sys
from pathlib import Path
from huggingface_hub import constants
from helpers import sources
from helpers.registry import HubSource, Licence
constants.DOWNLOAD_CHUNK_SIZE = 64 * 1024  # (10 MB by default) so the bytes before the stall reach the disk
source = HubSource("org/big", Licence("Apache-2.0", "https://example.org/licence"), files=("w.safetensors",),
                   entry="w.safetensors")
sources.fetch_hub_file(source, sys.argv[1], Path(sys.argv[2]), "w.safetensors", json.loads(sys.argv[3]), None,
                       progress=False)
"""


def test_download_killed_part_way_is_continued_by_the_next_run(hub, tmp_path):
    import subprocess
    import sys
    import time

    big = os.urandom(3_000_000)
    repo = hub.add_repo("org/big", {"w.safetensors": big})
    remote = {"size": len(big), "sha256": hashlib.sha256(big).hexdigest(), "blob_id": None}
    folder = tmp_path / "models" / "big" / "weights"
    hub.hold_after("org/big", "w.safetensors", 2_000_000)  # 2 of 3 MB arrive, then the connection stalls
    env = {**os.environ, **hub.env(), "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, repo.commit, str(folder), json.dumps(remote)], env=env)
    partial = sources.partial_path(folder, "w.safetensors", remote)
    try:
        deadline = time.monotonic() + 60
        while not (partial.is_file() and partial.stat().st_size >= 1_900_000):
            assert child.poll() is None and time.monotonic() < deadline, "the download did not get going"
            time.sleep(0.05)
    finally:
        child.kill()  # SIGKILL: no clean-up code runs, as when a Colab runtime is disconnected
        child.wait()
    kept = partial.stat().st_size
    orphan = partial.parent / f"w.safetensors.{remote['sha256']}.0123abcd.incomplete"  # a killed hf_hub_download's
    orphan.write_bytes(b"x" * 1000)
    row = weights.WeightStatus("big", "weights", "incomplete", None, 0, 0, "", "", kept + 1000)
    assert "partial download: re-run to continue it" in weights.format_status([row])
    assert sum(p.stat().st_size for p in sources.unfinished_files(folder)) == kept + 1000

    digest = sources.fetch_hub_file(HubSource("org/big", OPEN, files=("w.safetensors",), entry="w.safetensors"),
                                    repo.commit, folder, "w.safetensors", remote, None, progress=False)

    assert digest == remote["sha256"] and (folder / "w.safetensors").read_bytes() == big
    assert hub.downloads("w.safetensors")[-1].range == f"bytes={kept}-"  # only the missing bytes were asked for
    assert sources.unfinished_files(folder) == []  # the partial became the file; the orphan is gone


def test_disk_check_counts_only_the_bytes_still_to_come(tmp_path):
    remote = {"size": 1000, "sha256": "ab" * 32, "blob_id": None}
    plan = weights._Plan("p", "r", tmp_path, PACKS["single"].roles["detector"].candidates[0], remote={"a": remote},
                         fetch=["a"])
    assert plan.download_bytes() == 1000
    partial = sources.partial_path(tmp_path, "a", remote)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 600)
    assert plan.download_bytes() == 400


def test_overwritten_onnx_names_the_pack_and_how_to_repair_it(hub, tmp_path):
    import onnxruntime

    from helpers.tasks import base

    weights.download(["single"], root=tmp_path, progress=False)
    weights.resolved_log.clear()
    path = weights.resolve("single", "detector", root=tmp_path)
    path.write_bytes(os.urandom(len(ONNX)))  # same size, other bytes: only the hash tells
    with pytest.raises(WeightsError) as err:
        base.cached("damaged-onnx", lambda: onnxruntime.InferenceSession(str(path)))
    assert str(err.value).startswith("Weights 'single/detector' are damaged: det.onnx is missing or differs from the "
                                     "file downloaded (size or sha256). Repair them with weights.download(['single'])")
    weights.download(["single"], root=tmp_path, progress=False)  # the repair it names works
    assert path.read_bytes() == ONNX
