"""The input files shared by the tasks: paths, URLs (SMOKE stand-ins), bundled examples, clips, cache stamps."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import media
from helpers.errors import InputError
from helpers.tasks import inputs


def _refuse_downloads(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("downloaded in SMOKE mode")

    monkeypatch.setattr(inputs, "fetch_input", refuse)


def test_local_input_paths_urls_and_stand_ins(tmp_path, monkeypatch):
    _refuse_downloads(monkeypatch)
    sources: dict = {}
    stand_in = tmp_path / "stand_in.png"
    media.write_image(stand_in, np.zeros((16, 16, 3), np.uint8))

    def local(value, **kwargs):
        return inputs.local_input(value, "photo", smoke=True, sources=sources, stand_in=lambda _url: stand_in,
                                  **kwargs)

    assert local("https://example.org/a/b.png") == stand_in
    assert sources["photo"] == "https://example.org/a/b.png (SMOKE: replaced by the synthetic stand_in.png)"
    assert local("  ") is None
    with pytest.raises(InputError, match="^no photo: say which$"):
        local("", missing="no photo: say which")
    with pytest.raises(InputError, match="photo not found: .*nothing.png"):
        local(str(tmp_path / "nothing.png"))
    with pytest.raises(InputError, match=f"^the photo {tmp_path} is a folder: give one file inside it$"):
        local(str(tmp_path))  # a folder, where one file is wanted
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="^the photo empty.png is empty \\(0 bytes\\)"):
        local(str(tmp_path / "empty.png"))
    assert local(str(tmp_path), folders=True) == tmp_path
    with pytest.raises(InputError, match="numbered sequence"):
        local("https://example.org/f_{0..3}.png")
    assert inputs.local_input(str(inputs.ASSETS / "dancer.mp4"), "video", smoke=False, sources={},
                              stand_in=lambda _url: None).name == "dancer.mp4"
    left_out: dict = {}
    assert inputs.local_input("https://example.org/m.png", "masks", smoke=True, sources=left_out,
                              stand_in=lambda _url: None) is None
    assert left_out["masks"].endswith("(SMOKE: left out)")


def test_clips_from_folders_and_their_stamps(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        media.write_image(tmp_path / f"f_{i:02d}.png", frame)
    assert inputs.count_frames(tmp_path, "clip") == (5, None)
    np.testing.assert_array_equal(inputs.read_clip(tmp_path, 2, 2, "clip"), frames[[0, 2]])
    with pytest.raises(InputError, match="clip gave 3 frames at stride 2, 4 needed"):
        inputs.read_clip(tmp_path, 4, 2, "clip")
    stamp = inputs.file_stamp(tmp_path)
    assert len(stamp) == 5 and inputs.file_stamp(None) == ()
    media.write_image(tmp_path / "f_05.png", frames[0])
    assert inputs.file_stamp(tmp_path) != stamp


def test_frame_folder_with_missing_numbers_says_which(tmp_path):
    for i in (0, 1, 3, 7):
        media.write_image(tmp_path / f"f_{i:04d}.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.warns(UserWarning, match=r"clip: frame\(s\) 2, 4, 5, 6 are missing"):
        assert inputs.count_frames(tmp_path, "clip") == (4, None)


def _served(tmp_path, relative: str, data: bytes) -> str:
    path = tmp_path / "site" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.as_uri()


def test_downloads_are_cached_by_the_whole_address(tmp_path):
    first = inputs.fetch_input(_served(tmp_path, "a/img/ref.png", b"first photo"))
    second = inputs.fetch_input(_served(tmp_path, "b/img/ref.png", b"second photo"))
    assert first != second and first.parent == second.parent
    assert first.read_bytes() == b"first photo" and second.read_bytes() == b"second photo"
    assert first.name.startswith("img_ref-") and first.suffix == ".png"


def test_a_web_page_instead_of_the_file_is_refused_and_not_kept(tmp_path):
    url = _served(tmp_path, "blob/main/ref.png", b"\n<!DOCTYPE html><html><body>GitHub</body></html>")
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="ref.png answered with a web page, not the file: .*'raw' link"):
        inputs.fetch_input(url, cache)
    assert list(cache.iterdir()) == []


def test_credentials_in_addresses_stay_out_of_sidecars_and_messages(tmp_path, monkeypatch):
    import json

    import toy_task

    secret_url = "https://me:hunter2@example.org/img/ref.png?token=hf_secret123&raw=1"
    monkeypatch.setattr(inputs, "fetch_input", lambda url: tmp_path / "ref.png")
    sources: dict = {}
    inputs.local_input(secret_url, "photo", smoke=False, sources=sources, stand_in=lambda _url: None)
    assert sources == {"photo": "https://example.org/img/ref.png?raw=1"}
    result = toy_task.run(toy_task.Params(output_dir=str(tmp_path), image=secret_url))
    text = result.sidecar_path.read_text()
    assert "hunter2" not in text and "hf_secret123" not in text
    assert json.loads(text)["params"]["image"] == "https://example.org/img/ref.png?raw=1"
    monkeypatch.undo()
    with pytest.raises(InputError) as err:
        inputs.fetch_input("http://me:hunter2@127.0.0.1:9/x.png?X-Amz-Signature=abc&Signature=abc&sig=abc",
                           tmp_path / "cache", timeout=5)
    assert "hunter2" not in str(err.value) and "abc" not in str(err.value)
