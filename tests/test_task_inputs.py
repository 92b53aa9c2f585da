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
    with pytest.raises(InputError, match="photo not found"):
        local(str(tmp_path))  # a folder, where one file is wanted
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
